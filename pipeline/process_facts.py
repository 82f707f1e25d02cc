"""Facts of a process that do not depend on its window: where its image runs from, whether its name
masquerades, its privileges, its command line's shape.

They change only when the process's start, image or signature is seen, so `static_facts` computes
them once per process and keeps them on the node (`ProcessNode.static`); across processes they are
a pure function of six values and cached by those (services, renderers and updaters start the same
images with the same command lines over and over). `pipeline.features` copies them into its rows
(the C rows read the node's cache, or call `static_facts`) and re-exports both functions.
"""

from __future__ import annotations

import math
from collections import Counter as Tally
from functools import lru_cache

from pipeline import lexicon as lx
from pipeline.lexicon import ImageClass, Location
from pipeline.node import ProcessNode

__all__ = ["command_line_stats", "static_facts"]

_MASQUERADE_CLASSES = frozenset(
    {
        ImageClass.SHELL,
        ImageClass.LOLBIN,
        ImageClass.ADMIN_TOOL,
        ImageClass.SERVICE_HOST,
        ImageClass.SYSTEM_CORE,
        ImageClass.USER_SHELL,
        ImageClass.WMI,
    }
)
_USER_WRITABLE = frozenset({Location.TEMP, Location.USER_PROFILE, Location.PROGRAM_DATA})
_DOUBLE_EXT = ("pdf", "doc", "docx", "xls", "xlsx", "txt", "jpg", "png", "zip", "rtf")


def static_facts(node: ProcessNode) -> tuple[float, ...]:
    """Facts that change only when the process's start, image or signature is seen; cached on the node.

    Layout: 10 image facts, priv_high, priv_system, 4 command-line stats, runs-from-user-writable.
    """
    if node.static is None:
        key = (node.image, node.image_cls, node.command_line, node.integrity_level, node.uid, node.signed)
        if len(node.image) + len(node.command_line) > _CACHED_CHARS:
            node.static = _static.__wrapped__(*key)
        else:
            node.static = _static(*key)
    return node.static


# Processes are started from the same images with the same command lines over and over (services,
# browser renderers, updaters), and the facts are a pure function of these six values: cached, but
# only for strings of a usual size, so a hostile device cannot pin megabytes in the cache.
_CACHED_CHARS = 4096


@lru_cache(maxsize=16384)
def _static(
    image: str, cls: ImageClass, command_line: str, integrity_level: str | None, uid: int | None,
    signed: bool | None,
) -> tuple[float, ...]:  # fmt: skip
    loc = lx.location(image) if image else Location.OTHER
    stem_ext = lx.basename(image).rsplit(".", 2)
    integrity = (integrity_level or "").lower()
    return (
        loc is Location.TEMP,
        loc is Location.USER_PROFILE,
        loc is Location.PROGRAM_DATA,
        loc is Location.SYSTEM,
        loc is Location.PROGRAM_FILES,
        _masquerade(image, cls, loc),
        len(stem_ext) == 3 and stem_ext[1] in _DOUBLE_EXT and stem_ext[2] in lx.EXECUTABLE_EXTENSIONS,
        "/." in image or "\\." in image,
        signed is False,
        not image,
        integrity == "high",
        integrity == "system" or uid == 0,
        *command_line_stats(lx.anonymise(command_line)),
        loc in _USER_WRITABLE,
    )


def _masquerade(image: str, cls: ImageClass, loc: Location) -> bool:
    if cls not in _MASQUERADE_CLASSES:
        return False
    if "\\" in image:
        return loc not in (Location.SYSTEM, Location.WINDOWS)
    return loc in _USER_WRITABLE


@lru_cache(maxsize=65536)
def command_line_stats(command_line: str) -> tuple[float, float, float, float]:
    """(log1p length, entropy bits/char, log1p longest token, metacharacter share); cached per string."""
    text = command_line[:8192]
    if not text:
        return (0.0, 0.0, 0.0, 0.0)
    n = len(text)
    entropy = -sum(k / n * math.log2(k / n) for k in Tally(text).values())
    longest = max((len(t) for t in text.split()), default=0)
    special = sum(text.count(ch) for ch in "^`$|&;<>%\"'") / n
    return (math.log1p(len(command_line)), entropy, math.log1p(longest), special)
