"""Simulated training trees: documented attack behaviour for every tactic on Windows and Linux,
and realistic benign workloads, with randomised entry chains, noise and sensor views.

Why simulate: the recorded lab data has no CommandAndControl, Exfiltration or Impact examples,
one or two of InitialAccess and Collection, and no Linux at all. The generators in
`pipeline.training.sim` re-create what ATT&CK, Atomic Red Team and LOLBAS document for each
technique id; this module drives them reproducibly (a tree's randomness depends only on the seed,
the generator's name and the tree's index) and varies what a sensor would have seen:

- *entry*: interactive shell, cut tree (unknown parent), C2 implant, remote execution, SSH, web shell;
- *preamble*: a quick `whoami`/`hostname` before the main step (as operators do);
- *noise*: unrelated benign activity on the same device, interleaved in time;
- *view*: full Sysmon-like telemetry, process creation only (Security 4688 / audit-only
  collection), or a light Sysmon config without image loads and process access.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from pipeline.lexicon import ImageClass, image_class
from pipeline.scoring import BENIGN
from pipeline.training.sim import (
    linux_attack1,
    linux_attack2,
    linux_benign,
    linux_impact,
    win_attack1,
    win_attack2,
    win_attack3,
    win_attack4,
    win_benign,
    win_benign_diag,
    win_benign_lone,
    win_benign_lone2,
    win_benign_lone3,
    win_lone,
    win_lone2,
    win_lone3,
)
from pipeline.training.sim.builder import SimTree, TreeBuilder
from pipeline.training.sim.catalog import Technique, Workload
from pipeline.training.sim.session import LINUX_ENTRIES, WIN_ENTRIES, Session
from pipeline.training.sim.session import linux_benign as linux_benign_entry
from pipeline.training.sim.session import win_benign as win_benign_entry
from pipeline.training.sim.vocab import Rand, sys32
from schemas.events import BehaviorEvent, Platform, ProcessStart

_PROCESS_KINDS = frozenset({"process_start", "process_end"})
_LIGHT_DROP = frozenset({"image_load", "process_access"})
EXTRA_WORKLOAD_MODULES = (win_benign_diag,)
"""Modules that register more workloads into `win_benign.WORKLOADS` when imported."""


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How much to simulate; defaults give ~10k attack trees and ~12k benign trees."""

    seed: int = 7
    attacks_per_technique: int = 60
    benign_trees: int = 12_000
    noise_max: int = 2
    process_only_share: float = 0.3
    light_share: float = 0.2
    preamble_share: float = 0.3
    fragment_share: float = 0.2
    linux_benign_share: float = 0.4
    lone_benign_trees: int = 1_500
    """Small benign Windows trees (`win_benign_lone`): everyday uses of the lone-command attacks' tools."""
    lone_view_attacks_per_technique: int = 100
    """Trees per `win_lone2`/`win_lone3` technique (times its weight): lone commands for the
    process-creation view."""
    lone_view_benign_trees: int = 20_000
    """Small benign Windows trees of `win_benign_lone2` and `win_benign_lone3`: the same tools' everyday
    uses."""
    threshold_multiple: int = 3
    """Benign trees for threshold calibration only (`threshold_corpus`), as a multiple of every benign
    workload's count above; 0 draws none."""


def techniques() -> tuple[Technique, ...]:
    """Every registered attack generator, Windows then Linux."""
    modules = (win_attack1, win_attack2, win_attack3, win_attack4, linux_attack1, linux_attack2, linux_impact,
               win_lone)
    return tuple(t for m in modules for t in m.REG.items)


def benign_workloads(platform: Platform) -> tuple[tuple[str, float, Workload], ...]:
    """(name, weight, generator) of the benign workloads of one platform."""
    return tuple((win_benign if platform is Platform.WINDOWS else linux_benign).WORKLOADS)


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))  # noqa: S311 - reproducible simulation


def _builder(rng: random.Random, platform: Platform, prefix: str) -> TreeBuilder:
    start = datetime(2019, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.uniform(0, 6 * 365 * 86400))
    device = f"{prefix}-{rng.getrandbits(40):010x}"
    return TreeBuilder(rng, platform, device, start)


def simulate_attack(tech: Technique, index: int, config: SimConfig) -> SimTree:
    """One attack tree of `tech` (deterministic in config.seed, technique and index)."""
    rng = _rng(config.seed, "attack", tech.platform, tech.attack_id, tech.generate.__name__, index)
    r = Rand(rng)
    b = _builder(rng, tech.platform, "sim")
    b.label = tech.tactic
    entries = WIN_ENTRIES if tech.platform is Platform.WINDOWS else LINUX_ENTRIES
    session = (tech.entry or r.pick(entries))(b, r)
    if tech.tactic != "Discovery" and tech.entry is None and r.chance(config.preamble_share):
        _preamble(session)
    b.label = tech.tactic
    tech.generate(session)
    tree = b.build(attack_tree_id(tech, index), tech.tactic, tech.attack_id)
    return _finish(tree, rng, config)


def _preamble(s: Session) -> None:
    """An operator's first look around, labelled Discovery on its own processes."""
    s.b.label = "Discovery"
    commands = ("whoami", "hostname") + (("ipconfig", "systeminfo") if s.windows else ("id", "uname -a"))
    for cmd in s.r.sample(commands, s.r.num(1, 2)):
        image = sys32(s.r, cmd.split()[0] + ".exe") if s.windows else f"/usr/bin/{cmd.split()[0]}"
        s.run(image, cmd)


def simulate_benign(platform: Platform, name: str, fn: Workload, index: int, config: SimConfig) -> SimTree:
    """One benign recording of workload `name` (deterministic in seed, name and index)."""
    rng = _rng(config.seed, "benign", platform, name, index)
    b = _builder(rng, platform, "sim")
    r = Rand(rng)
    session = (win_benign_entry if platform is Platform.WINDOWS else linux_benign_entry)(b, r)
    fn(session)
    tree = b.build(benign_tree_id(platform, name, index), BENIGN, name)
    return _finish(tree, rng, config)


def _finish(tree: SimTree, rng: random.Random, config: SimConfig) -> SimTree:
    """Interleave benign noise from the same device and apply a sensor view."""
    noise = [_noise(tree, rng, i, config) for i in range(rng.randint(0, config.noise_max))]
    events = _merge(tree.events, [n.events for n in noise])
    roll = rng.random()
    if roll < config.fragment_share:
        events = _fragment(tree, rng)
    elif roll < config.fragment_share + config.process_only_share:
        events = [e for e in events if e.payload.kind in _PROCESS_KINDS]
    elif roll < config.fragment_share + config.process_only_share + config.light_share:
        events = [e for e in events if e.payload.kind not in _LIGHT_DROP]
    events = [e.model_copy(update={"seq": i}) for i, e in enumerate(events)]
    return replace(tree, events=tuple(events))


def _fragment(tree: SimTree, rng: random.Random) -> list[BehaviorEvent]:
    """Audit-log fragments: only 1-3 process creations survive (Security 4688 of a few processes),
    parents often unknown and parent fields often empty, as in small single-technique recordings."""
    wanted = set(tree.node_labels) if tree.node_labels else {e.process_key for e in tree.events}
    starts = [e for e in tree.events if e.process_key in wanted and _telling(e)]
    if not starts:
        return list(tree.events)
    first = rng.randrange(len(starts))
    kept = starts[first : first + rng.randint(1, 3)]
    out = []
    for event in kept:
        payload = event.payload
        if rng.random() < 0.5:
            payload = payload.model_copy(
                update={
                    "parent_image": None,
                    "parent_command_line": None,
                    "integrity_level": None,
                    "sha256": None,
                }
            )
        parent = event.parent_process_key if rng.random() < 0.6 else None
        out.append(event.model_copy(update={"payload": payload, "parent_process_key": parent}))
    return out


def _telling(event: BehaviorEvent) -> bool:
    """A process start worth keeping alone: not conhost, not a bare shell without arguments."""
    payload = event.payload
    if not isinstance(payload, ProcessStart) or payload.image.lower().endswith("conhost.exe"):
        return False
    bare = len(payload.command_line.split()) <= 1
    return not (bare and image_class(payload.image) in (ImageClass.SHELL, ImageClass.SCRIPT_HOST))


def _noise(tree: SimTree, rng: random.Random, index: int, config: SimConfig) -> SimTree:
    workloads = benign_workloads(tree.platform)
    name, _, fn = workloads[rng.randrange(len(workloads))]
    nrng = _rng(config.seed, "noise", tree.tree_id, index)
    first = tree.events[0].ts if tree.events else datetime(2020, 1, 1, tzinfo=UTC)
    b = TreeBuilder(
        nrng,
        tree.platform,
        tree.events[0].device_id if tree.events else "sim-noise",
        first + timedelta(seconds=nrng.uniform(-60, 120)),
    )
    fn((win_benign_entry if tree.platform is Platform.WINDOWS else linux_benign_entry)(b, Rand(nrng)))
    return b.build(f"{tree.tree_id}:noise{index}", BENIGN, name)


def _merge(main: Sequence[BehaviorEvent], others: Sequence[Sequence[BehaviorEvent]]) -> list[BehaviorEvent]:
    """Merge event streams of one device by time (stable: ties keep stream order)."""
    streams = [list(main), *map(list, others)]
    return list(heapq.merge(*streams, key=lambda e: e.ts))


def attack_tree_id(tech: Technique, index: int) -> str:
    """Stable id of the index-th simulated tree of a technique (decides its split)."""
    return f"sim:{tech.platform}:{tech.attack_id}:{tech.generate.__name__}:{index}"


def benign_tree_id(platform: Platform, name: str, index: int) -> str:
    """Stable id of the index-th simulated tree of a benign workload."""
    return f"sim:{platform}:benign:{name}:{index}"


def simulate_corpus(
    config: SimConfig = SimConfig(), keep: Callable[[str], bool] | None = None
) -> Iterator[SimTree]:
    """Every simulated tree (those whose id `keep` accepts): attacks per technique, then benign workloads."""
    yield from _attack_corpus(techniques(), config.attacks_per_technique, config, keep)
    shares = ((Platform.LINUX, config.linux_benign_share), (Platform.WINDOWS, 1 - config.linux_benign_share))
    for platform, share in shares:
        trees = config.benign_trees * share
        yield from _workload_corpus(platform, benign_workloads(platform), trees, config, keep)
    # the small benign Windows trees, after every other simulated tree (so none of those changed)
    yield from _workload_corpus(
        Platform.WINDOWS, win_benign_lone.LONE_WORKLOADS, config.lone_benign_trees, config, keep
    )


def _attack_corpus(
    techs: Sequence[Technique], per_technique: int, config: SimConfig, keep: Callable[[str], bool] | None
) -> Iterator[SimTree]:
    """`per_technique` trees (times its weight) of each technique, in order."""
    for tech in techs:
        for index in range(per_technique * tech.weight):
            if keep is None or keep(attack_tree_id(tech, index)):
                yield simulate_attack(tech, index, config)


def _workload_corpus(
    platform: Platform,
    workloads: Sequence[tuple[str, float, Workload]],
    trees: float,
    config: SimConfig,
    keep: Callable[[str], bool] | None,
    first: int = 0,
) -> Iterator[SimTree]:
    """About `trees` benign trees of `platform`, shared among `workloads` by weight (rounded per workload),
    numbered from `first` within each workload."""
    total = sum(w for _, w, _ in workloads)
    for name, weight, fn in workloads:
        for index in range(first, first + round(trees * weight / total)):
            if keep is None or keep(benign_tree_id(platform, name, index)):
                yield simulate_benign(platform, name, fn, index, config)


def lone_view_techniques() -> tuple[Technique, ...]:
    """The lone-command generators that train only the process-creation view's booster (`win_lone2`,
    then `win_lone3`)."""
    return (*win_lone2.REG.items, *win_lone3.REG.items)


def lone_view_workloads() -> list[tuple[str, float, Workload]]:
    """The lone-command simulations' benign look-alikes (`win_benign_lone2`, then `win_benign_lone3`)."""
    return [*win_benign_lone2.LONE2_WORKLOADS, *win_benign_lone3.LONE3_WORKLOADS]


def lone_view_corpus(
    config: SimConfig = SimConfig(), keep: Callable[[str], bool] | None = None
) -> Iterator[SimTree]:
    """Lone commands (`win_lone2`, `win_lone3`) and their benign look-alikes (`win_benign_lone2`,
    `win_benign_lone3`): small trees for the lone booster, whose benign rows the full booster also learns
    from when the stream routes them to it (`pipeline.training.train.fit_views`). Drawn after every other
    simulated tree and from their own generators, so no other tree changed."""
    yield from _attack_corpus(lone_view_techniques(), config.lone_view_attacks_per_technique, config, keep)
    workloads, trees = lone_view_workloads(), config.lone_view_benign_trees
    yield from _workload_corpus(Platform.WINDOWS, workloads, trees, config, keep)


THRESHOLD_FIRST_INDEX = 100_000
"""Where the threshold-only trees' numbers start within each workload: above every split corpus's, so
their ids, and the draws seeded by them, are their own."""


def threshold_corpus(
    config: SimConfig = SimConfig(), look_alikes: bool = True
) -> Iterator[tuple[SimTree, bool]]:
    """Benign trees that only calibrate thresholds (`pipeline.training.split.THRESHOLDS`), with whether
    each is one of the lone-command look-alikes (`lone_view_corpus`'s workloads): `threshold_multiple`
    times the benign trees of `simulate_corpus` and `lone_view_corpus`, from the same workloads and
    weights, numbered from `THRESHOLD_FIRST_INDEX` (without the look-alikes when not `look_alikes`).
    Never trained on, never dev: they only let the thresholds see more of the benign tail than the
    calibration split's share of the corpus does."""
    multiple, first = config.threshold_multiple, THRESHOLD_FIRST_INDEX
    if multiple <= 0:
        return
    largest = max(config.benign_trees, config.lone_benign_trees, config.lone_view_benign_trees)
    if largest >= first:
        raise ValueError(
            f"{largest} benign trees of one kind: the threshold-only trees are numbered from {first} and "
            "would repeat the corpus's own (and so its train and dev trees)"
        )
    linux, windows = Platform.LINUX, Platform.WINDOWS
    kinds = [  # (platform, workloads, corpus trees, look-alikes?): simulate_corpus's, then lone_view_corpus's
        (linux, benign_workloads(linux), config.benign_trees * config.linux_benign_share, False),
        (windows, benign_workloads(windows), config.benign_trees * (1 - config.linux_benign_share), False),
        (windows, win_benign_lone.LONE_WORKLOADS, config.lone_benign_trees, False),
        (windows, lone_view_workloads(), config.lone_view_benign_trees, True),
    ]
    for platform, workloads, trees, look_alike in kinds:
        if look_alike and not look_alikes:
            continue
        for tree in _workload_corpus(platform, workloads, trees * multiple, config, None, first):
            yield tree, look_alike
