"""Weighted least-squares fits of affine maps to matched point pairs (numpy, float64).

Given pairs ``x_i -> y_i`` with weights ``w_i >= 0``, find ``T(x) = A x + t`` minimising
``sum_i w_i |A x_i + t - y_i|^2`` under the mode's constraint:

* ``rigid``: ``A = R`` a rotation (weighted Procrustes / Kabsch);
* ``similarity``: ``A = s R`` (Umeyama 1991, eq. 40-42);
* ``affine``: ``A`` free (weighted normal equations).
"""

from __future__ import annotations

import numpy as np

from register.core.transforms import Affine
from register.errors import InputError

MODES = ("rigid", "similarity", "affine")


def _weighted_moments(x: np.ndarray, y: np.ndarray, w: np.ndarray):
    total = w.sum()
    if not total > 0:
        raise InputError("cannot fit a transform: every match has zero confidence (reach too small?)")
    w = w / total
    mu_x, mu_y = w @ x, w @ y
    xc, yc = x - mu_x, y - mu_y
    return w, mu_x, mu_y, xc, yc


def fit_affine(x: np.ndarray, y: np.ndarray, w: np.ndarray, mode: str) -> Affine:
    """Fit ``T`` with ``T(x_i) ~ y_i``.

    Args:
        x: ``(N, D)`` source points; y: ``(N, D)`` matched targets (same units).
        w: ``(N,)`` non-negative weights (confidence times mass).
        mode: ``rigid``, ``similarity`` or ``affine``.

    Returns:
        The fitted :class:`Affine`.
    """
    if mode not in MODES:
        raise InputError(f"affine.mode = {mode!r}; choose one of {', '.join(MODES)}")
    w, mu_x, mu_y, xc, yc = _weighted_moments(x, y, w)
    dim = x.shape[1]
    if mode == "affine":
        # Normal equations: A (sum w xc xc^T) = sum w yc xc^T; a tiny ridge keeps planar
        # or degenerate clouds solvable.
        sxx = (xc * w[:, None]).T @ xc
        syx = (yc * w[:, None]).T @ xc
        ridge = 1e-12 * np.trace(sxx) * np.eye(dim)
        matrix = np.linalg.solve(sxx + ridge, syx.T).T
    else:
        # Umeyama: Sigma = sum w yc xc^T = U S V^T, R = U diag(1, .., det(U V^T)) V^T.
        sigma = (yc * w[:, None]).T @ xc
        u, s, vt = np.linalg.svd(sigma)
        d = np.ones(dim)
        d[-1] = np.sign(np.linalg.det(u @ vt)) or 1.0
        rotation = (u * d) @ vt
        scale = 1.0
        if mode == "similarity":
            var_x = float((w * (xc**2).sum(1)).sum())
            scale = float((s * d).sum() / var_x) if var_x > 0 else 1.0
        matrix = scale * rotation
    return Affine(matrix, mu_y - matrix @ mu_x)


def rotation_angle_deg(r: np.ndarray) -> float:
    """Angle of a 3-D rotation matrix, degrees (for reporting errors).

    With ``v = (r32 - r23, r13 - r31, r21 - r12)``, ``|v| = 2 sin(theta)`` and
    ``tr(r) - 1 = 2 cos(theta)``: ``atan2`` of the two is accurate at every angle, where
    ``arccos((tr - 1) / 2)`` loses half the digits near 0 (a rounding of 1e-16 reads as 1e-6 degrees).
    """
    v = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    return float(np.degrees(np.arctan2(np.linalg.norm(v), np.trace(r) - 1)))


def grid_rotations(dim: int) -> list[np.ndarray]:
    """Multi-start candidate rotations covering SO(dim), dim 2 or 3.

    3-D: the 24 proper rotations mapping the coordinate axes onto themselves (signed
    permutations, det +1); every rotation lies within ~62.8 degrees of one of them.
    2-D: the 12 rotations by multiples of 30 degrees.
    """
    import itertools

    if dim == 2:
        angles = np.radians(np.arange(0, 360, 30))
        return [np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) for t in angles]
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            r = np.zeros((3, 3))
            r[range(3), perm] = signs
            if np.linalg.det(r) > 0:
                out.append(r)
    return out


def principal_axes_rotations(
    x: np.ndarray, y: np.ndarray, wx: np.ndarray, wy: np.ndarray
) -> list[np.ndarray]:
    """The proper rotations aligning the principal axes of ``x`` with those of ``y`` (4 in 3-D, 2 in 2-D).

    Args:
        x: ``(N, D)``; y: ``(M, D)``; wx: ``(N,)``; wy: ``(M,)`` masses.
    """
    import itertools

    def axes(p: np.ndarray, w: np.ndarray) -> np.ndarray:
        w = w / w.sum()
        pc = p - w @ p
        _, vecs = np.linalg.eigh((pc * w[:, None]).T @ pc)
        return vecs  # columns sorted by increasing variance

    ex, ey = axes(x, wx), axes(y, wy)
    out = []
    # Axis sign flips with an even number of -1: each gives one proper rotation.
    for signs in itertools.product((1.0, -1.0), repeat=x.shape[1]):
        if np.prod(signs) < 0:
            continue
        r = (ey * np.array(signs)) @ ex.T
        if np.linalg.det(r) < 0:  # ex, ey of opposite handedness: flip the weakest axis
            flip = np.array(signs)
            flip[0] = -flip[0]
            r = (ey * flip) @ ex.T
        out.append(r)
    return out
