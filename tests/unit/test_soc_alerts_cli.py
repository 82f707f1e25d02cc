"""`ringfence alerts`: what tail prints for a stream of records, how show finds an alert, bad arguments."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from test_soc_samples import NOW, alert

from pipeline.cli import main
from pipeline.soc.alerts_cli import AlertFeed, OutputFormat, find_alert, format_alert
from pipeline.soc.filters import AlertFilter, parse_tactic
from pipeline.soc.kafka_io import Record
from schemas.alerts import Tactic
from schemas.codec import encode
from schemas.common import Mode, Platform
from schemas.devices import DeviceRecord

ALERTS, DEVICES = "t.ringfence.alerts.v1", "t.ringfence.devices.v1"


def _record(topic: str, value: bytes | None, offset: int = 0, key: bytes | None = b"dev-1") -> Record:
    return Record(topic, 0, offset, key, value, 0)


def _device(device_id: str, group: str | None) -> Record:
    device = DeviceRecord(device_id=device_id, hostname=f"h-{device_id}", platform=Platform.WINDOWS,
                          group=group, effective_mode=Mode.BLOCK, agent_version="1.0", enrolled_at=NOW,
                          last_seen=NOW)
    return _record(DEVICES, encode(device), key=device_id.encode())


def _feed(alert_filter: AlertFilter, fmt: OutputFormat = OutputFormat.TABLE) -> AlertFeed:
    return AlertFeed(alert_filter, fmt, DEVICES)


def _shown(feed: AlertFeed, *records: Record) -> list[str]:
    return [line for record in records for line in feed.handle(record)]


def test_table_output_has_one_header_then_one_line_per_alert() -> None:
    feed = _feed(AlertFilter())
    lines = _shown(feed, _record(ALERTS, encode(alert("a1"))), _record(ALERTS, encode(alert("a2")), 1))
    assert lines[0].startswith("TIME") and len(lines) == 3
    assert lines[1].endswith("a1") and lines[2].endswith("a2")
    assert feed.shown == 2


def test_filters_by_device_or_hostname_tactic_and_score() -> None:
    records = [
        _record(ALERTS, encode(alert("low", score=0.5))),
        _record(ALERTS, encode(alert("other-dev", device_id="dev-2", hostname="ws-9"))),
        _record(ALERTS, encode(alert("exec", tactic=Tactic.EXECUTION))),
        _record(ALERTS, encode(alert("hit"))),
    ]
    wanted = AlertFilter(device="ws-042", tactic=Tactic.CREDENTIAL_ACCESS, min_score=0.9)
    feed = _feed(wanted, OutputFormat.JSON)
    assert [orjson.loads(line)["alert_id"] for line in _shown(feed, *records)] == ["hit"]
    by_id = _feed(AlertFilter(device="dev-2"), OutputFormat.JSON)
    assert [orjson.loads(line)["alert_id"] for line in _shown(by_id, *records)] == ["other-dev"]


def test_group_filter_uses_the_devices_topic_including_moves_and_tombstones() -> None:
    feed = _feed(AlertFilter(group="finance"), OutputFormat.JSON)
    on_finance = _shown(feed, _device("dev-1", "finance"), _record(ALERTS, encode(alert("a1"))))
    moved = _shown(feed, _device("dev-1", "lab"), _record(ALERTS, encode(alert("a2"))))
    back = _shown(feed, _device("dev-1", "finance"), _record(DEVICES, None, key=b"dev-1"),
                  _record(ALERTS, encode(alert("a3"))))
    assert [orjson.loads(x)["alert_id"] for x in on_finance] == ["a1"]
    assert moved == [] and back == []


def test_invalid_records_are_counted_and_skipped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    feed = _feed(AlertFilter(), OutputFormat.JSON)
    lines = _shown(feed, _record(ALERTS, b"{not json", 7), _record(ALERTS, b'{"alert_id": "x"}', 8),
                   _record(ALERTS, None, 9), _record(ALERTS, encode(alert("ok")), 10))
    assert [orjson.loads(x)["alert_id"] for x in lines] == ["ok"]
    assert feed.invalid == 2
    assert "t.ringfence.alerts.v1[0]@7" in caplog.text


def test_ocsf_output_is_a_detection_finding_per_line() -> None:
    finding = orjson.loads(format_alert(alert(), OutputFormat.OCSF))
    assert finding["class_uid"] == 2004
    assert finding["finding_info"]["uid"] == "al-1"


def test_find_alert_returns_the_latest_copy_and_ignores_lookalikes() -> None:
    newer = alert("al-1").model_copy(update={"created_at": NOW + timedelta(minutes=5)})
    records = [
        _record(ALERTS, encode(alert("al-1")), 0),
        _record(ALERTS, encode(alert("al-10")), 1),  # contains the bytes "al-1" but is another alert
        _record(ALERTS, b"garbage al-1", 2),
        _record(ALERTS, encode(newer), 3),
    ]
    found = find_alert(records, "al-1")
    assert found is not None and found.created_at == newer.created_at
    assert find_alert(records, "al-2") is None


def test_parse_tactic_is_forgiving_about_case_and_separators() -> None:
    assert parse_tactic("credential-access") is Tactic.CREDENTIAL_ACCESS
    assert parse_tactic("CommandAndControl") is Tactic.COMMAND_AND_CONTROL
    with pytest.raises(ValueError, match="unknown tactic 'Hacking'"):
        parse_tactic("Hacking")


@pytest.mark.parametrize(("argv", "message"), [
    (["alerts", "tail", "--tactic", "Hacking"], "unknown tactic 'Hacking'"),
    (["alerts", "tail", "--min-score", "1.5"], "--min-score must be between 0 and 1"),
    (["alerts", "tail", "--limit", "0"], "--limit must be at least 1"),
])
def test_bad_arguments_are_one_line_errors(argv: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_show_reports_an_unreachable_broker_as_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["alerts", "show", "al-1", "--bootstrap", "127.0.0.1:1", "--timeout", "2"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("ringfence: error: Kafka") and len(err.strip().splitlines()) == 1
