"""Seeded subsampling of point clouds (the matching stages cap their problem size)."""

from __future__ import annotations

import numpy as np


def subsample_indices(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``min(n, k)`` points drawn without replacement (all points if ``n <= k``)."""
    if n <= k:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k, replace=False))


def subsample(
    points: np.ndarray, masses: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At most ``k`` of ``points (N, D)`` with their ``masses (N,)`` scaled by ``N / k``.

    Each kept point stands for ``N / k`` points, so the total mass is preserved in
    expectation and clouds of different sizes keep comparable totals.

    Returns:
        ``(points (k, D), masses (k,), indices (k,))``.
    """
    idx = subsample_indices(len(points), k, rng)
    return points[idx], masses[idx] * (len(points) / len(idx)), idx


def nearest_spacings(points: np.ndarray) -> np.ndarray:
    """``(N,)`` distance from each of ``points (N, D)`` to its nearest other point, in the
    points' units (0 for duplicates; ``inf`` for a single point)."""
    from scipy.spatial import cKDTree

    return cKDTree(points).query(points, k=2, workers=-1)[0][:, 1]


def sampling_spacing(points: np.ndarray) -> float:
    """Median distance from a point of ``points (N, D)`` to its nearest other point, in the
    points' units (0 for fewer than two points): the cloud's sampling spacing, the scale below
    which two independently sampled clouds of one shape have no matching detail."""
    if len(points) < 2:
        return 0.0
    return float(np.median(nearest_spacings(points)))
