"""Behaviour codes: what one event *means*, reduced to a small closed catalogue (`Counter`).

Every event is reduced at ingest to a few codes — a child that is a LOLBin, a write into a startup
folder, an LSASS read — using the lexical classes of `pipeline.lexicon`, so the same behaviour on
two machines (or two labs) gets the same code whatever the user names and paths. Codes are what
`pipeline.windows` counts in sliding windows and what the features are made of. The catalogue is
append-only: a code's value is stored in forest state and indexes feature columns.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from functools import lru_cache
from typing import Any

from pipeline import lexicon as lx
from pipeline.lexicon import DllClass, ImageClass, Location, RegistryClass


class Counter(IntEnum):
    """Behaviour counted per process in a window; values are the packed codes (append only)."""

    CHILD_SPAWN = 0
    CHILD_LOLBIN = 1
    CHILD_ADMIN_TOOL = 2
    CHILD_SHELL = 3
    CHILD_USER_WRITABLE = 4
    FILE_WRITE = 5
    FW_TEMP = 6
    FW_USER_PROFILE = 7
    FW_SYSTEM = 8
    FW_STARTUP = 9
    FW_PROGRAM_DATA = 10
    FW_ETC = 11
    FW_CRON = 12
    FW_SSH = 13
    FW_SERVICE_UNIT = 14
    FW_SHELL_PROFILE = 15
    FW_PROGRAM_FILES = 16
    FW_WINDOWS = 17
    FW_EXECUTABLE = 18
    FW_ARCHIVE = 19
    FILE_DELETE = 20
    FILE_DELETE_BACKUP = 21
    FILE_RENAME = 22
    RENAME_EXT_CHANGE = 23
    RENAME_UNCOMMON_EXT = 24
    REG_WRITE = 25
    REG_RUN = 26
    REG_SERVICES = 27
    REG_WINLOGON = 28
    REG_IFEO = 29
    REG_COM_HIJACK = 30
    REG_DEFENSE = 31
    REG_LSA = 32
    REG_DELETE = 33
    NET_CONNECT = 34
    NET_EXTERNAL = 35
    NET_NONSTD_PORT = 36
    NET_LATERAL_PORT = 37
    NET_INBOUND = 38
    DNS_QUERY = 39
    LOAD_CREDENTIAL = 40
    LOAD_SCRIPT_ENGINE = 41
    LOAD_NETWORK = 42
    LOAD_REMOTE_MGMT = 43
    LOAD_UNSIGNED = 44
    LOAD_USER_WRITABLE = 45
    PROC_ACCESS = 46
    LSASS_ACCESS = 47
    LSASS_READ = 48
    LSASS_WRITE = 49
    REMOTE_THREAD = 50
    REMOTE_THREAD_SYSTEM = 51
    SCRIPT = 52
    SCRIPT_SUSPICIOUS = 53


N_COUNTERS = len(Counter)

COUNTER_DOCS: dict[Counter, str] = {
    Counter.CHILD_SPAWN: "child processes started",
    Counter.CHILD_LOLBIN: "children that are proxy-execution/transfer binaries (rundll32, certutil, curl...)",
    Counter.CHILD_ADMIN_TOOL: "children that are admin/discovery tools (net, sc, reg, whoami, systemctl...)",
    Counter.CHILD_SHELL: "children that are shells or script hosts",
    Counter.CHILD_USER_WRITABLE: "children whose image is in a temp, user-profile or ProgramData directory",
    Counter.FILE_WRITE: "files created or written",
    Counter.FW_TEMP: "writes under temp directories (%TEMP%, \\Windows\\Temp, /tmp, /var/tmp, /dev/shm)",
    Counter.FW_USER_PROFILE: "writes under a user profile (outside temp, startup and .ssh)",
    Counter.FW_SYSTEM: "writes under system directories (System32, SysWOW64, /bin, /usr, /lib, /boot)",
    Counter.FW_STARTUP: "writes into startup/autostart folders",
    Counter.FW_PROGRAM_DATA: "writes under ProgramData or Users\\Public",
    Counter.FW_ETC: "writes under /etc (outside cron, systemd and profile files)",
    Counter.FW_CRON: "writes to cron directories or crontabs",
    Counter.FW_SSH: "writes inside .ssh directories",
    Counter.FW_SERVICE_UNIT: "writes of service units, init scripts or Windows task files",
    Counter.FW_SHELL_PROFILE: "writes of shell/PowerShell profile files",
    Counter.FW_PROGRAM_FILES: "writes under Program Files, /opt or /usr/local",
    Counter.FW_WINDOWS: "writes under the Windows directory (outside System32 and Temp)",
    Counter.FW_EXECUTABLE: "written files with an executable or script extension",
    Counter.FW_ARCHIVE: "written files with an archive extension",
    Counter.FILE_DELETE: "files deleted",
    Counter.FILE_DELETE_BACKUP: "backup, shadow-copy or recovery files deleted",
    Counter.FILE_RENAME: "files renamed",
    Counter.RENAME_EXT_CHANGE: "renames that change the file extension",
    Counter.RENAME_UNCOMMON_EXT: "renames to an uncommon extension (ransomware-style)",
    Counter.REG_WRITE: "registry values/keys changed",
    Counter.REG_RUN: "registry autorun changes (Run, RunOnce, Policies\\Explorer\\Run, StartupApproved)",
    Counter.REG_SERVICES: "service configuration changes in the registry",
    Counter.REG_WINLOGON: "Winlogon/AppInit_DLLs changes",
    Counter.REG_IFEO: "Image File Execution Options / SilentProcessExit changes",
    Counter.REG_COM_HIJACK: "COM server registrations (InprocServer32, LocalServer32, TreatAs)",
    Counter.REG_DEFENSE: "security product, firewall or UAC policy changes",
    Counter.REG_LSA: "LSA, WDigest or credential provider changes",
    Counter.REG_DELETE: "registry keys or values deleted",
    Counter.NET_CONNECT: "network connections",
    Counter.NET_EXTERNAL: "connections to global (non-private) addresses",
    Counter.NET_NONSTD_PORT: "connections to non-standard ports",
    Counter.NET_LATERAL_PORT: "connections to remote-administration ports (SMB, RPC, RDP, WinRM, SSH, VNC)",
    Counter.NET_INBOUND: "inbound connections accepted",
    Counter.DNS_QUERY: "DNS queries",
    Counter.LOAD_CREDENTIAL: "credential-related modules loaded (samlib, vaultcli, dbghelp, wdigest...)",
    Counter.LOAD_SCRIPT_ENGINE: "script-engine modules loaded (System.Management.Automation, jscript...)",
    Counter.LOAD_NETWORK: "HTTP/socket modules loaded (winhttp, wininet, ws2_32, urlmon)",
    Counter.LOAD_REMOTE_MGMT: "WMI client modules loaded",
    Counter.LOAD_UNSIGNED: "unsigned modules loaded",
    Counter.LOAD_USER_WRITABLE: "modules loaded from temp, user-profile or ProgramData directories",
    Counter.PROC_ACCESS: "handles opened to other processes",
    Counter.LSASS_ACCESS: "handles opened to LSASS",
    Counter.LSASS_READ: "LSASS handles with PROCESS_VM_READ (0x10)",
    Counter.LSASS_WRITE: "LSASS handles with write/thread/all access (0x20, 0x2, 0x1F0FFF...)",
    Counter.REMOTE_THREAD: "threads created in other processes",
    Counter.REMOTE_THREAD_SYSTEM: "threads created in system, service or desktop-shell processes",
    Counter.SCRIPT: "script blocks executed",
    Counter.SCRIPT_SUSPICIOUS: "script blocks matching a behaviour indicator",
}

GENERIC_CODES = frozenset(
    {
        Counter.CHILD_SPAWN,
        Counter.FILE_WRITE,
        Counter.FILE_DELETE,
        Counter.FILE_RENAME,
        Counter.REG_WRITE,
        Counter.NET_CONNECT,
        Counter.DNS_QUERY,
        Counter.PROC_ACCESS,
        Counter.SCRIPT,
    }
)
"""Everyday behaviour: never alert evidence on its own."""
STRONG_CODES = frozenset(
    {
        Counter.FW_STARTUP,
        Counter.FW_CRON,
        Counter.FW_SSH,
        Counter.FW_SERVICE_UNIT,
        Counter.FW_SHELL_PROFILE,
        Counter.FILE_DELETE_BACKUP,
        Counter.REG_RUN,
        Counter.REG_WINLOGON,
        Counter.REG_IFEO,
        Counter.REG_COM_HIJACK,
        Counter.REG_DEFENSE,
        Counter.REG_LSA,
        Counter.LOAD_CREDENTIAL,
        Counter.LSASS_ACCESS,
        Counter.LSASS_READ,
        Counter.LSASS_WRITE,
        Counter.REMOTE_THREAD,
        Counter.REMOTE_THREAD_SYSTEM,
        Counter.SCRIPT_SUSPICIOUS,
    }
)
"""Behaviour that is rare in benign trees and decisive for detection: always re-scored at once."""

_FW_BY_LOCATION: dict[Location, Counter] = {
    Location.TEMP: Counter.FW_TEMP,
    Location.USER_PROFILE: Counter.FW_USER_PROFILE,
    Location.SYSTEM: Counter.FW_SYSTEM,
    Location.STARTUP: Counter.FW_STARTUP,
    Location.PROGRAM_DATA: Counter.FW_PROGRAM_DATA,
    Location.ETC: Counter.FW_ETC,
    Location.CRON: Counter.FW_CRON,
    Location.SSH: Counter.FW_SSH,
    Location.SERVICE_UNIT: Counter.FW_SERVICE_UNIT,
    Location.SHELL_PROFILE: Counter.FW_SHELL_PROFILE,
    Location.PROGRAM_FILES: Counter.FW_PROGRAM_FILES,
    Location.WINDOWS: Counter.FW_WINDOWS,
}
_REG_BY_CLASS: dict[RegistryClass, Counter] = {
    RegistryClass.RUN: Counter.REG_RUN,
    RegistryClass.SERVICES: Counter.REG_SERVICES,
    RegistryClass.WINLOGON: Counter.REG_WINLOGON,
    RegistryClass.IFEO: Counter.REG_IFEO,
    RegistryClass.COM_HIJACK: Counter.REG_COM_HIJACK,
    RegistryClass.DEFENSE: Counter.REG_DEFENSE,
    RegistryClass.LSA: Counter.REG_LSA,
}
_LOAD_BY_CLASS: dict[DllClass, Counter] = {
    DllClass.CREDENTIAL: Counter.LOAD_CREDENTIAL,
    DllClass.SCRIPT_ENGINE: Counter.LOAD_SCRIPT_ENGINE,
    DllClass.NETWORK: Counter.LOAD_NETWORK,
    DllClass.REMOTE: Counter.LOAD_REMOTE_MGMT,
}
_USER_WRITABLE = frozenset({Location.TEMP, Location.USER_PROFILE, Location.PROGRAM_DATA})
_SENSITIVE_TARGETS = frozenset({ImageClass.SYSTEM_CORE, ImageClass.SERVICE_HOST, ImageClass.USER_SHELL})
PROCESS_VM_READ = 0x10
_LSASS_WRITE_BITS = 0x0002 | 0x0008 | 0x0020  # CREATE_THREAD | VM_OPERATION | VM_WRITE


def child_codes(child_image: str) -> tuple[Counter, ...]:
    """Codes a parent earns when `child_image` starts under it (cached per image, see below)."""
    if len(child_image) > _CACHED_CHARS:
        return _child_codes.__wrapped__(child_image)
    return _child_codes(child_image)


@lru_cache(maxsize=16384)
def _child_codes(child_image: str) -> tuple[Counter, ...]:
    codes = [Counter.CHILD_SPAWN]
    cls = lx.image_class(child_image)
    if cls is ImageClass.LOLBIN:
        codes.append(Counter.CHILD_LOLBIN)
    elif cls is ImageClass.ADMIN_TOOL:
        codes.append(Counter.CHILD_ADMIN_TOOL)
    elif cls in (ImageClass.SHELL, ImageClass.SCRIPT_HOST):
        codes.append(Counter.CHILD_SHELL)
    if lx.location(child_image) in _USER_WRITABLE:
        codes.append(Counter.CHILD_USER_WRITABLE)
    return tuple(codes)


def _file_write(payload: Any) -> tuple[Counter, ...]:
    path: str = payload.path
    return _file_write_codes(path) if len(path) <= _CACHED_CHARS else _file_write_codes.__wrapped__(path)


# The per-string classifiers below are pure, and the same paths, DLLs and registry values recur
# endlessly on a device (logs, caches, system DLLs), so their codes are cached per string: a hit
# is one dict lookup instead of case folding and a dozen substring tests on the hot path. Only
# strings of a path's usual length are cached, so a hostile device cannot pin megabytes in them.
_CACHED_CHARS = 512
@lru_cache(maxsize=16384)
def _file_write_codes(path: str) -> tuple[Counter, ...]:
    codes = [Counter.FILE_WRITE]
    fw = _FW_BY_LOCATION.get(lx.location(path))
    if fw is not None:
        codes.append(fw)
    ext = lx.extension(path)
    if ext in lx.EXECUTABLE_EXTENSIONS:
        codes.append(Counter.FW_EXECUTABLE)
    elif ext in lx.ARCHIVE_EXTENSIONS:
        codes.append(Counter.FW_ARCHIVE)
    return tuple(codes)


def _file_delete(payload: Any) -> tuple[Counter, ...]:
    if lx.is_backup_path(payload.path):
        return (Counter.FILE_DELETE, Counter.FILE_DELETE_BACKUP)
    return (Counter.FILE_DELETE,)


def _file_rename(payload: Any) -> tuple[Counter, ...]:
    new_ext, old_ext = lx.extension(payload.path), lx.extension(payload.old_path)
    if new_ext == old_ext:
        return (Counter.FILE_RENAME,)
    if new_ext in lx.COMMON_EXTENSIONS:
        return (Counter.FILE_RENAME, Counter.RENAME_EXT_CHANGE)
    return (Counter.FILE_RENAME, Counter.RENAME_EXT_CHANGE, Counter.RENAME_UNCOMMON_EXT)


def _registry(payload: Any) -> tuple[Counter, ...]:
    key: str = payload.key
    value_name: str | None = payload.value_name
    if len(key) + len(value_name or "") > _CACHED_CHARS:
        return _registry_codes.__wrapped__(key, value_name, payload.operation)
    return _registry_codes(key, value_name, payload.operation)


@lru_cache(maxsize=16384)
def _registry_codes(key: str, value_name: str | None, operation: str) -> tuple[Counter, ...]:
    codes = [Counter.REG_WRITE]
    reg = _REG_BY_CLASS.get(lx.registry_class(key, value_name))
    if reg is not None:
        codes.append(reg)
    if operation in ("delete_key", "delete_value"):
        codes.append(Counter.REG_DELETE)
    return tuple(codes)


def _network(payload: Any) -> tuple[Counter, ...]:
    if not payload.outbound:
        return (Counter.NET_CONNECT, Counter.NET_INBOUND)
    codes = [Counter.NET_CONNECT]
    port: int = payload.dst_port
    if lx.is_external_ip(payload.dst_ip):
        codes.append(Counter.NET_EXTERNAL)
    if port in lx.LATERAL_PORTS:
        codes.append(Counter.NET_LATERAL_PORT)
    if port not in lx.STANDARD_PORTS:
        codes.append(Counter.NET_NONSTD_PORT)
    return tuple(codes)


def _image_load(payload: Any) -> tuple[Counter, ...]:
    path: str = payload.path
    if len(path) > _CACHED_CHARS:
        return _image_load_codes.__wrapped__(path, payload.signed)
    return _image_load_codes(path, payload.signed)


@lru_cache(maxsize=16384)
def _image_load_codes(path: str, signed: bool | None) -> tuple[Counter, ...]:
    codes: list[Counter] = []
    load = _LOAD_BY_CLASS.get(lx.dll_class(path))
    if load is not None:
        codes.append(load)
    if signed is False:
        codes.append(Counter.LOAD_UNSIGNED)
    if lx.location(path) in _USER_WRITABLE:
        codes.append(Counter.LOAD_USER_WRITABLE)
    return tuple(codes)


def _process_access(payload: Any) -> tuple[Counter, ...]:
    if lx.basename(payload.target_image) != "lsass.exe":
        return (Counter.PROC_ACCESS,)
    access: int = payload.granted_access
    codes = [Counter.PROC_ACCESS, Counter.LSASS_ACCESS]
    if access & PROCESS_VM_READ:
        codes.append(Counter.LSASS_READ)
    if access & _LSASS_WRITE_BITS:
        codes.append(Counter.LSASS_WRITE)
    return tuple(codes)


def _remote_thread(payload: Any) -> tuple[Counter, ...]:
    if lx.image_class(payload.target_image) in _SENSITIVE_TARGETS:
        return (Counter.REMOTE_THREAD, Counter.REMOTE_THREAD_SYSTEM)
    return (Counter.REMOTE_THREAD,)


def _none(payload: Any) -> tuple[Counter, ...]:
    return ()


_DNS = (Counter.DNS_QUERY,)
CODES_BY_KIND: dict[str, Callable[[Any], tuple[Counter, ...]]] = {
    "file_create": _file_write,
    "file_write": _file_write,
    "file_delete": _file_delete,
    "file_rename": _file_rename,
    "registry_set": _registry,
    "network_connect": _network,
    "dns_query": lambda _p: _DNS,
    "image_load": _image_load,
    "process_access": _process_access,
    "remote_thread": _remote_thread,
    "process_start": _none,
    "process_end": _none,
    "script": _none,
}


"""Payload kind -> the function giving its codes (the tree calls it directly: one call less per event)."""

CODE_FIELDS: dict[str, tuple[str, ...]] = {
    "file_create": ("path",),
    "file_write": ("path",),
    "file_delete": ("path",),
    "file_rename": ("path", "old_path"),
    "registry_set": ("key", "value_name", "operation"),
    "network_connect": ("outbound", "dst_ip", "dst_port"),
    "dns_query": (),
    "image_load": ("path", "signed"),
    "process_access": ("target_image", "granted_access"),
    "remote_thread": ("target_image",),
}
"""Kind -> every payload field its `CODES_BY_KIND` function reads: its codes are a function of these
values alone, so the compiled tree update (pipeline/_cforest.c) may remember them by these values
(tests/unit/test_tree_code_cache.py checks each function reads nothing else)."""


def behaviour_codes(payload: Any) -> tuple[Counter, ...]:
    """Codes the acting process earns for one payload (child and script codes are added by the tree)."""
    return CODES_BY_KIND.get(payload.kind, _none)(payload)


COUNTER_TECHNIQUES: dict[Counter, tuple[str, ...]] = {
    Counter.FW_STARTUP: ("T1547.001",),
    Counter.REG_RUN: ("T1547.001",),
    Counter.FW_CRON: ("T1053.003",),
    Counter.FW_SSH: ("T1098.004",),
    Counter.FW_SERVICE_UNIT: ("T1543.002",),
    Counter.REG_SERVICES: ("T1543.003",),
    Counter.FW_SHELL_PROFILE: ("T1546.004",),
    Counter.REG_WINLOGON: ("T1547.004",),
    Counter.REG_IFEO: ("T1546.012",),
    Counter.REG_COM_HIJACK: ("T1546.015",),
    Counter.REG_DEFENSE: ("T1562.001",),
    Counter.REG_LSA: ("T1556",),
    Counter.LSASS_READ: ("T1003.001",),
    Counter.LSASS_WRITE: ("T1003.001",),
    Counter.REMOTE_THREAD: ("T1055",),
    Counter.REMOTE_THREAD_SYSTEM: ("T1055",),
    Counter.RENAME_UNCOMMON_EXT: ("T1486",),
    Counter.FILE_DELETE_BACKUP: ("T1490",),
    Counter.NET_LATERAL_PORT: ("T1021",),
    Counter.FW_ARCHIVE: ("T1560",),
    Counter.LOAD_CREDENTIAL: ("T1003",),
}
"""ATT&CK techniques that a counter firing points at (for the alert's technique list)."""
