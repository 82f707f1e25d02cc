"""What a path, image, registry key, DLL or address *is*: small lexical classifiers.

They turn strings that differ per lab (user names inside paths, drive letters, install folders)
into classes that mean the same everywhere (a user's temp dir, a startup folder, a Run key), which
is what lets windows and features generalise across fleets. Everything here is a pure function of
its argument; results of the image classifier are cached because images repeat heavily.
"""

from __future__ import annotations

import ipaddress
import re
from enum import IntEnum
from functools import lru_cache


class ImageClass(IntEnum):
    """Role of a process image, from its file name."""

    OTHER = 0
    SHELL = 1  # cmd, powershell, bash, sh, zsh ...
    SCRIPT_HOST = 2  # wscript, cscript, mshta, python, perl, node ...
    LOLBIN = 3  # signed binaries that proxy execution or transfer (rundll32, certutil, curl, nc ...)
    ADMIN_TOOL = 4  # system administration / discovery tools (net, sc, reg, whoami, systemctl, id ...)
    OFFICE = 5  # document readers/editors and mail clients
    BROWSER = 6
    SERVICE_HOST = 7  # services, svchost, task hosts, systemd, cron, init
    WMI = 8  # wmiprvse and friends
    REMOTE_SERVICE = 9  # sshd, winrm host, psexec service, telnetd
    WEB_SERVER = 10  # IIS worker, httpd, nginx, php-fpm, database servers
    SYSTEM_CORE = 11  # lsass, csrss, wininit, winlogon, smss
    USER_SHELL = 12  # explorer, desktop shells and session managers
    DEV_TOOL = 13  # package managers, compilers, build tools, version control


# Anchors are long-lived spawners whose subtree is a whole session or service: never scored as a
# row, never the root of a malicious subtree (killing them would take the machine down).
ANCHOR_CLASSES = frozenset(
    {ImageClass.SERVICE_HOST, ImageClass.SYSTEM_CORE, ImageClass.USER_SHELL, ImageClass.REMOTE_SERVICE}
)
# Images whose hash must never become a fleet-wide verdict: they are the operating system's own tools.
NON_ARTIFACT_CLASSES = frozenset(ImageClass) - {ImageClass.OTHER}

_NAMES: dict[ImageClass, str] = {
    ImageClass.SHELL: "cmd powershell pwsh powershell_ise bash sh dash zsh ksh fish csh tcsh ash busybox",
    ImageClass.SCRIPT_HOST: "wscript cscript mshta python python2 python3 pythonw py perl ruby node nodejs "
    "php lua osascript java javaw jjs tclsh wish",
    ImageClass.LOLBIN: "rundll32 regsvr32 msiexec certutil bitsadmin installutil regasm regsvcs msbuild "
    "cmstp "
    "odbcconf forfiles pcalua mavinject esentutl expand extrac32 makecab certreq hh infdefaultinstall "
    "msdt msxsl wmic curl wget nc ncat netcat socat base64 xxd openssl scp sftp rsync ftp tftp "
    "nohup setsid tar zip unzip gzip 7z 7za rar dd chattr chmod ssh plink",
    ImageClass.ADMIN_TOOL: "net net1 sc reg schtasks at netsh vssadmin wbadmin bcdedit wevtutil whoami "
    "nltest ipconfig systeminfo tasklist taskkill hostname quser query arp route netstat nslookup "
    "ping dsquery fsutil icacls takeown attrib auditpol wusa systemctl crontab useradd usermod "
    "adduser passwd id uname ps ifconfig ip ss iptables sudo su pkexec mount kill pkill killall "
    "find grep cat chown setcap getcap journalctl last w who lsof",
    ImageClass.OFFICE: "winword excel powerpnt outlook msaccess mspub onenote visio acrord32 acrobat "
    "foxitreader soffice soffice.bin libreoffice evince okular thunderbird",
    ImageClass.BROWSER: "chrome msedge firefox iexplore opera brave vivaldi safari chromium "
    "chromium-browser firefox-esr",
    ImageClass.SERVICE_HOST: "services svchost taskeng taskhostw taskhost dllhost runtimebroker "
    "systemd init cron crond anacron atd dbus-daemon containerd-shim launchd upstart supervisord",
    ImageClass.WMI: "wmiprvse wmiapsrv scrcons",
    ImageClass.REMOTE_SERVICE: "sshd wsmprovhost winrshost psexesvc telnetd in.telnetd xinetd "
    "rdpclip dropbear",
    ImageClass.WEB_SERVER: "w3wp httpd apache2 nginx php-fpm lighttpd tomcat sqlservr mysqld "
    "postgres mongod redis-server jboss",
    ImageClass.SYSTEM_CORE: "lsass csrss wininit winlogon smss lsaiso kthreadd",
    ImageClass.USER_SHELL: "explorer gnome-shell plasmashell xfce4-session gnome-session "
    "lightdm gdm sddm login userinit xorg",
    ImageClass.DEV_TOOL: "apt apt-get dpkg yum dnf rpm pip pip3 npm yarn make cmake gcc cc g++ clang ld "
    "git go cargo rustc msvsmon devenv code mvn gradle dotnet pytest tox",
}
_BY_NAME: dict[str, ImageClass] = {name: cls for cls, names in _NAMES.items() for name in names.split()}
_EXE_SUFFIXES = (".exe", ".com", ".bin", ".scr")


def basename(path: str) -> str:
    """Lower-cased file name of a Windows or POSIX path."""
    cut = max(path.rfind("\\"), path.rfind("/"))
    return path[cut + 1 :].lower()


_USER_SEGMENTS = (
    (re.compile(r"(?i)(\b[a-z]:\\(?:users|documents and settings)\\)[^\\\"'\s]+"), r"\1U"),
    (re.compile(r"(/home/)[^/\"'\s]+"), r"\1U"),
    (re.compile(r"(\\\\)[^\\\"'\s]+"), r"\1H"),
)


def anonymise(text: str) -> str:
    """Replace user-profile names and UNC host names in a path or command line with fixed tokens.

    Statistics over a command line (length, entropy) must not change with the name of the user
    or the file server a lab happened to use.
    """
    for pattern, replacement in _USER_SEGMENTS:
        text = pattern.sub(replacement, text)
    return text


def _stem(name: str) -> str:
    for suffix in _EXE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@lru_cache(maxsize=65536)
def image_class(image: str) -> ImageClass:
    """Role of an image path; versioned interpreters (python3.11) map to their family."""
    stem = _stem(basename(image))
    found = _BY_NAME.get(stem)
    if found is None:
        found = _BY_NAME.get(stem.rstrip("0123456789.-"), ImageClass.OTHER)
    return found


class Location(IntEnum):
    """Where a file lives, by the role of its directory."""

    OTHER = 0
    TEMP = 1  # %TEMP%, \Windows\Temp, /tmp, /var/tmp, /dev/shm
    USER_PROFILE = 2  # C:\Users\<name>\..., /home/<name>, /root (not temp/startup/ssh)
    SYSTEM = 3  # \Windows\System32, SysWOW64, /bin, /sbin, /usr/bin, /lib, /boot
    STARTUP = 4  # Start Menu\Programs\Startup, ~/.config/autostart
    PROGRAM_DATA = 5  # C:\ProgramData, C:\Users\Public
    ETC = 6  # /etc (other than cron/systemd/profile)
    CRON = 7  # /etc/cron*, /var/spool/cron, crontabs
    SSH = 8  # .ssh directories
    SERVICE_UNIT = 9  # systemd units, init.d, ~/.config/systemd, Windows\System32\Tasks
    SHELL_PROFILE = 10  # .bashrc, .profile, /etc/profile.d, PowerShell profiles
    PROGRAM_FILES = 11  # Program Files, /opt, /usr/local
    WINDOWS = 12  # C:\Windows (not System32 or Temp)


_POSIX_RULES: tuple[tuple[str, Location], ...] = (
    ("/.ssh/", Location.SSH),
    ("/etc/cron", Location.CRON),
    ("/var/spool/cron", Location.CRON),
    ("/etc/systemd/", Location.SERVICE_UNIT),
    ("/lib/systemd/system", Location.SERVICE_UNIT),
    ("/.config/systemd/", Location.SERVICE_UNIT),
    ("/etc/init.d/", Location.SERVICE_UNIT),
    ("/.config/autostart/", Location.STARTUP),
    ("/etc/xdg/autostart/", Location.STARTUP),
    ("/etc/profile", Location.SHELL_PROFILE),
    ("/.bashrc", Location.SHELL_PROFILE),
    ("/.bash_profile", Location.SHELL_PROFILE),
    ("/.profile", Location.SHELL_PROFILE),
    ("/.zshrc", Location.SHELL_PROFILE),
    ("/etc/bash.bashrc", Location.SHELL_PROFILE),
)
_POSIX_PREFIXES: tuple[tuple[str, Location], ...] = (
    ("/tmp/", Location.TEMP),  # noqa: S108 - classifying paths, not creating files
    ("/var/tmp/", Location.TEMP),  # noqa: S108
    ("/dev/shm/", Location.TEMP),  # noqa: S108
    ("/home/", Location.USER_PROFILE),
    ("/root/", Location.USER_PROFILE),
    ("/etc/", Location.ETC),
    ("/usr/local/", Location.PROGRAM_FILES),
    ("/opt/", Location.PROGRAM_FILES),
    ("/bin/", Location.SYSTEM),
    ("/sbin/", Location.SYSTEM),
    ("/usr/", Location.SYSTEM),
    ("/lib", Location.SYSTEM),
    ("/boot/", Location.SYSTEM),
)
_WIN_RULES: tuple[tuple[str, Location], ...] = (
    ("\\start menu\\programs\\startup\\", Location.STARTUP),
    ("\\.ssh\\", Location.SSH),
    ("profile.ps1", Location.SHELL_PROFILE),
    ("\\system32\\tasks\\", Location.SERVICE_UNIT),
    ("\\appdata\\local\\temp\\", Location.TEMP),
    ("\\windows\\temp\\", Location.TEMP),
    ("\\temp\\", Location.TEMP),
    ("\\users\\public\\", Location.PROGRAM_DATA),
    ("\\programdata\\", Location.PROGRAM_DATA),
    ("\\users\\", Location.USER_PROFILE),
    ("\\documents and settings\\", Location.USER_PROFILE),
    ("\\windows\\system32\\", Location.SYSTEM),
    ("\\windows\\syswow64\\", Location.SYSTEM),
    ("\\windows\\", Location.WINDOWS),
    ("\\program files", Location.PROGRAM_FILES),
)


def location(path: str) -> Location:
    """Class of the directory a path is in (Windows paths are matched case-insensitively).

    Most rules are about directories, so the result is cached per directory; names that rules
    single out (dot files, profiles, crontabs) are classified from the full path.
    """
    cut = max(path.rfind("\\"), path.rfind("/")) + 1
    name = path[cut:].lower()
    if name.startswith(".") or "profile" in name or "cron" in name or "bashrc" in name:
        return _location(path)
    return _dir_location(path[:cut])


@lru_cache(maxsize=16384)
def _dir_location(directory: str) -> Location:
    return _location(directory)


def _location(path: str) -> Location:
    if path.startswith("/"):
        for needle, cls in _POSIX_RULES:
            if needle in path:
                return cls
        for prefix, cls in _POSIX_PREFIXES:
            if path.startswith(prefix):
                return cls
        return Location.OTHER
    lowered = path.lower().replace("/", "\\")
    for needle, cls in _WIN_RULES:
        if needle in lowered:
            return cls
    return Location.OTHER


def extension(path: str) -> str:
    """Lower-cased extension without the dot ('' when none; a leading dot is a name, not one)."""
    dot = path.rfind(".")
    cut = max(path.rfind("\\"), path.rfind("/"))
    return path[dot + 1 :].lower() if dot > cut + 1 else ""


EXECUTABLE_EXTENSIONS = frozenset(
    "exe dll sys scr com cpl ocx ps1 psm1 bat cmd vbs vbe js jse wsf wsh hta msi lnk jar sh so py pl "
    "elf".split()
)
ARCHIVE_EXTENSIONS = frozenset("zip 7z rar tar gz tgz bz2 xz cab iso".split())
BACKUP_EXTENSIONS = frozenset("bak vhd vhdx vbk vib vrb bkf wbcat backup tib sql dmp".split())
COMMON_EXTENSIONS = (
    frozenset(
        "txt log tmp dat db ini xml json yaml yml cfg conf csv htm html css png jpg jpeg gif bmp ico svg "
        "doc docx xls xlsx ppt pptx pdf rtf odt ods md pyc lock pid sqlite etl evtx pf mui manifest cat "
        "old new part crdownload partial swp".split()
    )
    | EXECUTABLE_EXTENSIONS
    | ARCHIVE_EXTENSIONS
    | BACKUP_EXTENSIONS
)


def is_backup_path(path: str) -> bool:
    """A backup, shadow-copy or recovery artifact (deleting these is an Impact signal)."""
    lowered = path.lower()
    return (
        extension(lowered) in BACKUP_EXTENSIONS
        or "system volume information" in lowered
        or ("\\windowsimagebackup\\" in lowered)
    )


class RegistryClass(IntEnum):
    """What a registry key controls."""

    OTHER = 0
    RUN = 1  # Run / RunOnce / RunServices / Policies\Explorer\Run / Startup approved
    SERVICES = 2  # CurrentControlSet\Services
    WINLOGON = 3  # Winlogon Shell/Userinit/Notify, AppInit_DLLs
    IFEO = 4  # Image File Execution Options, SilentProcessExit
    COM_HIJACK = 5  # per-user CLSID InprocServer32/LocalServer32, TreatAs
    DEFENSE = 6  # Defender/firewall/UAC/security-center policy switches
    LSA = 7  # Control\Lsa, WDigest, security packages, credential providers


_REG_RULES: tuple[tuple[str, RegistryClass], ...] = (
    ("\\image file execution options\\", RegistryClass.IFEO),
    ("\\silentprocessexit\\", RegistryClass.IFEO),
    ("\\currentversion\\run", RegistryClass.RUN),
    ("\\policies\\explorer\\run", RegistryClass.RUN),
    ("\\explorer\\startupapproved\\", RegistryClass.RUN),
    ("\\explorer\\shell folders", RegistryClass.RUN),
    ("\\winlogon\\", RegistryClass.WINLOGON),
    ("\\appinit_dlls", RegistryClass.WINLOGON),
    ("\\control\\lsa", RegistryClass.LSA),
    ("\\wdigest\\", RegistryClass.LSA),
    ("\\credential providers\\", RegistryClass.LSA),
    ("\\windows defender", RegistryClass.DEFENSE),
    ("\\firewallpolicy\\", RegistryClass.DEFENSE),
    ("\\policies\\system\\enablelua", RegistryClass.DEFENSE),
    ("\\policies\\system\\consentpromptbehavior", RegistryClass.DEFENSE),
    ("\\security center\\", RegistryClass.DEFENSE),
    ("\\controlset001\\services\\", RegistryClass.SERVICES),
    ("\\currentcontrolset\\services\\", RegistryClass.SERVICES),
    ("\\inprocserver32", RegistryClass.COM_HIJACK),
    ("\\localserver32", RegistryClass.COM_HIJACK),
    ("\\treatas", RegistryClass.COM_HIJACK),
)


def registry_class(key: str, value_name: str | None = None) -> RegistryClass:
    """Class of a registry key (value name appended, as Sysmon's TargetObject does)."""
    lowered = key.lower() if value_name is None else f"{key}\\{value_name}".lower()
    for needle, cls in _REG_RULES:
        if needle in lowered:
            return cls
    return RegistryClass.OTHER


class DllClass(IntEnum):
    """Why loading a DLL is interesting."""

    OTHER = 0
    CREDENTIAL = 1  # samlib, vaultcli, dbghelp/dbgcore (dumping), wdigest, kerberos, cryptdll
    SCRIPT_ENGINE = 2  # System.Management.Automation, jscript, vbscript, scrobj, clr, amsi
    NETWORK = 3  # winhttp, wininet, ws2_32 (in a process that should not talk)
    REMOTE = 4  # wmi / remote management clients


_DLLS: dict[str, DllClass] = {
    **dict.fromkeys(
        "samlib.dll vaultcli.dll dbghelp.dll dbgcore.dll wdigest.dll kerberos.dll cryptdll.dll "
        "msv1_0.dll ntdsapi.dll".split(),
        DllClass.CREDENTIAL,
    ),
    **dict.fromkeys(
        "system.management.automation.dll system.management.automation.ni.dll jscript.dll "
        "jscript9.dll vbscript.dll scrobj.dll clr.dll clrjit.dll mscoree.dll amsi.dll".split(),
        DllClass.SCRIPT_ENGINE,
    ),
    **dict.fromkeys("winhttp.dll wininet.dll ws2_32.dll urlmon.dll".split(), DllClass.NETWORK),
    **dict.fromkeys("wmiutils.dll fastprox.dll wbemcomn.dll wbemprox.dll mi.dll".split(), DllClass.REMOTE),
}


def dll_class(path: str) -> DllClass:
    """Class of a loaded module by its file name."""
    return _DLLS.get(basename(path), DllClass.OTHER)


STANDARD_PORTS = frozenset(
    {
        20,
        21,
        22,
        25,
        53,
        80,
        88,
        110,
        123,
        135,
        137,
        138,
        139,
        143,
        389,
        443,
        445,
        465,
        587,
        636,
        993,
        995,
        3268,
        3389,
        5985,
        5986,
        8080,
        8443,
    }
)
LATERAL_PORTS = frozenset({22, 135, 139, 445, 3389, 5985, 5986, 5900, 23})


@lru_cache(maxsize=16384)
def is_external_ip(address: str) -> bool:
    """True for a global unicast address; private, loopback, link-local and junk are not external."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return ip.is_global
