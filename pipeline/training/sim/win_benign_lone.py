"""Simulated benign Windows small trees: the same tools the lone-command attacks use (`win_lone`),
typed or run for ordinary reasons, one to three commands under a parent the recording did not see
start.

Why: a model shown lone `whoami /all`, `net user ... /add` or `wmic process call create` only as
attacks learns the tool names. Admins check their IP configuration, identity, sessions, tasks and
interfaces; installers and updaters start and stop services with `net start`/`net stop`; users and
support scripts export their own application settings with `reg export`; management agents query
through WMI. Seen alone through Security 4688 these look like the attacks' small trees except in
what they do, which is what the model should learn.

These workloads are kept out of the noise pool of the other simulated trees (`simulate._noise`
draws from `win_benign.WORKLOADS` only), so adding them changed no earlier tree.
"""

from __future__ import annotations

from pipeline.training.sim.builder import Proc
from pipeline.training.sim.catalog import Workloads
from pipeline.training.sim.session import Session
from pipeline.training.sim.vocab import powershell, sys32

LONE_WORKLOADS = Workloads()
"""(name, relative weight, generator) of the small benign trees."""
lone_workload = LONE_WORKLOADS.add


def _shell(s: Session) -> Proc:
    """An admin's or user's shell that started before the recording, or Explorer (Run dialog)."""
    r = s.r
    du = r.domain_user(s.user)
    kind = r.rng.randrange(5)
    if kind == 0:
        return s.b.existing(r.case("C:\\Windows\\explorer.exe"), user=du)
    if kind == 1:
        return s.b.existing("C:\\Program Files\\PowerShell\\7\\pwsh.exe", user=du)
    return s.b.existing(r.pick((sys32(r, "cmd.exe"), powershell(r))), user=du)


_ADMIN = ("ipconfig", "ipconfig /all", "ipconfig /flushdns", "ipconfig /release", "ipconfig /renew",
          "ipconfig /displaydns", "whoami", "whoami /upn", "hostname", "tasklist",
          'tasklist /fi "imagename eq {proc}"', "systeminfo", "ping {host}", "ping -t {host}", "nslookup {host}",
          "netsh interface show interface", "netsh interface ipv4 show config", "netsh wlan show interfaces",
          "netsh winhttp show proxy", "netsh interface ip show addresses", "netstat -an", "route print",
          "gpupdate /force", "gpresult /r", "net use", "net use Z: \\\\{host}\\{share}", "net time", "net user {user} /domain",
          "net localgroup administrators", "w32tm /query /status", "sc query {svc}", "quser", "klist", "arp -a",
          "tracert {host}", "net start", "net statistics workstation")


@lone_workload("admin_lone", 3.0)
def admin_lone(s: Session) -> None:
    """An admin or user types one to three everyday commands into a shell."""
    r = s.r
    shell = _shell(s)
    for chore in r.sample(_ADMIN, r.pick((1, 1, 2, 3))):
        line = chore.format(host=r.host(), user=r.user(), svc=r.pick(("Spooler", "wuauserv", "W32Time", "BITS")),
                            proc=r.pick(("chrome.exe", "outlook.exe", "java.exe")), share=r.pick(("share", "users", "dept")))
        exe = "PING" if line.startswith("ping") else line.split()[0]
        if r.chance(0.1):
            line = line.upper()
        s.run(sys32(r, f"{exe}.exe"), line, parent=shell, via_shell=0.2 if "cmd" not in shell.image else 0.0,
              integrity=r.pick(("Medium", "Medium", "High")))
        s.b.tick(3, 90)


_SERVICES = ("Spooler", "wuauserv", "MSSQLSERVER", "W3SVC", "AdobeARMservice", "VeeamBackupSvc", "TeamViewer",
             "zabbix agent", "CiscoAnyConnect", "gupdate", "MozillaMaintenance", "Apache2.4", "postgresql-x64-15")


@lone_workload("installer_services", 1.5)
def installer_services(s: Session) -> None:
    """An installer, updater or deployment script stops and starts its service (`net stop`, `net start`,
    `sc config`), as 4688 records it: the installer never seen starting."""
    r = s.r
    svc = r.pick(_SERVICES)
    vendor = r.pick(("Adobe", "Veeam", "TeamViewer", "Zabbix", "Cisco", "Google", "Mozilla", "Apache", "PostgreSQL"))
    parent = s.b.existing(r.pick((sys32(r, "msiexec.exe"), f"C:\\Program Files\\{vendor}\\{r.word()}\\setup.exe",
                                  f"C:\\Users\\{s.user}\\AppData\\Local\\Temp\\{r.token(6, 10)}\\{r.word()}-installer.exe",
                                  f"C:\\Windows\\Temp\\{{{r.hexstr(8)}}}\\setup.exe", powershell(r))),
                          user=r.pick(("NT AUTHORITY\\SYSTEM", r.domain_user(s.user))))
    name = f'"{svc}"' if " " in svc else svc
    for line in r.sample((f"net stop {name}", f"net start {name}", f"sc config {name} start= auto",
                          f"net stop {name} /y", f"sc stop {name}", f"sc start {name}"), r.num(1, 2)):
        exe = line.split()[0]
        s.run(sys32(r, f"{exe}.exe"), line, parent=parent, via_shell=0.3, integrity=r.pick(("High", "System")))


@lone_workload("settings_export", 1.0)
def settings_export(s: Session) -> None:
    """A user or support script backs up an application's own settings with `reg export` / `reg query`."""
    r = s.r
    shell = _shell(s)
    vendor = r.pick(("Microsoft\\Office\\16.0\\Outlook", "SimonTatham\\PuTTY\\Sessions", "Notepad++", "7-Zip",
                     "Mozilla\\Firefox", "Google\\Chrome", "VMware, Inc.", "Microsoft\\Terminal Server Client",
                     "WinSCP 2", "ODBC\\ODBC.INI", "Microsoft\\Windows\\CurrentVersion\\Explorer\\Advanced"))
    hive = r.pick(("HKCU\\Software", "HKCU\\Software", "HKLM\\SOFTWARE"))
    folder = r.pick(("Desktop", "Documents", "OneDrive\\Backup"))
    out = f"C:\\Users\\{s.user}\\{folder}\\{r.name('reg')}"
    if r.chance(0.75):
        line = f'reg export "{hive}\\{vendor}" "{out}"{r.pick(("", " /y"))}'
    else:
        line = f'reg query "{hive}\\{vendor}"{r.pick(("", " /s"))}'
    proc = s.run(sys32(r, "reg.exe"), line, parent=shell, via_shell=0.2, integrity=r.pick(("Medium", "High")))
    if line.startswith("reg export"):
        s.b.write(proc, out)


@lone_workload("management_wmi", 1.0)
def management_wmi(s: Session) -> None:
    """A management agent or inventory script queries (not executes) through WMI: `wmic ... get`, or the
    WMI provider host runs a vendor's inventory tool."""
    r = s.r
    if r.chance(0.6):
        shell = _shell(s) if r.chance(0.5) else s.b.existing(
            r.pick(("C:\\Program Files\\Lansweeper\\LsAgent\\LsAgent.exe", sys32(r, "CCM\\CcmExec.exe"),
                    "C:\\Program Files (x86)\\ManageEngine\\UEMS_Agent\\bin\\dcagentservice.exe")),
            user="NT AUTHORITY\\SYSTEM")
        line = r.pick(("wmic bios get serialnumber", "wmic os get caption,version", "wmic logicaldisk get size,freespace",
                       "wmic product get name,version", "wmic cpu get name", "wmic computersystem get model",
                       "wmic qfe list brief", "wmic nic where netenabled=true get macaddress"))
        s.run(sys32(r, "wbem\\WMIC.exe"), line, parent=shell, via_shell=0.2, integrity="High")
    else:
        wmi = s.b.existing(sys32(r, "wbem\\WmiPrvSE.exe"), user="NT AUTHORITY\\SYSTEM")
        tool = r.pick((sys32(r, "CCM\\CcmEval.exe"), "C:\\Program Files\\Microsoft Monitoring Agent\\Agent\\HealthService.exe",
                       sys32(r, "gpupdate.exe")))
        s.run(tool, f'"{tool}"' if r.chance(0.5) else tool.rsplit("\\", 1)[-1], parent=wmi, integrity="System")


