"""Simulated benign Windows small trees, part 2: the tools of `win_lone2`'s lone attacks (`sc`, `reg`,
`schtasks`, `netsh`, `auditpol`, `wevtutil`, `setspn`, `net use`, `cmdkey`, `bcdedit`, `dnscmd`,
`tscon`, `ssh`, PowerShell...) typed or run for ordinary reasons, one to three commands under a parent
the recording did not see start.

Why: every attack in `win_lone2` is a tool administrators, installers and management agents also run.
An installer sets its own service's recovery (`sc failure Svc ... actions= restart/60000`), start type and
firewall rule for a program under Program Files; an updater registers its scheduled task as SYSTEM;
admins map drives (`net use` with no password on the line), read event logs, audit and firewall settings,
list SPNs, harden LSA and turn auditing *on* with the very keys and switches the attacks turn off;
agents run signed scripts with `-ExecutionPolicy Bypass -File`. Shown alone through Security 4688, such a
command differs from the attack in its values, paths and targets, which is what the process-creation
view has to learn.

`LONE2_WORKLOADS` is driven like `win_benign_lone.LONE_WORKLOADS` (`simulate.simulate_benign` on the
Windows benign entry, whose session has `malicious=False`); each workload starts its own parent
(an admin shell, an installer, a management agent or a service) with `TreeBuilder.existing`.
"""

from __future__ import annotations

from typing import NamedTuple

from pipeline.training.sim.builder import Proc
from pipeline.training.sim.catalog import Workloads
from pipeline.training.sim.session import Session
from pipeline.training.sim.vocab import Rand, powershell, sys32
from pipeline.training.sim.win_benign_lone import _shell
from pipeline.training.sim.win_lone2 import _q, _room, _set_value, _tool

LONE2_WORKLOADS = Workloads()
"""(name, relative weight, generator) of the small benign trees of part 2."""
lone2_workload = LONE2_WORKLOADS.add

SYSTEM = "NT AUTHORITY\\SYSTEM"


# --- parents and vendors -------------------------------------------------------------------------


class Vendor(NamedTuple):
    """A software product with a Windows service: where it lives and what it listens on."""

    company: str
    home: str
    exe: str
    service: str
    port: int | None


_VENDORS = (
    ("Zabbix", "Zabbix Agent 2", "zabbix_agent2.exe", "Zabbix Agent 2", 10050),
    ("PostgreSQL", "PostgreSQL\\15\\bin", "pg_ctl.exe", "postgresql-x64-15", 5432),
    ("Apache", "Apache Software Foundation\\Tomcat 9.0\\bin", "tomcat9.exe", "Tomcat9", 8080),
    ("Microsoft", "Microsoft SQL Server\\MSSQL16.MSSQLSERVER\\MSSQL\\Binn", "sqlservr.exe", "MSSQLSERVER", 1433),
    ("Veeam", "Veeam\\Backup Transport", "VeeamTransportSvc.exe", "VeeamTransportSvc", 6162),
    ("TeamViewer", "TeamViewer", "TeamViewer_Service.exe", "TeamViewer", 5938),
    ("Splunk", "SplunkUniversalForwarder\\bin", "splunkd.exe", "SplunkForwarder", 8089),
    ("Oracle", "MySQL\\MySQL Server 8.0\\bin", "mysqld.exe", "MySQL80", 3306),
    ("Elastic", "Elastic\\Agent", "elastic-agent.exe", "Elastic Agent", None),
    ("Datadog", "Datadog\\Datadog Agent\\bin", "agent.exe", "datadogagent", 8125),
    ("Jenkins", "Jenkins", "jenkins.exe", "Jenkins", 8080),
    ("Adobe", "Common Files\\Adobe\\ARM\\1.0", "armsvc.exe", "AdobeARMservice", None),
    ("Plex", "Plex\\Plex Media Server", "PlexUpdateService.exe", "PlexUpdateService", 32400),
    ("Mozilla", "Mozilla Maintenance Service", "maintenanceservice.exe", "MozillaMaintenance", None),
    ("Google", "Google\\Update", "GoogleUpdate.exe", "gupdate", None),
    ("Dell", "Dell\\SupportAssistAgent\\bin", "SupportAssistAgent.exe", "SupportAssistAgent", None),
    ("Lenovo", "Lenovo\\System Update", "SUService.exe", "SUService", None),
    ("Nginx", "nginx", "nginx.exe", "nginx", 80),
    ("Microsoft", "Microsoft\\Exchange Server\\V15\\Bin", "Microsoft.Exchange.ServiceHost.exe", "MSExchangeServiceHost", 443),
    ("FileZilla", "FileZilla Server", "filezilla-server.exe", "filezilla-server", 21),
    ("Grafana", "GrafanaLabs\\grafana\\bin", "grafana.exe", "Grafana", 3000),
    ("Sophos", "Sophos\\AutoUpdate", "SAUService.exe", "Sophos AutoUpdate Service", None),
    ("Citrix", "Citrix\\Virtual Desktop Agent", "BrokerAgent.exe", "BrokerAgent", 80),
    ("VMware", "VMware\\VMware Tools", "vmtoolsd.exe", "VMTools", None),
)


def _vendor(r: Rand) -> Vendor:
    company, folder, exe, service, port = r.pick(_VENDORS)
    root = "C:\\Program Files (x86)" if company in ("Google", "Adobe", "Plex") or r.chance(0.15) else "C:\\Program Files"
    return Vendor(company, f"{root}\\{folder}", exe, service, port)


def _under(s: Session, parent: Proc) -> Session:
    """The same device and user, commands now started by `parent` (nothing malicious)."""
    return Session(s.b, s.r, s.user, parent, s.dirs, malicious=False)


def _admin(s: Session) -> Session:
    """An admin's shell (or Explorer's Run dialog) that started before the recording."""
    return _under(s, _shell(s))


def _installer(s: Session, v: Vendor) -> Session:
    """An installer, uninstaller or updater of `v`, not seen starting."""
    r = s.r
    image = r.pick((sys32(r, "msiexec.exe"), sys32(r, "msiexec.exe"), f"C:\\Windows\\Installer\\MSI{r.hexstr(4).upper()}.tmp",
                    f"{v.home}\\{r.pick(('setup.exe', 'install.exe', 'uninstall.exe', 'updater.exe'))}",
                    f"C:\\Users\\{s.user}\\AppData\\Local\\Temp\\{r.token(6, 10)}\\{v.company.lower()}-setup.exe",
                    f"C:\\Windows\\Temp\\{r.guid()}\\setup.exe", f"C:\\ProgramData\\Package Cache\\{r.guid()}\\{v.company}Setup.exe"))
    user = SYSTEM if "msiexec" in image.lower() or r.chance(0.5) else r.domain_user(s.user)
    return _under(s, s.b.existing(image, user=user))


_AGENTS = ("C:\\Windows\\CCM\\CcmExec.exe", "C:\\Program Files\\Lansweeper\\LsAgent\\LsAgent.exe",
           "C:\\Program Files (x86)\\Microsoft Intune Management Extension\\AgentExecutor.exe",
           "C:\\Program Files (x86)\\Tanium\\Tanium Client\\TaniumClient.exe",
           "C:\\Program Files (x86)\\Kaseya\\{id}\\AgentMon.exe", "C:\\ProgramData\\NinjaRMMAgent\\ninjarmmagent.exe",
           "C:\\Program Files (x86)\\ManageEngine\\UEMS_Agent\\bin\\dcagentservice.exe",
           "C:\\Program Files\\Puppet Labs\\Puppet\\sys\\ruby\\bin\\ruby.exe", "C:\\Program Files\\Salt Project\\Salt\\bin\\python.exe",
           "C:\\Windows\\System32\\services.exe", "C:\\Windows\\System32\\svchost.exe")


def _agent(s: Session) -> Session:
    """A management agent (SCCM, Intune, Lansweeper, Tanium, an RMM, config management) or a service host."""
    r = s.r
    image = r.pick(_AGENTS).format(id=r.token(8, 12).upper())
    return _under(s, s.b.existing(r.case(image), user=SYSTEM))


def _admin_integrity(r: Rand) -> str:
    return r.pick(("High", "High", "Medium"))


def _dom(r: Rand) -> str:
    return r.pick(("corp", "ad", r.token(3, 8))) + r.pick((".local", ".lan", ".com", ".net", ".int"))


def _share_host(r: Rand) -> str:
    return r.pick((f"fs{r.num(1, 9):02d}", f"FS{r.num(1, 9):02d}", f"filesrv{r.num(1, 4)}", f"nas{r.num(1, 3)}",
                   f"{r.pick(('fs', 'files', 'data'))}.{_dom(r)}", r.host()))


# --- services ------------------------------------------------------------------------------------

@lone2_workload("svc_recovery_setup", 1.5)
def svc_recovery_setup(s: Session) -> None:
    """An installer sets its service's recovery: restart after a minute (`sc failure SVC reset= 86400
    actions= restart/60000/...`), sometimes failureflag or a look at qfailure; rarely a notifier under
    Program Files as the failure command."""
    r = s.r
    v = _vendor(r)
    inst = _installer(s, v)
    name = _q(r, v.service, 0.2)
    delay = r.pick((60000, 60000, 30000, 5000, 120000, 10000))
    actions = r.pick((f"restart/{delay}", f"restart/{delay}/restart/{delay}/restart/{delay}",
                      f"restart/{delay}/restart/{delay}//0", f'restart/{delay}/restart/{delay}/""/{delay}',
                      f"restart/{delay}/restart/{delay * 2}/none/0"))
    parts = [f"reset= {r.pick((86400, 86400, 0, 3600, 604800))}", f"actions= {actions}"]
    if r.chance(0.1):
        actions = f"restart/{delay}/run/{delay}"
        parts = [parts[0], f"actions= {actions}", f'command= "\\"{v.home}\\{r.pick(("notify.exe", "crashreport.exe"))}\\""']
    commands = [f"failure {name} {' '.join(parts)}"]
    if r.chance(0.3):
        commands.append(f"failureflag {name} {r.pick((1, 1, 0))}")
    if r.chance(0.2):
        commands.insert(0, f"qfailure {name}")
    for args in commands:
        if _room(inst, 2):
            _tool(inst, "sc", args, integrity=r.pick(("High", "System")))


@lone2_workload("svc_config_setup", 1.5)
def svc_config_setup(s: Session) -> None:
    """An installer or admin configures a Program Files service: start type, description, creation with
    its binPath under Program Files, deletion on uninstall, or a value of its own service key."""
    r = s.r
    v = _vendor(r)
    sess = _installer(s, v) if r.chance(0.7) else _admin(s)
    name = _q(r, v.service, 0.2)
    binpath = f"{v.home}\\{v.exe}"
    choice = r.rng.randrange(6)
    if choice <= 1:
        args = f"config {name} start= {r.pick(('auto', 'auto', 'delayed-auto', 'demand', 'disabled'))}"
    elif choice == 2:
        args = f'description {name} "{v.company} {r.pick(("agent", "service", "update service", "server"))}"'
    elif choice == 3:
        args = (f'create {name} binPath= "\\"{binpath}\\"{r.pick(("", " -service", " --run-as-service", " //RS//" + v.service))}"'
                f" start= {r.pick(('auto', 'delayed-auto', 'demand'))}{r.pick(('', ' DisplayName= ' + chr(34) + v.company + ' Service' + chr(34)))}")
    elif choice == 4:
        args = r.pick((f'config {name} binpath= "\\"{binpath}\\" -service"', f"delete {name}", f"config {name} depend= Tcpip/Afd",
                       f"config {name} obj= LocalSystem"))
    else:
        key = f"HKLM\\SYSTEM\\CurrentControlSet\\Services\\{v.service}"
        value, data, rtype = r.pick((("DelayedAutostart", "1", "REG_DWORD"), ("Start", "2", "REG_DWORD"),
                                     ("Description", f"{v.company} service", "REG_SZ"),
                                     ("ListenPort", str(v.port or 8080), "REG_DWORD")))
        sub = "\\Parameters" if value == "ListenPort" else ""
        _set_value(sess, f"{key}{sub}", value, data, rtype, ps=0.0, integrity="High")
        return
    _tool(sess, "sc", args, integrity=r.pick(("High", "System")))
    if r.chance(0.3) and _room(sess, 2):
        _tool(sess, "sc", f"{r.pick(('start', 'stop', 'query'))} {name}", integrity="High")


@lone2_workload("svc_inspect_admin", 1.0)
def svc_inspect_admin(s: Session) -> None:
    """An admin inspects a service: `sc sdshow`, `sc qc`, `sc queryex`, `sc qfailure`, Get-Service, or
    its ImagePath with `reg query`."""
    r = s.r
    v = _vendor(r)
    sess = _admin(s)
    name = _q(r, r.pick((v.service, "Spooler", "wuauserv", "W32Time", "WinRM", "BITS", "LanmanServer")), 0.1)
    pool = (("sc", f"sdshow {name}"), ("sc", f"qc {name}"), ("sc", f"queryex {name}"), ("sc", f"qfailure {name}"),
            ("sc", "query type= service state= all"), ("sc", f"qdescription {name}"), ("sc", "query state= all"),
            ("reg", f"query HKLM\\SYSTEM\\CurrentControlSet\\Services\\{name.strip(chr(34))} /v ImagePath"),
            ("ps", f"Get-Service -Name '{name.strip(chr(34))}' | Format-List *"),
            ("ps", "Get-CimInstance Win32_Service | Where-Object StartMode -eq 'Auto' | Select-Object Name,State,PathName"))
    for exe, args in r.sample(pool, r.pick((1, 1, 2, 3))):
        if not _room(sess, 2):
            break
        if exe == "ps":
            sess.ps(args, encoded=0.0, flags=r.pick(("", "-NoProfile")))
        else:
            _tool(sess, exe, args, via_shell=0.2, integrity=_admin_integrity(r))


# --- registry ------------------------------------------------------------------------------------

@lone2_workload("vendor_registry_settings", 1.5)
def vendor_registry_settings(s: Session) -> None:
    """An application, its installer or a user sets the application's own values (HKCU\\Software\\Vendor,
    HKLM\\SOFTWARE\\Vendor, its Run entry under Program Files), with reg add or Set-ItemProperty."""
    r = s.r
    v = _vendor(r)
    product = r.pick(("Agent", "Client", "Viewer", "Settings", "Update", v.service.replace(" ", "")))
    sess = _installer(s, v) if r.chance(0.5) else _admin(s)
    hive = r.pick(("HKCU\\Software", "HKLM\\SOFTWARE", "HKLM\\SOFTWARE\\WOW6432Node"))
    for _ in range(r.pick((1, 1, 2))):
        if not _room(sess, 2):
            break
        if r.chance(0.15):
            key = f"{hive.replace('WOW6432Node', '').rstrip(chr(92))}\\Microsoft\\Windows\\CurrentVersion\\Run"
            _set_value(sess, key, f"{v.company}{product}", f'"{v.home}\\{v.exe}" {r.pick(("/tray", "--background", "-minimized"))}',
                       ps=0.1, flags="-NoProfile", integrity="High")
            continue
        value, data, rtype = r.pick((("InstallDir", v.home, "REG_SZ"), ("Version", f"{r.num(1, 20)}.{r.num(0, 9)}.{r.num(0, 999)}", "REG_SZ"),
                                     ("AutoUpdate", r.pick(("0", "1")), "REG_DWORD"), ("Theme", r.pick(("dark", "light")), "REG_SZ"),
                                     ("Server", f"{r.pick(('app', 'srv', 'mgmt'))}{r.num(1, 9)}.{_dom(r)}", "REG_SZ"),
                                     ("Port", str(v.port or r.pick((443, 8443))), "REG_DWORD"), ("LogLevel", r.pick(("2", "3", "4")), "REG_DWORD"),
                                     ("TelemetryEnabled", "0", "REG_DWORD"), ("Language", r.pick(("en-US", "de-DE", "fr-FR")), "REG_SZ")))
        _set_value(sess, f"{hive}\\{v.company}\\{product}", value, data, rtype, ps=0.25, flags="-NoProfile",
                   integrity=r.pick(("Medium", "High")))


_POLICIES = (
    ("HKCU\\Control Panel\\Desktop", "ScreenSaveTimeOut", "REG_SZ", ("600", "900", "300")),
    ("HKCU\\Control Panel\\Desktop", "ScreenSaverIsSecure", "REG_SZ", ("1",)),
    ("HKCU\\Software\\Policies\\Microsoft\\Windows\\Control Panel\\Desktop", "ScreenSaveActive", "REG_SZ", ("1",)),
    ("HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings", "ProxyEnable", "REG_DWORD", ("1", "0")),
    ("HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings", "ProxyServer", "REG_SZ",
     ("proxy.{dom}:8080", "10.0.0.10:3128", "proxy:80")),
    ("HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings", "ProxyOverride", "REG_SZ", ("<local>;*.{dom}",)),
    ("HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows\\WindowsUpdate\\AU", "NoAutoRebootWithLoggedOnUsers", "REG_DWORD", ("1",)),
    ("HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows\\WindowsUpdate", "WUServer", "REG_SZ", ("http://wsus.{dom}:8530",)),
    ("HKLM\\SOFTWARE\\Policies\\Microsoft\\Edge", "HomepageLocation", "REG_SZ", ("https://intranet.{dom}",)),
    ("HKLM\\SOFTWARE\\Policies\\Google\\Chrome", "RestoreOnStartup", "REG_DWORD", ("4", "1")),
    ("HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System", "LegalNoticeCaption", "REG_SZ", ("Notice", "Authorized use only")),
    ("HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System", "DisableCAD", "REG_DWORD", ("0",)),
    ("HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\Advanced", "HideFileExt", "REG_DWORD", ("0",)),
    ("HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\Advanced", "TaskbarAl", "REG_DWORD", ("0",)),
    ("HKLM\\SOFTWARE\\Policies\\Microsoft\\OneDrive", "KFMSilentOptIn", "REG_SZ", ("{guid}",)),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\Power", "HibernateEnabled", "REG_DWORD", ("0",)),
    ("HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows NT\\Printers\\PointAndPrint", "RestrictDriverInstallationToAdministrators",
     "REG_DWORD", ("1",)),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem", "LongPathsEnabled", "REG_DWORD", ("1",)),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters", "SearchList", "REG_SZ", ("{dom}",)),
)


@lone2_workload("admin_policy_registry", 1.2)
def admin_policy_registry(s: Session) -> None:
    """An admin, logon script or management agent sets everyday policy values: screen saver, proxy,
    Windows Update, browser home page, legal notice, Explorer options, long paths."""
    r = s.r
    sess = _admin(s) if r.chance(0.6) else _agent(s)
    dom = _dom(r)
    for key, value, rtype, datas in r.sample(_POLICIES, r.pick((1, 1, 2, 3))):
        if not _room(sess, 2):
            break
        data = r.pick(datas).format(dom=dom, guid=r.guid().strip("{}"))
        _set_value(sess, key, value, data, rtype, ps=0.2, flags=r.pick(("-NoProfile", "-NoProfile -ExecutionPolicy Bypass")),
                   integrity=r.pick(("High", "System" if "HKLM" in key else "Medium")))


_HARDENING = (
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\WDigest", "UseLogonCredential", "0"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa", "RunAsPPL", "1"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa", "LmCompatibilityLevel", "5"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa", "NoLmHash", "1"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa", "RestrictAnonymous", "1"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa", "RestrictAnonymousSAM", "1"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa", "DisableDomainCreds", "1"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa\\MSV1_0", "NTLMMinClientSec", "537395200"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL\\Protocols\\TLS 1.0\\Server", "Enabled", "0"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL\\Protocols\\TLS 1.2\\Client", "DisabledByDefault", "0"),
    ("HKLM\\SOFTWARE\\Microsoft\\.NETFramework\\v4.0.30319", "SchUseStrongCrypto", "1"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Services\\LanmanServer\\Parameters", "SMB1", "0"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Services\\LanmanWorkstation\\Parameters", "RequireSecuritySignature", "1"),
    ("HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System\\Audit", "ProcessCreationIncludeCmdLine_Enabled", "1"),
    ("HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows\\PowerShell\\ScriptBlockLogging", "EnableScriptBlockLogging", "1"),
    ("HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender", "PUAProtection", "1"),
    ("HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender\\Spynet", "SpynetReporting", "2"),
    ("HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender\\Real-Time Protection", "DisableRealtimeMonitoring", "0"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\DeviceGuard", "EnableVirtualizationBasedSecurity", "1"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Control\\Terminal Server\\WinStations\\RDP-Tcp", "UserAuthentication", "1"),
)


@lone2_workload("security_hardening", 1.0)
def security_hardening(s: Session) -> None:
    """A hardening script or admin sets the security keys the attacks weaken, to their safe values
    (WDigest off, LSA protection on, NTLMv2 only, SMB1 off, command-line auditing on, Defender
    real-time on), or turns auditing and log channels *on* with auditpol and wevtutil."""
    r = s.r
    sess = _admin(s) if r.chance(0.5) else _agent(s)
    for _ in range(r.pick((1, 1, 2, 3))):
        if not _room(sess, 2):
            break
        choice = r.rng.randrange(5)
        if choice <= 2:
            key, value, data = r.pick(_HARDENING)
            _set_value(sess, key, value, data, "REG_DWORD", ps=0.2, flags="-NoProfile -ExecutionPolicy Bypass",
                       integrity=r.pick(("High", "System")))
        elif choice == 3:
            sub = r.pick(("Process Creation", "Logon", "Credential Validation", "Security Group Management",
                          "User Account Management", "Audit Policy Change", "Kerberos Authentication Service"))
            what = r.pick((f'/subcategory:"{sub}"', '/category:"Logon/Logoff"', '/category:"Account Logon"'))
            _tool(sess, "auditpol", f"/set {what} /success:enable{r.pick(('', ' /failure:enable'))}", integrity="High")
        else:
            log = r.pick(("Microsoft-Windows-PowerShell/Operational", "Microsoft-Windows-TaskScheduler/Operational",
                          "Microsoft-Windows-DNS-Client/Operational", "Security", "Microsoft-Windows-Sysmon/Operational"))
            flag = r.pick(("/e:true", "/enabled:true", f"/ms:{r.pick((209715200, 1073741824, 4194304 * 128))}", "/rt:false"))
            _tool(sess, "wevtutil", f"sl {_q(r, log, 0.2)} {flag}", integrity="High")


@lone2_workload("registry_queries", 1.0)
def registry_queries(s: Session) -> None:
    """An admin or support script reads the registry: installed software, the Windows version, a
    service's ImagePath, proxy settings, Run entries, applied policies."""
    r = s.r
    v = _vendor(r)
    sess = _admin(s) if r.chance(0.7) else _agent(s)
    pool = (f"query HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall /s /f {_q(r, v.company, 0.3)}",
            f'query "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion" /v {r.pick(("ProductName", "CurrentBuild", "DisplayVersion", "UBR"))}',
            f"query HKLM\\SYSTEM\\CurrentControlSet\\Services\\{_q(r, v.service, 0.0)} /v ImagePath",
            '"HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings" /v ProxyServer',
            "query HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
            '"HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender" /s',
            f'query "{"HKLM" if r.chance(0.5) else "HKCU"}\\Software\\{v.company}" /s',
            "query HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa /v RunAsPPL",
            "query HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows\\WindowsUpdate /s",
            "query HKLM\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Environment /v Path")
    for args in r.sample(pool, r.pick((1, 1, 2))):
        if not _room(sess, 2):
            break
        args = args if args.startswith("query") else f"query {args}"
        _tool(sess, "reg", args, via_shell=0.2, integrity=_admin_integrity(r))


# --- scheduled tasks -----------------------------------------------------------------------------

@lone2_workload("vendor_task_setup", 1.2)
def vendor_task_setup(s: Session) -> None:
    """An installer registers its updater or maintenance task: an executable under Program Files,
    daily, hourly or at logon, often as SYSTEM with highest privileges (schtasks /create, /xml, or
    Register-ScheduledTask)."""
    r = s.r
    v = _vendor(r)
    inst = _installer(s, v)
    name = r.pick((f"{v.company}Update", f"{v.company} {r.pick(('Updater', 'Maintenance', 'Telemetry', 'Health Check'))}",
                   f"\\{v.company}\\{r.pick(('Update', 'Cleanup', 'Sync'))}", f"{v.company}UpdateTaskMachine{r.pick(('Core', 'UA'))}"))
    exe = f"{v.home}\\{r.pick(('update.exe', 'updater.exe', v.exe, 'maintenance.exe'))}"
    schedule = r.pick(("/sc daily /st 03:00", f"/sc daily /st {r.num(0, 23):02d}:{r.pick(('00', '15', '30', '45'))}",
                       f"/sc hourly /mo {r.pick((1, 4, 6, 12))}", "/sc onlogon", "/sc onstart", "/sc weekly /d SUN /st 02:00"))
    choice = r.rng.randrange(5)
    if choice <= 2:
        tr = f'"\\"{exe}\\" {r.pick(("/silent", "/ua /installsource scheduler", "--check", "-update", "/c"))}"' if r.chance(0.6) else f'"{exe}"'
        parts = [f"/tn {_q(r, name, 0.7)}", f"/tr {tr}", schedule]
        if r.chance(0.6):
            parts.append(r.pick(("/ru SYSTEM", '/ru "NT AUTHORITY\\SYSTEM"', "/ru system")))
        if r.chance(0.4):
            parts.append("/rl highest")
        parts.append("/f")
        _tool(inst, "schtasks", f"/create {' '.join(parts)}", integrity=r.pick(("High", "System")))
    elif choice == 3:
        _tool(inst, "schtasks", f'/create /tn {_q(r, name, 0.7)} /xml "{v.home}\\{r.pick(("task.xml", "update-task.xml"))}" /f',
              integrity="System")
    else:
        inst.ps(f"Register-ScheduledTask -TaskName '{name.strip(chr(92))}' -Action (New-ScheduledTaskAction -Execute '{exe}') "
                f"-Trigger (New-ScheduledTaskTrigger -Daily -At 3am) -User 'SYSTEM' -Force",
                encoded=0.0, flags="-NoProfile -ExecutionPolicy Bypass")


@lone2_workload("task_admin", 1.0)
def task_admin(s: Session) -> None:
    """An admin lists, runs, ends, disables or deletes scheduled tasks of installed software."""
    r = s.r
    v = _vendor(r)
    sess = _admin(s) if r.chance(0.7) else _installer(s, v)
    task = _q(r, r.pick((f"{v.company}Update", f"\\{v.company}\\Update", "\\Microsoft\\Windows\\Defrag\\ScheduledDefrag",
                         "\\Microsoft\\Windows\\WindowsUpdate\\Scheduled Start", f"{v.company} Maintenance")), 0.6)
    pool = (f"/query{r.pick(('', ' /fo csv', ' /fo table', ' /fo list /v', ' /v'))}", f"/query /tn {task}",
            f"/query /tn {task} /v /fo list", f"/run /tn {task}", f"/end /tn {task}", f"/change /tn {task} /disable",
            f"/change /tn {task} /enable", f"/delete /tn {task} /f")
    for args in r.sample(pool, r.pick((1, 1, 2))):
        if not _room(sess, 2):
            break
        _tool(sess, "schtasks", args, via_shell=0.2, integrity=_admin_integrity(r))


# --- firewall and port proxy ---------------------------------------------------------------------

@lone2_workload("installer_firewall_rule", 1.2)
def installer_firewall_rule(s: Session) -> None:
    """An installer opens its port or program under Program Files (netsh advfirewall add rule,
    New-NetFirewallRule), removes it on uninstall, or an admin enables a built-in rule group."""
    r = s.r
    v = _vendor(r)
    sess = _installer(s, v) if r.chance(0.7) else _admin(s)
    name = f"{v.company} {r.pick(('Agent', 'Service', 'Server', v.service))}"
    program = f"{v.home}\\{v.exe}"
    choice = r.rng.randrange(5)
    if choice <= 1:
        parts = [f'name="{name}"', "dir=in", "action=allow"]
        if v.port and r.chance(0.6):
            parts += [f"protocol={r.pick(('TCP', 'tcp'))}", f"localport={v.port}"]
        else:
            parts.append(f'program="{program}"')
        for extra in ("enable=yes", f"profile={r.pick(('domain', 'domain,private', 'any'))}", f'description="{v.company}"'):
            if r.chance(0.35):
                parts.append(extra)
        _tool(sess, "netsh", f"advfirewall firewall add rule {' '.join(parts)}", integrity=r.pick(("High", "System")))
    elif choice == 2:
        verb = r.pick(("delete rule", "set rule"))
        change = r.pick((" new enable=yes", " new enable=no")) if verb == "set rule" else ""
        _tool(sess, "netsh", f'advfirewall firewall {verb} name="{name}"{change}', integrity="High")
    elif choice == 3:
        group = r.pick(('"File and Printer Sharing"', '"Remote Desktop"', '"remote desktop"', '"Windows Remote Management"',
                        '"Network Discovery"', '"Windows Management Instrumentation (WMI)"'))
        _tool(sess, "netsh", f"advfirewall firewall set rule group={group} new enable={r.pick(('Yes', 'yes'))}", integrity="High")
    else:
        what = f"-LocalPort {v.port} -Protocol TCP" if v.port else f"-Program '{program}'"
        sess.ps(f"New-NetFirewallRule -DisplayName '{name}' -Direction Inbound {what} -Action Allow"
                f"{r.pick(('', ' -Profile Domain,Private', ' -Group ' + chr(39) + v.company + chr(39)))}",
                encoded=0.0, flags="-NoProfile -ExecutionPolicy Bypass")


@lone2_workload("firewall_and_proxy_checks", 0.8)
def firewall_and_proxy_checks(s: Session) -> None:
    """An admin checks a vendor's rule, the current profile or the port proxy table (netsh ... show,
    Get-NetFirewallRule)."""
    r = s.r
    v = _vendor(r)
    sess = _admin(s)
    pool = (("netsh", f'advfirewall firewall show rule name="{v.company} {r.pick(("Agent", "Service", "Server"))}"'
                      f"{r.pick(('', ' verbose'))}"),
            ("netsh", "advfirewall show currentprofile"), ("netsh", "interface portproxy show all"),
            ("netsh", "interface portproxy show v4tov4"), ("netsh", "advfirewall firewall show rule name=all dir=in | findstr /i " + v.company),
            ("ps", f"Get-NetFirewallRule -DisplayName '{v.company}*' | Format-Table DisplayName,Enabled,Direction"),
            ("ps", "Get-NetFirewallProfile | Select-Object Name,Enabled"), ("netsh", "winhttp show advproxy"))
    for exe, args in r.sample(pool, r.pick((1, 1, 2))):
        if not _room(sess, 2):
            break
        if exe == "ps":
            sess.ps(args, encoded=0.0, flags=r.pick(("", "-NoProfile")))
        elif "|" in args:
            sess.cmd(f"netsh {args}")
        else:
            _tool(sess, exe, args, via_shell=0.2, integrity=_admin_integrity(r))


@lone2_workload("wsl_port_forward", 0.4)
def wsl_port_forward(s: Session) -> None:
    """A developer forwards a local port to a service in WSL2 (same port on the WSL address), lists or
    removes the forwarding, as Microsoft's WSL networking documentation describes."""
    r = s.r
    sess = _admin(s)
    port = r.pick((3000, 5000, 8000, 8080, 8888, 5173, 4200, 22, 9000))
    wsl_ip = f"172.{r.num(17, 31)}.{r.num(0, 255)}.{r.num(2, 254)}"
    choice = r.rng.randrange(3)
    if choice == 0:
        args = (f"interface portproxy add v4tov4 listenport={port} listenaddress={r.pick(('0.0.0.0', '127.0.0.1'))} "  # noqa: S104
                f"connectport={port} connectaddress={wsl_ip}")
    elif choice == 1:
        args = f"interface portproxy delete v4tov4 listenport={port} listenaddress={r.pick(('0.0.0.0', '127.0.0.1'))}"  # noqa: S104
    else:
        args = r.pick(("interface portproxy show all", "interface portproxy reset"))
    _tool(sess, "netsh", args, integrity="High")


# --- audit, logs, file system, boot --------------------------------------------------------------

@lone2_workload("audit_policy_review", 0.3)
def audit_policy_review(s: Session) -> None:
    """An admin reviews (rarely) the audit policy: one subcategory or category, the list, or a backup."""
    r = s.r
    sess = _admin(s)
    args = r.pick(('/get /subcategory:"Logon"', '/get /subcategory:"Process Creation"', '/get /category:"Logon/Logoff"',
                   '/get /category:"Account Logon"', "/list /subcategory:*", f"/backup /file:C:\\Users\\{s.user}\\Documents\\audit.csv",
                   '/get /subcategory:"Credential Validation" /r'))
    _tool(sess, "auditpol", args, integrity="High")


@lone2_workload("eventlog_admin", 1.0)
def eventlog_admin(s: Session) -> None:
    """An admin or support script reads, exports or resizes event logs (wevtutil qe/gl/gli/el/epl/sl /ms:,
    Get-WinEvent)."""
    r = s.r
    sess = _admin(s) if r.chance(0.7) else _agent(s)
    log = _q(r, r.pick(("System", "Application", "Security", "Setup", "Microsoft-Windows-GroupPolicy/Operational",
                        "Microsoft-Windows-TaskScheduler/Operational")), 0.1)
    pool = (f"qe {log} /c:{r.pick((10, 25, 50, 100))} /rd:true /f:text", f"qe {log} /q:\"*[System[(Level=2)]]\" /c:20 /f:text",
            f"gl {log}", f"gli {log}", "el", f"epl {log} C:\\Users\\{s.user}\\Desktop\\{log.strip(chr(34)).split('/')[0]}.evtx",
            f"sl {log} /ms:{r.pick((67108864, 134217728, 209715200))}", f"qe {log} /c:5 /rd:true /f:xml")
    for args in r.sample(pool, r.pick((1, 1, 2))):
        if not _room(sess, 2):
            break
        if r.chance(0.15):
            sess.ps(f"Get-WinEvent -LogName '{log.strip(chr(34))}' -MaxEvents {r.pick((20, 50))}", encoded=0.0, flags="-NoProfile")
        else:
            _tool(sess, "wevtutil", args, via_shell=0.2, integrity=_admin_integrity(r))


@lone2_workload("system_tools_admin", 1.2)
def system_tools_admin(s: Session) -> None:
    """An admin or agent runs time, file-system and image tools: w32tm, fsutil fsinfo/behavior query/usn
    queryjournal, dism /online /get-features or /cleanup-image."""
    r = s.r
    sess = _admin(s) if r.chance(0.7) else _agent(s)
    pool = (("w32tm", "/query /status"), ("w32tm", "/query /source"), ("w32tm", "/query /peers"), ("w32tm", "/resync /force"),
            ("w32tm", f'/config /manualpeerlist:"{r.pick(("time.windows.com", "pool.ntp.org", "ntp." + _dom(r)))}" '
                      "/syncfromflags:manual /update"), ("w32tm", "/tz"),
            ("fsutil", "fsinfo drives"), ("fsutil", "fsinfo volumeinfo C:"), ("fsutil", "fsinfo ntfsinfo C:"),
            ("fsutil", f"behavior query {r.pick(('DisableDeleteNotify', 'SymlinkEvaluation', 'disablelastaccess', '8dot3name'))}"),
            ("fsutil", "usn queryjournal C:"), ("fsutil", "dirty query C:"),
            ("dism", f"/online /get-features{r.pick(('', ' /format:table'))}"), ("dism", "/online /cleanup-image /restorehealth"),
            ("dism", "/online /cleanup-image /scanhealth"), ("dism", "/online /get-packages"),
            ("dism", "/online /enable-feature /featurename:NetFx3 /all /norestart"))
    for exe, args in r.sample(pool, r.pick((1, 1, 2))):
        if not _room(sess, 2):
            break
        _tool(sess, exe, args, via_shell=0.2, integrity=r.pick(("High", "High", "System")))


@lone2_workload("boot_config_admin", 0.5)
def boot_config_admin(s: Session) -> None:
    """An admin or developer reads or sets ordinary boot options: bcdedit /enum, the hypervisor launch
    type (Hyper-V, Docker, VirtualBox), the boot menu timeout, an export of the store."""
    r = s.r
    sess = _admin(s)
    args = r.pick(("/enum", "/enum {current}", "/enum all", "/v", f"/set hypervisorlaunchtype {r.pick(('auto', 'off', 'Auto'))}",
                   f"/timeout {r.pick((5, 10, 30))}", "/set {bootmgr} displaybootmenu yes",
                   f"/export C:\\Users\\{s.user}\\Documents\\bcd-backup", "/enum firmware"))
    _tool(sess, "bcdedit", args, integrity="High")


# --- network shares, accounts, SPNs --------------------------------------------------------------

@lone2_workload("drive_mapping", 1.5)
def drive_mapping(s: Session) -> None:
    """A user, logon script or admin maps or removes a network drive (`net use Z: \\\\fs\\share`,
    /persistent:yes, `/user:DOM\\user` with no password on the line), or New-PSDrive."""
    r = s.r
    sess = _admin(s)
    share = f"\\\\{_share_host(r)}\\{r.pick(('share', 'projects', 'dept', 'home$', 'Users', 'public', 'finance', 'IT', 'scans'))}"
    letter = r.pick(("Z:", "Y:", "H:", "S:", "P:", "G:", "*"))
    dom = r.pick((r.token(3, 8).upper(), _dom(r)))
    choice = r.rng.randrange(6)
    if choice <= 1:
        args = f"use {letter} {share}{r.pick(('', ' /persistent:yes', ' /persistent:no', ' /P:Yes'))}"
    elif choice == 2:
        args = f"use {r.pick((letter + ' ', ''))}{share} /user:{dom}\\{s.user}{r.pick(('', ' /persistent:yes', ' /savecred'))}"
    elif choice == 3:
        args = f"use {letter if letter != '*' else 'Z:'} /delete{r.pick(('', ' /y'))}"
    elif choice == 4:
        args = r.pick(("use", f"use {share}", "use * /delete /y"))
    else:
        sess.ps(f"New-PSDrive -Name {r.pick(('Z', 'S', 'P'))} -PSProvider FileSystem -Root '{share}' -Persist",
                encoded=0.0, flags=r.pick(("", "-NoProfile")))
        return
    net = sys32(r, "net.exe")
    sess.run(net, f"{r.pick(('net', 'net.exe', net))} {args}", via_shell=0.2, integrity=r.pick(("Medium", "Medium", "High")))


@lone2_workload("shares_and_policy_admin", 0.4)
def shares_and_policy_admin(s: Session) -> None:
    """An admin (rarely) lists or creates a departmental share for a group, or reads the password policy."""
    r = s.r
    sess = _admin(s)
    dom = r.token(3, 8).upper()
    name = r.pick(("Data", "Projects", "Scans", "Finance", "Public", "Software"))
    args = r.pick((f"share {name}", f"share {name}=D:\\Shares\\{name} /grant:{dom}\\{name}-RW,change /remark:\"{name}\"",
                   f"share {name} /delete", "accounts", f"share {name}=E:\\{name} /grant:{dom}\\Domain Users,read"))
    if "Domain Users" in args:
        args = args.replace(f"{dom}\\Domain Users,read", f'"{dom}\\Domain Users",read')
    sess.run(sys32(r, "net.exe"), f"net {args}", via_shell=0.2, integrity="High")


@lone2_workload("spn_admin", 0.5)
def spn_admin(s: Session) -> None:
    """A domain or database admin lists an account's SPNs, checks for duplicates, or registers the SPN
    of a SQL Server or web service account (the documented Kerberos set-up)."""
    r = s.r
    sess = _admin(s)
    dom = _dom(r)
    short = dom.split(".")[0].upper()
    svc = r.pick(("svc_sql", "sqlsvc", "svc_iis", "svc-web", "svc_sharepoint", r.pick(("SQL01$", "WEB02$"))))
    host = r.pick(("sql01", "sql02", "web01", "app03", "sp01"))
    spn = r.pick((f"MSSQLSvc/{host}.{dom}:1433", f"MSSQLSvc/{host}.{dom}", f"HTTP/{host}.{dom}", f"HTTP/{host}"))
    args = r.pick((f"-L {short}\\{svc}", f"-L {svc}", f"-L {host}", f"-Q {spn}", "-X", "-X -F", f"-S {spn} {short}\\{svc}",
                   f"-L {short}\\{s.user}"))
    _tool(sess, "setspn", args, integrity="High")


# --- Defender, credentials, remote administration ------------------------------------------------

@lone2_workload("defender_admin", 1.0)
def defender_admin(s: Session) -> None:
    """An admin or agent checks or updates Microsoft Defender (Get-MpComputerStatus, Update-MpSignature,
    MpCmdRun -Scan/-SignatureUpdate, Start-MpScan), or adds a vendor-documented exclusion for a
    database or backup folder."""
    r = s.r
    v = _vendor(r)
    sess = _admin(s) if r.chance(0.6) else _agent(s)
    mpcmd = r.pick(("C:\\Program Files\\Windows Defender\\MpCmdRun.exe",
                    f"C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.{r.num(23000, 25000)}.{r.num(1, 9)}-0\\MpCmdRun.exe"))
    choice = r.rng.randrange(5)
    if choice <= 1:
        sess.ps(r.pick(("Get-MpComputerStatus", "Update-MpSignature", "Get-MpThreatDetection", "Get-MpPreference",
                        f"Start-MpScan -ScanType {r.pick(('QuickScan', 'FullScan'))}",
                        "Get-MpComputerStatus | Select-Object AMRunningMode,RealTimeProtectionEnabled,AntivirusSignatureLastUpdated",
                        f"Set-MpPreference -SignatureUpdateInterval {r.pick((4, 6, 8))}",
                        f"Set-MpPreference -ScanAvgCPULoadFactor {r.pick((20, 30, 50))}")),
                encoded=0.0, flags=r.pick(("", "-NoProfile", "-NoProfile -ExecutionPolicy Bypass")))
    elif choice <= 3:
        args = r.pick((f"-Scan -ScanType {r.pick((1, 2))}", "-SignatureUpdate -MMPC", "-GetFiles", "-ValidateMapsConnection",
                       f"-Scan -ScanType 3 -File \"C:\\Users\\{s.user}\\Downloads\"", "-RemoveDefinitions -DynamicSignatures"))
        sess.run(mpcmd, f'{r.pick(("MpCmdRun.exe", chr(34) + mpcmd + chr(34)))} {args}', via_shell=0.2, integrity="High")
    else:
        path = r.pick((v.home, f"D:\\{r.pick(('SQLData', 'Backups', 'VeeamRepo', 'Data'))}", f"C:\\ProgramData\\{v.company}\\Cache"))
        sess.ps(f"Add-MpPreference -ExclusionPath '{path}'", encoded=0.0, flags="-NoProfile -ExecutionPolicy Bypass")


@lone2_workload("credentials_and_rdp", 0.8)
def credentials_and_rdp(s: Session) -> None:
    """A sysadmin saves or removes a credential for a server (cmdkey /add /user: with no password on the
    line, /generic:TERMSRV/...), lists their own, or opens a remote desktop (mstsc /v:host)."""
    r = s.r
    sess = _admin(s)
    host = r.pick((r.host(), f"{r.host().lower()}.{_dom(r)}", r.int_ip()))
    user = f"{r.pick((r.token(3, 8).upper(), _dom(r)))}\\{r.pick((s.user, 'adm-' + s.user))}"
    choice = r.rng.randrange(5)
    if choice <= 2:
        args = r.pick((f"/add:{host} /user:{user}", f"/generic:TERMSRV/{host} /user:{user}", f"/delete:{host}",
                       f"/delete:TERMSRV/{host}", "/list", f"/list:TERMSRV/{host}"))
        _tool(sess, "cmdkey", args, via_shell=0.1, integrity="Medium")
    else:
        args = r.pick((f"/v:{host}", f"/v:{host}:{r.pick((3389, 3390, 33890))}", f"/v:{host} /admin", f"/v:{host} /f",
                       f"/v:{host} /w:1920 /h:1080", f"C:\\Users\\{s.user}\\Documents\\{r.host()}.rdp"))
        _tool(sess, "mstsc", args, via_shell=0.0, integrity="Medium")


_SCRIPT_DIRS = ("C:\\Program Files\\{company}\\Scripts", "C:\\Program Files (x86)\\Microsoft Intune Management Extension\\Policies\\Scripts",
                "C:\\Windows\\CCM\\SystemTemp", "C:\\Program Files\\Lansweeper\\LsAgent\\scripts",
                "C:\\ProgramData\\{company}\\scripts", "\\\\{dom}\\NETLOGON", "C:\\Program Files\\WindowsPowerShell\\Scripts")
_INVENTORY = ("Get-CimInstance Win32_OperatingSystem | Select-Object Caption,Version,LastBootUpTime",
              "Get-Service | Where-Object Status -eq 'Running' | Select-Object Name", "Get-HotFix | Sort-Object InstalledOn",
              "Get-ItemProperty HKLM:\\Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\* | Select DisplayName,DisplayVersion",
              "[Environment]::OSVersion.Version.ToString()", "Get-Volume | Select DriveLetter,SizeRemaining")


@lone2_workload("agent_powershell", 1.5)
def agent_powershell(s: Session) -> None:
    """A management agent runs a signed or vendor script: `powershell -NoProfile -ExecutionPolicy Bypass
    -File <script under Program Files / Intune / CCM>`, sometimes hidden and non-interactive, sometimes an
    inventory one-liner as -EncodedCommand (as configuration tools do)."""
    r = s.r
    v = _vendor(r)
    sess = _agent(s)
    folder = r.pick(_SCRIPT_DIRS).format(company=v.company, dom=_dom(r))
    if "Intune" in folder:
        script = f"{folder}\\{r.guid().strip('{}').lower()}_{r.guid().strip('{}').lower()}.ps1"
    else:
        script = f"{folder}\\{r.pick(('inventory', 'health-check', 'Collect-Logs', 'remediate', 'detect', 'cleanup', 'Update-Agent'))}.ps1"
    flags = r.pick(("-NoProfile -ExecutionPolicy Bypass", "-NoLogo -NoProfile -NonInteractive -ExecutionPolicy Bypass",
                    "-executionPolicy bypass", "-NoProfile -NonInteractive -WindowStyle Hidden -ExecutionPolicy Bypass",
                    "-ExecutionPolicy RemoteSigned -NoProfile"))
    image = powershell(r)
    if r.chance(0.15):
        body = f"-EncodedCommand {r.ps_enc(r.pick(_INVENTORY))}"
        proc = sess.run(image, f"{r.pick(('powershell.exe', chr(34) + image + chr(34)))} -NoLogo -NonInteractive -NoProfile "
                        f"-ExecutionPolicy Bypass {body}", integrity="System")
    else:
        proc = sess.run(image, f"{r.pick(('powershell.exe', 'PowerShell.exe', chr(34) + image + chr(34)))} {flags} -File "
                        f'"{script}"{r.pick(("", "", " -Verbose", " -Mode Audit"))}', integrity="System")
    if r.chance(0.5):
        s.b.script(proc, r.pick(_INVENTORY), "powershell")


@lone2_workload("remote_admin_queries", 0.8)
def remote_admin_queries(s: Session) -> None:
    """An admin queries (not changes) another host: `sc \\\\host query`, `schtasks /query /s host`,
    `wmic /node:host ... get`, `tasklist /s`, Invoke-Command running a Get- cmdlet, Enter-PSSession."""
    r = s.r
    v = _vendor(r)
    sess = _admin(s)
    host = r.pick((r.host(), f"{r.host().lower()}.{_dom(r)}"))
    pool = (("sc", f"\\\\{host} query {_q(r, v.service, 0.0)}"), ("sc", f"\\\\{host} qc {_q(r, v.service, 0.0)}"),
            ("schtasks", f"/query /s {host}{r.pick(('', ' /fo list', ' /tn ' + chr(34) + v.company + 'Update' + chr(34)))}"),
            ("wmic", f"/node:{host} {r.pick(('os get lastbootuptime', 'computersystem get username', 'qfe list brief', 'bios get serialnumber'))}"),
            ("tasklist", f"/s {host}{r.pick(('', ' /svc', ' /fi ' + chr(34) + 'imagename eq ' + v.exe + chr(34)))}"),
            ("ps", f"Invoke-Command -ComputerName {host} -ScriptBlock {{ Get-Service '{v.service}' }}"),
            ("ps", f"Invoke-Command -ComputerName {host} -ScriptBlock {{ Get-HotFix | Select -Last 5 }}"),
            ("ps", f"Enter-PSSession -ComputerName {host}"), ("ps", f"Test-WSMan -ComputerName {host}"),
            ("winrs", f"-r:{host} ipconfig /all"))
    for exe, args in r.sample(pool, r.pick((1, 1, 2))):
        if not _room(sess, 2):
            break
        if exe == "ps":
            sess.ps(args, encoded=0.0, flags=r.pick(("", "-NoProfile")))
        else:
            image = sys32(r, "wbem\\WMIC.exe") if exe == "wmic" else None
            _tool(sess, exe, args, image=image, via_shell=0.1, integrity=_admin_integrity(r))


@lone2_workload("support_network_trace", 0.4)
def support_network_trace(s: Session) -> None:
    """Support captures a network trace for a ticket (netsh trace start scenario=... capture=yes into
    C:\\Temp or the desktop, then stop; pktmon start/stop/etl2pcap)."""
    r = s.r
    sess = _admin(s)
    out = r.pick(("C:\\Temp\\nettrace.etl", f"C:\\Users\\{s.user}\\Desktop\\trace.etl", "C:\\Support\\capture.etl",
                  f"C:\\Temp\\{r.pick(('ticket', 'case', 'INC'))}{r.num(10000, 99999)}.etl"))
    if r.chance(0.6):
        start = (f"trace start scenario={r.pick(('NetConnection', 'InternetClient', 'LAN', 'WLAN'))} capture=yes "
                 f"tracefile={out}{r.pick(('', ' maxsize=512', ' report=yes', ' persistent=no'))}")
        commands = r.pick(((start,), ("trace stop",), (start, "trace stop"), ("trace show status",)))
        for args in commands:
            if _room(sess, 2):
                _tool(sess, "netsh", args, integrity="High")
    else:
        args = r.pick(("start --capture --comp nics", f"start --capture --pkt-size 0 -f {out}", "stop", "status",
                       f"etl2pcap {out} --out {out.replace('.etl', '.pcapng')}", "list"))
        _tool(sess, "pktmon", args, image=sys32(r, "PktMon.exe"), integrity="High")


@lone2_workload("dns_server_admin", 0.4)
def dns_server_admin(s: Session) -> None:
    """A DNS admin manages zones and records with dnscmd, or sets ordinary server options with /config
    (scavenging, forwarders)."""
    r = s.r
    sess = _admin(s)
    dom = _dom(r)
    server = r.pick(("", "", f"dc{r.num(1, 3):02d}", "localhost"))
    args = r.pick(("/enumzones", f"/zoneprint {dom}", f"/recordadd {dom} {r.host().lower()} A {r.int_ip()}",
                   f"/recorddelete {dom} {r.host().lower()} A /f", "/clearcache", "/info", "/statistics",
                   f"/config /ScavengingInterval {r.pick((168, 72))}", f"/resetforwarders {r.int_ip()} {r.int_ip()}",
                   f"/zoneinfo {dom}", f"/config {dom} /aging 1"))
    _tool(sess, "dnscmd", f"{server} {args}".strip(), integrity="High")


@lone2_workload("windows_dll_tools", 0.8)
def windows_dll_tools(s: Session) -> None:
    """Installers register their own COM DLLs under Program Files with regsvr32; users and admins open
    control panels, printers and the credential manager UI through rundll32; a vendor's help HTA."""
    r = s.r
    v = _vendor(r)
    choice = r.rng.randrange(4)
    if choice == 0:
        sess = _installer(s, v)
        dll = v.home + "\\" + r.pick(("shellext.dll", "x64\\ShellExt64.dll", "plugin.dll", "ctxmenu.dll", "activex.ocx"))
        _tool(sess, "regsvr32", f'{r.pick(("/s", "/s", "/u /s", ""))} "{dll}"'.replace("  ", " ").strip(), integrity="System")
    elif choice <= 2:
        sess = _admin(s)
        args = r.pick(("printui.dll,PrintUIEntry /in /n\\\\print01\\" + r.pick(("Floor2", "HP-Color", "Canon")),
                       f"shell32.dll,Control_RunDLL {r.pick(('desk.cpl', 'inetcpl.cpl', 'sysdm.cpl', 'ncpa.cpl', 'appwiz.cpl'))}",
                       "sysdm.cpl,EditEnvironmentVariables", "keymgr.dll,KRShowKeyMgr", "user32.dll,LockWorkStation",
                       "shell32.dll,Options_RunDLL 0", "inetcpl.cpl,ClearMyTracksByProcess 8"))
        _tool(sess, "rundll32", args, via_shell=0.1, integrity="Medium")
    else:
        sess = _admin(s)
        hta = v.home + "\\" + r.pick(("help.hta", "setup.hta", "docs\\index.hta"))
        _tool(sess, "mshta", f'"{hta}"', integrity="Medium")


@lone2_workload("session_to_console", 0.3)
def session_to_console(s: Session) -> None:
    """Test or RPA automation moves the current RDP session to the console so the desktop stays
    unlocked (`tscon N /dest:console`, from a batch file), sometimes after `query session`."""
    r = s.r
    parent = s.b.existing(sys32(r, "cmd.exe"), user=r.domain_user(s.user))
    sess = _under(s, parent)
    if r.chance(0.3):
        _tool(sess, r.pick(("query", "qwinsta")), "session" if r.chance(0.5) else "", integrity="High")
    _tool(sess, "tscon", f"{r.num(1, 6)} /dest:console", integrity="High")


@lone2_workload("dev_ssh", 0.6)
def dev_ssh(s: Session) -> None:
    """Developers and admins use the OpenSSH client or PuTTY's plink: logins, a local forward to a
    database or web port on an internal host, a command run by a backup script."""
    r = s.r
    sess = _admin(s)
    user = r.pick((s.user, "admin", "deploy", "ubuntu", "git"))
    host = r.pick((f"{r.pick(('build', 'db', 'web', 'git', 'jump'))}{r.num(1, 9):02d}.{_dom(r)}", r.int_ip(), "github.com"))
    if r.chance(0.7):
        image = r.case("C:\\Windows\\System32\\OpenSSH\\ssh.exe")
        args = r.pick((f"{user}@{host}", f"-i C:\\Users\\{s.user}\\.ssh\\id_ed25519 {user}@{host}", f"-p 2222 {user}@{host}",
                       f"-L {r.pick((5432, 3306, 8080, 9200))}:localhost:{r.pick((5432, 3306, 8080, 9200))} {user}@{host}",
                       f"-J jump.{_dom(r)} {user}@{host}", "-T git@github.com", f"{user}@{host} uptime"))
        _tool(sess, "ssh", args, image=image, via_shell=0.0, integrity="Medium")
    else:
        image = "C:\\Program Files\\PuTTY\\plink.exe"
        args = r.pick((f"-batch -ssh {user}@{host} -i C:\\Keys\\backup.ppk \"/usr/local/bin/backup.sh\"",
                       f"-ssh {user}@{host}", f"-batch {user}@{host} uptime", f"-load \"{host}\""))
        sess.run(image, f'{r.pick(("plink", "plink.exe", chr(34) + image + chr(34)))} {args}', integrity="Medium")


@lone2_workload("log_search", 0.6)
def log_search(s: Session) -> None:
    """An admin searches an application's logs or configuration for an error or setting (findstr,
    Select-String)."""
    r = s.r
    v = _vendor(r)
    sess = _admin(s)
    word = r.pick(("error", "ERROR", "exception", "timeout", "failed", "denied", "connection", "warn"))
    where = r.pick((f"{v.home}\\logs\\*.log", f"C:\\ProgramData\\{v.company}\\Logs\\*.log", "C:\\inetpub\\logs\\LogFiles\\W3SVC1\\*.log",
                    "C:\\Windows\\Logs\\CBS\\CBS.log", f"{v.home}\\*.config", "C:\\Windows\\debug\\netlogon.log"))
    if r.chance(0.8):
        flags = r.pick(("/i", "/si", "/c:", "/n /i", "/r /i"))
        pattern = f'"{word}"' if flags == "/c:" else word
        flags_text = f"{flags}{pattern}" if flags == "/c:" else f"{flags} {pattern}"
        _tool(sess, "findstr", f'{flags_text} "{where}"' if " " in where else f"{flags_text} {where}", via_shell=0.3,
              integrity="Medium")
    else:
        sess.ps(f"Select-String -Path '{where}' -Pattern '{word}' | Select-Object -Last 20", encoded=0.0, flags="-NoProfile")


_SECURITY_VENDORS = (("C:\\Windows\\Sysmon64.exe", "Sysmon64", ("-c C:\\Windows\\sysmon.xml", "-c", "-accepteula -i C:\\ProgramData\\sysmon\\config.xml")),
                     ("C:\\Program Files (x86)\\Symantec\\Symantec Endpoint Protection\\Smc.exe", "SepMasterService", ("-stop", "-start")),
                     ("C:\\Program Files\\Windows Defender\\MpCmdRun.exe", "WinDefend", ("-ValidateMapsConnection", "-SignatureUpdate -MMPC")))


@lone2_workload("security_agent_maintenance", 0.5)
def security_agent_maintenance(s: Session) -> None:
    """A security product's own tools or an admin maintain it: Sysmon's configuration updated, the
    endpoint agent restarted by its vendor's utility, its service queried or started."""
    r = s.r
    image, service, args = r.pick(_SECURITY_VENDORS)
    sess = _agent(s) if r.chance(0.5) else _admin(s)
    if r.chance(0.5):
        sess.run(image, f'"{image}" {r.pick(args)}' if r.chance(0.5) else f"{image.rsplit(chr(92), 1)[-1]} {r.pick(args)}",
                 integrity="System")
    else:
        _tool(sess, "sc", f"{r.pick(('query', 'queryex', 'start', 'qc'))} {service}", integrity="High")
