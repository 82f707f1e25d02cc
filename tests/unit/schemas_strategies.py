"""Hypothesis strategies producing valid instances of every contract (shared by the schema tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from schemas.actions import ActionKind, ActionResult, Outcome
from schemas.alerts import (
    ActionTaken,
    Alert,
    AlertAction,
    FeatureContribution,
    ProcessTreeSnapshot,
    Tactic,
    TreeEdge,
    TreeNode,
    detection_name,
)
from schemas.commands import Command, CommandAction
from schemas.common import Mode
from schemas.deadletter import DeadLetter
from schemas.devices import DeviceRecord, Heartbeat
from schemas.events import (
    BehaviorEvent,
    DnsQuery,
    EventBatch,
    FileCreate,
    FileDelete,
    FileRename,
    FileWrite,
    ImageLoad,
    NetworkConnect,
    Platform,
    ProcessAccess,
    ProcessEnd,
    ProcessStart,
    RegistrySet,
    RemoteThread,
    Script,
)
from schemas.verdicts import ArtifactType, Disposition, Verdict, VerdictSource

device_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,24}", fullmatch=True)
identifiers = st.from_regex(r"[\x21-\x7e]{1,40}", fullmatch=True)
texts = st.text(max_size=40)  # any unicode, NUL included: free text keeps it on purpose
non_empty = st.text(min_size=1, max_size=40)
sha256s = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
pids = st.integers(0, 2**32 - 1)
ports = st.integers(0, 65535)
nonces = st.from_regex(r"[A-Za-z0-9_-]{16,40}", fullmatch=True)
group_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
versions = st.from_regex(r"[0-9a-z.+-]{1,20}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
probabilities = st.floats(0.0, 1.0)
_zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7, minutes=-30))])
# ends a month and a half before the contracts' latest time (2100-01-01 UTC), so a time drawn here plus
# an expiry of up to 30 days (verdicts; 14 for commands) and a -7:30 offset is still a valid record
times = st.datetimes(datetime(1990, 1, 2), datetime(2099, 11, 15), timezones=_zones)


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


payloads = st.one_of(
    st.builds(
        ProcessStart,
        image=non_empty,
        command_line=texts,
        sha256=opt(sha256s),
        user=opt(texts),
        integrity_level=opt(texts),
        uid=opt(pids),
        pid=opt(pids),
        ppid=opt(pids),
        parent_image=opt(texts),
        parent_command_line=opt(texts),
        cwd=opt(texts),
    ),
    st.builds(ProcessEnd, pid=opt(pids), exit_code=opt(st.integers(-(2**63), 2**63 - 1))),
    st.builds(FileCreate, path=non_empty, sha256=opt(sha256s)),
    st.builds(FileWrite, path=non_empty, sha256=opt(sha256s), bytes_written=opt(st.integers(0, 2**63 - 1))),
    st.builds(FileDelete, path=non_empty, sha256=opt(sha256s)),
    st.builds(FileRename, path=non_empty, old_path=non_empty),
    st.builds(
        RegistrySet,
        key=non_empty,
        value_name=opt(texts),
        data=opt(texts),
        operation=st.sampled_from(["set_value", "create_key", "delete_key", "delete_value", "rename_key"]),
    ),
    st.builds(
        NetworkConnect,
        dst_ip=st.ip_addresses().map(str),
        dst_port=ports,
        src_ip=opt(st.ip_addresses().map(str)),
        src_port=opt(ports),
        protocol=st.sampled_from(["tcp", "udp"]),
        outbound=st.booleans(),
        dst_hostname=opt(texts),
    ),
    st.builds(DnsQuery, query=non_empty, answers=st.lists(texts, max_size=3).map(tuple)),
    st.builds(ImageLoad, path=non_empty, sha256=opt(sha256s), signed=opt(st.booleans()), signer=opt(texts)),
    st.builds(
        ProcessAccess,
        target_process_key=opt(identifiers),
        target_image=non_empty,
        granted_access=st.integers(0, 2**32 - 1),
        call_trace=opt(texts),
    ),
    st.builds(
        RemoteThread,
        target_process_key=opt(identifiers),
        target_image=non_empty,
        start_address=opt(st.from_regex(r"0x[0-9a-f]{1,16}", fullmatch=True)),
    ),
    st.builds(Script, content=texts, interpreter=opt(texts), path=opt(texts)),
)


def events(device_id: st.SearchStrategy[str] = device_ids) -> st.SearchStrategy[BehaviorEvent]:
    return st.builds(
        BehaviorEvent,
        event_id=identifiers,
        device_id=device_id,
        seq=st.integers(0, 2**63 - 1),
        ts=times,
        platform=st.sampled_from(Platform),
        process_key=identifiers,
        parent_process_key=opt(identifiers),
        image=opt(texts),
        payload=payloads,
    )


@st.composite
def batches(draw: st.DrawFn) -> EventBatch:
    device = draw(device_ids)
    return EventBatch.of(draw(st.lists(events(st.just(device)), min_size=1, max_size=5)))


nodes = st.builds(
    TreeNode,
    process_key=identifiers,
    parent_process_key=opt(identifiers),
    image=opt(texts),
    command_line=opt(texts),
    sha256=opt(sha256s),
    user=opt(texts),
    pid=opt(pids),
    started_at=opt(times),
    ended_at=opt(times),
    scored=st.booleans(),
)


@st.composite
def alerts(draw: st.DrawFn) -> Alert:
    platform, tactic = draw(st.sampled_from(Platform)), draw(st.sampled_from(Tactic))
    first = draw(times)
    tree_nodes = draw(st.lists(nodes, min_size=1, max_size=4))
    return Alert(
        alert_id=draw(identifiers),
        device_id=draw(device_ids),
        hostname=draw(opt(texts)),
        platform=platform,
        detection_name=detection_name(
            platform, tactic, draw(st.from_regex(r"[A-Z][A-Za-z0-9_]{0,8}", fullmatch=True))
        ),
        tactic=tactic,
        techniques=tuple(
            draw(st.lists(st.from_regex(r"T[0-9]{4}(\.[0-9]{3})?", fullmatch=True), max_size=3))
        ),
        score=draw(probabilities),
        tactic_scores=draw(st.dictionaries(st.sampled_from(Tactic), probabilities, max_size=3)),
        threshold=draw(opt(probabilities)),
        model_version=draw(versions),
        feature_version=draw(versions),
        artifact_sha256=draw(opt(sha256s)),
        artifact_path=draw(opt(texts)),
        process_tree=ProcessTreeSnapshot(
            root_process_key=tree_nodes[0].process_key,
            nodes=tuple(tree_nodes),
            edges=tuple(
                draw(st.lists(st.builds(TreeEdge, parent=identifiers, child=identifiers), max_size=3))
            ),
            evidence=tuple(draw(st.lists(events(), max_size=2))),
        ),
        top_features=tuple(
            draw(
                st.lists(
                    st.builds(
                        FeatureContribution,
                        name=st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
                        value=finite,
                        contribution=finite,
                    ),
                    max_size=3,
                )
            )
        ),
        mode=draw(st.sampled_from(Mode)),
        actions=tuple(
            draw(
                st.lists(
                    st.builds(
                        ActionTaken,
                        action=st.sampled_from(AlertAction),
                        target=texts,
                        command_id=opt(identifiers),
                        audited=st.booleans(),
                    ),
                    max_size=2,
                )
            )
        ),
        first_seen=first,
        last_seen=first + draw(st.timedeltas(timedelta(0), timedelta(hours=5))),
        created_at=draw(times),
        summary=draw(opt(non_empty)),
    )


@st.composite
def verdicts(draw: st.DrawFn) -> Verdict:
    issued = draw(times)
    expires = draw(opt(st.timedeltas(timedelta(seconds=1), timedelta(days=30)).map(lambda d: issued + d)))
    scope = draw(st.just("fleet") | group_names.map("group:{}".format) | device_ids.map("device:{}".format))
    return Verdict(
        artifact_id=draw(sha256s),
        artifact_type=ArtifactType.FILE,
        disposition=draw(st.sampled_from(Disposition)),
        scope=scope,
        reason=draw(texts),
        source=draw(st.sampled_from(VerdictSource)),
        alert_id=draw(opt(identifiers)),
        model_version=draw(opt(versions)),
        issued_at=issued,
        expires_at=expires,
    )


@st.composite
def commands(draw: st.DrawFn) -> Command:
    action = draw(st.sampled_from(CommandAction))
    issued = draw(times)
    return Command(
        command_id=draw(identifiers),
        device_id=draw(device_ids),
        action=action,
        process_key=draw(identifiers if action is CommandAction.KILL_PROCESS_TREE else opt(identifiers)),
        pid=draw(opt(pids)),
        image=draw(opt(texts)),
        path=draw(non_empty if action is CommandAction.QUARANTINE_FILE else opt(non_empty)),
        sha256=draw(sha256s if action is not CommandAction.KILL_PROCESS_TREE else opt(sha256s)),
        alert_id=draw(opt(identifiers)),
        reason=draw(texts),
        nonce=draw(nonces),
        issued_at=issued,
        expires_at=issued + draw(st.timedeltas(timedelta(seconds=1), timedelta(days=14))),
    )


action_results = st.builds(
    ActionResult,
    result_id=identifiers,
    device_id=device_ids,
    action=st.sampled_from(ActionKind),
    outcome=st.sampled_from(Outcome),
    command_id=opt(identifiers),
    artifact_id=opt(sha256s),
    process_key=opt(identifiers),
    pid=opt(pids),
    path=opt(non_empty),
    reason=texts,
    error_class=opt(st.from_regex(r"[A-Za-z]{1,30}", fullmatch=True)),
    latency_ms=opt(st.floats(0, 1e9)),
    ts=times,
)
heartbeats = st.builds(
    Heartbeat,
    device_id=device_ids,
    hostname=texts,
    platform=st.sampled_from(Platform),
    os_version=opt(texts),
    group=opt(group_names),
    mode=st.sampled_from(Mode),
    agent_version=versions,
    blocklist_version=st.integers(0, 2**40),
    blocklist_size=st.integers(0, 2**20),
    spooled_events=st.integers(0, 2**30),
    ts=times,
)
device_records = st.builds(
    DeviceRecord,
    device_id=device_ids,
    hostname=texts,
    platform=st.sampled_from(Platform),
    os_version=opt(texts),
    group=opt(group_names),
    mode_override=opt(st.sampled_from(Mode)),
    effective_mode=st.sampled_from(Mode),
    agent_version=versions,
    public_key=opt(st.from_regex(r"[A-Za-z0-9_-]{43}", fullmatch=True)),
    enrolled_at=times,
    last_seen=times,
    blocklist_version=st.integers(0, 2**40),
    blocklist_size=st.integers(0, 2**20),
)


@st.composite
def dead_letters(draw: st.DrawFn) -> DeadLetter:
    from schemas.errors import ValidationFailed

    error = ValidationFailed("bad", field_path=draw(opt(texts)), device_id=draw(opt(texts)))
    return DeadLetter.for_record(
        draw(st.binary(max_size=200)),
        error,
        topic="ringfence.events.v1",
        partition=draw(st.integers(0, 99)),
        offset=draw(st.integers(0, 2**50)),
        now=draw(times),
        key=draw(opt(st.binary(max_size=20))),
    )


ALL_MODELS: dict[str, st.SearchStrategy[Any]] = {
    "behavior_event": events(),
    "event_batch": batches(),
    "alert": alerts(),
    "verdict": verdicts(),
    "command": commands(),
    "action_result": action_results,
    "heartbeat": heartbeats,
    "device_record": device_records,
    "dead_letter": dead_letters(),
}
"""Contract name (as in `schemas.jsonschema.CONTRACTS`) -> strategy of valid instances."""
