"""Types of the optional C extension schemas/_cfastcodec.c (see schemas/fastcodec.py)."""

FIELDS: dict[str, tuple[str, ...]]
"""Payload kind -> its fields in order, as the C proof walks them (held to the Structs by a test)."""

def proven(record: bytes, max_events: int, max_chars: int, /) -> bool:
    """The record is an events batch exactly as msgspec writes it, valid under `schemas.fastcodec`'s
    Structs and checks, with at most `max_events` events and `max_chars` characters per text field."""
