"""Randomised names, paths and addresses for simulated trees.

Why: a model trained on one lab learns that lab's user names, folders and tool names. Every
generator draws these from here so that the only stable signal across simulated trees is the
behaviour itself (which binary spawns which, what is written where, what is contacted).
"""

from __future__ import annotations

import base64
import random
import string
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

_FIRST = ("anna", "ben", "chen", "dana", "eli", "fatima", "gus", "hana", "ivan", "jo", "kim", "lea",
          "mo", "nia", "omar", "pia", "raj", "sam", "tara", "uwe", "vera", "wen", "xia", "yara", "zoe")
_LAST = ("smith", "garcia", "mueller", "rossi", "tanaka", "nowak", "dubois", "silva", "ivanova", "khan")
_WORDS = ("update", "report", "invoice", "setup", "helper", "sync", "data", "service", "agent", "task",
          "client", "backup", "config", "runtime", "svc", "host", "util", "tool", "driver", "cache",
          "loader", "manager", "office", "print", "scan", "core", "win", "sys", "net", "app", "launcher")
_TLDS = ("com", "net", "org", "io", "xyz", "top", "info", "biz", "cloud", "online", "site", "ru", "cn")
_LINUX_USERS = ("ubuntu", "admin", "deploy", "www-data", "ec2-user", "dev", "ci", "app", "svc", "git")


class Rand:
    """A seeded source of plausible, varied values (one per simulated tree)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, items: Sequence[T]) -> T:
        """One element."""
        return items[self.rng.randrange(len(items))]

    def sample(self, items: Sequence[T], k: int) -> list[T]:
        """k distinct elements (fewer if there are fewer)."""
        return self.rng.sample(list(items), min(k, len(items)))

    def chance(self, p: float) -> bool:
        """True with probability p."""
        return self.rng.random() < p

    def num(self, low: int, high: int) -> int:
        """Uniform integer in [low, high]."""
        return self.rng.randint(low, high)

    def token(self, low: int = 4, high: int = 10, alphabet: str = string.ascii_lowercase) -> str:
        """A random string."""
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(low, high)))

    def hexstr(self, n: int) -> str:
        """n random hex digits."""
        return f"{self.rng.getrandbits(4 * n):0{n}x}"

    def word(self) -> str:
        """A plausible program word."""
        return self.pick(_WORDS)

    def name(self, ext: str) -> str:
        """A file name: sometimes meaningful, sometimes random, sometimes a GUID-ish blob."""
        style = self.rng.randrange(4)
        if style == 0:
            stem = self.word() + self.pick(("", "_", "-")) + self.word()
        elif style == 1:
            stem = self.token(3, 9)
        elif style == 2:
            stem = self.hexstr(self.num(6, 16))
        else:
            stem = self.word() + str(self.num(1, 999))
        return f"{stem}.{ext}" if ext else stem

    def user(self) -> str:
        """A Windows account name."""
        first, last = self.pick(_FIRST), self.pick(_LAST)
        return self.pick((f"{first}.{last}", f"{first[0]}{last}", first, f"{first}{self.num(1, 99)}"))

    def domain_user(self, user: str) -> str:
        """DOMAIN\\user as Sysmon reports it."""
        return f"{self.token(4, 8).upper()}\\{user}"

    def linux_user(self) -> str:
        """A Linux account name."""
        return self.pick(_LINUX_USERS + tuple(self.pick(_FIRST) for _ in range(3)))

    def host(self) -> str:
        """A peer host name for lateral movement."""
        return self.pick(("WS", "PC", "SRV", "DC", "FS", "APP", "SQL", "LAP")) + f"{self.num(1, 9999):0>2}"

    def domain(self) -> str:
        """A registrable domain name."""
        return f"{self.token(4, 12)}.{self.pick(_TLDS)}"

    def ext_ip(self) -> str:
        """A public IPv4 address (avoids private, loopback and multicast ranges)."""
        while True:
            a = self.num(1, 223)
            if a not in (10, 127, 169, 172, 192, 100):
                return f"{a}.{self.num(0, 255)}.{self.num(0, 255)}.{self.num(1, 254)}"

    def int_ip(self) -> str:
        """A private IPv4 address."""
        return self.pick((f"10.{self.num(0, 255)}.{self.num(0, 255)}.{self.num(2, 254)}",
                          f"192.168.{self.num(0, 255)}.{self.num(2, 254)}",
                          f"172.{self.num(16, 31)}.{self.num(0, 255)}.{self.num(2, 254)}"))

    def b64(self, low: int = 40, high: int = 600) -> str:
        """Base64 text of random bytes (looks like an encoded command)."""
        raw = bytes(self.rng.getrandbits(8) for _ in range(self.num(low, high)))
        return base64.b64encode(raw).decode()

    def ps_enc(self, script: str) -> str:
        """PowerShell's -EncodedCommand form (UTF-16LE, base64) of a script."""
        return base64.b64encode(script.encode("utf-16-le")).decode()

    def case(self, text: str) -> str:
        """Vary the case of a Windows path the way different tools log it."""
        style = self.rng.randrange(4)
        if style == 0:
            return text.lower()
        if style == 1 and text.upper().startswith("C:\\WINDOWS"):
            return "C:\\windows" + text[10:]
        return text

    def guid(self) -> str:
        """A braced GUID."""
        h = self.hexstr(32).upper()
        return f"{{{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}}}"


def win_dirs(r: Rand, user: str) -> tuple[str, ...]:
    """Writable folders attackers and installers both use on Windows."""
    home = f"C:\\Users\\{user}"
    return (f"{home}\\AppData\\Local\\Temp", f"{home}\\AppData\\Roaming", f"{home}\\Downloads",
            f"{home}\\AppData\\Local", "C:\\ProgramData", "C:\\Users\\Public", "C:\\Windows\\Temp",
            f"{home}\\Desktop", f"{home}\\AppData\\Local\\Temp\\{r.token(2, 6)}", "C:\\PerfLogs",
            f"{home}\\Documents", f"C:\\ProgramData\\{r.word().capitalize()}")


def linux_dirs(r: Rand, user: str) -> tuple[str, ...]:
    """Writable folders on Linux (world-writable and home)."""
    home = "/root" if user == "root" else f"/home/{user}"
    return ("/tmp", "/var/tmp", "/dev/shm", f"{home}", f"{home}/.cache", f"/tmp/.{r.token(2, 6)}",
            f"{home}/.local/bin", "/run/user/1000", f"/tmp/{r.token(3, 8)}")


def sys32(r: Rand, exe: str) -> str:
    """Full path of a System32 binary, case varied."""
    return r.case(f"C:\\Windows\\System32\\{exe}")


def powershell(r: Rand) -> str:
    """Windows PowerShell's path (sometimes the 32-bit one)."""
    arch = "SysWOW64" if r.chance(0.1) else "System32"
    return r.case(f"C:\\Windows\\{arch}\\WindowsPowerShell\\v1.0\\powershell.exe")
