"""Simulated benign Windows small trees, part 3: the look-alikes of `win_lone3`: management agents'
encoded PowerShell, package and agent bootstraps that download and run, scripts that build strings
from character codes, installers' quiet batch files; and, for feature version 1.3's indicators,
administrators' reviews of the domain (the look-alikes of `win_lone2`'s domain discovery) and backup
tools' retention (of `win_lone3`'s recovery inhibition).

Why: each new lone-command indicator of feature version 1.2 also matches ordinary work. Intune, SCCM
and RMM agents start `powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand`
with inventory scripts, and fetch their own updates with `Invoke-WebRequest -OutFile` followed by
`Start-Process msiexec`; documented installers of Chocolatey, Scoop, the .NET SDK and the Azure CLI are
download-and-run one-liners; admins generate passwords with `[char]` and `-join`. `LONE3_WORKLOADS` is
drawn together with `win_benign_lone2.LONE2_WORKLOADS` (`simulate.lone_view_corpus`).
"""

from __future__ import annotations

from pipeline.training.sim.catalog import Workloads
from pipeline.training.sim.session import Session
from pipeline.training.sim.vocab import Rand, sys32
from pipeline.training.sim.win_benign_lone2 import SYSTEM, _admin, _agent, _installer, _vendor
from pipeline.training.sim.win_lone2 import _room
from pipeline.training.sim.win_lone3 import lone_ps

LONE3_WORKLOADS = Workloads()
"""(name, relative weight, generator) of the small benign trees of part 3."""
lone3_workload = LONE3_WORKLOADS.add

_INVENTORY = (
    "Get-Service -Name '{svc}' | Select-Object -ExpandProperty Status",
    "Get-CimInstance Win32_OperatingSystem | Select-Object Caption,Version,LastBootUpTime | ConvertTo-Json",
    "[Console]::OutputEncoding=[Text.Encoding]::UTF8; Get-ItemProperty 'HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion' | Select-Object ProductName,ReleaseId",
    "Test-Path 'C:\\Program Files\\{company}'",
    "$ProgressPreference='SilentlyContinue'; Get-HotFix | Sort-Object InstalledOn -Descending | Select-Object -First 5",
    "Get-WmiObject -Class Win32_Product | Where-Object {{ $_.Name -like '*{company}*' }} | Select-Object Name,Version",
    "Get-BitLockerVolume -MountPoint C: | Select-Object ProtectionStatus",
    "(Get-MpComputerStatus).AntivirusSignatureLastUpdated",
    "Get-LocalGroupMember -Group Administrators | Select-Object -ExpandProperty Name",
    "Get-ChildItem -Path 'C:\\ProgramData\\{company}\\Logs' -Filter *.log | Where-Object LastWriteTime -lt (Get-Date).AddDays(-30) | Remove-Item",
    "$s = Get-Service -Name '{svc}'; if ($s.Status -ne 'Running') {{ Start-Service -Name '{svc}' }}",
    "Get-NetAdapter | Where-Object Status -eq 'Up' | Select-Object Name,MacAddress,LinkSpeed",
    "Get-Volume | Select-Object DriveLetter,SizeRemaining,Size | ConvertTo-Json -Compress",
    "Invoke-Expression -Command 'gpupdate /target:computer /force'",
)

_AGENT_UPDATE = (
    "$ProgressPreference='SilentlyContinue'; Invoke-WebRequest -Uri '{url}' -OutFile \"$env:TEMP\\{msi}\"; Start-Process msiexec.exe -ArgumentList '/i',\"$env:TEMP\\{msi}\",'/qn' -Wait",
    "(New-Object Net.WebClient).DownloadFile('{url}', 'C:\\Windows\\Temp\\{msi}'); Start-Process msiexec.exe -ArgumentList '/i C:\\Windows\\Temp\\{msi} /quiet /norestart' -Wait",
    "Invoke-WebRequest '{url}' -OutFile 'C:\\ProgramData\\{company}\\{msi}' -UseBasicParsing; Start-Process -FilePath 'msiexec.exe' -ArgumentList '/i \"C:\\ProgramData\\{company}\\{msi}\" /qn' -Wait",
)


def _vendor_url(r: Rand, company: str, leaf: str) -> str:
    domain = f"{company.lower().replace(' ', '')}.{r.pick(('com', 'com', 'net', 'io'))}"
    return f"https://{r.pick(('download', 'dl', 'updates', 'cdn', 'packages'))}.{domain}/{r.pick(('agent', 'client', 'latest', 'stable'))}/{leaf}"


@lone3_workload("agent_encoded_script", 2.5)
def agent_encoded_script(s: Session) -> None:
    """A management agent runs an inventory or upkeep script as -EncodedCommand (or -Command) with its
    usual switches; sometimes it fetches its own update and installs it with msiexec."""
    r = s.r
    v = _vendor(r)
    sess = _agent(s)
    for _ in range(r.pick((1, 1, 2))):
        if not _room(sess, 2):
            break
        if r.chance(0.2):
            msi = f"{v.company.replace(' ', '')}{r.pick(('Agent', 'Setup', 'Client'))}.msi"
            script = r.pick(_AGENT_UPDATE).format(url=_vendor_url(r, v.company, msi), msi=msi, company=v.company)
        else:
            script = r.pick(_INVENTORY).format(svc=v.service, company=v.company)
        flags = r.pick(("-NoLogo -NoProfile -NonInteractive -ExecutionPolicy Bypass", "-NoProfile -ExecutionPolicy Bypass",
                        "-NonInteractive -WindowStyle Hidden -ExecutionPolicy Bypass", "-ExecutionPolicy Unrestricted -NoProfile",
                        "-NoProfile -NonInteractive"))
        if r.chance(0.6):
            body = f"{r.pick(('-EncodedCommand', '-enc', '-e', '-ec'))} {r.ps_enc(script)}"
        else:
            body = f'-Command "{script}"'
        sess.run(sys32(r, "WindowsPowerShell\\v1.0\\powershell.exe"), f"powershell.exe {flags} {body}",
                 user=SYSTEM, integrity="System")


_BOOTSTRAPS = (
    "Set-ExecutionPolicy Bypass -Scope Process -Force; [System.Net.ServicePointManager]::SecurityProtocol = "
    "[System.Net.ServicePointManager]::SecurityProtocol -bor 3072; iex ((New-Object System.Net.WebClient)."
    "DownloadString('https://community.chocolatey.org/install.ps1'))",
    "iwr -useb get.scoop.sh | iex",
    "Invoke-RestMethod -Uri https://get.scoop.sh | Invoke-Expression",
    "Invoke-WebRequest -Uri https://aka.ms/installazurecliwindows -OutFile .\\AzureCLI.msi; Start-Process msiexec.exe -Wait -ArgumentList '/I AzureCLI.msi /quiet'",
    "Invoke-WebRequest https://dot.net/v1/dotnet-install.ps1 -OutFile dotnet-install.ps1; .\\dotnet-install.ps1 -Channel {ver}",
    "iex \"& {{ $(irm https://aka.ms/install-powershell.ps1) }} -UseMSI -Quiet\"",
    "Invoke-WebRequest -Uri 'https://github.com/{org}/{repo}/releases/download/v{ver}/{repo}-setup.exe' -OutFile \"$env:TEMP\\{repo}-setup.exe\"; Start-Process \"$env:TEMP\\{repo}-setup.exe\" -ArgumentList '/S' -Wait",
    "iex ((New-Object System.Net.WebClient).DownloadString('https://raw.githubusercontent.com/{org}/{repo}/main/install.ps1'))",
)


@lone3_workload("package_bootstrap", 1.5)
def package_bootstrap(s: Session) -> None:
    """A developer or admin installs a package manager or tool with its documented one-liner
    (Chocolatey, Scoop, the .NET SDK script, the Azure CLI MSI, a release's setup), or a build agent
    fetches a tool; sometimes through cmd /c, sometimes with bitsadmin or certutil and the vendor's URL."""
    r = s.r
    sess = _admin(s) if r.chance(0.7) else _agent(s)
    org, repo = r.pick(("microsoft", "git-for-windows", "PowerShell", "notepad-plus-plus", "cli", "rustdesk", r.token(4, 9))), r.pick(
        ("terminal", "git", "tools", "setup", r.token(4, 9)))
    if r.chance(0.8):
        script = r.pick(_BOOTSTRAPS).format(ver=r.pick(("LTS", "8.0", "STS", "9.0")), org=org, repo=repo)
        lone_ps(sess, script, encoded=0.05, attack=False, integrity=r.pick(("High", "Medium")))
        return
    leaf = f"{repo}-{r.num(1, 20)}.{r.num(0, 9)}.exe"
    u = _vendor_url(r, org, leaf)
    dest = r.pick((f"%TEMP%\\{leaf}", f"C:\\Users\\{s.user}\\Downloads\\{leaf}", f"C:\\Temp\\{leaf}"))
    line = r.pick((f"bitsadmin /transfer {repo}download /download /priority normal {u} {dest} && {dest} /S",
                   f"certutil -urlcache -split -f {u} {dest} && {dest} /quiet",
                   f"curl.exe -L -o {dest} {u} && {dest} /S"))
    sess.run(sys32(r, "cmd.exe"), f"cmd.exe /c {line}", integrity=r.pick(("High", "Medium")))


_STRINGS = (
    "$pw = -join ((48..57) + (65..90) + (97..122) | Get-Random -Count {n} | ForEach-Object {{[char]$_}}); Set-LocalUser -Name '{user}' -Password (ConvertTo-SecureString $pw -AsPlainText -Force)",
    "-join ((65..90) + (97..122) | Get-Random -Count {n} | % {{[char]$_}}) | Set-Content C:\\ProgramData\\{company}\\token.txt",
    "$q = [char]34; & 'C:\\Program Files\\{company}\\{exe}' --config $q'C:\\ProgramData\\{company}\\config.json'$q",
    "$site = $env:COMPUTERNAME.Substring(0,3); Write-Output $site",
    "Get-Content 'C:\\ProgramData\\{company}\\hosts.txt' | & (Join-Path $env:ProgramFiles '{company}\\{exe}') --check",
    "$bytes = [Text.Encoding]::UTF8.GetBytes('{company}'); [Convert]::ToBase64String($bytes)",
)


@lone3_workload("script_string_building", 1.0)
def script_string_building(s: Session) -> None:
    """An admin's or agent's script builds strings from character codes (a generated password), quotes
    with `[char]34`, pipes a list into a tool found with Join-Path, or encodes a value."""
    r = s.r
    v = _vendor(r)
    sess = _admin(s) if r.chance(0.6) else _agent(s)
    script = r.pick(_STRINGS).format(n=r.num(12, 24), user=r.pick(("kiosk", "Administrator", "labuser")), company=v.company,
                                     exe=v.exe)
    lone_ps(sess, script, encoded=0.15, attack=False, integrity=r.pick(("High", "System", "Medium")))


@lone3_workload("installer_quiet_batch", 0.5)
def installer_quiet_batch(s: Session) -> None:
    """An installer's custom action or a deployment runs its own batch file quietly (`cmd.exe /Q /C`)
    from Windows\\Temp, the SCCM cache or its package folder, or redirects a tool's output to a log."""
    r = s.r
    v = _vendor(r)
    sess = _installer(s, v) if r.chance(0.7) else _agent(s)
    folder = r.pick(("C:\\Windows\\TEMP", f"C:\\Windows\\ccmcache\\{r.token(1, 2)}", f"C:\\Windows\\Temp\\{r.guid()}",
                     f"C:\\ProgramData\\Package Cache\\{r.guid()}"))
    bat = r.pick(("install.bat", "setup.bat", "postinstall.cmd", "prereq.bat", f"{v.company.lower()}_cfg.bat"))
    line = r.pick((f"cmd.exe /Q /C {folder}\\{bat}", f'cmd.exe /q /c "{folder}\\{bat}"',
                   f"cmd.exe /c {folder}\\{bat} > C:\\Windows\\Temp\\{v.company.lower()}_install.log 2>&1"))
    sess.run(sys32(r, "cmd.exe"), line, user=SYSTEM, integrity="System")


# --- feature version 1.3: the domain reviewed by its administrators ---------------------------------

_DOMAIN_REVIEW = (
    ("net", 'group "Domain Admins" /domain'), ("net", 'group "Enterprise Admins" /domain'),
    ("net", 'group "Schema Admins" /domain'), ("net", "accounts /domain"), ("net", "group /domain"),
    ("nltest", "/dclist:{short}"), ("nltest", "/domain_trusts"), ("setspn", "-X"), ("setspn", "-Q MSSQLSvc/*"),
    ("ps", "Get-ADGroupMember -Identity 'Domain Admins' -Recursive | Select-Object Name,SamAccountName | "
           "Export-Csv C:\\Reports\\{tag}-domain-admins.csv -NoTypeInformation"),
    ("ps", "Get-ADUser -Filter * -Properties LastLogonDate,PasswordLastSet | Where-Object {{ $_.LastLogonDate -lt "
           "(Get-Date).AddDays(-90) }} | Export-Csv C:\\Reports\\{tag}-stale-users.csv -NoTypeInformation"),
    ("ps", "Get-ADComputer -Filter * -Properties OperatingSystem | Group-Object OperatingSystem | "
           "Select-Object Count,Name"),
    ("ps", "Get-ADDomainController -Filter * | Select-Object HostName,Site,IsGlobalCatalog"),
)


@lone3_workload("domain_review", 0.6)
def domain_review(s: Session) -> None:
    """An administrator or an audit job reviews the domain: who is in Domain Admins or Enterprise Admins,
    the password policy, the domain controllers and trusts, duplicate SPNs, stale accounts and computers
    exported for a report (the quarterly access review most audit frameworks ask for)."""
    r = s.r
    sess = _admin(s) if r.chance(0.7) else _agent(s)
    short = r.pick(("CORP", "AD", r.token(3, 8).upper()))
    tag = r.pick(("q1", "q2", "q3", "q4", "audit", "review"))
    for exe, args in r.sample(_DOMAIN_REVIEW, r.pick((1, 1, 2))):
        if not _room(sess, 2):
            break
        text = args.format(short=short, tag=tag)
        if exe == "ps":
            lone_ps(sess, text, encoded=0.0, attack=False, integrity=r.pick(("High", "Medium")))
        else:
            sess.run(sys32(r, f"{exe}.exe"), f"{exe} {text}", integrity=r.pick(("High", "Medium")))
        s.b.tick(1.0, 40.0)


_RETENTION = (
    ("vssadmin", "delete shadows /for={drive} /oldest /quiet"), ("vssadmin", "list shadows"),
    ("vssadmin", "list shadowstorage"), ("vssadmin", "resize shadowstorage /for={drive} /on={drive} /maxsize={pct}%"),
    ("vssadmin", "resize shadowstorage /for={drive} /on={drive} /maxsize={gb}GB"),
    ("wbadmin", "delete systemstatebackup -keepVersions:{keep} -quiet"), ("wbadmin", "delete backup -keepVersions:{keep} -quiet"),
    ("wbadmin", "get versions"), ("wbadmin", "start systemstatebackup -backupTarget:E: -quiet"),
    ("bcdedit", "/enum"), ("bcdedit", "/set {{current}} bootstatuspolicy displayallfailures"),
    ("bcdedit", "/timeout 10"), ("wmic", "shadowcopy list brief"),
    ("ps", "Get-WmiObject Win32_ShadowCopy | Sort-Object InstallDate | Select-Object -First 1 | ForEach-Object {{ $_.ID }}"),
)


@lone3_workload("backup_retention", 1.0)
def backup_retention(s: Session) -> None:
    """Backup software, a scheduled job or an admin keeps shadow copies and system-state backups within
    their retention (`vssadmin delete shadows /oldest`, `wbadmin delete systemstatebackup -keepVersions:3`),
    sizes shadow storage, lists versions, or reads and sets boot options (`bcdedit /enum`, a boot timeout)."""
    r = s.r
    v = _vendor(r)
    sess = _agent(s) if r.chance(0.5) else (_installer(s, v) if r.chance(0.3) else _admin(s))
    drive = r.pick(("C:", "D:", "E:", "c:"))
    for exe, args in r.sample(_RETENTION, r.pick((1, 1, 2))):
        if not _room(sess, 2):
            break
        text = args.format(drive=drive, pct=r.pick((10, 15, 20)), gb=r.pick((10, 20, 50, 100)), keep=r.pick((2, 3, 5, 7)))
        if exe == "ps":
            lone_ps(sess, text, encoded=0.0, attack=False, integrity=r.pick(("High", "System")))
        else:
            image = sys32(r, "wbem\\WMIC.exe" if exe == "wmic" else f"{exe}.exe")
            sess.run(image, f"{exe} {text}", user=SYSTEM if r.chance(0.5) else None,
                     integrity=r.pick(("High", "System")))
        s.b.tick(0.5, 20.0)
