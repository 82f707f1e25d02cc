"""Simulated benign Windows workloads, with deliberate hard negatives.

Why hard negatives: the cheapest way for a model to score well on attack data is to flag every
`net user`, `schtasks /create`, encoded PowerShell or exe in AppData. Real fleets do all of those
legitimately (IT admins, updaters, SCCM/Intune, Squirrel-style per-user apps, backup agents), so
the benign corpus must too, or the false-alert budget (≤ 1 per 1,000 benign trees) is blown.
"""

from __future__ import annotations

from pipeline.training.sim.builder import Proc
from pipeline.training.sim.catalog import Workloads
from pipeline.training.sim.session import Session, ps_housekeeping
from pipeline.training.sim.vocab import powershell, sys32

WORKLOADS = Workloads()
"""(name, relative weight, generator)."""
workload = WORKLOADS.add


def _svc(s: Session, image: str, user: str = "NT AUTHORITY\\SYSTEM") -> Proc:
    return s.b.existing(image, user=user)


_APPS = ("Slack", "Discord", "Teams", "GitHubDesktop", "Postman", "Spotify", "WhatsApp", "Notion", "Figma", "Obsidian")


@workload("browser", 3.0)
def browser(s: Session) -> None:
    """A browser with renderer/GPU/utility children, lots of HTTPS, cache writes and a download."""
    b, r = s.b, s.r
    exe = r.pick(("C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe", "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe",
                  "C:\\Program Files\\Mozilla Firefox\\firefox.exe"))
    main = s.run(exe, f'"{exe}" {r.pick(("", "--restore-last-session", "https://" + r.domain()))}'.strip())
    for _ in range(r.num(2, 8)):
        child = s.run(exe, f'"{exe}" --type={r.pick(("renderer", "gpu-process", "utility", "crashpad-handler"))} --field-trial-handle={r.num(1000, 9999)},{r.hexstr(16)} --lang=en-US --mojo-platform-channel-handle={r.num(1000, 9999)} /prefetch:{r.num(1, 8)}', parent=main)
        del child
    for _ in range(r.num(3, 25)):
        host = r.pick((r.domain(), "www.google.com", "outlook.office365.com", "github.com", "cdn." + r.domain()))
        b.dns(main, host, (r.ext_ip(),))
        b.connect(main, r.ext_ip(), r.pick((443, 443, 443, 80)), hostname=host)
    for _ in range(r.num(1, 10)):
        b.write(main, f"C:\\Users\\{s.user}\\AppData\\Local\\Google\\Chrome\\User Data\\Default\\Cache\\Cache_Data\\f_{r.hexstr(6)}")
    if r.chance(0.4):
        name = r.pick((f"{r.pick(_APPS)}Setup.exe", r.name(r.pick(("pdf", "zip", "msi", "exe", "docx")))))
        part = f"C:\\Users\\{s.user}\\Downloads\\{name}.crdownload"
        b.write(main, part)
        b.rename(main, part, part[: -len(".crdownload")])


@workload("office", 2.0)
def office(s: Session) -> None:
    """Word/Excel/Outlook open documents, write temp/autosave files, print, talk to Microsoft 365."""
    b, r = s.b, s.r
    app = r.pick(("WINWORD.EXE", "EXCEL.EXE", "POWERPNT.EXE", "OUTLOOK.EXE"))
    doc = f"C:\\Users\\{s.user}\\{r.pick(('Documents', 'Desktop', 'OneDrive - Contoso'))}\\{r.name(r.pick(('docx', 'xlsx', 'pptx')))}"
    p = s.run(f"C:\\Program Files\\Microsoft Office\\root\\Office16\\{app}", f'"{app}" {r.pick(("", "/n", "/dde"))} "{doc}"')
    b.write(p, f"C:\\Users\\{s.user}\\AppData\\Roaming\\Microsoft\\Word\\~WRL{r.num(1000, 9999)}.tmp")
    b.write(p, doc)
    for _ in range(r.num(1, 6)):
        b.connect(p, r.ext_ip(), 443, hostname=r.pick(("officeclient.microsoft.com", "nexus.officeapps.live.com", "outlook.office365.com")))
    if r.chance(0.3):
        s.run(sys32(r, "splwow64.exe"), f"C:\\Windows\\splwow64.exe {r.num(8000, 9000)}", parent=p)
    if r.chance(0.2):
        s.run("C:\\Program Files\\Microsoft Office\\root\\Office16\\ai.exe", f'"C:\\Program Files\\Microsoft Office\\root\\Office16\\ai.exe" "{r.guid()}" "{r.guid()}"', parent=p)


@workload("installer", 2.0)
def installer(s: Session) -> None:
    """A downloaded installer unpacks to Temp, runs msiexec, writes Program Files, registers autostart."""
    b, r = s.b, s.r
    app = r.pick((*_APPS, "7-Zip", "VLC", "Notepad++", "Zoom", "Python", "Git", "Firefox", "AdobeReader"))
    setup = f"C:\\Users\\{s.user}\\Downloads\\{app}{r.pick(('Setup', '-setup', '_installer', ''))}{r.pick(('', '-' + str(r.num(1, 9)) + '.' + str(r.num(0, 20))))}.{r.pick(('exe', 'msi'))}"
    if setup.endswith(".msi"):
        p = s.run(sys32(r, "msiexec.exe"), f'"C:\\Windows\\System32\\msiexec.exe" /i "{setup}"')
    else:
        p = s.run(setup, f'"{setup}"')
        tmp = f"C:\\Users\\{s.user}\\AppData\\Local\\Temp\\is-{r.token(5, 5).upper()}.tmp\\{r.name('tmp')}"
        b.write(p, tmp)
        p = s.run(tmp, f'"{tmp}" /SL5="$' + f'{r.hexstr(5)},{r.num(10**6, 10**8)},{r.num(1000, 900000)},{setup}"', parent=p)
    target = r.pick((f"C:\\Program Files\\{app}", f"C:\\Program Files (x86)\\{app}", f"C:\\Users\\{s.user}\\AppData\\Local\\Programs\\{app}"))
    for _ in range(r.num(3, 30) if r.chance(0.6) else r.num(50, 400)):
        b.write(p, f"{target}\\{r.name(r.pick(('exe', 'dll', 'dat', 'json', 'pak')))}")
    b.reg(p, f"HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{app}\\DisplayName", "DisplayName", app)
    if r.chance(0.4):
        b.reg(p, f"HKU\\S-1-5-21-{r.num(10**9, 4 * 10**9)}-{r.num(1000, 9999)}\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\{app}", app, f'"{target}\\{app}.exe" --autostart')
    if r.chance(0.3):
        s.run(sys32(r, "regsvr32.exe"), f'regsvr32.exe /s "{target}\\{r.name("dll")}"', parent=p)
    if r.chance(0.3):
        s.run(sys32(r, "schtasks.exe"), f'schtasks.exe /Create /TN "{app} Update Task" /XML "{target}\\task.xml" /F', parent=p)
    if r.chance(0.2):
        s.run(sys32(r, "sc.exe"), f'sc.exe create {app}Service binPath= "{target}\\{app}Service.exe" start= auto', parent=p)
    if r.chance(0.3):
        s.run(sys32(r, "netsh.exe"), f'netsh advfirewall firewall add rule name="{app}" dir=in action=allow program="{target}\\{app}.exe" enable=yes', parent=p)


@workload("squirrel_updater", 1.5)
def squirrel_updater(s: Session) -> None:
    """Per-user Electron apps update themselves from %LocalAppData% (exe in a user folder, network, Run key)."""
    b, r = s.b, s.r
    app = r.pick(_APPS)
    root = f"C:\\Users\\{s.user}\\AppData\\Local\\{app}"
    upd = s.run(f"{root}\\Update.exe", f'"{root}\\Update.exe" --processStart "{app}.exe"{r.pick(("", " --process-start-args --start-minimized"))}')
    b.connect(upd, r.ext_ip(), 443, hostname=f"updates.{app.lower()}.com")
    ver = f"app-{r.num(0, 9)}.{r.num(0, 99)}.{r.num(0, 999)}"
    main = s.run(f"{root}\\{ver}\\{app}.exe", f'"{root}\\{ver}\\{app}.exe"', parent=upd)
    for _ in range(r.num(1, 4)):
        s.run(f"{root}\\{ver}\\{app}.exe", f'"{root}\\{ver}\\{app}.exe" --type=renderer --user-data-dir="C:\\Users\\{s.user}\\AppData\\Roaming\\{app}" --app-path="{root}\\{ver}\\resources\\app.asar"', parent=main)
    for _ in range(r.num(2, 12)):
        b.connect(main, r.ext_ip(), 443)
    if r.chance(0.5):
        b.reg(upd, f"HKU\\S-1-5-21-{r.num(10**9, 4 * 10**9)}-{r.num(1000, 9999)}\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\com.squirrel.{app}.{app}", f"com.squirrel.{app}.{app}", f'"{root}\\Update.exe" --processStart "{app}.exe"')
    if r.chance(0.3):
        b.write(upd, f"{root}\\packages\\{app}-{ver[4:]}-full.nupkg", r.num(10**7, 10**8))


@workload("system_updaters", 2.0)
def system_updaters(s: Session) -> None:
    """Google/Edge/Adobe/OneDrive updaters run from scheduled tasks, register tasks, and fetch updates."""
    b, r = s.b, s.r
    sched = _svc(s, sys32(r, "svchost.exe"))
    exe, args = r.pick((("C:\\Program Files (x86)\\Google\\Update\\GoogleUpdate.exe", "/ua /installsource scheduler"),
                        ("C:\\Program Files (x86)\\Microsoft\\EdgeUpdate\\MicrosoftEdgeUpdate.exe", "/ua /installsource scheduler"),
                        ("C:\\Program Files (x86)\\Common Files\\Adobe\\ARM\\1.0\\AdobeARM.exe", ""),
                        (f"C:\\Users\\{s.user}\\AppData\\Local\\Microsoft\\OneDrive\\OneDriveStandaloneUpdater.exe", "/reporting")))
    p = s.run(exe, f'"{exe}" {args}'.strip(), parent=sched, user="NT AUTHORITY\\SYSTEM", integrity="System")
    b.connect(p, r.ext_ip(), 443, hostname=r.pick(("update.googleapis.com", "msedge.api.cdp.microsoft.com", "armmf.adobe.com", "g.live.com")))
    if r.chance(0.5):
        inst = f"C:\\Program Files (x86)\\Google\\Update\\Install\\{r.guid()}\\{r.num(100, 130)}.0.{r.num(1000, 6000)}.{r.num(0, 200)}_chrome_installer.exe"
        b.write(p, inst)
        i = s.run(inst, f'"{inst}" --system-level --verbose-logging --do-not-launch-chrome', parent=p)
        setup = f"C:\\Program Files (x86)\\Google\\Update\\Install\\{r.guid()}\\CR_{r.token(5, 5).upper()}.tmp\\setup.exe"
        s.run(setup, f'"{setup}" --install-archive="{setup[:-9]}CHROME.PACKED.7Z" --system-level', parent=i)
    if r.chance(0.5):
        task = r.pick(("GoogleUpdateTaskMachineUA", "MicrosoftEdgeUpdateTaskMachineCore", "Adobe Acrobat Update Task", f"OneDrive Standalone Update Task-S-1-5-21-{r.num(10**9, 4 * 10**9)}"))
        s.run(sys32(r, "schtasks.exe"), f'"C:\\Windows\\system32\\schtasks.exe" /Create /TN "{task}" /XML "C:\\Windows\\TEMP\\{r.token()}.xml" /F', parent=p)


@workload("windows_update", 1.0)
def windows_update(s: Session) -> None:
    """Windows Update and servicing: USO workers, TiWorker, DISM, Defender signature updates."""
    b, r = s.b, s.r
    svc = _svc(s, sys32(r, "svchost.exe"))
    for exe, cmd in r.sample(((sys32(r, "MoUsoCoreWorker.exe"), "C:\\Windows\\System32\\mousocoreworker.exe -Embedding"),
                              (sys32(r, "wuauclt.exe"), '"C:\\Windows\\system32\\wuauclt.exe" /RunHandlerComServer'),
                              ("C:\\Windows\\WinSxS\\amd64_microsoft-windows-servicingstack_31bf3856ad364e35_10.0.19041.1220_none_7e21bc567c7ed16b\\TiWorker.exe", "C:\\Windows\\winsxs\\amd64_microsoft-windows-servicingstack_31bf3856ad364e35_10.0.19041.1220_none_7e21bc567c7ed16b\\TiWorker.exe -Embedding"),
                              ("C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.2107.4-0\\MpCmdRun.exe", '"C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.2107.4-0\\MpCmdRun.exe" SignatureUpdate -ScheduleJob -RestrictPrivileges'),
                              (sys32(r, "CompatTelRunner.exe"), "C:\\Windows\\system32\\compattelrunner.exe -maintenance")), r.num(1, 3)):
        p = s.run(exe, cmd, parent=svc, user="NT AUTHORITY\\SYSTEM", integrity="System")
        for _ in range(r.num(1, 8)):
            b.write(p, f"C:\\Windows\\SoftwareDistribution\\Download\\{r.hexstr(32)}\\{r.name(r.pick(('cab', 'psf', 'dll', 'mum')))}")
        b.connect(p, r.ext_ip(), 443, hostname=r.pick(("fe3cr.delivery.mp.microsoft.com", "sls.update.microsoft.com", "definitionupdates.microsoft.com")))


@workload("sccm_intune", 1.5)
def sccm_intune(s: Session) -> None:
    """Management agents run PowerShell with Bypass (sometimes encoded) and cmd scripts as SYSTEM."""
    b, r = s.b, s.r
    agent = r.pick((_svc(s, "C:\\Windows\\CCM\\CcmExec.exe"), _svc(s, "C:\\Program Files (x86)\\Microsoft Intune Management Extension\\AgentExecutor.exe"),
                    _svc(s, "C:\\Program Files\\Microsoft Monitoring Agent\\Agent\\MonitoringHost.exe")))
    for _ in range(r.num(1, 3)):
        kind = r.rng.randrange(4)
        if kind == 0:
            cmd = f'"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe" -NoLogo -NonInteractive -NoProfile -ExecutionPolicy Bypass -File "C:\\Windows\\CCM\\SystemTemp\\{r.guid()[1:-1]}.ps1"'
        elif kind == 1:
            cmd = f'"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe" -NoProfile -executionPolicy bypass -file "C:\\Program Files (x86)\\Microsoft Intune Management Extension\\Policies\\Scripts\\{r.guid()[1:-1]}.ps1"'
        elif kind == 2:
            cmd = f"powershell.exe -NonInteractive -NoProfile -EncodedCommand {r.ps_enc(r.pick(('Get-WmiObject Win32_LogicalDisk | Select DeviceID,FreeSpace', 'Get-Service | ? Status -eq Running', 'Get-HotFix | Sort InstalledOn')))}"
        else:
            cmd = f'"C:\\windows\\system32\\cscript.exe" /nologo "{r.pick(("MonitorKnowledgeDiscovery.vbs", "GetDiskInfo.vbs", "CheckServices.js"))}"'
        image = sys32(r, "cscript.exe") if "cscript" in cmd else powershell(r)
        p = s.run(image, cmd, parent=agent, user="NT AUTHORITY\\SYSTEM", integrity="System")
        for sub in r.sample(("ipconfig /all", "whoami", "systeminfo", "net localgroup administrators", "gpupdate /force", "sc query", "reg query HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion"), r.num(0, 2)):
            s.run(sys32(r, sub.split()[0] + ".exe"), sub, parent=p, user="NT AUTHORITY\\SYSTEM")
        b.write(p, f"C:\\Windows\\CCM\\Logs\\{r.name('log')}")


@workload("admin_shell", 1.5)
def admin_shell(s: Session) -> None:
    """An IT admin opens a shell and runs a few diagnostics or account chores, spread over minutes."""
    b, r = s.b, s.r
    image = r.pick((sys32(r, "cmd.exe"), powershell(r), "C:\\Program Files\\PowerShell\\7\\pwsh.exe"))
    sh = s.run(image, f'"{image}"', integrity=r.pick(("Medium", "High")))
    chores = ["ipconfig /all", "ipconfig /flushdns", "ping -n 4 {host}", "nslookup {host}", "tracert {host}", "gpupdate /force",
              "gpresult /r", "net user {user} /domain", "net localgroup administrators", "whoami", "hostname", "systeminfo",
              "tasklist", "sc query {svc}", "netstat -an", "reg query HKLM\\SOFTWARE\\Policies", "schtasks /query /fo LIST", "klist",
              "quser", "net use Z: \\\\{host}\\share"]
    if r.chance(0.1):  # rarer chores that also appear in attacks; at real-world rates, not more
        chores.append(r.pick(("sc stop {svc}", "sc start {svc}", "robocopy C:\\Data \\\\{host}\\backup /mir",
                              "taskkill /im {proc} /f", "certutil -hashfile C:\\Users\\{user}\\Downloads\\{file} SHA256",
                              "wevtutil qe System /c:20 /rd:true /f:text", "icacls C:\\Shares\\{svc}")))
    for chore in r.sample(chores, r.num(1, 4)):
        line = chore.format(host=r.host(), user=r.user(), svc=r.pick(("Spooler", "wuauserv", "W32Time", "BITS", "MyAppSvc")),
                            proc=r.pick(("notepad.exe", "chrome.exe", "excel.exe", "java.exe")), file=r.name("exe"))
        exe = line.split()[0]
        s.run(sys32(r, exe + ".exe"), line, parent=sh)
        b.tick(5, 120)
    if r.chance(0.01):
        who = r.user()
        s.run(sys32(r, "net.exe"), f"net user {who} {r.token(10, 14)} /add /domain", parent=sh)
        s.run(sys32(r, "net.exe"), f'net group "{r.pick(("Sales", "Engineering", "VPN Users"))}" {who} /add /domain', parent=sh)


@workload("developer", 2.0)
def developer(s: Session) -> None:
    """Editors and build tools: VS Code, git, node/npm, python/pip, dotnet/MSBuild building projects."""
    b, r = s.b, s.r
    code = f"C:\\Users\\{s.user}\\AppData\\Local\\Programs\\Microsoft VS Code\\Code.exe"
    editor = s.run(code, f'"{code}"')
    folder = r.pick(("source\\repos", "src", "projects", "dev"))
    repo = f"C:\\Users\\{s.user}\\{folder}\\{r.token()}"
    for _ in range(r.num(2, 6)):
        kind = r.rng.randrange(5)
        if kind == 0:
            g = s.run("C:\\Program Files\\Git\\cmd\\git.exe", f"git {r.pick(('status', 'fetch', 'pull', 'commit -m wip', 'push origin main', 'log --oneline -20'))}", parent=editor, cwd=repo)
            if r.chance(0.5):
                rem = s.run("C:\\Program Files\\Git\\mingw64\\libexec\\git-core\\git-remote-https.exe", "git-remote-https origin https://github.com/org/repo.git", parent=g)
                b.connect(rem, r.ext_ip(), 443, hostname="github.com")
        elif kind == 1:
            n = s.run("C:\\Program Files\\nodejs\\node.exe", f'"C:\\Program Files\\nodejs\\node.exe" "C:\\Program Files\\nodejs\\node_modules\\npm\\bin\\npm-cli.js" {r.pick(("install", "run build", "test", "ci"))}', parent=editor, cwd=repo)
            for _ in range(r.num(1, 10)):
                b.write(n, f"{repo}\\node_modules\\{r.token()}\\{r.name('js')}")
            b.connect(n, r.ext_ip(), 443, hostname="registry.npmjs.org")
            if r.chance(0.4):
                s.run(sys32(r, "cmd.exe"), "C:\\Windows\\system32\\cmd.exe /d /s /c node-gyp rebuild", parent=n)
        elif kind == 2:
            py = f"C:\\Users\\{s.user}\\AppData\\Local\\Programs\\Python\\Python3{r.num(8, 12)}\\python.exe"
            p = s.run(py, f'"{py}" -m {r.pick(("pip install -r requirements.txt", "pytest -q", "venv .venv", "pip install --upgrade pip"))}', parent=editor, cwd=repo)
            b.connect(p, r.ext_ip(), 443, hostname="pypi.org")
        elif kind == 3:
            d = s.run("C:\\Program Files\\dotnet\\dotnet.exe", f'"C:\\Program Files\\dotnet\\dotnet.exe" {r.pick(("build", "test", "restore", "run"))}', parent=editor, cwd=repo)
            s.run("C:\\Program Files\\Microsoft Visual Studio\\2022\\Community\\MSBuild\\Current\\Bin\\MSBuild.exe",
                  f'"C:\\Program Files\\Microsoft Visual Studio\\2022\\Community\\MSBuild\\Current\\Bin\\MSBuild.exe" {repo}\\{r.token()}.csproj /nologo /m /p:Configuration=Debug', parent=d)
            b.write(d, f"{repo}\\bin\\Debug\\net8.0\\{r.name('dll')}")
        else:
            s.run(powershell(r), f"powershell.exe -NoProfile -ExecutionPolicy Bypass -File {repo}\\build.ps1", parent=editor)


@workload("desktop_apps", 2.0)
def desktop_apps(s: Session) -> None:
    """Everyday desktop: notepad, calculator, snipping, file copies, zip of a folder, Teams/Zoom calls."""
    b, r = s.b, s.r
    for _ in range(r.num(1, 4)):
        kind = r.rng.randrange(5)
        if kind == 0:
            p = s.run(sys32(r, "notepad.exe"), f'"C:\\Windows\\system32\\NOTEPAD.EXE" C:\\Users\\{s.user}\\Documents\\{r.name("txt")}')
            b.write(p, f"C:\\Users\\{s.user}\\Documents\\{r.name('txt')}")
        elif kind == 1:
            s.run("C:\\Program Files\\WindowsApps\\Microsoft.WindowsCalculator_11.2210.0.0_x64__8wekyb3d8bbwe\\CalculatorApp.exe", '"CalculatorApp.exe" -ServerName:App.AppXsm3pg4n7er43kdh1qp4e79f1j7am68r8.mca')
        elif kind == 2:
            p = s.run("C:\\Program Files\\7-Zip\\7zG.exe", f'"C:\\Program Files\\7-Zip\\7zG.exe" a -i#7zMap{r.num(1000, 9999)}:{r.num(10, 99)}:7zEvent{r.num(1000, 9999)} -ad -saa -- "C:\\Users\\{s.user}\\Documents\\{r.token()}"')
            b.write(p, f"C:\\Users\\{s.user}\\Documents\\{r.name('zip')}", r.num(10**5, 10**8))
        elif kind == 3:
            app = r.pick(("C:\\Users\\{u}\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe", "C:\\Users\\{u}\\AppData\\Roaming\\Zoom\\bin\\Zoom.exe")).format(u=s.user)
            p = s.run(app, f'"{app}"')
            b.reg(p, f"HKU\\S-1-5-21-{r.num(10**9, 4 * 10**9)}-{r.num(1000, 9999)}\\Software\\Microsoft\\Windows\\CurrentVersion\\CapabilityAccessManager\\ConsentStore\\microphone\\NonPackaged\\{app.replace(chr(92), '#')}\\LastUsedTimeStart", "LastUsedTimeStart", f"QWORD (0x{r.hexstr(8)}-0x{r.hexstr(8)})")
            for _ in range(r.num(3, 15)):
                b.connect(p, r.ext_ip(), r.pick((443, 8801, 3478)), udp=r.chance(0.4))
        else:
            p = s.run(sys32(r, "SnippingTool.exe"), '"C:\\Windows\\system32\\SnippingTool.exe"')
            b.create(p, f"C:\\Users\\{s.user}\\Pictures\\Screenshots\\Screenshot {r.num(2019, 2025)}-{r.num(1, 12):02d}-{r.num(1, 28):02d}.png")


@workload("services_background", 3.0)
def services_background(s: Session) -> None:
    """Background OS activity: svchost/taskhostw/SearchIndexer/dllhost/WmiPrvSE children, Defender scans."""
    b, r = s.b, s.r
    choices = ((sys32(r, "svchost.exe"), sys32(r, "taskhostw.exe"), "taskhostw.exe {222A245B-E637-4AE9-A93F-A59CA119A75E}"),
               (sys32(r, "SearchIndexer.exe"), sys32(r, "SearchProtocolHost.exe"), '"C:\\windows\\system32\\SearchProtocolHost.exe" Global\\UsGthrFltPipeMssGthrPipe1_ Global\\UsGthrCtrlFltPipeMssGthrPipe1 1 -2147483646 "Software\\Microsoft\\Windows Search"'),
               (sys32(r, "svchost.exe"), sys32(r, "dllhost.exe"), f"C:\\Windows\\system32\\DllHost.exe /Processid:{r.guid()}"),
               (sys32(r, "svchost.exe"), sys32(r, "wbem\\WmiPrvSE.exe"), "C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding"),
               (sys32(r, "svchost.exe"), sys32(r, "backgroundTaskHost.exe"), f'"C:\\Windows\\system32\\backgroundTaskHost.exe" -ServerName:{r.token(8, 20)}.AppX{r.token(20, 30)}.mca'),
               (sys32(r, "services.exe"), sys32(r, "svchost.exe"), f"C:\\Windows\\system32\\svchost.exe -k {r.pick(('netsvcs', 'LocalServiceNetworkRestricted', 'wusvcs', 'UnistackSvcGroup'))} -p -s {r.token(5, 12)}"),
               ("C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.2107.4-0\\MsMpEng.exe", "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.2107.4-0\\MpCmdRun.exe", "MpCmdRun.exe -Scan -ScanType 1"),
               (sys32(r, "svchost.exe"), sys32(r, "WerFault.exe"), f"C:\\Windows\\system32\\WerFault.exe -u -p {r.num(300, 9000)} -s {r.num(100, 900)}"),
               (sys32(r, "svchost.exe"), sys32(r, "sppsvc.exe"), "C:\\Windows\\system32\\sppsvc.exe"),
               (sys32(r, "svchost.exe"), sys32(r, "rundll32.exe"), r.pick(("C:\\Windows\\system32\\rundll32.exe C:\\Windows\\system32\\PcaSvc.dll,PcaPatchSdbTask", "rundll32.exe C:\\Windows\\System32\\shell32.dll,SHCreateLocalServerRunDll {9aa46009-3ce0-458a-a354-715610a075e6} -Embedding", "C:\\Windows\\System32\\rundll32.exe C:\\Windows\\System32\\Windows.Storage.ApplicationData.dll,CleanupTemporaryState"))))
    for parent_image, image, cmd in r.sample(choices, r.num(1, 4)):
        parent = _svc(s, parent_image)
        p = s.run(image, cmd, parent=parent, user=r.pick(("NT AUTHORITY\\SYSTEM", "NT AUTHORITY\\LOCAL SERVICE", r.domain_user(s.user))), integrity="System")
        if r.chance(0.3):
            folder = r.pick(("Temp", "Logs", "ServiceProfiles\\LocalService\\AppData\\Local\\Temp"))
            b.write(p, f"C:\\Windows\\{folder}\\{r.name(r.pick(('tmp', 'log', 'etl')))}")
        if image.endswith(("WerFault.exe", "MpCmdRun.exe")) and r.chance(0.3):
            b.access(p, sys32(r, "lsass.exe"), r.pick((0x1000, 0x1400, 0x101000)))
    if r.chance(0.2):
        tm = s.run(sys32(r, "Taskmgr.exe"), '"C:\\Windows\\system32\\taskmgr.exe" /4', integrity="High")
        b.access(tm, sys32(r, "lsass.exe"), r.pick((0x1400, 0x1000)))


@workload("backup_agent", 0.8)
def backup_agent(s: Session) -> None:
    """Backup software lists/creates shadow copies and copies data to a share (not deleting them)."""
    b, r = s.b, s.r
    agent = _svc(s, r.pick(("C:\\Program Files\\Veeam\\Endpoint Backup\\Veeam.EndPoint.Service.exe", "C:\\Program Files\\Acronis\\BackupAndRecovery\\mms.exe", sys32(r, "wbengine.exe"))))
    for cmd in r.sample(("vssadmin list shadows", "vssadmin list writers", "vssadmin create shadow /for=C:", "wbadmin get versions"), r.num(1, 2)):
        s.run(sys32(r, cmd.split()[0] + ".exe"), cmd, parent=agent, user="NT AUTHORITY\\SYSTEM", integrity="System")
    for _ in range(r.num(2, 20)):
        b.write(agent, f"\\\\{r.host()}\\Backups\\{s.user}\\{r.name(r.pick(('vib', 'vbk', 'tib')))}", r.num(10**6, 10**9))
        b.connect(agent, r.int_ip(), 445)


@workload("shell_housekeeping", 2.5)
def shell_housekeeping(s: Session) -> None:
    """Consoles open since before the recording (no start event, parent unknown) doing ordinary work."""
    b, r = s.b, s.r
    image = r.pick((powershell(r), powershell(r), sys32(r, "cmd.exe"), "C:\\Program Files\\PowerShell\\7\\pwsh.exe"))
    sh = b.existing(image, user=r.domain_user(s.user)) if r.chance(0.7) else s.run(image, f'"{image}"')
    ps_housekeeping(b, r, sh, s.user)
    if r.chance(0.5):
        b.write(sh, f"C:\\Users\\{s.user}\\AppData\\Roaming\\Microsoft\\Windows\\PowerShell\\PSReadLine\\ConsoleHost_history.txt", r.num(20, 400))
    if r.chance(0.4):
        b.load(sh, "C:\\Windows\\assembly\\NativeImages_v4.0.30319_64\\System.Manaa57fc8cc#\\System.Management.Automation.ni.dll")
    for _ in range(r.num(0, 4)):
        kind = r.rng.randrange(4)
        if kind == 0:
            b.write(sh, f"C:\\Users\\{s.user}\\{r.pick(('Documents', 'Desktop', 'source'))}\\{r.name(r.pick(('txt', 'csv', 'log', 'json')))}")
        elif kind == 1:
            b.delete(sh, f"C:\\Users\\{s.user}\\AppData\\Local\\Temp\\{r.name('tmp')}")
        elif kind == 2:
            b.connect(sh, r.ext_ip(), 443, hostname=r.pick(("www.powershellgallery.com", "api.github.com", "login.microsoftonline.com")))
        else:
            s.run(sys32(r, r.pick(("ipconfig.exe", "whoami.exe", "HOSTNAME.EXE", "where.exe"))), r.pick(("ipconfig", "whoami", "hostname", "where git")), parent=sh)


_SYSTEM_IMAGES = (
    ("wermgr.exe", "-upload"), ("WerFault.exe", "-u -p {pid} -s {n}"), ("taskhostw.exe", ""), ("sppsvc.exe", ""),
    ("SearchProtocolHost.exe", ""), ("SearchFilterHost.exe", "0 {n} {n} {n} 8192 {n}"), ("smartscreen.exe", "-Embedding"),
    ("CompatTelRunner.exe", "-m:appraiser.dll -f:DoScheduledTelemetryRun"), ("DeviceCensus.exe", "SystemCxt"),
    ("usocoreworker.exe", "-Embedding"), ("VSSVC.exe", ""), ("gpupdate.exe", "/target:computer"), ("consent.exe", "{n} 288 {hex}"),
    ("dllhost.exe", "/Processid:{guid}"), ("RuntimeBroker.exe", "-Embedding"), ("backgroundTaskHost.exe", "-ServerName:App.{hex}"),
    ("MusNotification.exe", ""), ("sihclient.exe", "/cv {hex}"), ("WmiApSrv.exe", ""), ("msiexec.exe", "/V"),
    ("ctfmon.exe", ""), ("fontdrvhost.exe", ""), ("audiodg.exe", "0x{n}"), ("wsqmcons.exe", ""), ("lpremove.exe", ""),
    ("SecurityHealthService.exe", ""), ("MpCmdRun.exe", "-IdleTask -TaskName WdCacheMaintenance"), ("SgrmBroker.exe", ""),
    ("WmiPrvSE.exe", "-secured -Embedding"), ("svchost.exe", "-k netsvcs -p -s Schedule"), ("TrustedInstaller.exe", ""),
    ("conhost.exe", "0xffffffff -ForceV1"), ("VBoxTray.exe", ""), ("vmtoolsd.exe", "-n vmusr"), ("OneDrive.exe", "/background"),
)
_SYSTEM_REG = (
    "HKLM\\System\\CurrentControlSet\\Services\\bam\\State\\UserSettings\\{sid}\\\\Device\\HarddiskVolume2\\Windows\\System32\\{exe}",
    "HKLM\\System\\CurrentControlSet\\Services\\W32Time\\Config\\LastKnownGoodTime",
    "HKLM\\System\\CurrentControlSet\\Services\\Tcpip\\Parameters\\Interfaces\\{guid}\\DhcpIPAddress",
    "HKLM\\System\\CurrentControlSet\\Services\\WinDefend\\Start", "HKLM\\SOFTWARE\\Microsoft\\Windows\\Windows Error Reporting\\LastQueuePesterTime",
    "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Schedule\\TaskCache\\Tasks\\{guid}\\DynamicInfo",
    "HKU\\{sid}\\Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\UserAssist\\{guid}\\Count\\{hex}",
    "HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\Signature Updates\\SignaturesLastUpdated",
    "HKLM\\System\\CurrentControlSet\\Services\\EventLog\\Application\\{exe}\\EventMessageFile",
    "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WINEVT\\Channels\\Microsoft-Windows-{hex}/Operational\\Enabled",
    "HKU\\{sid}\\Software\\Microsoft\\Windows\\CurrentVersion\\CapabilityAccessManager\\ConsentStore\\webcam\\NonPackaged\\{exe}\\LastUsedTimeStop",
)


@workload("system_background", 5.0)
def system_background(s: Session) -> None:
    """Windows' own processes doing their ordinary mix: registry (services, BAM, WER, task cache), files in
    Temp/ProgramData/Windows, network to Microsoft, module loads, handles to other processes (including LSASS
    with query-only rights) and, for VM tools and security agents, threads in other processes."""
    b, r = s.b, s.r
    for _ in range(r.num(1, 3)):
        exe, args = r.pick(_SYSTEM_IMAGES)
        line = f"{sys32(r, exe)} {args}".format(pid=r.num(300, 9000), n=r.num(100, 9999), hex=r.hexstr(8), guid=r.guid()).strip()
        parent = b.existing(sys32(r, r.pick(("svchost.exe", "services.exe", "svchost.exe"))), user="NT AUTHORITY\\SYSTEM")
        p = b.existing(sys32(r, exe), user="NT AUTHORITY\\SYSTEM") if r.chance(0.35) else s.run(
            sys32(r, exe), line, parent=parent, user=r.pick(("NT AUTHORITY\\SYSTEM", "NT AUTHORITY\\LOCAL SERVICE", r.domain_user(s.user))),
            integrity="System")
        sid = f"S-1-5-21-{r.num(10**9, 4 * 10**9)}-{r.num(1000, 9999)}"
        for _ in range(r.num(0, 6)):
            b.reg(p, r.pick(_SYSTEM_REG).format(sid=sid, exe=exe, guid=r.guid(), hex=r.hexstr(12)), None, f"DWORD (0x{r.hexstr(8)})")
        for _ in range(r.num(0, 6) if r.chance(0.7) else r.num(20, 300)):
            folder = r.pick(("C:\\Windows\\Temp", "C:\\ProgramData\\Microsoft\\Windows\\WER\\ReportQueue\\AppCrash_" + r.hexstr(12),
                             "C:\\ProgramData\\Microsoft\\Windows Defender\\Scans", "C:\\Windows\\Logs\\CBS", "C:\\Windows\\Prefetch",
                             f"C:\\Users\\{s.user}\\AppData\\Local\\Temp", "C:\\Windows\\ServiceProfiles\\LocalService\\AppData\\Local"))
            path = f"{folder}\\{r.name(r.pick(('tmp', 'etl', 'wer', 'log', 'dat', 'xml', 'pf', 'mdmp')))}"
            b.write(p, path)
            if r.chance(0.3):
                b.delete(p, path)
        for _ in range(r.num(0, 4)):
            b.load(p, sys32(r, r.pick(("winhttp.dll", "wininet.dll", "samlib.dll", "cryptdll.dll", "wbemcomn.dll", "ws2_32.dll", "vaultcli.dll", "amsi.dll"))))
        for _ in range(r.num(0, 3)):
            b.connect(p, r.ext_ip(), 443, hostname=r.pick(("watson.telemetry.microsoft.com", "settings-win.data.microsoft.com", "ctldl.windowsupdate.com")))
        if r.chance(0.3):
            b.access(p, r.pick((sys32(r, "lsass.exe"), sys32(r, "csrss.exe"), sys32(r, "svchost.exe"), r.case("C:\\Windows\\explorer.exe"))),
                     r.pick((0x1000, 0x1400, 0x101000, 0x1410 if exe in ("MsMpEng.exe", "WerFault.exe", "wermgr.exe") else 0x1000)))
        if exe in ("VBoxTray.exe", "vmtoolsd.exe", "MpCmdRun.exe") and r.chance(0.5):
            b.inject(p, sys32(r, r.pick(("csrss.exe", "svchost.exe", "explorer.exe"))))


@workload("builtin_scripts", 1.5)
def builtin_scripts(s: Session) -> None:
    """Windows' own script-driven tools: network diagnostics (gatherNetworkInfo.vbs under msdt/sdiagnhost),
    licensing (slmgr.vbs), printer and WinRM admin scripts, SCOM discovery scripts. They load script
    engines, write service/network registry keys and temp files, and run netsh/ipconfig/reg children."""
    b, r = s.b, s.r
    host = b.existing(sys32(r, r.pick(("sdiagnhost.exe", "msdt.exe", "svchost.exe", "mmc.exe", "MonitoringHost.exe"))),
                      user=r.pick(("NT AUTHORITY\\SYSTEM", r.domain_user(s.user))))
    script = r.pick(("gatherNetworkInfo.vbs", "slmgr.vbs /dli", "slmgr.vbs /ato", "Printing_Admin_Scripts\\en-US\\prnport.vbs -l",
                     "winrm.vbs get winrm/config", "MonitorKnowledgeDiscovery.vbs", "Printing_Admin_Scripts\\en-US\\prnmngr.vbs -l"))
    sh = s.run(sys32(r, "cscript.exe"), f"C:\\Windows\\system32\\cscript.exe {r.pick(('', '//nologo '))}C:\\Windows\\system32\\{script}",
               parent=host, integrity=r.pick(("High", "System")))
    b.load(sh, sys32(r, r.pick(("vbscript.dll", "jscript.dll", "wshom.ocx", "scrrun.dll"))))
    for _ in range(r.num(0, 12)):
        b.reg(sh, r.pick((f"HKLM\\System\\CurrentControlSet\\Services\\Tcpip\\Parameters\\Interfaces\\{r.guid()}\\{r.word()}",
                          f"HKLM\\System\\CurrentControlSet\\Services\\NetBT\\Parameters\\{r.word()}",
                          f"HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\SoftwareProtectionPlatform\\{r.word()}")),
              None, f"DWORD (0x{r.hexstr(8)})")
    for _ in range(r.num(0, 8)):
        b.write(sh, f"C:\\Windows\\Temp\\SDIAG_{r.guid()[1:-1]}\\{r.name(r.pick(('txt', 'etl', 'xml', 'cab')))}")
    for child in r.sample(("netsh wlan show interfaces", "netsh interface ipv4 show config", "ipconfig /all", "netsh winhttp show proxy",
                           "reg query HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters", "netsh advfirewall show allprofiles",
                           "route print", "netstat -ano"), r.num(0, 4)):
        s.run(sys32(r, child.split()[0] + ".exe"), child, parent=sh, integrity="High")
