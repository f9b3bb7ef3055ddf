"""Training pairs for the flow network: a shape, a random motion, two independent observations.

:func:`make_training_pair` draws, from one seed:

1. a shape (:mod:`register.synth.shapes`) unless one is given;
2. a ground-truth motion :class:`Motion` ``T`` from the kind's :class:`Recipe`:
   ``T(x) = A (R_p (x + d(x) - c_p) + c_p + t_p - o) + o + t`` with
   ``d = breathing + global smooth field + local field`` (each present with its
   probability), ``(R_p, t_p)`` a rigid motion of the part ``p`` the point belongs to (moving
   cars) and ``(A, t)`` an affine (or rigid: ego-motion) map about the centroid ``o``;
3. the source and the target observed independently (:func:`~register.synth.acquisition.observe`:
   crop, density), the target moved by ``T``, then noise and outliers on both.

The ground-truth flow of a source point is ``T(x) - x`` at its noise-free position; source
outliers have no flow (``valid`` is False there).

Seeds: :func:`pair_seed` derives the seed of pair ``index`` of a ``stream`` from a run seed.
Training draws from :data:`TRAIN_STREAM`; validation and benchmark pairs from
:data:`HELD_OUT_STREAM`, so they never coincide with a training pair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from register.synth.acquisition import Acquisition, add_noise, add_outliers, observe
from register.synth.deform import (
    GaussianField,
    breathing,
    make_smooth_random_field,
    random_affine,
    random_rotation,
)
from register.synth.shapes import BlobShape, SceneShape, VesselShape

KINDS = ("lung", "sceneflow", "shapes")
TRAIN_STREAM, HELD_OUT_STREAM, SHAPE_STREAM = 0, 1, 2


def pair_seed(seed: int, stream: int, index: int) -> int:
    """The seed of pair ``index`` of ``stream`` in a run seeded ``seed`` (a 32-bit integer)."""
    return int(np.random.SeedSequence([int(seed), int(stream), int(index)]).generate_state(1)[0])


@dataclass(frozen=True)
class Recipe:
    """Ranges of one kind's random motion and acquisition effects.

    Lengths are fractions of the shape's bounding-box diagonal when ``unit == "diameter"``
    (scale-free kinds: a lung of diagonal 450 mm turns 0.01 into 4.5 mm), data units when
    ``unit == "data"`` (LiDAR scenes in m: motion does not scale with the scene's extent).
    Each component is present with its ``*_probability``; amplitudes are drawn uniformly in
    ``[0, max]``.

    Attributes:
        affine_probability, rotation_deg, scale, shear, translation: random affine map
            (:func:`~register.synth.deform.random_affine`) about the centroid; ``rigid``
            keeps only its rotation and translation (ego-motion).
        breathing_probability, breathing_amplitude, breathing_lateral: cranio-caudal
            compression with lateral expansion (:func:`~register.synth.deform.breathing`).
        global_probability, global_magnitude, global_sigma, global_controls: smooth field of
            Gaussian-interpolated random control displacements; ``global_magnitude`` is the
            largest mean magnitude, ``global_sigma`` the range of kernel widths.
        local_probability, local_magnitude, local_sigma, local_controls: the same, narrow,
            ``local_magnitude`` its largest peak.
        parts_probability, part_rotation_deg, part_translation: rigid motion of each movable
            part (cars), each moving with this probability; the translation is along the
            part's heading (its box's x axis).
        acquisition: acquisition effect ranges.
    """

    unit: str = "diameter"
    affine_probability: float = 0.0
    rigid: bool = False
    rotation_deg: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    translation: float = 0.0
    breathing_probability: float = 0.0
    breathing_amplitude: float = 0.0
    breathing_lateral: float = 0.0
    global_probability: float = 0.0
    global_magnitude: float = 0.0
    global_sigma: tuple[float, float] = (0.15, 0.35)
    global_controls: int = 30
    local_probability: float = 0.0
    local_magnitude: float = 0.0
    local_sigma: tuple[float, float] = (0.03, 0.06)
    local_controls: int = 30
    parts_probability: float = 0.0
    part_rotation_deg: float = 0.0
    part_translation: float = 0.0
    acquisition: Acquisition = field(default_factory=Acquisition)


# Lung trees (diagonal ~450 mm, so 0.01 ~ 4.5 mm): breathing up to ~25 mm, global fields up to
# ~12 mm mean (~25-30 mm peak), local fields up to ~4.5 mm peak, residual affine.
LUNG = Recipe(
    affine_probability=0.7,
    rotation_deg=6.0,
    scale=0.06,
    shear=0.03,
    translation=0.02,
    breathing_probability=0.7,
    breathing_amplitude=0.055,
    breathing_lateral=0.25,
    global_probability=0.8,
    global_magnitude=0.027,
    local_probability=0.5,
    local_magnitude=0.01,
    acquisition=Acquisition(
        noise=0.002, outliers=0.03, crop_probability=0.3, crop=0.15, density=1.0, density_sigma=0.15
    ),
)
# LiDAR scenes (m): ego-motion (yaw up to 4 deg, up to ~2.5 m), cars moving up to 2.5 m.
SCENEFLOW = Recipe(
    unit="data",
    affine_probability=1.0,
    rigid=True,
    rotation_deg=4.0,
    translation=2.5,
    global_probability=0.3,
    global_magnitude=0.1,
    global_sigma=(5.0, 15.0),
    parts_probability=0.6,
    part_rotation_deg=5.0,
    part_translation=2.5,
    acquisition=Acquisition(
        noise=0.02, outliers=0.02, crop_probability=0.3, crop=0.1, density=0.7, density_sigma=8.0
    ),
)
# Shapes (relative): affine, global and local fields, sometimes a compression.
SHAPES = Recipe(
    affine_probability=0.8,
    rotation_deg=10.0,
    scale=0.1,
    shear=0.05,
    translation=0.02,
    breathing_probability=0.3,
    breathing_amplitude=0.05,
    breathing_lateral=0.2,
    global_probability=0.8,
    global_magnitude=0.04,
    global_sigma=(0.15, 0.4),
    local_probability=0.5,
    local_magnitude=0.012,
    local_sigma=(0.04, 0.08),
    acquisition=Acquisition(
        noise=0.003, outliers=0.03, crop_probability=0.3, crop=0.2, density=1.0, density_sigma=0.2
    ),
)
RECIPES = {"lung": LUNG, "sceneflow": SCENEFLOW, "shapes": SHAPES}


def make_shape(kind: str, seed: np.random.Generator | int | None):
    """A random shape of ``kind``: a lung tree, a street scene, or a blob (a volume 30 % of the time)."""
    rng = np.random.default_rng(seed)
    if kind == "lung":
        return VesselShape.random(rng)
    if kind == "sceneflow":
        return SceneShape.random(rng)
    if kind == "shapes":
        return BlobShape.random(rng, volume=bool(rng.uniform() < 0.3))
    raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class Motion:
    """A ground-truth map ``T`` (see the module docstring); evaluable at any points.

    Attributes:
        fields: displacement fields ``d_k``, each mapping ``(n, 3)`` to ``(n, 3)``; ``d = sum d_k``.
        part_rotation: ``(P, 3, 3)``, part_translation ``(P, 3)``, part_centre ``(P, 3)``:
            rigid motion per part label (identity for parts that do not move), or ``None``.
        matrix: ``(3, 3)`` ``A``; translation: ``(3,)`` ``t``; origin: ``(3,)`` ``o``.
    """

    fields: tuple[Callable[[np.ndarray], np.ndarray], ...] = ()
    part_rotation: np.ndarray | None = None
    part_translation: np.ndarray | None = None
    part_centre: np.ndarray | None = None
    matrix: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __call__(self, points: np.ndarray, part: np.ndarray | None = None) -> np.ndarray:
        """``T(points)``: ``(n, 3)`` moved points; ``part (n,)`` labels (needed with part motions)."""
        moved = np.array(points, dtype=np.float64)
        for d in self.fields:
            moved += d(points)
        if self.part_rotation is not None:
            if part is None:
                raise ValueError("this motion moves parts rigidly: pass the part label of each point")
            c = self.part_centre[part]
            moved = (
                np.einsum("nij,nj->ni", self.part_rotation[part], moved - c) + c + self.part_translation[part]
            )
        return (moved - self.origin) @ self.matrix.T + self.origin + self.translation


@dataclass(frozen=True)
class TrainingPair:
    """A synthetic pair with ground truth.

    Attributes:
        source: ``(N, 3)``; target: ``(M, 3)`` (shape units: mm, m or relative).
        flow: ``(N, 3)`` ground-truth flow of the source points (0 at outliers).
        valid: ``(N,)`` bool, False at source outliers (no ground truth).
        source_feature: ``(N,)``; target_feature: ``(M,)`` per-point length feature (vessel
            radius) or ``None`` for shapes without one.
        motion: the ground-truth :class:`Motion`.
        params: what was drawn (kind, seed, component amplitudes), for logs and tests.
    """

    source: np.ndarray
    target: np.ndarray
    flow: np.ndarray
    valid: np.ndarray
    source_feature: np.ndarray | None
    target_feature: np.ndarray | None
    motion: Motion
    params: dict


def random_motion(recipe: Recipe, reference: np.ndarray, unit: float, rng: np.random.Generator, shape=None):
    """Draw a :class:`Motion` from ``recipe`` for a shape sampled as ``reference (n, 3)``.

    Args:
        unit: the recipe's length unit in data units (the shape's diameter, or 1).
        shape: the shape (its movable parts, for a :class:`~register.synth.shapes.SceneShape`).

    Returns:
        The motion and a dict of the drawn amplitudes (data units).
    """
    lo, hi = reference.min(0), reference.max(0)
    fields: list[Callable[[np.ndarray], np.ndarray]] = []
    params: dict = {}
    if rng.uniform() < recipe.breathing_probability:
        amp = rng.uniform(0.0, recipe.breathing_amplitude) * unit
        lateral = rng.uniform(0.0, recipe.breathing_lateral)
        centre, extent = 0.5 * (lo + hi), 0.5 * (hi - lo)
        fields.append(
            lambda p, a=amp, s=lateral, c=centre, e=extent: breathing(p, a, lateral=s, center=c, extent=e)
        )
        params["breathing_amplitude"] = amp
    if rng.uniform() < recipe.global_probability:
        mag = rng.uniform(0.0, recipe.global_magnitude) * unit
        sigma = rng.uniform(*recipe.global_sigma) * unit
        fields.append(
            make_smooth_random_field(
                reference, rng, n_controls=recipe.global_controls, sigma=sigma, magnitude=max(mag, 1e-12)
            )
        )
        params["global_mean_magnitude"] = mag
    if rng.uniform() < recipe.local_probability:
        peak = rng.uniform(0.0, recipe.local_magnitude) * unit
        sigma = rng.uniform(*recipe.local_sigma) * unit
        raw = make_smooth_random_field(
            reference, rng, n_controls=recipe.local_controls, sigma=sigma, magnitude=1.0
        )
        top = float(np.linalg.norm(raw(reference), axis=1).max())
        fields.append(GaussianField(raw.centers, raw.vectors * (peak / top), sigma))  # peak magnitude = peak
        params["local_peak_magnitude"] = peak
    parts = {}
    if isinstance(shape, SceneShape) and recipe.parts_probability > 0:
        n_parts = shape.n_parts
        rot = np.repeat(np.eye(3)[None], n_parts, 0)
        trans = np.zeros((n_parts, 3))
        heading = np.concatenate([shape.boxes[:, 6], np.zeros(len(shape.cylinders))])
        moving = shape.movable & (rng.uniform(size=n_parts) < recipe.parts_probability)
        for p in np.flatnonzero(moving):
            yaw = np.radians(rng.uniform(-recipe.part_rotation_deg, recipe.part_rotation_deg))
            rot[p] = [[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]]
            step = rng.uniform(-recipe.part_translation, recipe.part_translation) * unit
            trans[p] = step * np.array([np.cos(heading[p]), np.sin(heading[p]), 0.0])
        parts = {"part_rotation": rot, "part_translation": trans, "part_centre": shape.part_centres()}
        params["moving_parts"] = int(moving.sum())
    matrix, translation = np.eye(3), np.zeros(3)
    if rng.uniform() < recipe.affine_probability:
        if recipe.rigid:  # ego-motion: mostly yaw, a little pitch and roll
            yaw = np.radians(rng.uniform(-recipe.rotation_deg, recipe.rotation_deg))
            tilt = random_rotation(rng, 0.5)
            matrix = tilt @ np.array(
                [[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]]
            )
            translation = np.array(
                [rng.uniform(-0.2, 1.0), rng.uniform(-0.12, 0.12), rng.uniform(-0.02, 0.02)]
            ) * (recipe.translation * unit)
        else:
            matrix, translation = random_affine(
                rng,
                rotation_deg=recipe.rotation_deg,
                scale=recipe.scale,
                shear=recipe.shear,
                translation=recipe.translation * unit,
            )
        u, _, vt = np.linalg.svd(matrix)  # rotation part of A (polar decomposition): U V^T
        params["rotation_deg"] = float(np.degrees(np.arccos(np.clip((np.trace(u @ vt) - 1) / 2, -1, 1))))
        params["translation"] = float(np.linalg.norm(translation))
    origin = reference.mean(0)
    return Motion(tuple(fields), **parts, matrix=matrix, translation=translation, origin=origin), params


def make_training_pair(
    kind: str,
    seed: int,
    n_points: int = 8192,
    *,
    target_points: int | None = None,
    shape=None,
    recipe: Recipe | None = None,
) -> TrainingPair:
    """A synthetic pair of ``kind`` (``lung``, ``sceneflow`` or ``shapes``), deterministic per seed.

    Args:
        kind: selects the shape family and the default :class:`Recipe` (:data:`RECIPES`).
        seed: seed for :func:`numpy.random.default_rng`; same seed (and shape), same pair.
        n_points: source points ``N``; target_points: ``M`` (default ``N``).
        shape: a shape to use instead of a random one of ``kind`` (e.g. a
            :class:`~register.synth.shapes.CloudShape` of user data, or one of a pool of
            pre-built lung trees: building a tree takes ~0.35 s).
        recipe: motion and acquisition ranges (default ``RECIPES[kind]``).

    Returns:
        :class:`TrainingPair`.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    recipe = recipe or RECIPES[kind]
    m_points = target_points or n_points
    rng = np.random.default_rng(seed)
    shape = shape if shape is not None else make_shape(kind, rng)
    diameter = shape.diameter
    unit = diameter if recipe.unit == "diameter" else 1.0
    acq = recipe.acquisition
    acq = replace(acq, noise=acq.noise * unit, density_sigma=acq.density_sigma * unit)
    src = observe(shape, n_points, acq, rng)
    tgt = observe(shape, m_points, acq, rng)
    motion, params = random_motion(recipe, src.points, unit, rng, shape)
    flow = motion(src.points, src.part) - src.points
    target = add_noise(motion(tgt.points, tgt.part), acq, rng)
    source = add_noise(src.points, acq, rng)
    tgt_feature = tgt.feature
    if tgt_feature is not None:  # the target's segmentation measures radii with ~10 % error
        tgt_feature = tgt_feature * rng.uniform(0.9, 1.1, len(tgt_feature))
    source, src_feature, valid = add_outliers(source, src.feature, acq, rng)
    target, tgt_feature, _ = add_outliers(target, tgt_feature, acq, rng)
    flow[~valid] = 0.0
    params = {"kind": kind, "seed": int(seed), "diameter": float(diameter), **params}
    return TrainingPair(source, target, flow, valid, src_feature, tgt_feature, motion, params)
