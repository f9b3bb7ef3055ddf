"""Stage 3: spline RobOT post-processing.

At each level ``k`` (kernel width ``sigma_k`` and blur coarse to fine), ``iterations`` times:
    1. robust OT matching of the current points ``z_i = T(x_i)`` onto ``y``:
       targets ``y^_i``, confidences ``c_i``; displacements ``d_i = y^_i - z_i``;
       (with ``cluster > 0`` the matching runs on voxel clusters of side ``cluster * blur``
       of both clouds, :mod:`register.core.clusters`, and ``i`` below runs over the clusters);
    2. confidence-weighted kernel ridge regression of ``d`` on control points ``p_c``
       (a subsample of ``z``):

           min_alpha  sum_i w_i |sum_c K(z_i, p_c) alpha_c - d_i|^2 + lambda alpha^T K_pp alpha

       with ``w_i = a_i c_i / sum(a c)`` and ``K`` Gaussian of width ``sigma_k``. The second
       term is the squared RKHS norm of the field (its smoothness). Normal equations:

           (K_zp^T W K_zp + lambda K_pp) alpha = K_zp^T W d                      (4)

    3. ``T <- (id + v_k) o T`` with ``v_k(z) = sum_c K(z, p_c) alpha_c``.
The stage returns the list of fields; each acts in the frame left by the previous ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from register.config import SplineConfig
from register.core.clusters import Clusters, cluster
from register.core.kernel_fit import NormalEquations, fit_kernel_field, grid_controls, normal_equations
from register.core.sampling import subsample, subsample_indices
from register.core.transforms import KernelField
from register.stages.common import MatchSettings, floored, per_level, to_numpy
from register.stages.holdout import SharedSamples, check_round, folds

log = logging.getLogger(__name__)

# With ``holdout``, the stage stops after this many rounds in a row dropped by the held-out
# check (a dropped round ends its level; two in a row: the finer levels no longer help).
HOLDOUT_PATIENCE = 2


@dataclass
class SplineResult:
    """Output of :func:`spline_robot`.

    Attributes:
        fields: kernel fields to apply in order after the input transform.
        confidence: ``(n,)`` confidences of the last matching, on the subsample ``indices``.
        indices: indices (into the stage's source points) of the matched subsample.
        cost: robust matching cost of the last level (squared data units, lower is better).
        levels: per level: sigma, blur, reach, cost, Sinkhorn iterations, controls.
        seconds: wall time of the stage.
    """

    fields: list[KernelField]
    confidence: np.ndarray
    indices: np.ndarray
    cost: float
    levels: list[dict] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Level:
    """One level's matching, data units: blur, reaches (source / target marginal), matching
    settings (the level's Sinkhorn cap) and the clustered target."""

    blur: float
    reach: float
    target_reach: float
    ms: MatchSettings
    target: Clusters


def _levels(
    cfg: SplineConfig, ms: MatchSettings, ys: np.ndarray, bs: np.ndarray, cy: np.ndarray | None
) -> Iterator[tuple[float, float, _Level]]:
    """The stage's levels, coarse to fine, as ``(sigma, cell, level)`` (data units; ``cell``: side
    of the voxel clusters, 0: the points), the target ``ys (M, D)`` with masses ``bs (M,)``
    (classes ``cy (M,)`` or None) clustered at ``cell`` when the level is reached."""
    n_levels = len(cfg.blurs)
    for sigma, blur, reach, cap in zip(
        per_level(cfg.sigmas, n_levels),
        cfg.blurs,
        floored(per_level(cfg.reach, n_levels), ys, cfg.reach_floor),
        per_level(cfg.max_iter, n_levels),
        strict=True,
    ):
        # Matching on voxel clusters of side cluster * blur (``cluster`` 0: on the points); the
        # field is fitted to the clusters' displacements with their summed weights.
        cell = cfg.cluster * blur
        target = cluster(ys, bs, cell, cy)
        yield sigma, cell, _Level(blur, reach, reach * cfg.target_reach_ratio, ms.capped(cap), target)


def _displacements(lv: _Level, source: Clusters, debias: bool, warm=None):
    """Matching of ``source`` onto the level's target, and the data of (4):
    ``(matches, d (V, D), w (V,))``. With ``debias`` the displacement is ``T_xy - T_xx``: the
    target barycentre minus the source's own barycentre at the same blur (the self-transport
    ``OT_eps(a, a)``), which cancels the inward pull of the entropic blur at the boundary."""
    target = lv.target
    classes = None if source.classes is None else (source.classes, target.classes)
    matches = lv.ms.match(
        source.points,
        target.points,
        source.masses,
        target.masses,
        lv.blur,
        lv.reach,
        warm,
        lv.target_reach,
        classes,
    )
    d = to_numpy(matches.targets) - source.points
    if debias:
        own = lv.ms.self_match(source.points, source.masses, lv.blur, lv.reach, source.classes)
        d -= to_numpy(own.targets) - source.points
    return matches, d, source.masses * to_numpy(matches.confidence)


def _controls(z: np.ndarray, ic: np.ndarray, sigma: float, cfg: SplineConfig) -> np.ndarray:
    """The round's control points ``(C, D)``: voxel centroids of ``z (N, D)`` at
    ``cfg.control_spacing * sigma`` when at most ``cfg.max_controls`` voxels hold points, else
    the fixed subsample ``z[ic]``."""
    grid = grid_controls(z, cfg.control_spacing * sigma, cfg.max_controls) if cfg.control_spacing else None
    return z[ic] if grid is None else grid


def _fit_round(
    z: np.ndarray,
    source: Clusters,
    d: np.ndarray,
    w: np.ndarray,
    controls: np.ndarray,
    sigma: float,
    cfg: SplineConfig,
    shared: SharedSamples | None,
    rng: np.random.Generator,
) -> tuple[KernelField | None, dict | None]:
    """One round's field, (4) fitted to the displacements ``d (V, D)`` with weights ``w (V,)``
    of the matched ``source`` (current points ``z (N, D)``) on ``controls``, as ``(field,
    check)``; with ``shared`` (``cfg.holdout``) and unless the clouds share samples, after the
    held-out check (``check``: its record; ``field`` None: the round is dropped)."""
    factor = 1.0
    joined = None
    check = None
    if shared is not None and not shared(z):
        fit = _FoldFitter(source.points, d, w, controls, sigma, cfg.regularization)
        in_a = folds(len(d), rng)
        verdict = check_round(source.points, d, w, in_a, fit)
        check = {"factor": verdict.factor, "gain": verdict.gain, "se": verdict.se}
        if verdict.factor is None:
            return None, check
        factor = verdict.factor
        joined = fit.joined(in_a)
    if joined is not None:  # the folds' equations summed: no third K^T W K (wide kernels:
        # each fold aggregated per voxel on its own, the same O((cell / sigma)^2) error)
        return joined.solve(cfg.regularization * factor), check
    return fit_kernel_field(source.points, d, w, controls, sigma, cfg.regularization * factor), check


def _level_record(sigma: float, lv: _Level, controls: int, matches, rounds: list[dict] | None) -> dict:
    """A level's entry of :attr:`SplineResult.levels`: its settings, the controls of its last
    fitted round (0: none), the cost and Sinkhorn iterations of its last matching ``matches``
    (:class:`register.ot.Matches`) and, with ``cfg.holdout``, the held-out checks' records."""
    record = {
        "sigma": sigma,
        "blur": lv.blur,
        "reach": lv.reach,
        "max_iter": lv.ms.max_iter,
        "controls": controls,
    }
    record.update(cost=matches.cost, sinkhorn_iterations=matches.iterations)
    if rounds is not None:
        record["holdout"] = rounds
    return record


def spline_robot(
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    cfg: SplineConfig,
    ms: MatchSettings,
    *,
    rng: np.random.Generator,
    classes: tuple[np.ndarray, np.ndarray] | None = None,
    on_level: Callable[[int, int], None] | None = None,
) -> SplineResult:
    """Fit a smooth displacement field moving ``x`` onto ``y``, coarse kernel to fine.

    Args:
        x: ``(N, D)`` source points after the previous stages, data units; y: ``(M, D)``.
        a: ``(N,)`` source masses; b: ``(M,)`` target masses.
        cfg: stage settings, lengths in data units; ms: matching settings (a level's
            ``cfg.max_iter``, when set, replaces their ``max_iter`` in that level's matchings;
            the last level's in the final confidence matching).
        rng: seeded generator for subsamples (and the held-out folds of ``cfg.holdout``).
        classes: ``(N,)`` and ``(M,)`` integer classes (``pipeline.labels``): points match points of
            their own class only; voxel clusters never mix classes.
        on_level: called as ``on_level(done, total)`` before the first level and after each
            (progress displays; a stage stopped by the held-out check ends below ``total``).

    Returns:
        :class:`SplineResult`.
    """
    t0 = time.perf_counter()
    z, az, ix = subsample(x, a, cfg.max_points, rng)
    ys, bs, iy = subsample(y, b, cfg.max_points, rng)
    cz, cy = (None, None) if classes is None else (classes[0][ix], classes[1][iy])
    ic = subsample_indices(len(z), cfg.max_controls, rng)
    fields, levels = [], []
    matches = None
    dropped = 0  # rounds dropped in a row by the held-out check
    shared = SharedSamples(ys) if cfg.holdout else None  # skips the check on shared samples
    report = on_level or (lambda done, total: None)
    report(0, len(cfg.sigmas))
    for sigma, cell, lv in _levels(cfg, ms, ys, bs, cy):
        n_controls = 0
        rounds = []  # the held-out checks' records
        for _ in range(cfg.iterations):
            source = cluster(z, az, cell, cz)
            if cell > 0:
                matches = None  # a warm start needs the same clouds: the clusters change
            matches, d, w = _displacements(lv, source, cfg.debias, matches)
            if not w.sum() > 0:
                log.warning("spline level sigma=%.4g: no confident match; level skipped", sigma)
                continue
            controls = _controls(z, ic, sigma, cfg)
            fld, check = _fit_round(z, source, d, w, controls, sigma, cfg, shared, rng)
            if check is not None:
                rounds.append(check)
            if fld is None:
                dropped += 1
                log.info("spline level sigma=%.4g: round dropped by the held-out check", sigma)
                break
            dropped = 0
            n_controls = len(controls)
            z = fld.apply(z)
            fields.append(fld)
        levels.append(_level_record(sigma, lv, n_controls, matches, rounds if cfg.holdout else None))
        report(len(levels), len(cfg.sigmas))
        log.info("spline level sigma=%.4g blur=%.4g cost=%.4g", sigma, lv.blur, matches.cost)
        if dropped >= HOLDOUT_PATIENCE:
            log.info("spline stage stopped: %d rounds in a row dropped by the held-out check", dropped)
            break
    # Confidence of the final state, for the outputs (on the points: one per matched point).
    warm = matches if cfg.cluster == 0 else None
    final_classes = None if classes is None else (cz, cy)
    # The last level's settings.
    final = lv.ms.match(z, ys, az, bs, lv.blur, lv.reach, warm, lv.target_reach, final_classes)
    return SplineResult(fields, to_numpy(final.confidence), ix, final.cost, levels, time.perf_counter() - t0)


class _FoldFitter:
    """The held-out check's ``(mask, factor) -> v``: (4) solved on the points of ``mask`` with
    smoothness ``factor * regularization``, returned as the displacement map of the field. The
    normal equations of each mask are built once: a smoother retry costs one solve, and the
    round's own fit is joined from its two folds' (:meth:`joined`)."""

    def __init__(self, z, d, w, controls, sigma, regularization):
        self.z, self.d, self.w, self.controls = z, d, w, controls
        self.sigma, self.regularization = sigma, regularization
        self.built: dict[bytes, NormalEquations] = {}

    def equations(self, mask: np.ndarray) -> NormalEquations:
        key = np.packbits(mask).tobytes()
        if key not in self.built:
            self.built[key] = normal_equations(
                self.z[mask], self.d[mask], self.w[mask], self.controls, self.sigma
            )
        return self.built[key]

    def __call__(self, mask: np.ndarray, factor: float):
        return self.equations(mask).solve(self.regularization * factor).displacement

    def joined(self, in_a: np.ndarray) -> NormalEquations:
        """The whole round's equations from its two folds': weights normalised per fold, so
        ``gram = (W_A gram_A + W_B gram_B) / (W_A + W_B)`` (likewise ``rhs``)."""
        parts = [(float(self.w[m].sum()), self.equations(m)) for m in (in_a, ~in_a)]
        total = sum(wt for wt, _ in parts)
        gram = sum(wt / total * e.gram for wt, e in parts)
        rhs = sum(wt / total * e.rhs for wt, e in parts)
        return NormalEquations(self.controls, self.sigma, gram, rhs, parts[0][1].k_pp)
