"""Simulated benign Windows diagnostics collectors: Windows' own report scripts that export
security-relevant registry keys.

Why: `netsh trace stop` (after a `netsh trace start ... report=yes` capture) runs the built-in
`gatherNetworkInfo.vbs`, which builds a report cab by running `cmd /c reg export <key> Reg\\<name>.reg.txt /y`
for dozens of keys, among them the Credential Providers and Winlogon Notifications keys, plus
`gpresult`, `ipconfig /all` and `netsh ... show` into `config\\*.txt`. Elevated, from a shell, exporting
authentication keys: on features alone that is close to credential theft through the registry
(`reg save HKLM\\SAM`), and a real recording of a lab host that captured its network traffic this way
raised CredentialAccess alerts on it (see the model card). The export of configuration keys into a
report folder is what tells the two apart, so the benign corpus must contain it. Other collectors of
the same shape (the Defender client analyzer, `msdt` troubleshooters, support scripts) export policy and
service keys the same way.
"""

from __future__ import annotations

from pipeline.training.sim.builder import Proc
from pipeline.training.sim.session import Session
from pipeline.training.sim.vocab import Rand, powershell, sys32
from pipeline.training.sim.win_benign import workload

_REPORT_KEYS = (
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\Winlogon\\Notifications", "Notif"),
    ("HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Authentication\\Credential Providers", "AllCred"),
    ("HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Authentication\\Credential Provider Filters",
     "AllCredFilter"),
    ("HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon", "Winlogon"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters", "Tcpip"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Services\\Dnscache\\Parameters", "Dnscache"),
    ("HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows\\WcmSvc", "WcmSvcPolicy"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Services\\Wlansvc", "Wlansvc"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Services\\dot3svc", "Dot3svc"),
    ("HKLM\\SOFTWARE\\Microsoft\\EAPOL", "Eapol"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\Network", "Network"),
    ("HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Internet Settings", "InternetSettings"),
    ("HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender", "DefenderPolicy"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Services\\WinDefend", "WinDefend"),
)
_REPORT_COMMANDS = (
    ("gpresult.exe", "gpresult /scope:computer /v", "gpresult"),
    ("gpresult.exe", "gpresult /scope:user /v", "gpresult_user"),
    ("ipconfig.exe", "ipconfig /all", "ipconfig"),
    ("netsh.exe", "netsh wlan show all", "wlan"),
    ("netsh.exe", "netsh interface ipv4 show config", "ipv4"),
    ("netsh.exe", "netsh winhttp show proxy", "winhttp"),
    ("netstat.exe", "netstat -nato", "netstat"),
    ("route.exe", "route print", "route"),
    ("systeminfo.exe", "systeminfo", "systeminfo"),
)


def _report_step(s: Session, script: Proc, cab: str) -> None:
    """One report item: `cmd /c <tool> ... 1> config\\x.txt 2>&1` or `cmd /c reg export <key> Reg\\x.reg.txt /y`."""
    r = s.r
    if r.chance(0.55):
        key, name = r.pick(_REPORT_KEYS)
        line = f'reg export "{key}"  Reg\\{name}.reg.txt /y'
        image, child_line = sys32(r, "reg.exe"), line.replace("reg export", "reg  export", 1)
        out = f"{cab}\\Reg\\{name}.reg.txt"
    else:
        exe, line, name = r.pick(_REPORT_COMMANDS)
        image, child_line = sys32(r, exe), f"{line} "
        line = f"{line} 1> config\\{name}.txt 2>&1"
        out = f"{cab}\\config\\{name}.txt"
    wrapper = s.run(sys32(r, "cmd.exe"), f'"C:\\Windows\\System32\\cmd.exe" /c {line}', parent=script, cwd=cab)
    tool = s.run(image, child_line, parent=wrapper, cwd=cab)
    s.b.write(tool if image.endswith("reg.exe") else wrapper, out)


def _cab_folder(r: Rand, user: str) -> str:
    temp = r.pick((f"C:\\Users\\{user}\\AppData\\Local\\Temp", "C:\\Windows\\Temp"))
    return f"{temp}\\RPT{r.hexstr(4).upper()}.tmp\\CabFolder"


@workload("diagnostics_collectors", 1.0)
def diagnostics_collectors(s: Session) -> None:
    """`netsh trace stop` -> gatherNetworkInfo.vbs exporting registry keys and tool output into a report
    cab; or a troubleshooter / support script doing the same from msdt, sdiagnhost or an admin shell."""
    b, r = s.b, s.r
    cab = _cab_folder(r, s.user)
    admin = r.pick((sys32(r, "cmd.exe"), powershell(r)))
    shell = b.existing(admin, user=r.domain_user(s.user)) if r.chance(0.7) else s.run(admin, f'"{admin}"',
                                                                                       integrity="High")
    if r.chance(0.7):
        if r.chance(0.3):
            start = s.run(sys32(r, "netsh.exe"), f"netsh  trace start capture=yes report=yes tracefile={cab[:-10]}"
                          f"\\{r.token()}.etl", parent=shell, integrity="High")
            b.write(start, f"{cab[:-10]}\\{r.token()}.etl", r.num(10**6, 10**8))
        parent = s.run(sys32(r, "netsh.exe"), "netsh  trace stop", parent=shell, integrity="High")
    else:
        parent = b.existing(sys32(r, r.pick(("sdiagnhost.exe", "msdt.exe"))), user="NT AUTHORITY\\SYSTEM")
    script = s.run(sys32(r, "cscript.exe"), "C:\\Windows\\system32\\cscript.exe C:\\Windows\\system32\\gatherNetworkInfo.vbs",
                   parent=parent, integrity="High")
    b.load(script, sys32(r, "vbscript.dll"))
    for _ in range(r.num(1, 14)):
        _report_step(s, script, cab)
