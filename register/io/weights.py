"""Per-point masses from a named point attribute (serves ``--weights <name>``)."""

from __future__ import annotations

import numpy as np

from register.core.pointcloud import PointCloud
from register.io._common import fail


def read_weights(cloud: PointCloud, name: str) -> np.ndarray:
    """The point attribute ``name`` as per-point mass.

    Args:
        cloud: the cloud holding the attribute (its path names it in messages).
        name: attribute name, e.g. ``"radius"`` or ``"weights"``; an ``(N, 1)`` array is accepted.

    Returns:
        ``(N,)`` float64 weights (same units as the attribute), finite, >= 0, with a positive sum.

    Raises:
        InputError: missing attribute (the message lists the available ones), not one value per
            point, NaN/Inf or negative values, or all zero.
    """
    if name not in cloud.point_data:
        available = ", ".join(sorted(cloud.point_data)) or "none (the file has no per-point attributes)"
        raise fail(
            cloud.label,
            f"has no point attribute '{name}' to use as weights (available: {available})",
            "Pass one of the available attribute names, or drop the weights option",
        )
    arr = np.asarray(cloud.point_data[name])
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.dtype.kind not in "biuf":
        raise fail(
            cloud.label,
            f"point attribute '{name}' (shape {arr.shape}, dtype {arr.dtype}) is not one number per point",
            "Choose an attribute with a single numeric value per point",
        )
    weights = arr.astype(np.float64)
    _check_values(weights, cloud.label, name)
    return weights


def _check_values(weights: np.ndarray, label: str, name: str) -> None:
    """Refuse NaN/Inf, negative values and a non-positive (or infinite) total."""
    for bad, what in ((~np.isfinite(weights), "NaN or Inf"), (weights < 0, "negative")):
        if bad.any():
            rows = np.flatnonzero(bad)
            raise fail(
                label,
                f"{len(rows)} values of weights '{name}' are {what}; "
                f"the first is row {int(rows[0])} (0-based)",
                "Weights must be finite and >= 0; fix the attribute or choose another",
            )
    total = weights.sum()
    if not np.isfinite(total) or total <= 0:
        raise fail(
            label,
            f"the weights '{name}' sum to {total}",
            "Weights need a positive, finite sum; at least one point must have a weight > 0",
        )
