"""An alert's evidence as `BehaviorEvent` models, made from the decoder's events without validating again.

Why: an alert carries the notable events of its tree (2.6 on the pipeline benchmark's incidents),
and validating them into models was about a third of the alert's one pydantic call (~20 us warm,
more in place, of ~55). Those events are `schemas.fastcodec.FastEvent`s: the decoder made them only
after proving the record valid under the events contract (`fast_events` narrows what the contract
accepts; tests/unit/test_fastcodec.py, test_cfastcodec.py), and nothing else makes one. Their
values are therefore the values pydantic would hold after validating them: the Structs mirror the
models field for field and in order, sha256 is lower-case only (what `Sha256Hex` produces),
`platform` is the `Platform` enum, tuples are tuples, times are aware datetimes in [1990, 2100).
So the models are filled directly, as `BaseModel.model_construct` fills them (without its per-field
defaults pass: every field is present), and the alert's validation takes them as they are
(pydantic does not validate a model instance again: `revalidate_instances` is "never").

What this keeps: the alert's own fields (snapshot, scores, features, actions, times, names) are
still validated whole; a restored event (a plain dict from a checkpoint) was validated by the
detector (`pipeline.detect._events`), and anything that is neither a model nor a decoded event is
left to pydantic, which validates or refuses it. The evidence's JSON in the alert is still msgspec's
own encoding of the decoded event (`pipeline.incident._event_json`), which refuses text that is not
valid UTF-8. tests/unit/test_evidence.py holds every built model equal to, and dumping to the same
bytes as, the model pydantic validates from the same event, for every payload kind and time zone.
"""

from __future__ import annotations

from typing import Any

import msgspec
from pydantic import BaseModel

from schemas.events import PAYLOAD_TYPES, BehaviorEvent, EventKind
from schemas.fastcodec import FastEvent, FastPayload

__all__ = ["evidence_models"]

_new = object.__new__
_set_dict, _set_fields, _set_extra, _set_private = (
    vars(BaseModel)[name].__set__
    for name in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")
)  # the slots `model_construct` fills, set through their descriptors (half the cost of object.__setattr__)
_asdict = msgspec.structs.asdict
_FIELDS = tuple(FastEvent.__struct_fields__)
_PAYLOADS: dict[type[Any], type[Any]] = {
    struct: PAYLOAD_TYPES[EventKind(struct.kind)] for struct in FastPayload.__args__
}


def _same_fields() -> None:
    """The Structs must hold the models' fields in the models' order (the dump follows that order)."""
    if ("payload",) != _FIELDS[-1:] or tuple(BehaviorEvent.model_fields) != _FIELDS:
        raise TypeError(f"FastEvent's fields {_FIELDS} are not BehaviorEvent's")
    for struct, model in _PAYLOADS.items():
        fields = struct.__struct_fields__
        if tuple(model.model_fields) != ("kind", *fields):
            raise TypeError(f"{struct.__name__}'s fields {fields} are not {model.__name__}'s")


_same_fields()


def _model(cls: type[Any], values: dict[str, Any]) -> Any:
    """A model holding `values` (all its fields, in order, already valid), as `model_construct` makes it."""
    model = _new(cls)
    _set_dict(model, values)
    _set_fields(model, set(values))
    _set_extra(model, None)
    _set_private(model, None)
    return model


def behavior_event(event: FastEvent) -> BehaviorEvent:
    """The `BehaviorEvent` a decoded event stands for (equal to the one pydantic validates from it)."""
    payload = event.payload
    values = _asdict(event)  # the fields in order; the payload as its Struct
    values["payload"] = _model(_PAYLOADS[type(payload)], {"kind": payload.kind, **_asdict(payload)})
    event_model: BehaviorEvent = _model(BehaviorEvent, values)
    return event_model


def evidence_models(evidence: tuple[Any, ...] | list[Any]) -> list[Any]:
    """What the alert's validation reads for its evidence: a model as it is, a decoded event as the
    model it stands for, anything else as it is (pydantic validates or refuses it)."""
    return [behavior_event(e) if type(e) is FastEvent else e for e in evidence]
