"""Inline attack trees for the worker tests (unit and integration), built with the real contracts.

The story, on Windows: explorer -> WINWORD opens a macro document -> powershell -enc (Execution)
drops and starts upd.exe -> upd.exe runs `vssadmin delete shadows` and renames documents to
`.locked` (Impact). Split in two phases: the first alone alerts Execution at WINWORD; the second
alerts Impact *rooted at WINWORD* only if the tree of the first phase is known; without it the
Impact alert is rooted at upd.exe. So "the trees survived" is visible in the alert itself.
"""

from __future__ import annotations

from pipeline.eventkit import EventKit
from schemas.events import BehaviorEvent

WINWORD = r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE"
POWERSHELL = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
VSSADMIN = r"C:\Windows\System32\vssadmin.exe"
DROPPED = r"C:\Users\alice\AppData\Local\Temp\upd.exe"
DOCS = r"C:\Users\alice\Documents"
ENCODED = "SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkA"


Phases = tuple[list[BehaviorEvent], list[BehaviorEvent]]


def ransomware(device_id: str, sha256: str, *, renames: int = 20) -> Phases:
    """(phase 1, phase 2) of the attack on one device; process keys are prefixed by the device id."""
    kit = EventKit(device_id)
    k = {name: f"{device_id}-{name}" for name in ("explorer", "word", "ps", "upd", "vss")}
    phase1 = [
        kit.start(k["explorer"], r"C:\Windows\explorer.exe", "explorer.exe"),
        kit.start(k["word"], WINWORD, "WINWORD.EXE /n invoice.docm", parent=k["explorer"]),
        kit.start(k["ps"], POWERSHELL, f"powershell.exe -nop -w hidden -enc {ENCODED}", parent=k["word"]),
        kit.write(k["ps"], DROPPED),
        kit.start(k["upd"], DROPPED, "upd.exe", parent=k["ps"], sha256=sha256),
    ]
    phase2 = [kit.start(k["vss"], VSSADMIN, "vssadmin.exe delete shadows /all /quiet", parent=k["upd"])]
    phase2 += [
        kit.rename(k["upd"], rf"{DOCS}\f{i}.docx", rf"{DOCS}\f{i}.docx.locked") for i in range(renames)
    ]
    return phase1, phase2


def benign(device_id: str, count: int) -> list[BehaviorEvent]:
    """An office worker's quiet activity: a browser writing cache files."""
    kit = EventKit(device_id)
    chrome = f"{device_id}-chrome"
    events = [kit.start(chrome, r"C:\Program Files\Google\Chrome\Application\chrome.exe", "chrome.exe")]
    cache = r"C:\Users\bob\AppData\Local\Google\Chrome\Cache"
    events += [kit.write(chrome, rf"{cache}\f{i}") for i in range(count)]
    return events
