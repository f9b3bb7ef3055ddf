"""Deterministic synthetic deformations.

Every displacement function takes ``(N, 3)`` points and returns an ``(N, 3)`` float64
displacement in the same units (mm for the lung phantoms); the deformed points are
``points + displacement``. Random ones take a ``seed`` (an int or a
:class:`numpy.random.Generator`, passed to :func:`numpy.random.default_rng`), so the same seed
gives the same result and no global random state is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BREATHING_K = 1.5  # steepness of the cranio-caudal profile


def _as_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"points must be a non-empty (N, 3) array, got shape {pts.shape}")
    return pts


def breathing(
    points: np.ndarray,
    amplitude_mm: float = 12.0,
    *,
    lateral: float = 0.15,
    center: np.ndarray | None = None,
    extent: np.ndarray | None = None,
) -> np.ndarray:
    """A smooth inhale-to-exhale-like motion.

    With ``u = (points - center) / extent`` (about ``[-1, 1]`` inside the region) and the
    base weight ``w(u_z) = (1 - tanh(k u_z) / tanh(k)) / 2`` (1 at the base ``u_z = -1``, 0 at
    the apex ``u_z = 1``, within ``[-0.05, 1.05]`` everywhere, ``k = 1.5``):

    * ``dz = amplitude_mm * w``: cranio-caudal compression, the base rises most, the apex
      stays put;
    * ``dx, dy = lateral * amplitude_mm * w * tanh(k u) / tanh(k)``: lateral (x, y)
      expansion away from ``center`` (use a negative ``lateral`` to contract), strongest at
      the base.

    The displacement magnitude is at most about ``amplitude_mm * sqrt(1 + 2 lateral^2)``
    (~1.02 ``amplitude_mm`` for the default) inside the region, and the field is C-infinity.

    Args:
        points: ``(N, 3)`` positions (mm).
        amplitude_mm: the rise of the base (mm).
        lateral: lateral expansion as a fraction of ``amplitude_mm``.
        center: ``(3,)`` mm, the region centre; default the bounding-box centre of ``points``.
            Pass it (with ``extent``) to apply the same field to different point sets.
        extent: ``(3,)`` mm, half-size of the region; default half the bounding-box size.

    Returns:
        ``(N, 3)`` float64 displacement (mm).
    """
    pts = _as_points(points)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    center = 0.5 * (lo + hi) if center is None else np.asarray(center, dtype=np.float64)
    extent = 0.5 * (hi - lo) if extent is None else np.asarray(extent, dtype=np.float64)
    extent = np.maximum(extent, 1e-9)
    u = (pts - center) / extent
    k = _BREATHING_K
    profile = np.tanh(k * u) / np.tanh(k)  # odd, smooth, -1..1 on [-1, 1]
    w = 0.5 * (1.0 - profile[:, 2])
    disp = np.empty_like(pts)
    disp[:, 2] = amplitude_mm * w
    disp[:, :2] = (lateral * amplitude_mm * w)[:, None] * profile[:, :2]
    return disp


def gaussian_weights(points: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    """``(N, K)`` kernel ``exp(-|x_i - c_k|^2 / (2 sigma^2))`` of ``points (N, 3)`` and ``centres (K, 3)``.

    Squared distances as ``|x - m|^2 + |c - m|^2 - 2 <x - m, c - m>`` (one matrix product instead of
    an ``(N, K, 3)`` array; ``m`` the centres' mean keeps the cancellation error small), clamped at 0.
    """
    m = centres.mean(0)
    x, c = points - m, centres - m
    d2 = (x * x).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * (x @ c.T)
    return np.exp(-np.maximum(d2, 0.0) / (2.0 * sigma**2))


@dataclass(frozen=True)
class GaussianField:
    """A smooth displacement field: a sum of Gaussian bumps.

    ``d(x) = sum_k exp(-|x - c_k|^2 / (2 sigma^2)) v_k``.

    Attributes:
        centers: ``(K, 3)`` control-point positions (same units as the points).
        vectors: ``(K, 3)`` control displacement weights.
        sigma: kernel width (same units).
    """

    centers: np.ndarray
    vectors: np.ndarray
    sigma: float

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` float64 displacement at the ``(N, 3)`` points."""
        return gaussian_weights(_as_points(points), self.centers, self.sigma) @ self.vectors


def make_smooth_random_field(
    points: np.ndarray,
    seed: np.random.Generator | int | None,
    *,
    n_controls: int = 30,
    sigma: float | None = None,
    magnitude: float | None = None,
) -> GaussianField:
    """A random :class:`GaussianField` fitted to ``points``; reusable on other point sets.

    ``n_controls`` control points are drawn uniformly in the bounding box of ``points`` with
    standard-normal displacements, then all are scaled so that the mean displacement
    magnitude over ``points`` is exactly ``magnitude``.

    Args:
        points: ``(N, 3)`` positions (mm) defining the box and the normalisation.
        seed: seed or generator for :func:`numpy.random.default_rng`.
        n_controls: number of control points ``K``.
        sigma: kernel width (mm); default 0.25 of the bounding-box diagonal.
        magnitude: mean displacement magnitude over ``points`` (mm); default 0.05 of the
            diagonal.

    Returns:
        The field, a callable mapping ``(M, 3)`` points to ``(M, 3)`` displacements (mm).
    """
    pts = _as_points(points)
    rng = np.random.default_rng(seed)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    diag = float(np.linalg.norm(hi - lo))
    sigma = 0.25 * diag if sigma is None else float(sigma)
    magnitude = 0.05 * diag if magnitude is None else float(magnitude)
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma} (are all the points identical?)")
    centers = rng.uniform(lo, hi, size=(n_controls, 3))
    vectors = rng.normal(size=(n_controls, 3))
    raw = GaussianField(centers, vectors, sigma)(pts)
    mean = float(np.linalg.norm(raw, axis=1).mean())
    if mean <= 0:
        raise ValueError("the random field vanishes on the points; use a larger sigma")
    return GaussianField(centers, vectors * (magnitude / mean), sigma)


def smooth_random_field(
    points: np.ndarray,
    seed: np.random.Generator | int | None,
    *,
    n_controls: int = 30,
    sigma: float | None = None,
    magnitude: float | None = None,
) -> np.ndarray:
    """A smooth random displacement of ``points``: Gaussian-kernel blend of random controls.

    See :func:`make_smooth_random_field` (which returns the field itself, to apply the same
    deformation to other points) for the parameters.

    Returns:
        ``(N, 3)`` float64 displacement (mm) whose mean magnitude is ``magnitude``.
    """
    field = make_smooth_random_field(points, seed, n_controls=n_controls, sigma=sigma, magnitude=magnitude)
    return field(points)


def random_rotation(seed: np.random.Generator | int | None, max_angle_deg: float) -> np.ndarray:
    """A random rotation: axis uniform on the sphere, angle uniform in ``[0, max_angle_deg]``.

    Returns:
        ``(3, 3)`` float64 proper rotation matrix (orthonormal, determinant +1).
    """
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(0.0, max_angle_deg))
    kx = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


def random_affine(
    seed: np.random.Generator | int | None,
    *,
    rotation_deg: float = 10.0,
    scale: float = 0.1,
    shear: float = 0.05,
    translation: float | np.ndarray = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A random affine map ``x' = A @ x + t`` with ``A = R @ S @ H``.

    ``R`` is :func:`random_rotation` with angle up to ``rotation_deg``, ``S`` is diagonal
    with entries uniform in ``[1 - scale, 1 + scale]``, ``H`` is unit upper-triangular with
    off-diagonal shears uniform in ``[-shear, shear]``, and each component of ``t`` is uniform
    in ``[-translation, translation]`` (mm; a scalar or a ``(3,)`` array).

    Note the map acts about the origin: rotate about a centre ``c`` with ``t + c - A @ c``.
    The displacement of points is :func:`affine_displacement`.

    Returns:
        ``A`` ``(3, 3)`` float64 and ``t`` ``(3,)`` float64 (mm).
    """
    rng = np.random.default_rng(seed)
    rot = random_rotation(rng, rotation_deg)
    stretch = np.diag(1.0 + rng.uniform(-scale, scale, size=3))
    shear_m = np.eye(3)
    shear_m[np.triu_indices(3, k=1)] = rng.uniform(-shear, shear, size=3)
    bound = np.broadcast_to(np.asarray(translation, dtype=np.float64), (3,))
    t = rng.uniform(-1.0, 1.0, size=3) * bound
    return rot @ stretch @ shear_m, t


def affine_displacement(points: np.ndarray, A: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(N, 3)`` displacement ``A @ x + t - x`` of the ``(N, 3)`` points under ``(A, t)``."""
    pts = _as_points(points)
    return pts @ np.asarray(A).T + np.asarray(t) - pts
