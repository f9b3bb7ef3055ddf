"""A synthetic inhale / exhale lung mask pair with a known deformation (tests of the CT workflow).

Two ellipsoidal "lungs" on a grid with anisotropic voxels and a flipped axis (a NIfTI affine
that is not the identity). The moving mask is the fixed one deformed by a known smooth map
``phi`` (world mm, LPS), so every fixed point ``x`` has its true moving position ``phi(x)``:

    phi(x) = A (x - c) + c + t + b exp(-|x - p|^2 / (2 s^2))

(a breathing-like affine part and one smooth bump), which is invertible (|D bump| < 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from register.io.images import Grid, to_sitk, write_sitk

SHAPE = (72, 56, 40)
SPACING = np.array([3.2, 2.6, 4.5])  # mm, anisotropic
DIRECTION = np.diag([1.0, -1.0, 1.0])  # the j axis runs towards -y (a flipped axis)
ORIGIN = np.array([-115.0, 70.0, -90.0])
CENTRE = np.array([0.0, 0.0, 0.0])
LOBES = [
    (np.array([-50.0, -5.0, 0.0]), np.array([42.0, 48.0, 70.0])),
    (np.array([50.0, -5.0, 5.0]), np.array([40.0, 46.0, 66.0])),
]
A = np.array([[1.03, 0.02, 0.0], [0.0, 1.05, 0.03], [0.0, 0.0, 0.88]])
T = np.array([2.0, -3.0, 4.0])
BUMP_AMPLITUDE = np.array([0.0, 4.0, -5.0])
BUMP_CENTRE = np.array([40.0, -10.0, -20.0])
BUMP_WIDTH = 30.0


def grid() -> Grid:
    return Grid(SHAPE, ORIGIN, SPACING, DIRECTION)


def phi(x: np.ndarray) -> np.ndarray:
    """The true fixed -> moving map, ``(N, 3)`` mm -> ``(N, 3)`` mm."""
    bump = np.exp(-((x - BUMP_CENTRE) ** 2).sum(1) / (2 * BUMP_WIDTH**2))[:, None] * BUMP_AMPLITUDE
    return (x - CENTRE) @ A.T + CENTRE + T + bump


def phi_inverse(y: np.ndarray, iterations: int = 60) -> np.ndarray:
    """``phi^-1(y)``: solve ``A (x - c) = y - c - t - bump(x)`` by fixed-point iteration."""
    inv = np.linalg.inv(A)
    x = (y - CENTRE - T) @ inv.T + CENTRE
    for _ in range(iterations):
        bump = np.exp(-((x - BUMP_CENTRE) ** 2).sum(1) / (2 * BUMP_WIDTH**2))[:, None] * BUMP_AMPLITUDE
        x = (y - CENTRE - T - bump) @ inv.T + CENTRE
    return x


def inside(x: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: the fixed lungs (union of the two ellipsoids), label 1 left, 2 right."""
    label = np.zeros(len(x), dtype=np.uint8)
    for value, (centre, radii) in enumerate(LOBES, 1):
        label[(((x - centre) / radii) ** 2).sum(1) <= 1] = value
    return label


def masks() -> tuple[np.ndarray, np.ndarray]:
    """``(fixed, moving)`` label maps ``(nx, ny, nz)`` uint8 on :func:`grid`."""
    g = grid()
    index = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"), -1).reshape(-1, 3)
    world = g.world(index)
    fixed = inside(world).reshape(SHAPE)
    moving = inside(phi_inverse(world)).reshape(SHAPE)
    return fixed, moving


def write_pair(folder: Path, ext: str = ".nii.gz") -> tuple[Path, Path]:
    """Write ``fixed<ext>`` and ``moving<ext>`` into ``folder``; their paths."""
    fixed, moving = masks()
    paths = folder / f"fixed{ext}", folder / f"moving{ext}"
    for path, values in zip(paths, (fixed, moving), strict=True):
        write_sitk(path, to_sitk(values, grid()))
    return paths


def landmarks(count: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(fixed, moving)`` ``(count, 3)`` mm: random points well inside the fixed lungs and
    their true moving positions."""
    rng = np.random.default_rng(seed)
    points = []
    while sum(map(len, points)) < count:
        x = rng.uniform(
            ORIGIN - [0, SHAPE[1] * SPACING[1], 0], ORIGIN + SPACING * SHAPE * [1, 0, 1], (4000, 3)
        )
        shrunk = [(c, 0.8 * r) for c, r in LOBES]
        keep = np.zeros(len(x), bool)
        for c, r in shrunk:
            keep |= (((x - c) / r) ** 2).sum(1) <= 1
        points.append(x[keep])
    fixed = np.concatenate(points)[:count]
    return fixed, phi(fixed)
