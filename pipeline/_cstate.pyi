"""Type stub of the optional C extension built from pipeline/_cstate.c (see pipeline.tree_state)."""

from collections.abc import Iterable, Sequence
from typing import Any

def touch(touched: set[Any], events: Sequence[Any], nodes: dict[str, Any] | None, /) -> None: ...
def evidence_b64(evidence: Iterable[int], since_ms: int, code_bits: int, /) -> str: ...
