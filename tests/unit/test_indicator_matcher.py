"""The indicator masks as the stream computes them (`indicators._Matcher`) equal the reference, one
indicator at a time (`indicators._mask_of` through `Indicator.search`), bit for bit.

A process start with a command line no cache has seen (its own ids, temporary names, URLs) pays
`indicator_mask` and often `lone_mask`: the matcher runs every indicator's prefilter at once and
searches a long text's linear forms alternative by alternative (`_first_occurrences`). A bit it got
wrong would be a different feature value, so the model would score another row than it was trained
on. Checked on every distinct command line of the OTRF recordings, on the simulators' lines, on the
hand-written positives and hostile lines, and on generated multi-line texts built from the patterns'
own trigger words, where the first-occurrence rules and line boundaries decide.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from itertools import islice

import pytest
from shared_data import shared_datasets
from test_lone_view import HOSTILE_LINES, HOSTILE_WORDS, ORDINARY, POSITIVES

from bench.indicator_masks import command_lines
from pipeline import indicators
from pipeline.indicators import (
    _INDEXED,
    _LONE_INDEXED,
    GRAMS_CHARS,
    INDICATORS,
    LINEAR_FROM,
    LONE_INDICATORS,
    _alternatives,
    _branches,
    _first_occurrences,
    _lone_mask,
    _lone_text,
    _mask,
    _mask_of,
    _needle,
    linear_form,
)


def reference_masks(text: str) -> tuple[int, int]:
    return _mask_of(text, _INDEXED), _mask_of(_lone_text(text), _LONE_INDEXED)


def assert_same_masks(texts: list[str]) -> tuple[int, int]:
    """Both masks equal the reference for every text; how many texts have a bit set in each."""
    found = [0, 0]
    for text in texts:
        expected = reference_masks(text)
        assert (_mask(text), _lone_mask(text)) == expected, text[:200]
        found[0] += expected[0] != 0
        found[1] += expected[1] != 0
    return found[0], found[1]


def otrf_command_lines() -> list[str]:
    """Every distinct command line of OTRF's process starts (what `bench.indicator_masks` times)."""
    return command_lines(shared_datasets("otrf"))


def test_every_distinct_otrf_command_line_gets_the_reference_masks() -> None:
    lines = otrf_command_lines()
    with_mask, with_lone = assert_same_masks(lines)
    assert len(lines) > 500 and with_mask > 50 and with_lone > 20
    assert sum(len(line) >= LINEAR_FROM for line in lines) > 20  # long scripts: the linear search


def test_the_simulators_command_lines_get_the_reference_masks() -> None:
    from pipeline.training.simulate import SimConfig, lone_view_corpus, simulate_corpus

    config = SimConfig(seed=11, attacks_per_technique=2, benign_trees=200, lone_benign_trees=50,
                       lone_view_attacks_per_technique=2, lone_view_benign_trees=100)  # fmt: skip
    lines: set[str] = set()
    for tree in [*islice(simulate_corpus(config), 1500), *islice(lone_view_corpus(config), 500)]:
        for event in tree.events:
            line = getattr(event.payload, "command_line", None)
            if line:
                lines.add(line)
    with_mask, with_lone = assert_same_masks(sorted(lines))
    assert len(lines) > 300 and with_mask > 50 and with_lone > 20


def test_hand_written_positives_ordinary_and_hostile_lines_get_the_reference_masks() -> None:
    texts = [t for ts in POSITIVES.values() for t in ts] + ORDINARY + HOSTILE_LINES
    texts += [(word * (4096 // len(word) + 1))[:4096] for word in HOSTILE_WORDS]
    texts += ["", "\n", "a", "İSTANBUL net user x /add", "x" * (LINEAR_FROM - 1), "x" * LINEAR_FROM]
    assert_same_masks(texts)


def _words() -> list[str]:
    """What the patterns look for: every needle and whole token, and pieces of their regexes' literals."""
    words: set[str] = set()
    for ind in (*INDICATORS, *LONE_INDICATORS):
        words.update(ind.substrings)
        words.update(ind.tokens)
    return sorted(words)


def generated_texts(seed: int, count: int) -> Iterator[str]:
    """Multi-line texts mixing trigger words, separators and newlines (inside and between words),
    around and past `LINEAR_FROM`: where first occurrences, atomic parts and line ends decide."""
    rng = random.Random(seed)
    words = _words()
    glue = [" ", " ", " ", "\n", "\t", "", "=", ":", "/", "\\", "-", ",", "\"", "'", " x ", " 10.1.2.3 ",
            " http://e.example/a ", " c:\\users\\public\\a.exe "]  # fmt: skip
    for _ in range(count):
        target = rng.choice((60, 300, LINEAR_FROM + 10, 1500, 4000))
        parts: list[str] = []
        size = 0
        while size < target:
            piece = rng.choice(words) if rng.random() < 0.6 else rng.choice(glue)
            parts.append(piece)
            size += len(piece)
        yield "".join(parts)


@pytest.mark.parametrize("seed", range(4))
def test_generated_texts_get_the_reference_masks(seed: int) -> None:
    texts = list(generated_texts(seed, 150))
    with_mask, with_lone = assert_same_masks(texts)
    assert with_mask > 100 and with_lone > 20


def test_each_alternative_searched_by_parts_decides_as_the_linear_form() -> None:
    """The alternative-by-alternative search against the linear form's own `search`, indicator by
    indicator (no prefilter), on long generated texts and texts shaped to split parts across lines."""
    texts = [t.lower() for t in generated_texts(99, 120) if len(t) >= LINEAR_FROM]
    texts += [
        "net use \\\\h\\c$\n/user:x p\nnet use \\\\h /user:a b",  # the second part on the next line only
        "net use\n/u:a b c",  # a part that starts at the newline's own position
        "a\n net\n use net\nuse /user:a b",  # a first part across a newline; the next line starts another
        "curl \n-t x",
        "x\ncurl -t a",
        "curl -x\n" * 200 + "curl -t z",
        "bitsadmin\n" * 300 + "/transfer",
    ]
    checked = 0
    for ind in (*INDICATORS, *LONE_INDICATORS):
        branches = _branches(ind.pattern.pattern)
        if branches is None:
            assert ind.pattern.pattern.startswith("^")
            continue
        for text in texts:
            expected = ind.linear.search(text) is not None
            by_parts = any(_first_occurrences(text, parts) for _, parts in branches)
            with_needles = any(n in text and _first_occurrences(text, parts) for n, parts in branches)
            assert by_parts == with_needles == expected, (ind.name, text[:120])
            checked += 1
    assert checked > 4000


def test_each_pattern_searched_by_alternatives_decides_as_the_pattern() -> None:
    """A short text's search alternative by alternative (those whose needle is there) against the
    whole pattern's `search`, indicator by indicator, on generated texts under `LINEAR_FROM`."""
    texts = [t.lower() for t in generated_texts(7, 300) if len(t) < LINEAR_FROM]
    texts += [t.lower() for ts in POSITIVES.values() for t in ts] + [t.lower() for t in ORDINARY]
    split = checked = 0
    for ind in (*INDICATORS, *LONE_INDICATORS):
        alternatives = _alternatives(ind.pattern.pattern)
        if alternatives is None:
            continue
        split += 1
        for text in texts:
            expected = ind.pattern.search(text) is not None
            assert any(a.search(text) is not None for _, a in alternatives) == expected, (ind.name, text)
            assert any(n in text and a.search(text) is not None for n, a in alternatives) == expected
            checked += 1
    assert split > 40 and checked > 10_000


@pytest.mark.parametrize(
    "regex",
    [r"abc", r"^(?=.*x)y|z", r"(a)(b)|(c)\1", r"(a)x|b\1", r"(?P<n>a)|(?P=n)b", r"(?i)a|b", r"a|(?s:b.)",
     r"a|(b"],
)  # fmt: skip
def test_a_pattern_whose_alternatives_would_not_mean_the_same_alone_is_searched_whole(regex: str) -> None:
    assert _alternatives(regex) is None


def test_a_part_that_refers_to_another_part_s_group_leaves_the_linear_form_to_decide() -> None:
    assert _branches(r"(a)b.*\1") is None
    assert _branches(r"^(?=.*x)y") is None
    split = _branches(r"ab\b.*(b.*cd|d)|e+f")
    assert split is not None
    expected = [[r"ab\b", "b", "cd"], [r"ab\b", "d"], ["e+f"]]
    assert [[p.pattern for p in parts] for _, parts in split] == expected
    assert [needle for needle, _ in split] == ["ab", "ab", "e"]


@pytest.mark.parametrize(
    ("regex", "needle"),
    [
        (r"\btar\s+-?\w*[cz]\w*\b", "tar"),
        (r"7z(a|\.exe)?\s+a\b", "7z"),
        (r"net1?(\.exe)?\s+use\b", "net"),
        (r"(?:\A|(?<=\s))(?>\S*?/u(ser)?:)\S++\s+(?!/)\S+", ""),  # inside groups only: none
        (r"abc+d", "abc"),  # a repeated character counts once and ends the run
        (r"ab?cd", "cd"),  # an optional one is not needed
        (r"x{0,3}yz", "yz"),
        (r"[ab]cd|x", ""),  # an alternation at the top: no one text is needed
        (r"(?i)abc", ""),  # a flag that lets letters match more than themselves
        (r"\bcompress-archive\b", "compress-archive"),
    ],
)
def test_the_needle_is_text_every_match_contains(regex: str, needle: str) -> None:
    assert _needle(regex) == needle


def test_many_lines_each_with_a_first_part_and_the_next_part_far_away_stay_linear() -> None:
    """Each line starts a first part whose next part only occurs at the very end: searching that part
    again from every line would scan the rest of the text once per line (quadratic)."""
    for line, tail in (("net use \\\\h\\c$ ", "/user:a b"), ("curl -x", "curl -t z"), ("rsync a", " b:c")):
        text = (line + "\n") * 20_000 + tail
        started = time.perf_counter()
        _mask(text + "a"), _lone_mask(text + "b")  # not cached
        assert time.perf_counter() - started < 2.0, line


def test_the_stream_s_masks_come_from_the_matcher(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "wevtutil cl security " + "y" * 5000  # longer than the caches take
    assert indicators.indicator_mask(text) == _mask_of(text, _INDEXED) != 0
    monkeypatch.setattr(indicators, "_MATCH", lambda text: 0)
    assert indicators.indicator_mask(text) == 0


def test_at_the_linear_boundary_the_lowered_text_s_length_decides_as_in_the_reference() -> None:
    """The plain pattern and the linear form can differ where white space spans a line break (a `\\r`,
    a `\\x0b`), so which one a text gets must be the reference's choice: by the lowered text's length,
    from 512 characters on (İ lowers to two characters)."""
    base = "attrib\rattrib\n\x0b+h"
    ind = next(i for i in INDICATORS if i.name == "hide_artifacts")
    assert (ind.pattern.search(base) is None) != (ind.linear.search(base) is None)  # they differ here
    for text in (base.ljust(LINEAR_FROM - 1), base.ljust(LINEAR_FROM), base.ljust(LINEAR_FROM + 1),
                 base + " " + "İ" * 245, base + " " + "İ" * 256):  # fmt: skip
        assert (_mask(text), _lone_mask(text)) == reference_masks(text), (len(text), len(text.lower()))


@pytest.mark.parametrize(
    ("regex", "text"),
    [
        (r"(?:b|a\s+\w+).*c", "a\nbcbbb"),  # line 1's chain ends past the only c; line 2's ends before it
        (r"(?:b|a\s+\w+).*c", "a\nbbbbb"),
        (r"x.*(?:y|z\s+\w+).*q", "x z\nyq\nx y q"),
        (r"a\b.*(b.*c|d)|e", "a\nb c\na b\nc"),
    ],
)
def test_a_part_spanning_lines_decides_as_the_linear_form(regex: str, text: str) -> None:
    branches = _branches(regex)
    assert branches is not None
    expected = re.compile(linear_form(regex)).search(text) is not None
    assert any(_first_occurrences(text, parts) for _, parts in branches) == expected


@pytest.mark.parametrize(
    ("regex", "text"),
    [(r"(a).*(b)\1", "aba"), (r"(a).*(b)(c)\2", "abcb")],
)
def test_parts_that_would_not_mean_the_same_alone_leave_the_linear_form_to_decide(
    regex: str, text: str
) -> None:
    """Each part here compiles alone, but a group number then names another group: split, the search
    would miss what the linear form finds. Inline flags are left whole too (a part could lose them)."""
    naive = [re.compile(part) for part in regex.split(".*")]
    assert re.compile(linear_form(regex)).search(text) and not _first_occurrences(text, tuple(naive))
    assert _branches(regex) is None
    assert _branches(r"(?s:a).*b") is None


def test_a_text_whose_first_part_ends_every_line_stays_linear() -> None:
    """Blank lines before a chain whose parts sit on the last two lines: each line is found by the first
    part's own search from where the last one ended, not by a scan from each line's start."""
    for text in ("\n" * 100_000 + "net use x\n/user:a b", "\n" * 100_000 + "curl -x\ncurl -t z"):
        started = time.perf_counter()
        _mask(text + "a"), _lone_mask(text + "b")  # not cached
        assert time.perf_counter() - started < 1.0


def test_a_long_varied_script_is_prefiltered_needle_by_needle_and_not_remembered() -> None:
    """Past `GRAMS_CHARS` every distinct triple of a high-entropy text would be a tuple held in memory
    (a MiB of CJK text: a million of them): such a text looks for each needle instead, remembers nothing,
    and gets the reference's masks."""
    rng = random.Random(5)
    cjk = "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(GRAMS_CHARS + 1))
    text = cjk + " wevtutil cl security"
    assert (_mask(text), _lone_mask(text)) == reference_masks(text) and _mask(text) != 0
    assert indicators._last_grams[0] != text.lower()
    short = text[-40:]
    _mask(short)
    assert indicators._last_grams[0] == short.lower()


def test_long_texts_find_the_one_and_two_character_needles_too() -> None:
    """Past `GRAMS_CHARS` every needle is looked for as it is, the shortest ones included (`-w`, `nc`,
    `/s`, `\\`): each hand-written line after 4,096 characters of filler gets the reference's masks."""
    lines = [t for ts in POSITIVES.values() for t in ts] + ORDINARY
    found = 0
    for line in lines:
        text = "x " * (GRAMS_CHARS // 2 + 1) + line
        expected = reference_masks(text)
        assert (_mask(text), _lone_mask(text)) == expected, line
        found += expected != (0, 0)
    assert found > len(lines) // 2
