"""Behaviour codes (pipeline.behaviour) and sliding windows: what each event counts as, what falls out."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import behaviour
from pipeline.behaviour import Counter, behaviour_codes, child_codes
from pipeline.eventkit import EventKit
from pipeline.windows import (
    count_windows,
    distinct_in_window,
    pack,
    process_window,
    sliding_start,
    sum_groups,
    unpack,
    window_ranges,
)

KIT = EventKit()
LSASS = r"C:\Windows\System32\lsass.exe"
C = Counter


def codes(event: object) -> set[Counter]:
    return set(behaviour_codes(event.payload))  # type: ignore[attr-defined]


def test_window_ranges_tumbling_and_hopping() -> None:
    assert window_ranges(12_345, 10_000) == [(10_000, 20_000)]
    assert window_ranges(12_345, 10_000, 5_000) == [(5_000, 15_000), (10_000, 20_000)]
    assert window_ranges(10_000, 10_000, 5_000) == [(5_000, 15_000), (10_000, 20_000)]
    with pytest.raises(ValueError, match="positive"):
        window_ranges(1, 0)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (r"C:\Users\ann\AppData\Local\Temp\a.exe", {C.FILE_WRITE, C.FW_TEMP, C.FW_EXECUTABLE}),
        (r"C:\Users\ann\AppData\Roaming\Microsoft\Windows\Start Menu\Programs\Startup\x.lnk",
         {C.FILE_WRITE, C.FW_STARTUP, C.FW_EXECUTABLE}),
        (r"C:\Windows\System32\drivers\evil.sys", {C.FILE_WRITE, C.FW_SYSTEM, C.FW_EXECUTABLE}),
        (r"C:\ProgramData\stage\loot.7z", {C.FILE_WRITE, C.FW_PROGRAM_DATA, C.FW_ARCHIVE}),
        (r"C:\Users\ann\Documents\report.docx", {C.FILE_WRITE, C.FW_USER_PROFILE}),
        ("/tmp/.x/payload", {C.FILE_WRITE, C.FW_TEMP}),
        ("/dev/shm/k.sh", {C.FILE_WRITE, C.FW_TEMP, C.FW_EXECUTABLE}),
        ("/etc/cron.d/update", {C.FILE_WRITE, C.FW_CRON}),
        ("/var/spool/cron/crontabs/root", {C.FILE_WRITE, C.FW_CRON}),
        ("/root/.ssh/authorized_keys", {C.FILE_WRITE, C.FW_SSH}),
        ("/etc/systemd/system/backdoor.service", {C.FILE_WRITE, C.FW_SERVICE_UNIT}),
        ("/home/bob/.bashrc", {C.FILE_WRITE, C.FW_SHELL_PROFILE}),
        ("/etc/passwd", {C.FILE_WRITE, C.FW_ETC}),
        ("/usr/bin/ls", {C.FILE_WRITE, C.FW_SYSTEM}),
    ],
)  # fmt: skip
def test_file_writes_are_classed_by_location(path: str, expected: set[Counter]) -> None:
    assert codes(KIT.write("p", path)) == expected


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run", "upd", C.REG_RUN),
        (r"HKLM\Software\Microsoft\Windows\CurrentVersion\RunOnce", None, C.REG_RUN),
        (r"HKLM\System\CurrentControlSet\Services\evilsvc", "ImagePath", C.REG_SERVICES),
        (r"HKLM\Software\Microsoft\Windows NT\CurrentVersion\Winlogon", "Userinit", C.REG_WINLOGON),
        (r"HKLM\Software\Microsoft\Windows NT\CurrentVersion\Image File Execution Options\sethc.exe",
         "Debugger", C.REG_IFEO),
        (r"HKLM\Software\Policies\Microsoft\Windows Defender", "DisableAntiSpyware", C.REG_DEFENSE),
        (r"HKLM\System\CurrentControlSet\Control\SecurityProviders\WDigest", "UseLogonCredential", C.REG_LSA),
        (r"HKCU\Software\Classes\CLSID\{1234}\InprocServer32", None, C.REG_COM_HIJACK),
    ],
)  # fmt: skip
def test_registry_autoruns_and_tampering(key: str, value: str | None, expected: Counter) -> None:
    assert codes(KIT.reg("p", key, value)) == {C.REG_WRITE, expected}


def test_ordinary_registry_write_is_only_counted() -> None:
    assert codes(KIT.reg("p", r"HKCU\Software\Vendor\App", "LastRun")) == {C.REG_WRITE}


@pytest.mark.parametrize(
    ("ip", "port", "expected"),
    [
        ("10.1.2.3", 443, {C.NET_CONNECT}),
        ("203.0.113.7", 443, {C.NET_CONNECT}),  # documentation range is not global
        ("8.8.8.8", 4444, {C.NET_CONNECT, C.NET_EXTERNAL, C.NET_NONSTD_PORT}),
        ("10.0.0.5", 445, {C.NET_CONNECT, C.NET_LATERAL_PORT}),
        ("not-an-ip", 80, {C.NET_CONNECT}),
    ],
)
def test_connections(ip: str, port: int, expected: set[Counter]) -> None:
    assert codes(KIT.connect("p", ip, port)) == expected


def test_inbound_connection() -> None:
    assert codes(KIT.connect("p", "10.0.0.9", 22, outbound=False)) == {C.NET_CONNECT, C.NET_INBOUND}


@pytest.mark.parametrize(
    ("target", "mask", "expected"),
    [
        (r"C:\Windows\System32\lsass.exe", 0x1010, {C.PROC_ACCESS, C.LSASS_ACCESS, C.LSASS_READ}),
        (r"C:\Windows\System32\lsass.exe", 0x1400, {C.PROC_ACCESS, C.LSASS_ACCESS}),
        (LSASS, 0x1FFFFF, {C.PROC_ACCESS, C.LSASS_ACCESS, C.LSASS_READ, C.LSASS_WRITE}),
        (r"C:\Windows\System32\notepad.exe", 0x1FFFFF, {C.PROC_ACCESS}),
    ],
)  # fmt: skip
def test_lsass_access_by_granted_mask(target: str, mask: int, expected: set[Counter]) -> None:
    assert codes(KIT.access("p", target, mask)) == expected


def test_remote_threads_into_system_processes() -> None:
    assert codes(KIT.inject("p", r"C:\Windows\System32\lsass.exe")) == {
        C.REMOTE_THREAD,
        C.REMOTE_THREAD_SYSTEM,
    }
    assert codes(KIT.inject("p", r"C:\Program Files\app\app.exe")) == {C.REMOTE_THREAD}


def test_image_loads_of_interesting_modules() -> None:
    assert codes(KIT.load("p", r"C:\Windows\System32\samlib.dll", signed=True)) == {C.LOAD_CREDENTIAL}
    assert codes(KIT.load("p", r"C:\Windows\assembly\System.Management.Automation.dll")) == {
        C.LOAD_SCRIPT_ENGINE
    }
    assert codes(KIT.load("p", r"C:\Users\u\AppData\Local\Temp\x.dll", signed=False)) == {
        C.LOAD_UNSIGNED, C.LOAD_USER_WRITABLE,
    }  # fmt: skip
    assert codes(KIT.load("p", r"C:\Windows\System32\kernel32.dll", signed=True)) == set()


def test_renames_and_deletes_that_look_like_ransomware() -> None:
    assert codes(KIT.rename("p", r"C:\Users\u\a.docx", r"C:\Users\u\a.docx.lockbit")) == {
        C.FILE_RENAME, C.RENAME_EXT_CHANGE, C.RENAME_UNCOMMON_EXT,
    }  # fmt: skip
    assert codes(KIT.rename("p", "/home/u/a.txt", "/home/u/a.log")) == {C.FILE_RENAME, C.RENAME_EXT_CHANGE}
    assert codes(KIT.rename("p", "/home/u/a.txt", "/home/u/b.txt")) == {C.FILE_RENAME}
    assert codes(KIT.delete("p", r"D:\Backups\server.vhdx")) == {C.FILE_DELETE, C.FILE_DELETE_BACKUP}
    assert codes(KIT.delete("p", r"C:\Temp\x.tmp")) == {C.FILE_DELETE}


def test_child_codes() -> None:
    assert set(child_codes(r"C:\Windows\System32\certutil.exe")) == {C.CHILD_SPAWN, C.CHILD_LOLBIN}
    assert set(child_codes("/usr/bin/whoami")) == {C.CHILD_SPAWN, C.CHILD_ADMIN_TOOL}
    assert set(child_codes("/bin/bash")) == {C.CHILD_SPAWN, C.CHILD_SHELL}
    assert set(child_codes(r"C:\Users\u\Downloads\invoice.exe")) == {C.CHILD_SPAWN, C.CHILD_USER_WRITABLE}


def test_child_codes_of_a_path_too_long_to_cache_are_computed_the_same() -> None:
    """Images are cached per path up to 512 characters; a longer one is classified without the cache."""
    deep = "C:\\Users\\u\\AppData\\Local\\Temp\\" + "d\\" * 300 + "powershell.exe"
    assert len(deep) > 512
    cached = behaviour._child_codes.cache_info().currsize
    assert child_codes(deep) == (C.CHILD_SPAWN, C.CHILD_SHELL, C.CHILD_USER_WRITABLE)
    assert behaviour._child_codes.cache_info().currsize == cached  # not pinned in the cache
    short = r"C:\Users\u\AppData\Local\Temp\powershell.exe"
    assert child_codes(short) == child_codes(short) == child_codes(deep)


def test_pack_round_trip() -> None:
    assert unpack(pack(1_714_564_800_123, C.LSASS_READ)) == (1_714_564_800_123, C.LSASS_READ)


def test_sliding_window_drops_old_evidence() -> None:
    end = 10 * 60_000
    evidence = [pack(end - 6 * 60_000, C.REG_RUN), pack(end - 4 * 60_000, C.REG_RUN), pack(end, C.FW_TEMP)]
    window = process_window(evidence, end)
    assert window[C.REG_RUN] == 1 and window[C.FW_TEMP] == 1
    assert window.nonzero() == {"reg_run": 1, "fw_temp": 1}
    assert process_window(evidence, end, duration_ms=7 * 60_000)[C.REG_RUN] == 2
    assert sliding_start(end, 60_000) == end - 59_999


def test_vectorised_counts_equal_per_node_counts() -> None:
    rng = np.random.default_rng(3)
    evidence = []
    for n in (0, 5, 40, 1):
        times, kinds = rng.integers(0, 1000, n), rng.integers(0, len(C), n)
        evidence.append([pack(int(t), int(c)) for t, c in zip(times, kinds, strict=True)])
    starts = np.array([0, 500, 250, 999], dtype=np.int64)
    together = count_windows(evidence, starts)
    for row, (ev, start) in enumerate(zip(evidence, starts, strict=True)):
        alone = process_window(ev, 999, duration_ms=999 - int(start) + 1)
        assert together[row].tolist() == list(alone.counts)


def test_sum_groups_handles_empty_groups() -> None:
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = sum_groups(values, [[0, 1], [], [3], [2, 0]])
    assert out.tolist() == [[3, 5, 7], [0, 0, 0], [9, 10, 11], [6, 8, 10]]


def test_distinct_in_window() -> None:
    records = [(1, "a"), (5, "b"), (6, "b"), (9, "c")]
    assert distinct_in_window(records, 5) == 2
