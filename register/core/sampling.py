"""Seeded subsampling of point clouds (the matching stages cap their problem size)."""

from __future__ import annotations

import numpy as np


def subsample_indices(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``min(n, k)`` points drawn without replacement (all points if ``n <= k``)."""
    if n <= k:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k, replace=False))
