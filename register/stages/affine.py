"""Stage 1: affine RobOT pre-alignment.

At each level (blur coarse to fine) repeat ``iterations`` times:
    1. robust OT matching of ``T(x)`` onto ``y``: targets ``y^_i`` and confidences ``c_i``;
    2. weighted least-squares fit of ``T`` (rigid / similarity / affine) to ``x_i -> y^_i``
       with weights ``a_i c_i`` (outliers and missing parts have ``c_i ~ 0`` and do not pull).
The fit always maps the *original* source points, so errors do not accumulate.
With ``multistart``, the first level is run from 28 initial rotations in 3-D (the 24 cube
rotations and 4 principal-axis alignments; 14 in 2-D); the input's pose and the best distinct
coarse minima run the whole schedule, and the one with the lowest robust matching cost is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from register.config import AffineConfig
from register.core.clusters import cluster
from register.core.fitting import fit_affine, grid_rotations, principal_axes_rotations
from register.core.sampling import subsample
from register.core.transforms import Affine
from register.stages.common import MatchSettings, floored, per_level, to_numpy

log = logging.getLogger(__name__)

MULTISTART_POINTS = 1000  # points per cloud when scoring the multi-start candidates
MULTISTART_FINALISTS = 4  # candidates that run the whole schedule before the final choice


@dataclass
class AffineResult:
    """Output of :func:`affine_robot`.

    Attributes:
        transform: the fitted map, source frame -> target frame (data units).
        cost: robust matching cost at the last level (squared data units, lower is better).
        levels: per level, the blur, reach, cost and Sinkhorn iterations.
        start: index of the multi-start candidate kept (``-1`` without multi-start).
        seconds: wall time of the stage.
    """

    transform: Affine
    cost: float
    levels: list[dict] = field(default_factory=list)
    start: int = -1
    seconds: float = 0.0


def _run_level(
    x, y, a, b, transform: Affine, blur, reach, cfg: AffineConfig, ms: MatchSettings, warm=None, classes=None
):
    """Match-then-fit rounds at one blur until the points move less than ``cfg.move_tol * blur``.

    ``warm``: the last matching before this level (each round starts from the previous one).
    With ``cfg.cluster > 0`` the rounds run on voxel clusters of side ``cfg.cluster * blur`` of
    ``x`` (original frame) and ``y``: ``T`` maps each source centroid to the centroid of its
    points' images, so matching and fit see the clusters as points with summed masses.
    ``classes``: ``(cx (N,), cy (M,))``, points match their own class only (clusters too)."""
    if cfg.cluster > 0:
        cx, cy = classes if classes is not None else (None, None)
        source, target = cluster(x, a, cfg.cluster * blur, cx), cluster(y, b, cfg.cluster * blur, cy)
        x, a, y, b = source.points, source.masses, target.points, target.masses
        classes = None if classes is None else (source.classes, target.classes)
        warm = None  # other clouds than the warm start's
    matches = warm
    moved = transform.apply(x)
    for _ in range(cfg.iterations):
        matches = ms.match(
            moved,
            y,
            a,
            b,
            blur,
            reach,
            warm=matches,
            target_reach=reach * cfg.target_reach_ratio,
            classes=classes,
        )
        weights = a * to_numpy(matches.confidence)
        transform = fit_affine(x, to_numpy(matches.targets), weights, cfg.mode)
        previous, moved = moved, transform.apply(x)
        if np.abs(moved - previous).max() < cfg.move_tol * blur:
            break
    return transform, matches


def _centroid_start(rotation: np.ndarray, x, y, a, b) -> Affine:
    """``x -> R (x - mean_a x) + mean_b y``: rotate about the source centroid onto the target's."""
    mu_x, mu_y = (a / a.sum()) @ x, (b / b.sum()) @ y
    return Affine(rotation, mu_y - rotation @ mu_x)


def _distinct(ranked: list, xs: np.ndarray, blur: float) -> list:
    """The first ``MULTISTART_FINALISTS`` of ``ranked`` (``(score, k, fitted)``, best first) that
    are distinct poses: a candidate whose fitted map moves the points ``xs`` within ``blur``
    (root mean square) of an earlier finalist's converged into the same coarse minimum and is
    skipped, so that the finalists are different minima, not one minimum reached from several
    starts (a density change can make one wrong pose the coarse best from most starts)."""
    chosen = []
    for item in ranked:
        moved = item[2].apply(xs)
        if all(np.sqrt(((moved - other[2].apply(xs)) ** 2).sum(1).mean()) > blur for other in chosen):
            chosen.append(item)
        if len(chosen) == MULTISTART_FINALISTS:
            break
    return chosen


def _choose_start(x, y, a, b, cfg: AffineConfig, ms: MatchSettings, rng, classes=None) -> tuple[Affine, int]:
    """Best of the multi-start candidates, on subsamples of ``MULTISTART_POINTS`` points.

    Every candidate is fitted at the first (coarsest) level and scored by its robust cost
    there; the ``MULTISTART_FINALISTS`` best distinct poses (:func:`_distinct`) then run the
    whole blur schedule and the one with the lowest cost at the finest level wins (a coarse
    cost alone cannot separate near-symmetric poses when many points are outliers).
    """
    xs, as_, ix = subsample(x, a, MULTISTART_POINTS, rng)
    ys, bs, iy = subsample(y, b, MULTISTART_POINTS, rng)
    classes = None if classes is None else (classes[0][ix], classes[1][iy])
    candidates = grid_rotations(xs.shape[1]) + principal_axes_rotations(xs, ys, as_, bs)
    reaches = floored(per_level(cfg.reach, len(cfg.blurs)), ys, cfg.reach_floor)
    coarse = []
    for k, rotation in enumerate(candidates):
        start = _centroid_start(rotation, xs, ys, as_, bs)
        fitted, _ = _run_level(xs, ys, as_, bs, start, cfg.blurs[0], reaches[0], cfg, ms, classes=classes)
        score = ms.match(
            fitted.apply(xs),
            ys,
            as_,
            bs,
            cfg.blurs[0],
            reaches[0],
            target_reach=reaches[0] * cfg.target_reach_ratio,
            classes=classes,
        ).cost
        log.debug("multistart candidate %d: coarse cost %.4g", k, score)
        coarse.append((score, k, fitted))
    best = (np.inf, None, -1)
    # The input's pose (candidate 0, the identity rotation) is always a finalist: its coarse cost
    # can rank it out of the best four while its fine cost is the lowest.
    ranked = [coarse[0]] + sorted(coarse[1:], key=lambda item: item[0])
    for _, k, fitted in _distinct(ranked, xs, cfg.blurs[0]):
        transform, matches = fitted, None
        for blur, reach in zip(cfg.blurs[1:], reaches[1:], strict=True):
            transform, matches = _run_level(
                xs, ys, as_, bs, transform, blur, reach, cfg, ms, matches, classes
            )
        score = matches.cost if matches is not None else coarse[k][0]
        log.debug("multistart finalist %d: fine cost %.4g", k, score)
        if score < best[0]:
            best = (score, fitted, k)
    return best[1], best[2]


def affine_robot(
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    cfg: AffineConfig,
    ms: MatchSettings,
    *,
    rng: np.random.Generator,
    init: Affine | None = None,
    classes: tuple[np.ndarray, np.ndarray] | None = None,
    on_level: Callable[[int, int], None] | None = None,
) -> AffineResult:
    """Fit an affine map from ``x`` onto ``y`` by robust OT matching, coarse to fine.

    Args:
        x: ``(N, D)`` source points, data units; y: ``(M, D)`` target points.
        a: ``(N,)`` source masses; b: ``(M,)`` target masses (any positive scale).
        cfg: stage settings with lengths in data units.
        ms: matching settings (backend, device, Sinkhorn tolerances); ``cfg.max_iter``, when
            set, replaces their ``max_iter``.
        rng: seeded generator for the subsamples.
        init: starting transform (default: identity, or the best multi-start).
        classes: ``(N,)`` and ``(M,)`` integer classes (``pipeline.labels``): points match points of
            their own class only.
        on_level: called as ``on_level(done, total)`` before the first level and after each
            (progress displays).

    Returns:
        :class:`AffineResult`.
    """
    t0 = time.perf_counter()
    ms = ms.capped(cfg.max_iter)
    x, a, ix = subsample(x, a, cfg.max_points, rng)
    y, b, iy = subsample(y, b, cfg.max_points, rng)
    classes = None if classes is None else (classes[0][ix], classes[1][iy])
    start = -1
    if init is not None:
        transform = init
    elif cfg.multistart:
        transform, start = _choose_start(x, y, a, b, cfg, ms, rng, classes)
    else:
        transform = Affine.identity(x.shape[1])
    levels = []
    cost = float("nan")
    matches = None
    report = on_level or (lambda done, total: None)
    report(0, len(cfg.blurs))
    for blur, reach in zip(
        cfg.blurs, floored(per_level(cfg.reach, len(cfg.blurs)), y, cfg.reach_floor), strict=True
    ):
        transform, matches = _run_level(x, y, a, b, transform, blur, reach, cfg, ms, matches, classes)
        cost = matches.cost
        levels.append({"blur": blur, "reach": reach, "cost": cost, "sinkhorn_iterations": matches.iterations})
        report(len(levels), len(cfg.blurs))
        log.info("affine level blur=%.4g reach=%.4g cost=%.4g", blur, reach, cost)
    return AffineResult(transform, cost, levels, start, time.perf_counter() - t0)
