"""Type stub of the optional C extension built from pipeline/_cfeatures.c (see pipeline.features)."""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

def rows(
    contexts: Sequence[Any],
    matrix: NDArray[np.float32],
    static_facts: Callable[[Any], tuple[float, ...]],
    layout: tuple[int, ...],
    node_type: type,
    /,
) -> None: ...
def lone_bits(
    contexts: Sequence[Any],
    matrix: NDArray[np.float32],
    lone: tuple[Callable[[Any], int], dict[str, int], int, int, int, int, int, bool],
    /,
) -> None: ...
def context(
    forest: Any,
    key: str,
    window_ms: int,
    row_type: Callable[..., Any],
    ancestor_depth: int,
    max_descendants: int,
    /,
) -> Any: ...
def contexts(
    rows: Sequence[tuple[Any, Any]],
    window_ms: int,
    row_type: Callable[..., Any],
    ancestor_depth: int,
    max_descendants: int,
    /,
) -> list[Any]: ...
def reads_rings() -> bool: ...
