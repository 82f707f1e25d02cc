"""The console's pages as server-rendered HTML: alert list, alert page, fleet view.

Every value that came from a record is passed through `esc` before it is placed in markup, and the
pages carry no inline script at all (the console sends a Content-Security-Policy that forbids it),
so a hostile command line such as `<script>...</script>` is shown as text and can never run. The
only script is `/static/console.js`: live updates (it fills new rows with `textContent`) and the
authenticated action forms.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from pipeline.soc.actions import quarantined_files
from pipeline.soc.console_state import Fleet
from pipeline.soc.describe import alert_host, basename, describe_event, score_text
from pipeline.soc.svg import esc, tree_svg
from schemas.alerts import Alert
from schemas.common import Mode


def page(title: str, body: str, *, active: str = "") -> str:
    """A full HTML document around `body` (already safe markup)."""
    nav = "".join(
        f'<a href="{href}"{" class=active" if name == active else ""}>{name.title()}</a>'
        for name, href in (("alerts", "/"), ("fleet", "/fleet"))
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · ringfence</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head><body data-page="{esc(active)}">
<header><strong class="brand">ringfence</strong><nav>{nav}</nav>
<form id="login" class="login"><input type="password" id="token" autocomplete="off"
 placeholder="console token" aria-label="console token"><button type="submit">Sign in</button></form>
<span id="whoami" class="whoami"></span><button id="logout" type="button" hidden>Sign out</button>
</header>
<main>{body}</main>
<div id="action-status" role="status" aria-live="polite"></div>
</body></html>
"""


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def alert_url(alert_id: str) -> str:
    """The alert page's path (the id percent-encoded: ids are any printable ASCII)."""
    return "/alerts/" + quote(alert_id, safe="")


def alert_summary(alert: Alert) -> dict[str, Any]:
    """What a live-list row shows, as JSON for the event stream (the page inserts it as text)."""
    return {
        "alert_id": alert.alert_id, "time": _time(alert.created_at), "host": alert_host(alert),
        "device_id": alert.device_id, "score": score_text(alert.score), "tactic": alert.tactic.value,
        "detection_name": alert.detection_name, "mode": alert.mode.value,
        "url": alert_url(alert.alert_id),
    }


_ALERT_COLUMNS = ("time", "host", "score", "tactic", "detection_name", "mode")


def alert_row(alert: Alert) -> str:
    summary = alert_summary(alert)
    cells = "".join(f'<td class="{name}">{esc(summary[name])}</td>' for name in _ALERT_COLUMNS[:-2])
    link = f'<td class="detection_name"><a href="{esc(summary["url"])}">{esc(alert.detection_name)}</a></td>'
    return (f'<tr data-alert-id="{esc(alert.alert_id)}" class="mode-{alert.mode.value}">{cells}{link}'
            f'<td class="mode">{alert.mode.value}</td></tr>')


def alerts_page(alerts: list[Alert]) -> str:
    """The live alert list: the recent alerts now, new ones pushed by server-sent events."""
    head = "".join(f"<th>{name.replace('_', ' ')}</th>" for name in _ALERT_COLUMNS)
    rows = "\n".join(alert_row(alert) for alert in alerts)
    body = (f'<h1>Alerts <span id="live" class="live">connecting…</span></h1>'
            f'<table id="alerts"><thead><tr>{head}</tr></thead><tbody id="alert-rows">{rows}</tbody></table>'
            f'<p class="empty" id="no-alerts"{" hidden" if alerts else ""}>No alerts yet.</p>')
    return page("Alerts", body, active="alerts")


def alert_page(alert: Alert, *, group: str | None, can_sign: bool) -> str:
    """One alert: facts, the process tree, evidence, actions taken, top features, and actions."""
    body = "\n".join((
        f'<h1 id="detection">{esc(alert.detection_name)}</h1>',
        _facts(alert, group),
        "<h2>Process tree</h2>", f'<div class="tree-wrap">{tree_svg(alert)}</div>',
        _evidence(alert), _actions_taken(alert), _features(alert), _action_forms(alert, group, can_sign),
    ))
    return page(alert.detection_name, body, active="alerts")


def _facts(alert: Alert, group: str | None) -> str:
    threshold = f" (threshold {score_text(alert.threshold)})" if alert.threshold is not None else ""
    facts = (
        ("Alert", alert.alert_id), ("Device", f"{alert.device_id} ({alert.hostname or 'no hostname'})"),
        ("Group", group or "none"), ("Platform", alert.platform.value),
        ("Score", score_text(alert.score) + threshold), ("Tactic", alert.tactic.value),
        ("Techniques", ", ".join(alert.techniques) or "none"), ("Mode", alert.mode.value),
        ("Model", f"{alert.model_version} / features {alert.feature_version}"),
        ("Seen", f"{_time(alert.first_seen)} .. {_time(alert.last_seen)}"),
        ("Artifact", f"{alert.artifact_path or '?'} {alert.artifact_sha256 or ''}".strip()),
        ("Summary", alert.summary or ""),
    )
    items = "".join(f"<dt>{name}</dt><dd>{esc(value)}</dd>" for name, value in facts if value)
    return f'<dl class="facts">{items}</dl>'


def _table(table_id: str, head: tuple[str, ...], rows: Sequence[tuple[str, ...]], empty: str) -> str:
    if not rows:
        return f'<p class="empty" id="{table_id}">{esc(empty)}</p>'
    header = "".join(f"<th>{esc(name)}</th>" for name in head)
    body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


def _evidence(alert: Alert) -> str:
    images = {n.process_key: basename(n.image) for n in alert.process_tree.nodes}
    rows = [(_time(e.ts), images.get(e.process_key, basename(e.image)), describe_event(e))
            for e in sorted(alert.process_tree.evidence, key=lambda e: (e.ts, e.seq))]
    return "<h2>Evidence</h2>" + _table("evidence", ("time", "process", "event"), rows, "No evidence events.")


def _actions_taken(alert: Alert) -> str:
    rows = [(a.action.value, a.target, a.command_id or "", "audit: not sent" if a.audited else "sent")
            for a in alert.actions]
    return "<h2>Actions taken</h2>" + _table("actions-taken", ("action", "target", "command", "status"),
                                             rows, "No actions taken.")


def _features(alert: Alert) -> str:
    rows = [(f.name, f"{f.value:g}", f"{f.contribution:+.3f}") for f in alert.top_features]
    return "<h2>Top features</h2>" + _table("features", ("feature", "value", "contribution"), rows,
                                            "No feature contributions recorded.")


def _form(endpoint: str, label: str, fields: str, confirm: str) -> str:
    return (f'<form class="action" method="post" action="{esc(endpoint)}" data-confirm="{esc(confirm)}">'
            f'{fields}<input name="reason" placeholder="reason" maxlength="1024">'
            f'<button type="submit">{esc(label)}</button></form>')


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{name}" value="{esc(value)}">'


_NO_KEY = '<p class="note">No signing key configured: lift and restore are off.</p>'


def _action_forms(alert: Alert, group: str | None, can_sign: bool) -> str:
    forms = []
    signing_note = "" if can_sign else _NO_KEY
    if alert.artifact_sha256 and can_sign:
        forms.append(_form(f"/api/verdicts/{alert.artifact_sha256}/lift", "Lift verdict",
                           _hidden("alert_id", alert.alert_id),
                           f"Unblock {alert.artifact_sha256[:12]}… on every device?"))
    for path, sha256 in quarantined_files(alert) if can_sign else []:
        fields = "".join((_hidden("device_id", alert.device_id), _hidden("sha256", sha256),
                          _hidden("path", path), _hidden("alert_id", alert.alert_id)))
        forms.append(_form("/api/commands/restore", f"Restore {basename(path)}", fields,
                           f"Restore {basename(path)} on {alert.device_id}?"))
    scopes = "".join(f'<option value="{s}">{s}</option>' for s in ("device", "group", "fleet")
                     if s != "group" or group)
    fp_fields = ('<select name="match"><option value="hash">by hash</option>'
                 '<option value="path">by path</option></select>'
                 f'<select name="scope">{scopes}</select>'
                 '<input type="number" name="expires_hours" value="720" min="1" max="87600" '
                 'aria-label="expires in hours">')
    forms.append(_form(f"/api/alerts/{quote(alert.alert_id, safe='')}/false-positive", "Mark false positive",
                       fp_fields, "Exclude this artifact for the chosen scope?"))
    return '<h2>Actions</h2><div class="actions">' + signing_note + "".join(forms) + "</div>"


def fleet_page(fleet: Fleet, now: datetime) -> str:
    """Devices (group, mode, last seen, blocklist size) and the groups with their mode switch."""
    devices = sorted(fleet.devices.values(), key=lambda d: (d.group or "", d.hostname, d.device_id))
    rows = [(d.device_id, d.hostname, d.platform.value, d.group or "", d.effective_mode.value,
             f"{_time(d.last_seen)} ({_ago(now, d.last_seen)})", str(d.blocklist_size), d.agent_version)
            for d in devices]
    table = _table("devices", ("device", "host", "platform", "group", "mode", "last seen",
                               "blocklist", "agent"), rows, "No devices on the devices topic.")
    groups = "".join(_group_row(view.name, view.devices, view.policy_mode, view.device_modes)
                     for view in fleet.groups())
    group_table = (f'<table id="groups"><thead><tr><th>group</th><th>devices</th><th>policy mode</th>'
                   f"<th>device modes</th><th>switch</th></tr></thead><tbody>{groups}</tbody></table>"
                   if groups else '<p class="empty" id="groups">No device groups.</p>')
    return page("Fleet", f"<h1>Fleet</h1><h2>Devices</h2>{table}<h2>Groups</h2>{group_table}", active="fleet")


def _group_row(name: str, devices: int, policy: Mode | None, modes: tuple[Mode, ...]) -> str:
    switches = "".join(
        _form(f"/api/groups/{quote(name, safe='')}/mode", f"Switch to {mode.value}",
              _hidden("mode", mode.value), f"Switch group {name} to {mode.value}?")
        for mode in Mode if mode is not policy
    )
    reported = ", ".join(mode.value for mode in modes) or "-"
    return (f'<tr data-group="{esc(name)}"><td>{esc(name)}</td><td>{devices}</td>'
            f'<td class="policy-mode">{policy.value if policy else "not set"}</td><td>{reported}</td>'
            f"<td>{switches}</td></tr>")


def _ago(now: datetime, then: datetime) -> str:
    seconds = max(int((now - then).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def message_page(title: str, message: str) -> str:
    """A plain page for errors such as an unknown alert."""
    return page(title, f"<h1>{esc(title)}</h1><p>{esc(message)}</p>")
