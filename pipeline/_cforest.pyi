"""Type stub of the optional C extension built from pipeline/_cforest.c (see pipeline.tree)."""

from collections.abc import Callable, Collection, Sequence
from typing import Any

_Starts = tuple[
    Callable[[str], tuple[int, ...]], Callable[[str], int], Callable[..., Any] | None, Callable[[str], int]
]  # child_codes, indicator_mask, DeviceForest._new_node or None, lone_mask

CODES_CACHE_ENTRIES: int
CODES_CACHE_CHARS: int

def fold(
    forest: Any,
    events: Sequence[Any],
    start: int,
    changed: list[tuple[str, str, bool]] | dict[tuple[str, str, bool], None],
    codes_by_kind: dict[str, Callable[[Any], tuple[int, ...]]],
    strong: Collection[int],
    generic: Collection[int],
    caches: dict[str, tuple[Callable[[Any], tuple[int, ...]], tuple[str, ...], dict[Any, Any]]] | None = None,
    starts: _Starts | None = None,
    /,
) -> int: ...
def rows(
    pending: Sequence[tuple[str, str, bool]],
    forests: dict[str, Any],
    context_up: int,
    anchors: Collection[Any],
    /,
) -> list[tuple[Any, Any]]: ...
def apply_touches(lru: Any, touched: list[Any], /) -> None: ...
def defer_touches(on: object = ..., /) -> bool: ...
def reads_rings() -> bool: ...
