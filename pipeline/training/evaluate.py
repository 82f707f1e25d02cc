"""Measure the model the way it will be judged: per tree, and per recording through `hunt`.

Tree level (dev split rows, the model's own thresholds): a tree is *attack* of tactic T when any
of its rows is labelled T, otherwise benign. It is *alerted* when any row alerts; its predicted
class is the class of its highest-scoring alerting row (a tactic or Generic). From these come
per-tactic precision / recall / F1, alerts per 1,000 benign trees and a confusion matrix.

Recording level (held-out lab recordings and `.evtx` samples, through `pipeline.hunt`, i.e. the
detector itself): the share of attack recordings with process creation that raise at least one
alert, the share where an alert names the recording's tactic (any alert, and the top-scoring one),
and false alerts per 1,000 benign trees: benign trees (the trees `hunt` counts: a process below an
unknown parent or an anchor, with all its descendants) that raised at least one alert, over the
recording's benign trees. Trees are counted, not alerts, as at tree level: one benign tree can raise
several alerts (two children flagged in turn), and counting those against a tree denominator
inflated the rate (an earlier card's 33.20 per 1,000 counted 8 alerts of 4 trees).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from pipeline.scoring import BENIGN, CLASSES, BatchScores, classify

GENERIC = "Generic"
PREDICTED = (*CLASSES, GENERIC)


@dataclass(slots=True)
class ClassMetrics:
    """Precision, recall and F1 of one class at tree level."""

    support: int
    precision: float
    recall: float
    f1: float
    detected: float  # share of this class's trees that raised any alert (tactic right or not)


@dataclass(slots=True)
class TreeReport:
    """Tree-level results on one set of rows."""

    trees: int
    benign_trees: int
    false_alert_trees: int
    per_class: dict[str, ClassMetrics]
    confusion: dict[str, Counter[str]]  # true class -> predicted class -> trees

    @property
    def alerts_per_1000_benign(self) -> float:
        """False alerts per 1,000 benign trees."""
        return 1000.0 * self.false_alert_trees / self.benign_trees if self.benign_trees else 0.0


@dataclass(slots=True)
class RecordingOutcome:
    """One recording hunted: its label and what the detector raised."""

    name: str
    tactic: str  # the recording's label; BENIGN for a benign recording
    has_process_creation: bool
    alerts: list[tuple[str, float, bool]] = field(default_factory=list)  # (tactic, score, hits attack tree)
    benign_trees: int = 0
    false_alert_trees: int = 0  # benign trees with at least one alert

    @property
    def detected(self) -> bool:
        """At least one alert (as a judge running hunt would count it)."""
        return bool(self.alerts)

    @property
    def right_tactic_any(self) -> bool:
        """Some alert names the recording's tactic."""
        return any(t == self.tactic for t, _, _ in self.alerts)

    @property
    def right_tactic_top(self) -> bool:
        """The highest-scoring alert names the recording's tactic."""
        return bool(self.alerts) and max(self.alerts, key=lambda a: a[1])[0] == self.tactic

    @property
    def false_alerts(self) -> int:
        """Alerts on no labelled attack process (several may share one benign tree)."""
        return sum(1 for _, _, hit in self.alerts if not hit)


@dataclass(slots=True)
class RecordingReport:
    """Recording-level metrics."""

    outcomes: list[RecordingOutcome]

    def _attacks(self) -> list[RecordingOutcome]:
        return [o for o in self.outcomes if o.tactic != BENIGN and o.has_process_creation]

    @property
    def attack_recordings(self) -> int:
        """Attack recordings that contain process creation."""
        return len(self._attacks())

    def rate(self, attr: str) -> float:
        """Share of attack recordings (with process creation) for which `attr` holds."""
        attacks = self._attacks()
        return sum(bool(getattr(o, attr)) for o in attacks) / len(attacks) if attacks else 0.0

    @property
    def benign_trees(self) -> int:
        """Benign trees over all recordings."""
        return sum(o.benign_trees for o in self.outcomes)

    @property
    def false_alert_trees(self) -> int:
        """Benign trees that raised at least one alert, over all recordings."""
        return sum(o.false_alert_trees for o in self.outcomes)

    @property
    def false_alerts_per_1000(self) -> float:
        """Benign trees with an alert per 1,000 benign trees over all recordings."""
        trees = self.benign_trees
        return 1000.0 * self.false_alert_trees / trees if trees else 0.0


def tree_report(
    probabilities: NDArray[np.float32],
    labels: NDArray[np.str_],
    trees: NDArray[np.str_],
    thresholds: Mapping[str, float],
) -> TreeReport:
    """Tree-level metrics of rows scored with `probabilities` (see module docstring)."""
    return tree_report_of(classify(probabilities, thresholds), labels, trees)


def tree_report_of(batch: BatchScores, labels: NDArray[np.str_], trees: NDArray[np.str_]) -> TreeReport:
    """Tree-level metrics of rows already classified (a two-view model's rows each by its view's
    thresholds: `pipeline.scoring.model_classify`)."""
    truth: dict[str, str] = {}
    best: dict[str, tuple[float, str]] = {}
    for i, (label, tree) in enumerate(zip(labels.tolist(), trees.tolist(), strict=True)):
        if label != BENIGN or tree not in truth:
            truth[tree] = label if label != BENIGN else truth.get(tree, BENIGN)
        if batch.flagged[i]:
            predicted = batch.row(i).tactic
            if tree not in best or batch.malicious[i] > best[tree][0]:
                best[tree] = (float(batch.malicious[i]), predicted)
    confusion: dict[str, Counter[str]] = {name: Counter() for name in CLASSES}
    for tree, label in truth.items():
        confusion[label][best[tree][1] if tree in best else BENIGN] += 1
    benign = sum(confusion[BENIGN].values())
    false_alerts = benign - confusion[BENIGN][BENIGN]
    return TreeReport(len(truth), benign, false_alerts, _per_class(confusion), confusion)


def _per_class(confusion: Mapping[str, Counter[str]]) -> dict[str, ClassMetrics]:
    out = {}
    for name in CLASSES[1:]:
        support = sum(confusion[name].values())
        tp = confusion[name][name]
        predicted = sum(row[name] for row in confusion.values())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        detected = (support - confusion[name][BENIGN]) / support if support else 0.0
        out[name] = ClassMetrics(support, precision, recall, f1, detected)
    return out


def render_tree_report(report: TreeReport, title: str) -> str:
    """A Markdown table of per-tactic metrics plus the headline numbers."""
    lines = [
        f"### {title}",
        "",
        f"{report.trees} trees, {report.benign_trees} benign; false alerts: {report.false_alert_trees} "
        f"(**{report.alerts_per_1000_benign:.2f} per 1,000 benign trees**)",
        "",
        "| tactic | trees | precision | recall | F1 | detected (any alert) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in report.per_class.items():
        if m.support or m.precision:
            lines.append(
                f"| {name} | {m.support} | {m.precision:.2f} | {m.recall:.2f} | {m.f1:.2f} "
                f"| {m.detected:.2f} |"
            )
    return "\n".join(lines) + "\n"


def render_confusion(report: TreeReport) -> str:
    """The confusion matrix as a Markdown table (rows: truth, columns: prediction)."""
    cols = [c for c in PREDICTED if any(report.confusion[r][c] for r in CLASSES)]
    lines = [
        "| truth \\ predicted | " + " | ".join(_short(c) for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for row in CLASSES:
        if sum(report.confusion[row].values()):
            lines.append(f"| {row} | " + " | ".join(str(report.confusion[row][c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _short(name: str) -> str:
    return {
        "CommandAndControl": "C2",
        "PrivilegeEscalation": "PrivEsc",
        "CredentialAccess": "CredAccess",
        "DefenseEvasion": "DefEvasion",
        "LateralMovement": "LatMove",
        "InitialAccess": "InitAccess",
    }.get(name, name)


def render_recordings(report: RecordingReport, title: str) -> str:
    """Headline recording-level numbers and one line per recording."""
    lines = [
        f"### {title}",
        "",
        f"- attack recordings with process creation: {report.attack_recordings}",
        f"- with at least one alert: **{report.rate('detected'):.0%}**",
        f"- an alert names the right tactic: **{report.rate('right_tactic_any'):.0%}** "
        f"(top-scoring alert: {report.rate('right_tactic_top'):.0%})",
        f"- false alerts per 1,000 benign trees: **{report.false_alerts_per_1000:.2f}** "
        f"({report.false_alert_trees} of {report.benign_trees} benign trees alerted, "
        f"{sum(o.false_alerts for o in report.outcomes)} alerts off the attack trees)",
        "",
        "| recording | label | alerts (tactic:score, * = on the attack tree) |",
        "|---|---|---|",
    ]
    for o in report.outcomes:
        alerts = ", ".join(
            f"{t}:{s:.2f}{'*' if hit else ''}" for t, s, hit in sorted(o.alerts, key=lambda a: -a[1])[:6]
        )
        flag = "" if o.has_process_creation else " (no process creation)"
        lines.append(f"| {o.name} | {o.tactic}{flag} | {alerts or '—'} |")
    return "\n".join(lines) + "\n"


def save_confusion_png(report: TreeReport, path: str, title: str) -> bool:
    """Draw the confusion matrix (row-normalised colours, counts as text); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in CLASSES if sum(report.confusion[r].values())]
    cols = list(PREDICTED)
    counts = np.array([[report.confusion[r][c] for c in cols] for r in rows], dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(11, 7))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), [_short(c) for c in cols], rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [_short(r) for r in rows])
    for i, j in np.ndindex(counts.shape):
        if counts[i, j]:
            ax.text(
                j,
                i,
                str(int(counts[i, j])),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.6 else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return True


def summarise(outcomes: Sequence[RecordingOutcome]) -> RecordingReport:
    """Wrap outcomes in a report."""
    return RecordingReport(list(outcomes))
