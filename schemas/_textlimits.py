"""Fast check of the configurable string limit on validated events (private to `schemas.codec`).

pydantic-core enforces each field's *static* maximum length natively; `Limits.max_string_chars`
is a runtime setting, so it is checked after validation. Doing that over every field of every event
costs about a third of validation itself; only the free-text fields (static limit above
`_SHORT_CHARS`) can exceed it, so they are found once per model by introspection and read with
`operator.attrgetter`, which keeps the check near a tenth of validation.
"""

from __future__ import annotations

import operator
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from schemas.events import PAYLOAD_TYPES, BehaviorEvent

_SHORT_CHARS = 4096  # fields capped at or below this never matter: the configurable limit is larger
_Getter = Callable[[Any], tuple[Any, ...]]


def _cap(metadata: Sequence[Any]) -> int:
    caps = [m.max_length for m in metadata if getattr(m, "max_length", None) is not None]
    return min(caps) if caps else sys.maxsize


def _text_kind(annotation: Any, metadata: Sequence[Any]) -> str | None:
    """"str" for a long string type, "tuple" for a tuple of them, None otherwise."""
    if annotation is str:
        return "str" if _cap(metadata) > _SHORT_CHARS else None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _text_kind(args[0], [*metadata, *args[1:]])
    if origin is Union or origin is types.UnionType:
        kinds = {_text_kind(arg, metadata) for arg in args}
        return "str" if "str" in kinds else "tuple" if "tuple" in kinds else None
    if origin is tuple and args and _text_kind(args[0], ()) == "str":
        return "tuple"
    return None


def _fields(model: type[BaseModel], kind: str) -> tuple[str, ...]:
    return tuple(name for name, field in model.model_fields.items()
                 if _text_kind(field.annotation, field.metadata) == kind)


def _getter(names: tuple[str, ...]) -> _Getter:
    if not names:
        return lambda _: ()
    if len(names) == 1:
        single = operator.attrgetter(names[0])
        return lambda model: (single(model),)
    return operator.attrgetter(*names)


_ENVELOPE = _getter(_fields(BehaviorEvent, "str"))
_PAYLOAD = {model: _getter(_fields(model, "str")) for model in PAYLOAD_TYPES.values()}
_PAYLOAD_TUPLES = {model: _fields(model, "tuple") for model in PAYLOAD_TYPES.values()}


def first_long_text(
    events: Sequence[BehaviorEvent], max_chars: int
) -> tuple[int, tuple[str | int, ...], int] | None:
    """(event index, field path, length) of the first string longer than `max_chars`, or None.

    One call per batch with the loop inside: per-event function calls would double its cost.
    """
    envelope, payloads, tuples = _ENVELOPE, _PAYLOAD, _PAYLOAD_TUPLES
    for index, event in enumerate(events):
        payload = event.payload
        kind = type(payload)
        for value in (*envelope(event), *payloads[kind](payload)):
            if value is not None and len(value) > max_chars:
                return (index, *next(long_texts(event, max_chars)))
        for name in tuples[kind]:
            if any(len(item) > max_chars for item in getattr(payload, name)):
                return (index, *next(long_texts(event, max_chars)))
    return None


def long_texts(event: BehaviorEvent, max_chars: int) -> Iterator[tuple[tuple[str | int, ...], int]]:
    """Path and length of every string in `event` longer than `max_chars` (slow; after has_long_text)."""
    for prefix, model in (((), event), (("payload",), event.payload)):
        for name, value in model.__dict__.items():
            if isinstance(value, str) and len(value) > max_chars:
                yield (*prefix, name), len(value)
            elif isinstance(value, tuple):
                for index, item in enumerate(value):
                    if isinstance(item, str) and len(item) > max_chars:
                        yield (*prefix, name, index), len(item)
