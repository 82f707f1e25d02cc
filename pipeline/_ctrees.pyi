"""Type stub of the optional C extension built from pipeline/_ctrees.c (see pipeline.compiled_model)."""

from typing import Any

def use_kernel(name: str, /) -> str:
    """Score every Forest with 'row', 'block', 'avx2' or 'avx512' (same bits); returns the previous name."""

def kernels() -> list[str]:
    """The scoring kernels this CPU can run."""

def kernel() -> str:
    """The scoring kernel in use (at load: avx512, else avx2, else row)."""

class Forest:
    """A checked copy of a multi:softprob gbtree in perfect-binary-tree slots, scored as XGBoost does."""

    def __init__(
        self,
        features: Any,
        thresholds: Any,
        default_left: Any,
        leaves: Any,
        classes: Any,
        base: Any,
        depth: int,
        n_features: int,
    ) -> None: ...
    @property
    def trees(self) -> int: ...
    def predict(self, matrix: Any, out: Any, /) -> None: ...
    def margins(self, matrix: Any, out: Any, /) -> None: ...

class Explainer:
    """TreeSHAP of one class's trees (nodes of every tree one after another, `sizes` nodes each)."""

    def __init__(
        self,
        left: Any,
        right: Any,
        features: Any,
        thresholds: Any,
        default_left: Any,
        values: Any,
        covers: Any,
        sizes: Any,
        base: float,
        n_features: int,
    ) -> None: ...
    @property
    def trees(self) -> int: ...
    @property
    def bias(self) -> float: ...
    def contributions(self, matrix: Any, out: Any, /) -> None: ...
