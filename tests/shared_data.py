"""Where the tests find ../shared/datasets (real recordings, not in the repository).

CI has `../shared` beside the checkout; `RINGFENCE_SHARED` names another location. A missing folder
fails the test that needs it (a skip would hide the gap).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_datasets(folder: str = "") -> Path:
    """`datasets/<folder>` of the shared data (the datasets folder itself for ""); fails when missing."""
    configured = os.environ.get("RINGFENCE_SHARED")
    root = Path(configured) if configured else Path(__file__).resolve().parents[1].parent / "shared"
    path = root / "datasets" / folder if folder else root / "datasets"
    if not path.is_dir():
        pytest.fail(f"{path.relative_to(root)} not found under {root} (set RINGFENCE_SHARED)", pytrace=False)
    return path
