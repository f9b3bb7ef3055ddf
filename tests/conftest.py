"""Shared fixtures: the optional third-party data folder and seeded generators."""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning (as the CLI sets): tests share 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

DATA = Path(os.environ.get("REGISTER_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (or ``$REGISTER_DATA``); skips the test when it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"third-party data folder {DATA} not found (set REGISTER_DATA to run this test)")
    return DATA
