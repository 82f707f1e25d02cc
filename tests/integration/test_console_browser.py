"""The SOC console in headless Chromium against real Kafka: live list, tree, escaping, auth, audit, fleet.

Debian's chromium and chromedriver (`make browser-deps`) driven by selenium; nothing is downloaded.
The console runs as `ringfence console` in its own process on a unique topic prefix. Screenshots are
checked for content (size, not blank, the header bar, the highlighted scored node, the new-row
highlight) next to the DOM; set RINGFENCE_SCREENSHOT_DIR to keep them.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import os
import select
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from pipeline.soc.settings import ConsoleTopics
from schemas.alerts import (
    ActionTaken,
    Alert,
    AlertAction,
    FeatureContribution,
    ProcessTreeSnapshot,
    Tactic,
    TreeNode,
    detection_name,
)
from schemas.audit import AuditAction, AuditOutcome, AuditRecord
from schemas.codec import decode, encode
from schemas.common import Mode, Platform
from schemas.devices import DeviceRecord
from schemas.events import BehaviorEvent, NetworkConnect
from schemas.keyfiles import save_private_key
from schemas.policy_updates import GroupModeChange, PolicyUpdate
from schemas.signing import Keyring, SigningKey, check_verdict
from schemas.verdicts import Disposition, Verdict

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1000")
SECRET = "correct-horse-battery-staple"
HOSTILE = 'powershell -c "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>" \x1b[2J'
SHA = "cd" * 32
HEADER_RGB, SCORED_RGB = (16, 24, 32), (253, 226, 225)  # colours of console.css
NEW_ROW_RGB, BUTTON_RGB = (255, 248, 219), (11, 92, 173)


@dataclass
class RunningConsole:
    url: str
    key: SigningKey
    topics: ConsoleTopics


def _alert(alert_id: str, now: datetime) -> Alert:
    connect = BehaviorEvent(event_id="e1", device_id="dev-1", seq=1, ts=now, platform=Platform.WINDOWS,
                            process_key="{M}", payload=NetworkConnect(dst_ip="203.0.113.9", dst_port=443))
    nodes = (
        TreeNode(process_key="{W}", image="C:\\Office\\WINWORD.EXE", pid=10,
                 command_line="WINWORD.EXE a.docm"),
        TreeNode(process_key="{P}", parent_process_key="{W}", pid=20, command_line=HOSTILE,
                 image="C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"),
        TreeNode(process_key="{M}", parent_process_key="{P}", image="C:\\Users\\bob\\m.exe", pid=30,
                 sha256=SHA, command_line="m.exe -dump", scored=True),
    )
    return Alert(
        alert_id=alert_id, device_id="dev-1", hostname="ws-042", platform=Platform.WINDOWS,
        detection_name=detection_name(Platform.WINDOWS, Tactic.CREDENTIAL_ACCESS, "LsassAccess"),
        tactic=Tactic.CREDENTIAL_ACCESS, score=0.97, model_version="xgb-test", feature_version="f1",
        artifact_sha256=SHA, artifact_path="C:\\Users\\bob\\m.exe",
        process_tree=ProcessTreeSnapshot(root_process_key="{W}", nodes=nodes, evidence=(connect,)),
        top_features=(FeatureContribution(name="lsass_access", value=1.0, contribution=2.31),),
        mode=Mode.BLOCK, actions=(
            ActionTaken(action=AlertAction.QUARANTINE_FILE, target="C:\\Users\\bob\\m.exe", command_id="c2"),
            ActionTaken(action=AlertAction.PUBLISH_VERDICT, target=SHA)),
        first_seen=now - timedelta(minutes=2), last_seen=now, created_at=now,
    )


def _device(device_id: str, group: str, mode: Mode, blocklist: int, now: datetime) -> DeviceRecord:
    return DeviceRecord(device_id=device_id, hostname=f"host-{device_id}", platform=Platform.WINDOWS,
                        group=group, effective_mode=mode, agent_version="0.1.0", enrolled_at=now,
                        last_seen=now - timedelta(minutes=3), blocklist_size=blocklist)


async def _create_topics(bootstrap: str, topics: ConsoleTopics) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = (topics.alerts, topics.devices, topics.verdicts, topics.commands, topics.policy, topics.audit)
        await admin.create_topics([NewTopic(name, 2 if name == topics.alerts else 1, 1) for name in names])
    finally:
        await admin.close()


async def _produce(bootstrap: str, records: list[tuple[str, str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, key=key.encode(), value=value)
    finally:
        await producer.stop()


async def _read(bootstrap: str, topic: str, timeout_s: float = 20.0) -> list[bytes]:
    """Every record value in `topic` once at least one is there (bounded in time)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            values += [m.value for messages in batch.values() for m in messages if m.value is not None]
            if values and not batch:
                break
        return values
    finally:
        await consumer.stop()


def _audits(bootstrap: str, topics: ConsoleTopics) -> list[AuditRecord]:
    return [decode(AuditRecord, value) for value in asyncio.run(_read(bootstrap, topics.audit))]


@pytest.fixture
def console(
    tmp_path: Path, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> Iterator[RunningConsole]:
    topics = ConsoleTopics.with_prefix(unique_name("console") + ".")
    asyncio.run(_create_topics(kafka_bootstrap, topics))
    key = SigningKey.generate()
    save_private_key(key, tmp_path / "fleet.key")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{SECRET}\n")
    tokens.chmod(0o600)
    prefix = topics.alerts.removesuffix("ringfence.alerts.v1")
    command = [sys.executable, "-m", "pipeline.cli", "console", "--port", "0", "--prefix", prefix,
               "--token-file", str(tokens), "--signing-key", str(tmp_path / "fleet.key"),
               "--bootstrap", kafka_bootstrap]
    with (tmp_path / "console.log").open("w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            yield RunningConsole(_wait_for_url(process, tmp_path / "console.log"), key, topics)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
    assert process.returncode == 0, (tmp_path / "console.log").read_text()[-2000:]


def _wait_for_url(process: subprocess.Popen[str], log: Path) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("ringfence console: http://"):
        pytest.fail(f"console did not start: {line!r}\n{log.read_text()[-2000:]}")
    return line.split()[2]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("chromium/chromedriver missing: run `make browser-deps`", pytrace=False)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: WebDriver, condition: Callable[[WebDriver], object], timeout_s: float = 20) -> object:
    return WebDriverWait(driver, timeout_s).until(condition)


def _text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def _screenshot(png: bytes, name: str, tmp_path: Path) -> Image.Image:
    folder = Path(os.environ.get("RINGFENCE_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 30, f"{name}: screenshot looks blank ({len(colors)} colours)"
    return image


def _pixels(image: Image.Image, rgb: tuple[int, int, int]) -> int:
    return sum(count for count, color in image.getcolors(maxcolors=1 << 20) or [] if color == rgb)


def _act(driver: WebDriver, form_css: str) -> str:
    """Submit an action form, accept its confirmation, return the status line."""
    driver.execute_script("document.getElementById('action-status').textContent = ''")
    driver.find_element(By.CSS_SELECTOR, f"{form_css} button").click()
    _wait(driver, expected_conditions.alert_is_present(), 5)
    driver.switch_to.alert.accept()
    _wait(driver, lambda d: _text(d, "#action-status"))
    return _text(driver, "#action-status")


def _reloaded_text(driver: WebDriver, css: str) -> str:
    driver.refresh()
    return _text(driver, css)


def _post_without_token(url: str, path: str) -> int:
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=10)
    try:
        connection.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


def _sign_in(driver: WebDriver) -> None:
    driver.find_element(By.ID, "token").send_keys(SECRET)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    _wait(driver, lambda d: _text(d, "#whoami") == "signed in as alice")


def test_console_end_to_end_in_chromium(console: RunningConsole, browser: WebDriver, kafka_bootstrap: str,
                                        tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    topics = console.topics
    browser.get(console.url)
    assert browser.title == "Alerts · ringfence"
    _wait(browser, lambda d: _text(d, "#live") == "live")

    # Live: an alert published now appears in the open list without a reload.
    asyncio.run(_produce(kafka_bootstrap, [(topics.alerts, "dev-1", encode(_alert("alert-live-1", now)))]))
    row_css = 'tr[data-alert-id="alert-live-1"]'
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row_css))
    assert "Behavior:Win32/CredentialAccess.LsassAccess!ml" in _text(browser, row_css)
    listing = _screenshot(browser.get_screenshot_as_png(), "01-alert-list", tmp_path)
    assert listing.getpixel((5, 5)) == HEADER_RGB and _pixels(listing, NEW_ROW_RGB) > 1000

    # The alert page: the tree is drawn, the hostile command line is text, and nothing ran.
    browser.find_element(By.CSS_SELECTOR, f"{row_css} a").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "process-tree"))
    assert browser.title == "Behavior:Win32/CredentialAccess.LsassAccess!ml · ringfence"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#process-tree g.node")) == 3
    assert "<script>window.pwned=1</script>" in _text(browser, 'g[data-process-key="{P}"] text.cmd')
    assert browser.execute_script("return window.pwned === undefined && !document.querySelector('main img')")
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text
    assert "203.0.113.9:443" in _text(browser, "#evidence") and "lsass_access" in _text(browser, "#features")
    svg = browser.find_element(By.ID, "process-tree")
    tree = _screenshot(svg.screenshot_as_png, "02-alert-tree", tmp_path)
    assert _pixels(tree, SCORED_RGB) > 2000  # the scored process's highlighted box
    _screenshot(browser.get_screenshot_as_png(), "03-alert-page", tmp_path)

    # Unauthenticated: refused in the page and over plain HTTP, and audited as denied.
    assert _act(browser, "form[action$='/false-positive']").startswith("Refused (401)")
    assert _post_without_token(console.url, f"/api/verdicts/{SHA}/lift") == 401

    # Authenticated: lift the verdict -> a signed `lifted` verdict and an audit record on Kafka.
    _sign_in(browser)
    assert _act(browser, "form[action$='/lift']").startswith("Done: lift_verdict published")
    [lifted] = [decode(Verdict, v) for v in asyncio.run(_read(kafka_bootstrap, topics.verdicts))]
    check_verdict(lifted, keyring=Keyring.of([console.key.trusted()]), now=datetime.now(UTC))
    assert (lifted.artifact_id, lifted.disposition) == (SHA, Disposition.LIFTED)
    audits = _audits(kafka_bootstrap, topics)
    assert {(a.actor, a.action, a.outcome) for a in audits} == {
        ("anonymous", AuditAction.MARK_FALSE_POSITIVE, AuditOutcome.DENIED),
        ("anonymous", AuditAction.LIFT_VERDICT, AuditOutcome.DENIED),
        ("alice", AuditAction.LIFT_VERDICT, AuditOutcome.ACCEPTED),
    }
    accepted = next(a for a in audits if a.outcome is AuditOutcome.ACCEPTED)
    assert (accepted.published_topic, accepted.published_key, accepted.alert_id) == (
        topics.verdicts, SHA, "alert-live-1")


def test_fleet_view_lists_devices_and_switches_a_group(console: RunningConsole, browser: WebDriver,
                                                       kafka_bootstrap: str, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    devices = [_device("dev-1", "finance", Mode.BLOCK, 12, now), _device("lab-7", "lab", Mode.AUDIT, 3, now)]
    records = [(console.topics.devices, d.device_id, encode(d)) for d in devices]
    asyncio.run(_produce(kafka_bootstrap, records))
    browser.get(console.url + "fleet")
    # The fleet page is drawn by the server when it is loaded, from what the console's feed has read
    # so far; the feed starts reading once the console listens, so on a busy host the first load can
    # come before the devices: reload until they are there (waiting on the same page never sees them).
    _wait(browser, lambda d: "lab-7" in _reloaded_text(d, "main"))
    assert browser.title == "Fleet · ringfence"
    rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#devices tbody tr")]
    assert any("dev-1" in r and "finance" in r and "block" in r and "12" in r for r in rows), rows
    assert any("lab-7" in r and "lab" in r and "audit" in r and "3 min ago" in r for r in rows), rows
    fleet = _screenshot(browser.get_screenshot_as_png(), "04-fleet", tmp_path)
    assert fleet.getpixel((5, 5)) == HEADER_RGB and _pixels(fleet, BUTTON_RGB) > 2000  # mode switches drawn

    _sign_in(browser)
    status = _act(browser, "tr[data-group='lab'] form:has(input[name=mode][value=block])")
    assert status.startswith("Done: set_group_mode published"), status
    updates = [decode(PolicyUpdate, v) for v in asyncio.run(_read(kafka_bootstrap, console.topics.policy))]
    assert GroupModeChange(group="lab", mode=Mode.BLOCK) in [u.change for u in updates]
    assert all(u.actor == "alice" for u in updates)
    _wait(browser, lambda d: _reloaded_text(d, "tr[data-group='lab'] .policy-mode") == "block")

