"""Simulated benign Linux workloads, with deliberate hard negatives.

Package managers run maintainer scripts that create users and units; installers are piped from
curl into sh; admins read /etc/passwd, run `ps aux` and `ss -tlnp`, edit crontabs and tar up /etc;
Ansible copies Python into ~/.ansible/tmp and runs it over SSH. A model that only saw attacks
would call all of that malicious. Real captures of ordinary work on this machine complement these
(see `pipeline/model/data/`).
"""

from __future__ import annotations

from pipeline.training.sim.catalog import Workloads
from pipeline.training.sim.linux_attack1 import bin_
from pipeline.training.sim.session import Session

WORKLOADS = Workloads()
"""(name, relative weight, generator)."""
workload = WORKLOADS.add


_PKGS = ("nginx", "curl", "git", "htop", "python3-venv", "build-essential", "postgresql", "docker-ce", "jq", "vim", "redis-server", "openjdk-17-jre")


@workload("apt_install", 2.0)
def apt_install(s: Session) -> None:
    """sudo apt-get install: fetch via http methods, dpkg unpacks, maintainer scripts add users/units."""
    b, r = s.b, s.r
    pkgs = r.sample(_PKGS, r.num(1, 3))
    sudo = s.run("/usr/bin/sudo", f"sudo apt-get install -y {' '.join(pkgs)}")
    apt = s.run("/usr/bin/apt-get", f"apt-get install -y {' '.join(pkgs)}", parent=sudo, user="root")
    for _ in range(r.num(1, 3)):
        m = s.run("/usr/lib/apt/methods/http", "/usr/lib/apt/methods/http", parent=apt, user="_apt")
        b.connect(m, r.ext_ip(), 80, hostname="archive.ubuntu.com")
        b.write(m, f"/var/cache/apt/archives/partial/{pkgs[0]}_{r.num(1, 9)}.{r.num(0, 30)}_amd64.deb")
    dpkg = s.run("/usr/bin/dpkg", f"/usr/bin/dpkg --status-fd 35 --unpack --auto-deconfigure /var/cache/apt/archives/{pkgs[0]}_amd64.deb", parent=apt, user="root")
    for _ in range(r.num(3, 20)):
        b.write(dpkg, r.pick((f"/usr/bin/{r.token()}", f"/usr/lib/{pkgs[0]}/{r.name('so')}", f"/usr/share/doc/{pkgs[0]}/{r.name('gz')}", f"/etc/{pkgs[0]}/{r.name('conf')}")))
    post = s.run("/bin/sh", f"/bin/sh /var/lib/dpkg/info/{pkgs[0]}.postinst configure", parent=dpkg, user="root")
    for cmd in r.sample(("systemctl daemon-reload", f"systemctl enable {pkgs[0]}", f"deb-systemd-helper enable {pkgs[0]}.service", "ldconfig",
                         f"adduser --system --group --no-create-home {pkgs[0]}", f"useradd --system --shell /usr/sbin/nologin {pkgs[0]}",
                         "update-alternatives --install /usr/bin/editor editor /usr/bin/vim.basic 30", f"chown -R {pkgs[0]}: /var/lib/{pkgs[0]}",
                         "systemd-tmpfiles --create", f"deb-systemd-invoke start {pkgs[0]}.service"), r.num(1, 4)):
        tool = cmd.split()[0]
        s.run(bin_(tool, s), cmd, parent=post, user="root")
    if r.chance(0.5):
        b.write(dpkg, f"/lib/systemd/system/{pkgs[0]}.service", 600)


@workload("pip_venv", 2.0)
def pip_venv(s: Session) -> None:
    """python -m venv + pip install: HTTPS to PyPI, wheels written, sometimes a C extension compiled."""
    b, r = s.b, s.r
    home = "/root" if s.user == "root" else f"/home/{s.user}"
    proj = f"{home}/{r.pick(('src', 'work', 'projects', 'code'))}/{r.token()}"
    s.run("/usr/bin/python3", "python3 -m venv .venv", cwd=proj)
    pip = s.run(f"{proj}/.venv/bin/python", f"{proj}/.venv/bin/python -m pip install {r.pick(('-r requirements.txt', 'requests numpy', '-e .', 'pytest'))}", cwd=proj)
    for _ in range(r.num(2, 10)):
        b.connect(pip, r.ext_ip(), 443, hostname=r.pick(("pypi.org", "files.pythonhosted.org")))
    for _ in range(r.num(3, 25)):
        b.write(pip, f"{proj}/.venv/lib/python3.11/site-packages/{r.token()}/{r.name('py')}")
    if r.chance(0.3):
        cc = s.run("/usr/bin/x86_64-linux-gnu-gcc", f"x86_64-linux-gnu-gcc -Wsign-compare -fPIC -I/usr/include/python3.11 -c src/{r.token()}.c -o build/temp/{r.token()}.o", parent=pip)
        b.write(cc, f"/tmp/pip-install-{r.token()}/build/{r.name('o')}")
    b.write(pip, f"/tmp/pip-unpack-{r.token()}/{r.name('whl')}")


@workload("make_build", 1.5)
def make_build(s: Session) -> None:
    """make drives compilers and linkers, writing objects under the project."""
    b, r = s.b, s.r
    proj = f"/home/{s.user}/{r.pick(('src', 'build', 'work'))}/{r.token()}"
    make = s.run("/usr/bin/make", f"make {r.pick(('', '-j4', 'all', 'install DESTDIR=/tmp/stage', 'test'))}".strip(), cwd=proj)
    for _ in range(r.num(2, 8)):
        src = r.token()
        cc = s.run("/usr/bin/cc", f"cc -O2 -Wall -c -o {src}.o {src}.c", parent=make)
        c1 = s.run("/usr/lib/gcc/x86_64-linux-gnu/12/cc1", f"/usr/lib/gcc/x86_64-linux-gnu/12/cc1 -quiet {src}.c -o /tmp/cc{r.token(6, 6)}.s", parent=cc)
        b.write(c1, f"/tmp/cc{r.token(6, 6)}.s")
        a = s.run("/usr/bin/as", f"as --64 -o {src}.o /tmp/cc{r.token(6, 6)}.s", parent=cc)
        b.write(a, f"{proj}/{src}.o")
    ld = s.run("/usr/bin/cc", f"cc -o {r.token()} *.o -lm", parent=make)
    b.write(ld, f"{proj}/{r.token()}")
    if r.chance(0.3):
        s.run("/bin/sh", f"/bin/sh -c 'install -m 755 {r.token()} /usr/local/bin/'", parent=make)


@workload("pytest", 1.5)
def pytest_run(s: Session) -> None:
    """A test run: pytest spawns subprocesses, writes caches and temp dirs, may hit localhost."""
    b, r = s.b, s.r
    proj = f"/home/{s.user}/{r.token()}"
    py = s.run(f"{proj}/.venv/bin/python", f"{proj}/.venv/bin/python -m pytest {r.pick(('-q', '-x', 'tests/', '-k smoke', '-n 2'))}", cwd=proj)
    for _ in range(r.num(0, 5)):
        c = s.run(r.pick(("/usr/bin/python3", "/bin/sh", "/usr/bin/git", "/usr/bin/sleep")), r.pick(("python3 -c 'print(1)'", "/bin/sh -c 'echo ok'", "git rev-parse HEAD", "sleep 0.1")), parent=py)
        del c
    for _ in range(r.num(2, 15)):
        b.write(py, r.pick((f"{proj}/.pytest_cache/v/cache/{r.token()}", f"/tmp/pytest-of-{s.user}/pytest-{r.num(0, 99)}/{r.token()}/{r.name('txt')}", f"{proj}/__pycache__/{r.name('pyc')}")))
    if r.chance(0.3):
        b.connect(py, "127.0.0.1", r.num(1024, 65000))


@workload("git", 2.0)
def git_ops(s: Session) -> None:
    """git clone/fetch/commit/push over HTTPS or SSH (ssh to port 22 is ordinary here)."""
    b, r = s.b, s.r
    op = r.pick(("clone https://github.com/{o}/{p}.git", "fetch origin", "pull --rebase", "commit -am 'fix tests'", "push origin main", "clone git@github.com:{o}/{p}.git"))
    op = op.format(o=r.token(), p=r.token())
    g = s.run("/usr/bin/git", f"git {op}")
    if "http" in op or (op.startswith(("fetch", "pull", "push")) and r.chance(0.5)):
        h = s.run("/usr/lib/git-core/git-remote-https", f"/usr/lib/git-core/git-remote-https origin https://github.com/{r.token()}/{r.token()}.git", parent=g)
        b.connect(h, r.ext_ip(), 443, hostname="github.com")
    elif "git@" in op or op.startswith("push"):
        ssh = s.run("/usr/bin/ssh", f"/usr/bin/ssh git@github.com git-{r.pick(('upload', 'receive'))}-pack '{r.token()}/{r.token()}.git'", parent=g)
        b.connect(ssh, r.ext_ip(), 22, hostname="github.com")
    if op.startswith("commit") and r.chance(0.5):
        s.run("/bin/sh", "/bin/sh .git/hooks/pre-commit", parent=g)
    for _ in range(r.num(1, 10)):
        b.write(g, f"/home/{s.user}/{r.token()}/.git/objects/{r.hexstr(2)}/{r.hexstr(38)}")


@workload("cron_maintenance", 2.0)
def cron_maintenance(s: Session) -> None:
    """cron/systemd timers run logrotate, apt daily, man-db, backups and certbot."""
    b, r = s.b, s.r
    cron = b.existing(r.pick(("/usr/sbin/cron", "/usr/lib/systemd/systemd")), user="root")
    job = r.pick(("run-parts --report /etc/cron.daily", "test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )",
                  "/usr/sbin/logrotate /etc/logrotate.conf", "/usr/lib/apt/apt.systemd.daily update", "certbot -q renew",
                  "/usr/local/bin/backup.sh", "[ -x /usr/lib/php/sessionclean ] && /usr/lib/php/sessionclean"))
    sh = s.run("/bin/sh", f"/bin/sh -c '{job}'", parent=cron, user="root")
    for sub in r.sample(("/usr/sbin/logrotate /etc/logrotate.conf", "gzip -9 /var/log/syslog.1", "find /tmp -type f -atime +10 -delete",
                         "/usr/bin/mandb --quiet", "tar czf /var/backups/etc-$(date +%F).tgz /etc", "systemctl reload nginx",
                         "/usr/bin/apt-get -qq update", "dpkg --audit", "updatedb"), r.num(1, 4)):
        p = s.run(bin_(sub.split()[0].rsplit("/", 1)[-1], s) if not sub.startswith("/") else sub.split()[0], sub, parent=sh, user="root")
        if "tar" in sub:
            b.write(p, f"/var/backups/etc-{r.num(2020, 2025)}.tgz", r.num(10**5, 10**7))
        if "gzip" in sub or "logrotate" in sub:
            b.write(p, "/var/log/syslog.2.gz")
            b.delete(p, "/var/log/syslog.1")


@workload("admin_ssh", 2.5)
def admin_ssh(s: Session) -> None:
    """An admin logs in and inspects/maintains the box: ps, ss, logs, restarts, edits configs, crontab -e."""
    b, r = s.b, s.r
    chores = ["ps aux", "top -bn1", "df -h", "free -m", "uptime", "ss -tlnp", "ip a", "cat /etc/os-release", "uname -a", "id", "who",
              "journalctl -u nginx --since today", "tail -n 200 /var/log/syslog", "systemctl status nginx", "sudo systemctl restart nginx",
              "sudo vim /etc/nginx/nginx.conf", "crontab -l", "last -n 20", "du -sh /var/*", "docker ps", "kubectl get pods",
              "sudo apt-get update", "ping -c 3 10.0.0.1", "dig example.com", "ls -la /tmp", "history"]
    if r.chance(0.15):  # rarer chores that also appear in attacks
        chores.append(r.pick(("crontab -e", "cat /etc/passwd", "sudo useradd -m newdev", "sudo tar czf /root/etc-backup.tgz /etc",
                              "scp backup.tgz backup01:/srv/backups/", "rsync -az /srv/www/ web02:/srv/www/",
                              "sudo chmod +x /usr/local/bin/deploy.sh", "sudo -l")))
    for chore in r.sample(chores, r.num(2, 7)):
        tool = chore.split()[0]
        p = s.run(bin_(tool, s), chore)
        if chore.startswith("sudo "):
            p = s.run(bin_(chore.split()[1], s), chore[5:], parent=p, user="root")
        if "vim" in chore:
            b.write(p, "/etc/nginx/nginx.conf", 2400)
        if "crontab -e" in chore:
            b.write(p, f"/var/spool/cron/crontabs/{s.user}", 300)
        if chore.startswith(("scp", "rsync")):
            b.connect(p, r.int_ip(), 22)
        if "tar" in chore:
            b.write(p, "/root/etc-backup.tgz", r.num(10**5, 10**7))
        b.tick(3, 90)


@workload("curl_installer", 0.8)
def curl_installer(s: Session) -> None:
    """Vendor installers piped to a shell (rustup, docker, nvm, k3s) and release tarballs unpacked to /usr/local."""
    b, r = s.b, s.r
    url, host = r.pick((("https://sh.rustup.rs", "sh.rustup.rs"), ("https://get.docker.com", "get.docker.com"),
                        ("https://raw.githubusercontent.com/nvm-sh/nvm/v0.39.7/install.sh", "raw.githubusercontent.com"), ("https://get.k3s.io", "get.k3s.io")))
    if r.chance(0.6):
        sh = s.cmd(f"curl --proto '=https' --tlsv1.2 -sSf {url} | sh{r.pick(('', ' -s -- -y'))}")
        c = s.run("/usr/bin/curl", f"curl --proto =https --tlsv1.2 -sSf {url}", parent=sh)
        b.connect(c, r.ext_ip(), 443, hostname=host)
        for _ in range(r.num(2, 10)):
            b.write(sh, r.pick((f"/home/{s.user}/.cargo/bin/{r.token()}", f"/usr/local/bin/{r.token()}", f"/home/{s.user}/.nvm/{r.name('sh')}")))
    else:
        ver = f"v{r.num(0, 3)}.{r.num(0, 30)}.{r.num(0, 9)}"
        tool = r.pick(("helm", "terraform", "kubectl", "node_exporter", "gh"))
        c = s.run("/usr/bin/wget", f"wget https://github.com/{tool}/{tool}/releases/download/{ver}/{tool}-{ver}-linux-amd64.tar.gz")
        b.connect(c, r.ext_ip(), 443, hostname="github.com")
        s.run("/usr/bin/tar", f"tar xzf {tool}-{ver}-linux-amd64.tar.gz")
        m = s.run("/usr/bin/sudo", f"sudo mv {tool} /usr/local/bin/")
        b.write(m, f"/usr/local/bin/{tool}")
        s.run("/usr/bin/chmod", f"chmod +x /usr/local/bin/{tool}")


@workload("ansible_target", 1.0)
def ansible_target(s: Session) -> None:
    """Configuration management over SSH: sshd → sh -c python3 ~/.ansible/tmp/.../AnsiballZ_*.py."""
    b, r = s.b, s.r
    sshd = b.existing("/usr/sbin/sshd", user="root")
    priv = s.run("/usr/sbin/sshd", f"sshd: {s.user}@notty", parent=sshd)
    b.connect(priv, r.int_ip(), r.num(30000, 65000), outbound=False)
    tmp = f"/home/{s.user}/.ansible/tmp/ansible-tmp-{r.num(10**9, 2 * 10**9)}.{r.num(10**5, 10**6)}-{r.num(1000, 9999)}-{r.num(10**13, 10**14)}"
    mod = r.pick(("AnsiballZ_setup.py", "AnsiballZ_apt.py", "AnsiballZ_copy.py", "AnsiballZ_systemd.py", "AnsiballZ_command.py"))
    sh = s.run("/bin/sh", f"/bin/sh -c 'sudo -H -S -n  -u root /bin/sh -c '\"'\"'echo BECOME-SUCCESS-{r.token(20, 20)} ; /usr/bin/python3 {tmp}/{mod}'\"'\"' && sleep 0'", parent=priv)
    b.write(priv, f"{tmp}/{mod}", r.num(10**4, 2 * 10**5))
    py = s.run("/usr/bin/python3", f"/usr/bin/python3 {tmp}/{mod}", parent=sh, user="root")
    for sub in r.sample(("/usr/bin/lsb_release -a", "/usr/bin/systemctl show nginx", "/usr/bin/apt-get install -y nginx", "/usr/bin/ip addr show", "/usr/bin/id -u"), r.num(0, 3)):
        s.run(sub.split()[0], sub, parent=py, user="root")


@workload("services", 3.0)
def services(s: Session) -> None:
    """systemd services doing their jobs: web servers' workers, databases, containers, monitoring agents."""
    b, r = s.b, s.r
    init = b.existing("/usr/lib/systemd/systemd", user="root")
    kind = r.rng.randrange(5)
    if kind == 0:
        ng = s.run("/usr/sbin/nginx", "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;", parent=init, user="root")
        for _ in range(r.num(1, 4)):
            w = s.run("/usr/sbin/nginx", "nginx: worker process", parent=ng, user="www-data")
            for _ in range(r.num(1, 10)):
                b.connect(w, r.ext_ip(), r.num(30000, 65000), outbound=False)
            b.write(w, "/var/log/nginx/access.log", r.num(100, 5000))
    elif kind == 1:
        dk = b.existing("/usr/bin/containerd-shim-runc-v2", user="root")
        app = s.run(r.pick(("/usr/local/bin/python", "/usr/local/bin/node", "/app/server", "/usr/bin/java")), r.pick(("python app.py", "node server.js", "/app/server --port 8080", "java -jar app.jar")), parent=dk, user="root")
        for _ in range(r.num(2, 10)):
            b.connect(app, r.int_ip(), r.pick((5432, 6379, 443, 9092)))
    elif kind == 2:
        agent = b.existing(r.pick(("/usr/bin/telegraf", "/opt/datadog-agent/bin/agent/agent", "/usr/bin/zabbix_agentd")), user=r.pick(("telegraf", "dd-agent", "zabbix")))
        for cmd in r.sample(("/bin/sh -c df -P", "/usr/bin/uptime", "/bin/sh -c 'cat /proc/loadavg'", "/usr/bin/who -q", "/bin/ps -eo pid,comm,rss"), r.num(1, 3)):
            s.run(cmd.split()[0], cmd, parent=agent)
        b.connect(agent, r.ext_ip(), 443)
    elif kind == 3:
        pg = b.existing("/usr/lib/postgresql/15/bin/postgres", user="postgres")
        for _ in range(r.num(1, 3)):
            w = s.run("/usr/lib/postgresql/15/bin/postgres", f"postgres: {r.token()} {r.token()} {r.int_ip()}({r.num(30000, 65000)}) idle", parent=pg, user="postgres")
            b.write(w, f"/var/lib/postgresql/15/main/base/{r.num(10000, 20000)}/{r.num(10000, 30000)}")
    else:
        s.run("/usr/lib/systemd/systemd-tmpfiles", "systemd-tmpfiles --clean", parent=init, user="root")
        u = s.run("/usr/bin/python3", "/usr/bin/python3 /usr/bin/unattended-upgrade --download-only", parent=init, user="root")
        b.connect(u, r.ext_ip(), 80, hostname="security.ubuntu.com")


@workload("desktop_dev", 1.5)
def desktop_dev(s: Session) -> None:
    """A developer desktop: editor, terminal, browser, language servers, docker build."""
    b, r = s.b, s.r
    code = s.run("/usr/share/code/code", "/usr/share/code/code --unity-launch")
    for _ in range(r.num(1, 4)):
        s.run(r.pick(("/usr/share/code/code", "/usr/bin/node", f"/home/{s.user}/.vscode/extensions/ms-python.python/bin/python")),
              r.pick(("/usr/share/code/code --type=renderer", "node /usr/share/code/resources/app/extensions/node_modules/typescript/lib/tsserver.js", "python -m pylsp")), parent=code)
    if r.chance(0.5):
        d = s.run("/usr/bin/docker", f"docker build -t {r.token()}:latest .")
        b.connect(d, r.ext_ip(), 443, hostname="registry-1.docker.io")
    if r.chance(0.5):
        ff = s.run("/usr/lib/firefox/firefox", "/usr/lib/firefox/firefox")
        for _ in range(r.num(3, 15)):
            b.connect(ff, r.ext_ip(), 443)


@workload("encrypted_backup", 1.5)
def encrypted_backup(s: Session) -> None:
    """A backup job (cron, a timer or an admin's script) archives folders, encrypts each archive with
    gpg/openssl/7z, removes or shreds the plaintext archive and ships the result: the per-file
    encrypt-then-destroy shape of ransomware, on a handful of archives the job itself wrote."""
    b, r = s.b, s.r
    if r.chance(0.6):
        cron = b.existing(r.pick(("/usr/sbin/cron", "/usr/lib/systemd/systemd")), user="root")
        script = r.pick(("/usr/local/bin/backup.sh", "/usr/local/sbin/nightly-backup", "/opt/backup/run.sh", "/etc/cron.daily/backup"))
        job = s.run("/bin/bash", f"/bin/bash {script}", parent=cron, user="root")
    else:
        job = s.run(r.pick(("/usr/bin/bash", "/usr/bin/python3")), r.pick((f"bash ./{r.pick(('backup', 'archive', 'offsite'))}.sh",
                                                                            f"python3 {r.pick(('backup.py', 'borg_wrapper.py'))}")))
    key = r.token(8, 20)
    for name in r.sample(("etc", "home", "www", "db", "mail", "repos", "configs"), r.num(1, 4)):
        arc = f"/var/backups/{name}-{r.num(2020, 2026)}{r.num(10, 12)}{r.num(10, 28)}.tar.gz"
        tar = s.run(bin_("tar", s), f"tar czf {arc} /{name}", parent=job)
        b.write(tar, arc, r.num(10**5, 10**8))
        tool, cmd = r.pick((("gpg", f"gpg --batch --yes --passphrase-file /root/.backup-key -c {arc}"),
                            ("gpg", f"gpg --batch --yes -e -r backup@{r.domain()} {arc}"),
                            ("openssl", f"openssl enc -aes-256-cbc -pbkdf2 -salt -pass file:/root/.backup-key -in {arc} -out {arc}.enc"),
                            ("openssl", f"openssl enc -aes-256-cbc -k {key} -in {arc} -out {arc}.enc"),
                            ("7z", f"7z a -p{key} {arc}.7z {arc}")))
        enc = s.run(bin_(tool, s), cmd, parent=job)
        b.write(enc, f"{arc}.{r.pick(('gpg', 'enc', '7z'))}", r.num(10**5, 10**8))
        if r.chance(0.8):
            rm = r.pick((f"rm -f {arc}", f"shred -u {arc}", f"rm {arc}"))
            s.run(bin_(rm.split()[0], s), rm, parent=job)
    if r.chance(0.7):
        up = r.pick((f"rsync -az /var/backups/ backup@{r.int_ip()}:/srv/backups/{r.token()}/",
                     f"scp -q /var/backups/*.gpg backup@{r.int_ip()}:", "aws s3 cp /var/backups/ s3://" + r.token() + "-backups/ --recursive"))
        p = s.run(bin_(up.split()[0], s), up, parent=job)
        b.connect(p, r.int_ip(), r.pick((22, 443)))


@workload("secure_cleanup", 0.8)
def secure_cleanup(s: Session) -> None:
    """An admin (or a deprovisioning script) shreds a few old keys, dumps or temp files."""
    r = s.r
    parent = s.shell if r.chance(0.6) else s.run("/usr/bin/bash", f"bash {r.pick(('cleanup.sh', 'offboard.sh', 'rotate-keys.sh'))}")
    for _ in range(r.num(1, 5)):
        path = r.pick((f"/home/{s.user}/{r.name('pem')}", f"/tmp/{r.name('sql')}", f"/root/{r.name('key')}",
                       f"/var/tmp/{r.name('dump')}", f"/home/{s.user}/.ssh/id_{r.pick(('rsa', 'ed25519'))}.old"))
        cmd = r.pick((f"shred -u {path}", f"shred -zu {path}", f"rm -f {path}", f"srm {path}"))
        s.run(bin_(cmd.split()[0], s), cmd, parent=parent)
    if r.chance(0.3):
        s.run(bin_("openssl", s), f"openssl genrsa -out /home/{s.user}/{r.name('pem')} 4096", parent=parent)


@workload("user_tools", 2.0)
def user_tools(s: Session) -> None:
    """Tools that live outside the system folders (~/bin scripts, ~/.local/bin, /opt apps, a fresh build
    in /tmp, a copied static binary, an agent or runner started by a supervisor) run ordinary children:
    cat, sleep, mkdir, cp, mv, tail, rm of their own files. Being user-installed is not an attack."""
    b, r = s.b, s.r
    home = f"/home/{s.user}" if s.user != "root" else "/root"
    image = r.pick((f"{home}/bin/{r.word()}", f"{home}/.local/bin/{r.token(3, 9)}", f"/opt/{r.word()}/bin/{r.word()}",
                    f"/tmp/{r.token(4, 8)}/build/{r.word()}", f"{home}/{r.word()}/target/release/{r.token(3, 8)}",
                    f"{home}/.venv/bin/python", f"/srv/{r.word()}/run"))
    parent = s.shell if r.chance(0.6) else b.existing(r.pick(("/usr/lib/systemd/systemd", "/usr/bin/tmux", "/usr/bin/supervisord")),
                                                       user=s.user)
    work_script = f"{home}/{r.pick(('scripts', 'bin', '.local/share'))}/{r.word()}.sh"
    tool = s.run(image, f"{image} {r.pick(('', 'run', '--config ' + home + '/.config/x.toml', 'serve', r.token()))}".strip(), parent=parent)
    shell = s.run("/usr/bin/bash", r.pick((f"bash {work_script}", f"bash -c {r.word()}", "/bin/sh -c ./run.sh", "bash")), parent=tool) \
        if r.chance(0.6) else tool
    work = f"/tmp/{r.pick(('jobs', 'work', r.token()))}.{r.num(0, 9)}/{r.hexstr(12)}"
    for _ in range(r.num(2, 12)):
        cmd = r.pick((f"cat {work}/{r.pick(('rc', 'stdout', 'stderr', 'out.json'))}", f"mkdir -p {work}", f"sleep {r.pick((0.1, 0.5, 1, 5))}",
                      f"cp {work}/a {work}/b", f"mv -f {work}/rc.tmp {work}/rc", f"tail -{r.num(1, 50)} {work}/log", f"rm -rf {work}",
                      "date +%s", f"head -c {r.num(10, 400)} {work}/stdout"))
        s.run(bin_(cmd.split()[0], s), cmd, parent=shell if r.chance(0.7) else tool)
