"""Tolerant parsers for the scalar values found in Windows event records.

Shippers disagree on types (a ProcessId is `3428`, `"3428"` or `"0xd64"`), on spelling (`{GUID}` or
`GUID`, upper or lower case) and on "absent" (`"-"`, `""`, missing). Every function here returns
`None` for input it cannot read instead of raising, so the mapping decides per field whether a
missing value is fatal for the record (a typed skip) or just an unknown.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime

_ZERO_GUID = "00000000-0000-0000-0000-000000000000"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_DEVICE_BAD_CHARS = re.compile(r"[^a-z0-9._:@-]+")
_LEADING_NON_ALNUM = re.compile(r"^[^a-z0-9]+")
_MAX_ID_CHARS = 128
PROCESS_KEY_HEX_CHARS = 32  # same construction and length as the Linux source's process keys

# Mandatory-label SIDs of Security 4688 -> the integrity names Sysmon writes in IntegrityLevel.
_INTEGRITY_BY_SID = {
    "S-1-16-0": "Untrusted",
    "S-1-16-4096": "Low",
    "S-1-16-8192": "Medium",
    "S-1-16-8448": "MediumPlus",
    "S-1-16-12288": "High",
    "S-1-16-16384": "System",
    "S-1-16-20480": "Protected",
}


def text(value: object) -> str | None:
    """A string form of a scalar; containers and None give None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def opt_text(value: object) -> str | None:
    """Like `text`, but Windows' placeholders for "nothing" (`-`, empty) are None."""
    result = text(value)
    if result is None or result.strip() in ("", "-"):
        return None
    return result


def parse_int(value: object) -> int | None:
    """An integer from int, decimal text or `0x` hex text (Security log ids, access masks)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    candidate = value.strip().lower()
    try:
        if candidate.startswith("0x"):
            return int(candidate[2:], 16)
        return int(candidate, 10) if candidate.isdigit() else None
    except ValueError:
        return None


def parse_hex(value: object) -> int | None:
    """An integer that the log writes in hex, with or without `0x` (GrantedAccess, 4688 ids)."""
    if isinstance(value, str) and not value.strip().lower().startswith("0x"):
        try:
            return int(value.strip(), 16)
        except ValueError:
            return None
    return parse_int(value)


def parse_ts(value: object) -> datetime | None:
    """An aware UTC datetime from ISO 8601 text (`Z`, space separator, 7 fraction digits all occur), or
    from a Unix time as exporters write it: a number or digits (seconds, milliseconds, microseconds or
    nanoseconds, told by size) or .NET's `/Date(<ms>)/` (PowerShell's `ConvertTo-Json`).

    Naive times are taken as UTC: Sysmon's `UtcTime` and `TimeCreated` are UTC by definition.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _epoch(value)
    raw = text(value)
    if raw is None or not raw.strip():
        return None
    candidate = raw.strip()
    dotnet = _DOTNET_DATE.fullmatch(candidate)
    if dotnet is not None:
        return _epoch(int(dotnet.group(1)) / 1000.0)
    if candidate.isascii() and candidate.isdigit():
        return _epoch(int(candidate) if len(candidate) <= 20 else math.inf)
    if candidate.endswith(" UTC"):
        candidate = candidate[:-4]
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


_DOTNET_DATE = re.compile(r"/Date\((-?\d{1,16})([+-]\d{4})?\)/")
_EPOCH_DIVISORS = ((1e11, 1.0), (1e14, 1e3), (1e17, 1e6))  # below the bound: seconds, ms, us; else ns


def _epoch(value: float) -> datetime | None:
    """A Unix time in seconds, milliseconds, microseconds or nanoseconds (by size), as UTC; None for
    anything no clock gives (not positive, not finite, past year 9999)."""
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    divisor = next((d for bound, d in _EPOCH_DIVISORS if number < bound), 1e9)
    try:
        return datetime.fromtimestamp(number / divisor, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def sha256_from_hashes(value: object) -> str | None:
    """The SHA256 of Sysmon's `Hashes` field (`SHA1=..,MD5=..,SHA256=..,IMPHASH=..`), lower case."""
    raw = text(value)
    if raw is None:
        return None
    if _HEX64.match(raw.strip()):
        return raw.strip().lower()
    for part in raw.split(","):
        name, _, digest = part.partition("=")
        if name.strip().upper() == "SHA256" and _HEX64.match(digest.strip()):
            return digest.strip().lower()
    return None


def normalise_guid(value: object) -> str | None:
    """A Sysmon GUID in one spelling: lower case, no braces; the all-zero GUID means unknown."""
    raw = opt_text(value)
    if raw is None:
        return None
    guid = raw.strip().strip("{}").strip().lower()
    if not guid or guid == _ZERO_GUID:
        return None
    return guid


def device_id_from_host(value: object) -> str | None:
    """A device id from a host name: lower case, characters outside the contract's set replaced.

    The name is an identifier only. It names the device and must never become a model feature
    (lab host names give the training labels away).
    """
    raw = opt_text(value)
    if raw is None:
        return None
    cleaned = _DEVICE_BAD_CHARS.sub("-", raw.strip().lower())
    cleaned = _LEADING_NON_ALNUM.sub("", cleaned)[:_MAX_ID_CHARS]
    return cleaned or None


def integrity_from_label(value: object) -> str | None:
    """Security 4688's MandatoryLabel SID as an integrity level name, else the SID itself."""
    raw = opt_text(value)
    if raw is None:
        return None
    return _INTEGRITY_BY_SID.get(raw.strip().upper(), raw.strip())


def parse_bool(value: object) -> bool | None:
    """`true`/`false` in any case, or a JSON boolean."""
    if isinstance(value, bool):
        return value
    raw = text(value)
    if raw is None:
        return None
    lowered = raw.strip().lower()
    return True if lowered == "true" else False if lowered == "false" else None


def dns_answers(value: object) -> tuple[str, ...]:
    """Sysmon 22 `QueryResults` (`type:  5 cname.example;::ffff:1.2.3.4;`) as plain answers."""
    raw = opt_text(value)
    if raw is None:
        return ()
    answers: list[str] = []
    for part in raw.split(";"):
        item = part.strip()
        if item.startswith("type:"):
            item = item.split()[-1] if len(item.split()) > 2 else ""
        if item.startswith("::ffff:"):
            item = item[len("::ffff:") :]
        if item:
            answers.append(item)
    return tuple(answers[:1024])


def split_registry_value(target: str) -> tuple[str, str | None]:
    """`HKLM\\...\\Run\\evil` -> (`HKLM\\...\\Run`, `evil`); a target without a backslash is a key."""
    key, sep, name = target.rpartition("\\")
    if not sep or not key:
        return target, None
    return key, name


def stable_id(*parts: str) -> str:
    """A deterministic 128-bit hex id from its parts (idempotent re-ingestion)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


def pid_process_key(device_id: str, pid: int, start_time_ns: int) -> str:
    """A process key when there is no GUID (Security 4688): hash of device, pid and start time."""
    digest = hashlib.sha256(f"{device_id}:{pid}:{start_time_ns}".encode())
    return digest.hexdigest()[:PROCESS_KEY_HEX_CHARS]


def epoch_ns(moment: datetime) -> int:
    """Nanoseconds since the Unix epoch of an aware datetime (microsecond precision)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
