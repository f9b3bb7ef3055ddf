"""Registration quality measures (numpy). Every value: lower is better unless said otherwise.

Units are the data's own (mm for CT, m for LiDAR) unless a name says ``relative`` or ``fraction``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

# Scene-flow thresholds, exactly as in the literature (FlowNet3D / HPLFlowNet / PointPWC):
# a point is "accurate" when its error is below the absolute OR the relative threshold.
ACC3DS = (0.05, 0.05)  # strict: < 5 cm or < 5 %
ACC3DR = (0.1, 0.1)  # relaxed: < 10 cm or < 10 %
OUTLIER3D = (0.3, 0.1)  # outlier: > 30 cm or > 10 %
# Added to |flow| before dividing, as the reference implementations do (avoids 0 / 0).
REL_EPS = 1e-4


def nearest_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(N,)`` distance from each ``x_i`` (N, D) to its nearest point of ``y`` (M, D)."""
    return cKDTree(y).query(x, k=1, workers=-1)[0]


def chamfer(x: np.ndarray, y: np.ndarray) -> float:
    """Symmetric chamfer distance ``(mean_i d(x_i, y) + mean_j d(y_j, x)) / 2``, data units."""
    return float((nearest_distances(x, y).mean() + nearest_distances(y, x).mean()) / 2)


def error_summary(errors: np.ndarray) -> dict[str, float]:
    """mean, median, p75, p95 and max of a ``(L,)`` error vector (data units)."""
    return {
        "mean": float(errors.mean()),
        "median": float(np.median(errors)),
        "p75": float(np.percentile(errors, 75)),
        "p95": float(np.percentile(errors, 95)),
        "max": float(errors.max()),
    }


def tre(warped: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Target registration error of corresponding landmarks, data units (e.g. mm).

    Args:
        warped: ``(L, D)`` transformed source landmarks; reference: ``(L, D)`` target landmarks.

    Returns:
        :func:`error_summary` of ``|warped_i - reference_i|``.
    """
    return error_summary(np.linalg.norm(warped - reference, axis=1))


def scene_flow(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Scene-flow metrics of an ``(N, 3)`` flow estimate against the ``(N, 3)`` ground truth (m).

    Returns:
        ``epe3d`` (mean end-point error, m, lower is better), ``acc3ds`` and ``acc3dr``
        (fractions of accurate points, higher is better), ``outliers3d`` (fraction, lower is
        better). Relative error = ``|error| / (|truth| + 1e-4)``; thresholds are strict
        inequalities as in the reference implementations.
    """
    err = np.linalg.norm(estimate - truth, axis=1)
    rel = err / (np.linalg.norm(truth, axis=1) + REL_EPS)
    return {
        "epe3d": float(err.mean()),
        "acc3ds": float(((err < ACC3DS[0]) | (rel < ACC3DS[1])).mean()),
        "acc3dr": float(((err < ACC3DR[0]) | (rel < ACC3DR[1])).mean()),
        "outliers3d": float(((err > OUTLIER3D[0]) | (rel > OUTLIER3D[1])).mean()),
    }


def relative_correspondence_error(warped: np.ndarray, reference: np.ndarray) -> float:
    """Mean ``|warped_i - reference_i|`` over the bounding-box diagonal of ``reference`` (fraction)."""
    diagonal = float(np.linalg.norm(reference.max(0) - reference.min(0)))
    return float(np.linalg.norm(warped - reference, axis=1).mean() / diagonal)


def jacobian_determinants(transform, points: np.ndarray) -> np.ndarray:
    """``(N,)`` determinant of the Jacobian of ``transform`` at ``points (N, D)``
    (:meth:`register.core.transforms.Transform.jacobian`: exact, chain rule through a composite)."""
    return np.linalg.det(transform.jacobian(np.asarray(points, dtype=np.float64)))


def folding_fraction(transform, points: np.ndarray) -> float:
    """Fraction of ``points (N, D)`` where the Jacobian determinant of ``transform`` is <= 0.

    0 means the map does not fold anywhere it was probed.
    """
    return float((jacobian_determinants(transform, points) <= 0).mean())
