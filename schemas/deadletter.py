"""Dead letters on `ringfence.events.dlq.v1`: a rejected record, why, and where it came from.

Bad input must never stop the pipeline nor vanish: the decode stage wraps the original bytes and the
typed error (class, message, field path, ids) with the source coordinates, so an operator can find,
fix and replay it. The raw bytes are kept up to `MAX_RAW_BYTES` (base64 grows them by a third and
the DLQ record must still fit the broker's message limit); longer values are truncated, and their
full size and sha256 still identify them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from schemas.common import (
    SCHEMA_VERSION,
    Contract,
    Count,
    SchemaVersion,
    Sha256Hex,
    ShortText,
    UtcTimestamp,
)
from schemas.errors import ContractError, DecodeError

MAX_RAW_BYTES = 512 * 1024
_MESSAGE_CHARS = 4096

Base64 = Annotated[
    str, StringConstraints(max_length=(MAX_RAW_BYTES * 4) // 3 + 4, pattern=r"^[A-Za-z0-9+/]*={0,2}$")
]


class DeadLetter(Contract):
    """One rejected record (key: the source record's key, usually the device_id)."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    raw_b64: Base64  # the source record value (first MAX_RAW_BYTES), standard base64
    raw_size: Count  # size of the full source value in bytes
    raw_sha256: Sha256Hex  # of the full source value
    raw_truncated: bool = False
    key_b64: Base64 | None = None  # the source record key
    error_class: Annotated[str, StringConstraints(min_length=1, max_length=64)]  # e.g. "UnknownKind"
    error_message: ShortText
    field_path: ShortText | None = None
    device_id: ShortText | None = None
    event_id: ShortText | None = None
    source_topic: Annotated[str, StringConstraints(min_length=1, max_length=249)]
    source_partition: Annotated[int, Field(strict=True, ge=0, le=(1 << 31) - 1)]
    source_offset: Count
    ts: UtcTimestamp  # when it was dead-lettered

    @classmethod
    def for_record(
        cls, raw: bytes, error: Exception, *, topic: str, partition: int, offset: int, now: datetime,
        key: bytes | None = None,
    ) -> DeadLetter:
        """Wrap a rejected record; `error` is usually a ContractError but any exception is recorded."""
        context = error.context() if isinstance(error, ContractError) else {}
        return cls(
            raw_b64=base64.b64encode(raw[:MAX_RAW_BYTES]).decode("ascii"), raw_size=len(raw),
            raw_sha256=hashlib.sha256(raw).hexdigest(), raw_truncated=len(raw) > MAX_RAW_BYTES,
            key_b64=base64.b64encode(key[:MAX_RAW_BYTES]).decode("ascii") if key is not None else None,
            error_class=type(error).__name__[:64], error_message=str(error)[:_MESSAGE_CHARS],
            field_path=context.get("field_path"), device_id=context.get("device_id"),
            event_id=context.get("event_id"), source_topic=topic, source_partition=partition,
            source_offset=offset, ts=now,
        )

    def raw(self) -> bytes:
        """The (possibly truncated) original record value."""
        try:
            return base64.b64decode(self.raw_b64, validate=True)
        except binascii.Error as exc:
            raise DecodeError(f"raw_b64 is not base64: {exc}", field_path="raw_b64") from None
