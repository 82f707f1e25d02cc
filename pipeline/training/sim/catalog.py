"""The catalogue of simulated techniques: ATT&CK id, tactic, platform and a generator.

Why a registry: evaluation and the model card count examples per tactic and technique, and a test
checks that every tactic has generators on both platforms; a list of small records makes that a
query instead of a convention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.training.sim.session import Entry, Session
from schemas.events import Platform

Generator = Callable[[Session], None]


@dataclass(frozen=True, slots=True)
class Technique:
    """One documented behaviour (ATT&CK technique id) and how to simulate it."""

    attack_id: str
    tactic: str
    platform: Platform
    generate: Generator
    entry: Entry | None = None
    """Overrides the random entry chain (initial access brings its own)."""
    weight: int = 1
    """Trees per `attacks_per_technique`: a behaviour with many variants (launcher kinds x tools x
    sensor views) needs more examples than a one-command technique to be learnt as a shape."""


class Registry:
    """Collects a module's techniques via a decorator."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.items: list[Technique] = []

    def add(self, attack_id: str, tactic: str, entry: Entry | None = None,
            weight: int = 1) -> Callable[[Generator], Generator]:
        """Register the decorated generator."""
        def decorate(fn: Generator) -> Generator:
            self.items.append(Technique(attack_id, tactic, self.platform, fn, entry, weight))
            return fn
        return decorate


Workload = Callable[[Session], None]


class Workloads(list[tuple[str, float, Workload]]):
    """(name, relative weight, generator) of benign tree generators, in registration order (the order
    the corpus draws them in); `add` is the decorator that registers one."""

    def add(self, name: str, weight: float = 1.0) -> Callable[[Workload], Workload]:
        """Register the decorated generator under `name` with `weight`."""
        def decorate(fn: Workload) -> Workload:
            self.append((name, weight, fn))
            return fn
        return decorate
