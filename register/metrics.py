"""Registration quality measures (numpy). Every value: lower is better unless said otherwise."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def nearest_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(N,)`` distance from each ``x_i`` to its nearest point of ``y`` (data units)."""
    return cKDTree(y).query(x, k=1, workers=-1)[0]


def chamfer(x: np.ndarray, y: np.ndarray) -> float:
    """Symmetric chamfer distance ``(mean_i d(x_i, y) + mean_j d(y_j, x)) / 2``, data units."""
    return float((nearest_distances(x, y).mean() + nearest_distances(y, x).mean()) / 2)


def tre(warped: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Target registration error of corresponding landmarks, data units (e.g. mm).

    Args:
        warped: ``(L, D)`` transformed source landmarks; reference: ``(L, D)`` target landmarks.

    Returns:
        mean, median, p75, p95 and max of ``|warped_i - reference_i|``.
    """
    err = np.linalg.norm(warped - reference, axis=1)
    return {
        "mean": float(err.mean()),
        "median": float(np.median(err)),
        "p75": float(np.percentile(err, 75)),
        "p95": float(np.percentile(err, 95)),
        "max": float(err.max()),
    }
