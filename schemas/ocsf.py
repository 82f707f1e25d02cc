"""Alert -> OCSF Detection Finding (class 2004), so SIEMs that speak OCSF ingest alerts unchanged.

OCSF is the schema most SIEM connectors (Security Lake, Splunk, Sentinel via ASIM mapping) already
understand; emitting it beats asking every integrator to map our Alert. The mapping is a pure
function returning plain JSON-ready dicts; `OCSF_VERSION` names the schema version targeted.
"""

from __future__ import annotations

from datetime import datetime
from importlib import metadata
from typing import Any

from schemas.alerts import ATTACK_TACTIC_IDS, Alert, Tactic, TreeNode
from schemas.common import Mode, Platform
from schemas.events import (
    BehaviorEvent,
    DnsQuery,
    FileCreate,
    FileDelete,
    FileRename,
    FileWrite,
    NetworkConnect,
)

OCSF_VERSION = "1.3.0"
CLASS_UID = 2004  # Detection Finding
CATEGORY_UID = 2  # Findings
ACTIVITY_CREATE = 1
TYPE_UID = CLASS_UID * 100 + ACTIVITY_CREATE  # 200401
ANALYTIC_LEARNING = 4  # analytic.type_id: Learning (ML/DL)
STATUS_NEW = 1
_OS = {Platform.WINDOWS: ("Windows", 100), Platform.LINUX: ("Linux", 200)}
_SEVERITIES = ((0.98, 5, "Critical"), (0.9, 4, "High"), (0.7, 3, "Medium"), (0.0, 2, "Low"))


def severity_of(score: float) -> tuple[int, str]:
    """OCSF severity_id and name for a model score."""
    return next((sid, name) for floor, sid, name in _SEVERITIES if score >= floor)


def alert_to_ocsf(alert: Alert, product_version: str | None = None) -> dict[str, Any]:
    """The Detection Finding for `alert` (activity Create, status New)."""
    severity_id, severity = severity_of(alert.score)
    return {
        "class_uid": CLASS_UID, "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID, "category_name": "Findings",
        "activity_id": ACTIVITY_CREATE, "activity_name": "Create",
        "type_uid": TYPE_UID, "type_name": "Detection Finding: Create",
        "severity_id": severity_id, "severity": severity,
        "time": _ms(alert.created_at),
        "status_id": STATUS_NEW, "status": "New",
        "confidence_score": round(alert.score * 100),
        "action_id": 2 if alert.mode is Mode.BLOCK and alert.actions else 1,  # 2 Denied, 1 Allowed
        "action": "Denied" if alert.mode is Mode.BLOCK and alert.actions else "Allowed",
        "metadata": _metadata(alert, product_version),
        "finding_info": _finding_info(alert),
        "device": _device(alert),
        "evidences": _evidences(alert),
        "unmapped": {"mode": alert.mode.value, "score": alert.score, "actions": [
            action.model_dump(mode="json") for action in alert.actions
        ]},
    }


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _metadata(alert: Alert, product_version: str | None) -> dict[str, Any]:
    return {
        "version": OCSF_VERSION,
        "uid": alert.alert_id,
        "product": {
            "name": "ringfence", "vendor_name": "ringfence", "version": product_version or _version()
        },
        "labels": [f"model:{alert.model_version}", f"features:{alert.feature_version}"],
    }


def _version() -> str:
    try:
        return metadata.version("ringfence")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _finding_info(alert: Alert) -> dict[str, Any]:
    return {
        "uid": alert.alert_id,
        "title": alert.detection_name,
        "desc": alert.summary or f"{alert.detection_name} on {alert.hostname or alert.device_id}",
        "types": [alert.tactic.value],
        "created_time": _ms(alert.created_at),
        "first_seen_time": _ms(alert.first_seen),
        "last_seen_time": _ms(alert.last_seen),
        "analytic": {
            "name": alert.detection_name, "uid": alert.variant, "type_id": ANALYTIC_LEARNING,
            "type": "Learning (ML/DL)", "version": alert.model_version,
        },
        "attacks": _attacks(alert),
    }


def _attacks(alert: Alert) -> list[dict[str, Any]]:
    tactic = _tactic(alert.tactic)
    attacks = [{"technique": {"uid": technique}, **tactic} for technique in alert.techniques]
    return attacks or ([tactic] if tactic else [])


def _tactic(tactic: Tactic) -> dict[str, Any]:
    if tactic not in ATTACK_TACTIC_IDS:
        return {}
    uid, name = ATTACK_TACTIC_IDS[tactic]
    return {"tactic": {"uid": uid, "name": name}}


def _device(alert: Alert) -> dict[str, Any]:
    os_name, os_type = _OS[alert.platform]
    device: dict[str, Any] = {
        "uid": alert.device_id, "type_id": 0, "os": {"name": os_name, "type_id": os_type}
    }
    if alert.hostname:
        device["hostname"] = alert.hostname
    return device


def _evidences(alert: Alert) -> list[dict[str, Any]]:
    tree = alert.process_tree
    scored = [node for node in tree.nodes if node.scored or node.process_key == tree.root_process_key]
    evidences = [{"process": _process(node)} for node in scored[:1]]
    evidences.extend(_event_evidence(event) for event in tree.evidence)
    return evidences


def _process(node: TreeNode) -> dict[str, Any]:
    process: dict[str, Any] = {"uid": node.process_key}
    if node.pid is not None:
        process["pid"] = node.pid
    if node.command_line:
        process["cmd_line"] = node.command_line
    if node.image:
        process["file"] = _file(node.image, node.sha256)
    if node.user:
        process["user"] = {"name": node.user}
    if node.parent_process_key:
        process["parent_process"] = {"uid": node.parent_process_key}
    return process


def _file(path: str, sha256: str | None) -> dict[str, Any]:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    file: dict[str, Any] = {"path": path, "name": name, "type_id": 1}
    if sha256:
        file["hashes"] = [{"algorithm_id": 3, "algorithm": "SHA-256", "value": sha256}]
    return file


def _event_evidence(event: BehaviorEvent) -> dict[str, Any]:
    evidence: dict[str, Any] = {"process": {"uid": event.process_key}}
    if event.image:
        evidence["process"]["file"] = _file(event.image, None)
    payload = event.payload
    if isinstance(payload, FileCreate | FileWrite | FileDelete):
        evidence["file"] = _file(payload.path, payload.sha256)
    elif isinstance(payload, FileRename):
        evidence["file"] = _file(payload.path, None)
    elif isinstance(payload, NetworkConnect):
        evidence["dst_endpoint"] = {"ip": payload.dst_ip, "port": payload.dst_port}
        if payload.dst_hostname:
            evidence["dst_endpoint"]["hostname"] = payload.dst_hostname
    elif isinstance(payload, DnsQuery):
        evidence["query"] = {"hostname": payload.query}
    evidence["data"] = {"event_id": event.event_id, "kind": payload.kind, "ts": event.ts.isoformat()}
    return evidence
