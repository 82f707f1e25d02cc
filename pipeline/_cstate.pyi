"""Type stub of the optional C extension built from pipeline/_cstate.c (see pipeline.tree_state)."""

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pipeline._cring import Ring

def evidence_tail(evidence: Sequence[int] | Ring, n: int, /) -> bytes: ...
def raw_b64(raw: bytes, since_ms: int, code_bits: int, /) -> str: ...
def row_json(
    fields: tuple[Any, ...], raw: bytes, since_ms: int, code_bits: int, conns: Iterable[Any], notable: bytes,
    codes: dict[int, int], /,
) -> bytes | None: ...
def encode_rows(
    nodes: list[Any], previous: list[Any], since_ms: int, code_bits: int, event_type: type,
    encode: Callable[[Any], Any], row_type: type, epoch: int, /,
) -> list[Any]: ...
def reads_rings() -> bool: ...
