"""Deterministic train / calibration / dev split by recording *and* host, never by event.

Lab recordings share hosts (one lab's WORKSTATION5 appears in ninety of them), so splitting by
recording alone would test on machines the model trained on. Recordings are therefore grouped
into *labs*: connected components of the recording-host graph (two recordings are in one lab when
they share a host name). The largest lab carries most of the class variety and trains; every other
lab is held out as dev, so dev numbers describe hosts, users and background software the model has
never seen — the closest available stand-in for "a lab you do not have".

Simulated trees and captured benign sessions have their own device per source and are split by a
hash of their source id: 70 % train, 15 % calibration (early stopping and thresholds), 15 % dev.

A fourth split, `THRESHOLDS`, holds only benign simulated trees drawn beyond that corpus
(`pipeline.training.simulate.threshold_corpus`): they calibrate thresholds with the calibration split
and do nothing else (no training, no early stopping, no measurement).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

TRAIN, CALIB, DEV = "train", "calib", "dev"
THRESHOLDS = "thresholds"


def host_key(device_id: str) -> str:
    """One spelling per machine: `WORKSTATION5.theshire.local` and `workstation5` are the same host."""
    return device_id.split(".", 1)[0].lower()


def lab_of(hosts_by_recording: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """Recording -> lab id (the lexicographically first host of its component)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for recording, hosts in hosts_by_recording.items():
        anchor = find(f"rec:{recording}")
        for host in hosts:
            parent[find(f"host:{host_key(host)}")] = anchor
    members: dict[str, list[str]] = {}
    for recording, hosts in hosts_by_recording.items():
        members.setdefault(find(f"rec:{recording}"), []).extend(host_key(h) for h in hosts)
    names = {root: min(hosts, default=f"nohost:{root}") for root, hosts in members.items()}
    return {recording: names[find(f"rec:{recording}")] for recording in hosts_by_recording}


def recording_splits(hosts_by_recording: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """Recording -> DEV for every lab but the largest; the largest lab's recordings (ties: lowest lab id)
    are TRAIN, except a fifth of them (by a hash of the recording) kept back for CALIB, so thresholds also
    see real background. CALIB shares hosts with TRAIN, never with DEV."""
    hosts = {rec: list(h) for rec, h in hosts_by_recording.items()}
    labs = lab_of(hosts)
    sizes: dict[str, int] = {}
    for lab in labs.values():
        sizes[lab] = sizes.get(lab, 0) + 1
    if not sizes:
        return {}
    biggest = min(sizes, key=lambda lab: (-sizes[lab], lab))
    return {rec: (_train_or_calib(rec) if lab == biggest else DEV) for rec, lab in labs.items()}


def _train_or_calib(recording: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(recording.encode()).digest()[:4], "big") % 100
    return CALIB if bucket < 20 else TRAIN


def hashed_split(source_id: str) -> str:
    """TRAIN / CALIB / DEV for a simulated tree or captured session, stable across runs."""
    bucket = int.from_bytes(hashlib.sha256(source_id.encode()).digest()[:4], "big") % 100
    return TRAIN if bucket < 70 else CALIB if bucket < 85 else DEV
