"""Types of the optional C extension schemas/_cfastcodec.c (see schemas/fastcodec.py)."""

from collections.abc import Mapping
from typing import Any

FIELDS: dict[str, tuple[str, ...]]
"""Payload kind -> its fields in order, as the C proof walks them (held to the Structs by a test)."""

def proven(record: bytes, max_events: int, max_chars: int, /) -> bool:
    """The record is an events batch exactly as msgspec writes it, valid under `schemas.fastcodec`'s
    Structs and checks, with at most `max_events` events and `max_chars` characters per text field."""

def decode(record: bytes, max_events: int, max_chars: int, /) -> tuple[Any, ...] | None:
    """The record's events built as msgspec builds them when `proven` says yes, else None."""

def configure(
    event_type: type[Any], payload_types: Mapping[str, type[Any]], platforms: tuple[Any, Any], /
) -> None:
    """The Struct types and Platform members (windows, linux) that `decode` builds."""
