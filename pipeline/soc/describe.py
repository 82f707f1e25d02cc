"""One-line descriptions of alert content (evidence events, actions, features) for every renderer.

Plain text only: the terminal renderer strips control characters from it and the HTML renderer
escapes it, so nothing here may try to be safe for one medium or the other.
"""

from __future__ import annotations

from schemas.alerts import ActionTaken, Alert, FeatureContribution, TreeNode
from schemas.events import (
    BehaviorEvent,
    DnsQuery,
    FileCreate,
    FileDelete,
    FileRename,
    FileWrite,
    ImageLoad,
    NetworkConnect,
    ProcessAccess,
    ProcessEnd,
    ProcessStart,
    RegistrySet,
    RemoteThread,
    Script,
)

ELLIPSIS = "…"


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marked with an ellipsis when cut."""
    if limit <= 0:
        return ""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + ELLIPSIS


def basename(path: str | None) -> str:
    """The last component of a Windows or POSIX path ("?" when unknown)."""
    if not path:
        return "?"
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or path


def node_title(node: TreeNode) -> str:
    """`powershell.exe (pid 4242)`."""
    pid = f" (pid {node.pid})" if node.pid is not None else ""
    return f"{basename(node.image)}{pid}"


def describe_event(event: BehaviorEvent) -> str:
    """What one evidence event shows, e.g. `network_connect 203.0.113.9:443 (evil.example)`."""
    return f"{event.payload.kind} {_payload_text(event)}".rstrip()


def _payload_text(event: BehaviorEvent) -> str:
    payload = event.payload
    if isinstance(payload, ProcessStart):
        return f"{payload.image} {payload.command_line}"
    if isinstance(payload, ProcessEnd):
        return f"exit {payload.exit_code}" if payload.exit_code is not None else ""
    if isinstance(payload, FileWrite) and payload.bytes_written is not None:
        return f"{payload.path} ({payload.bytes_written} bytes)"
    if isinstance(payload, FileCreate | FileWrite | FileDelete | ImageLoad):
        return payload.path
    if isinstance(payload, FileRename):
        return f"{payload.old_path} -> {payload.path}"
    if isinstance(payload, RegistrySet):
        value = f"\\{payload.value_name}" if payload.value_name else ""
        data = f" = {payload.data}" if payload.data else ""
        return f"{payload.operation} {payload.key}{value}{data}"
    if isinstance(payload, NetworkConnect):
        host = f" ({payload.dst_hostname})" if payload.dst_hostname else ""
        return f"{payload.protocol} {payload.dst_ip}:{payload.dst_port}{host}"
    if isinstance(payload, DnsQuery):
        return payload.query
    if isinstance(payload, ProcessAccess | RemoteThread):
        access = f" access 0x{payload.granted_access:x}" if isinstance(payload, ProcessAccess) else ""
        return f"{payload.target_image}{access}"
    if isinstance(payload, Script):
        return f"{payload.interpreter or 'script'}: {payload.content}"
    return ""


def describe_action(action: ActionTaken) -> str:
    """`kill_process_tree {M} [command c1]`, with `(audit: not sent)` in audit mode."""
    command = f" [command {action.command_id}]" if action.command_id else ""
    audited = " (audit: not sent)" if action.audited else ""
    return f"{action.action.value} {action.target}{command}{audited}"


def describe_feature(feature: FeatureContribution) -> str:
    """`lsass_access = 1 (+2.310)`."""
    return f"{feature.name} = {feature.value:g} ({feature.contribution:+.3f})"


def alert_host(alert: Alert) -> str:
    """The hostname when known, else the device id."""
    return alert.hostname or alert.device_id


def score_text(score: float) -> str:
    """Scores are shown with three decimals everywhere."""
    return f"{score:.3f}"
