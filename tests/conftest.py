"""Shared fixtures: the optional third-party data folder and seeded generators."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

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
