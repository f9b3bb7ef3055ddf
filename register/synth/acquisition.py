"""Acquisition effects: how one cloud of a training pair is observed from its shape.

Each cloud of a pair is observed independently (:func:`observe`): candidates are drawn from
the shape, an optional crop removes the part beyond a random plane, a smooth random density
modulation picks the ``n`` kept points; after the deformation (done by the caller) the clouds
get Gaussian noise (:func:`add_noise`) and a fraction of uniform outliers
(:func:`add_outliers`). Lengths are in the shape's units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from register.synth.deform import gaussian_weights
from register.synth.shapes import Sampling


@dataclass(frozen=True)
class Acquisition:
    """Ranges of the acquisition effects; each cloud draws its own values.

    Lengths are in the recipe's length unit (see :class:`register.synth.pairs.Recipe`).

    Attributes:
        noise: largest standard deviation of the Gaussian position noise.
        outliers: largest fraction of points replaced by uniform outliers in the bounding box.
        crop_probability: chance that a cloud is cropped.
        crop: largest fraction of the shape removed by a crop (beyond a random plane).
        density: largest amplitude of the log-density modulation (1 = densities vary by e^2
            between the densest and the sparsest regions).
        density_sigma: width of the density modulation.
    """

    noise: float = 0.0
    outliers: float = 0.0
    crop_probability: float = 0.0
    crop: float = 0.0
    density: float = 0.0
    density_sigma: float = 1.0


def _smooth_scalar(
    points: np.ndarray, sigma: float, rng: np.random.Generator, n_controls: int = 24
) -> np.ndarray:
    """A smooth random scalar field at ``points (m, 3)``: ``g(x) = sum_k w_k exp(-|x - c_k|^2 / (2 sigma^2))``,
    ``w_k ~ N(0, 1)``, ``c_k`` uniform in the bounding box, scaled to unit standard deviation."""
    lo, hi = points.min(0), points.max(0)
    centres = rng.uniform(lo, hi, (n_controls, 3))
    weights = rng.normal(size=n_controls)
    g = gaussian_weights(points, centres, sigma) @ weights
    std = g.std()
    return g / std if std > 0 else g


def observe(shape, n: int, acq: Acquisition, rng: np.random.Generator) -> Sampling:
    """``n`` points of one observation of ``shape`` (before deformation, noise and outliers).

    Candidates (``3 n / (1 - crop)`` of them: density ratios up to ~3 above and without limit below
    the mean) are drawn from the shape; with probability
    ``crop_probability`` those beyond a plane of random direction cutting off a fraction
    ``U(0, crop)`` are removed; then ``n`` are kept, without replacement, with probabilities
    proportional to ``exp(a g(x))`` (``g`` from :func:`_smooth_scalar`, ``a ~ U(0, density)``)
    by the Gumbel top-k trick: keep the ``n`` largest ``a g(x) - log(-log U)``, ``U ~ U(0, 1)``.
    """
    m = int(np.ceil(3 * n / (1.0 - acq.crop)))
    cand = shape.sample(m, rng)
    keep = np.ones(m, dtype=bool)
    if rng.uniform() < acq.crop_probability:
        u = rng.normal(size=3)
        t = cand.points @ (u / np.linalg.norm(u))
        keep = t <= np.quantile(t, 1.0 - rng.uniform(0.0, acq.crop))
    cand = cand.take(np.flatnonzero(keep))
    log_density = np.zeros(len(cand.points))
    if acq.density > 0:
        log_density = rng.uniform(0.0, acq.density) * _smooth_scalar(cand.points, acq.density_sigma, rng)
    keys = log_density - np.log(-np.log(rng.uniform(1e-12, 1.0, len(log_density))))
    chosen = np.argpartition(-keys, n - 1)[:n]
    return cand.take(np.sort(chosen))


def add_noise(points: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """``points (n, 3)`` plus isotropic Gaussian noise of standard deviation ``U(0, noise)``."""
    return points + rng.normal(0.0, rng.uniform(0.0, acq.noise) if acq.noise > 0 else 0.0, points.shape)


def add_outliers(
    points: np.ndarray, feature: np.ndarray | None, acq: Acquisition, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Replace a fraction ``U(0, outliers)`` of the points by uniform points in their bounding box.

    Returns:
        ``points (n, 3)``, ``feature (n,)`` (outliers take features of random other points) or
        ``None``, and ``inlier (n,)`` bool (False where a point was replaced).
    """
    n = len(points)
    inlier = np.ones(n, dtype=bool)
    if acq.outliers <= 0:
        return points, feature, inlier
    k = int(rng.uniform(0.0, acq.outliers) * n)
    idx = rng.choice(n, size=k, replace=False)
    points = points.copy()
    points[idx] = rng.uniform(points.min(0), points.max(0), (k, 3))
    inlier[idx] = False
    if feature is not None:
        feature = feature.copy()
        feature[idx] = feature[rng.integers(0, n, k)]
    return points, feature, inlier
