"""``register(source, target, config) -> Result``: chains the stages.

affine RobOT  ->  flow network (projected onto a smooth field)  ->  spline RobOT

Each stage sees the source as moved by the previous ones; the result is one
:class:`~register.core.transforms.Composite` transform, source frame -> target frame,
in the data's own units.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from register.config import PipelineConfig, load_config
from register.core.pointcloud import PointCloud
from register.core.transforms import Affine, Composite
from register.errors import ConfigError, InputError
from register.kernels.select import choose_backend
from register.metrics import chamfer
from register.reliability import MATCH_MAX_ITER, MIN_MATCHED_MASS, Reliability, assess
from register.stages.affine import affine_robot
from register.stages.common import MatchSettings, per_level, to_numpy
from register.stages.flow import check_inputs, flow_predict, load_flow_model
from register.stages.spline import spline_robot

log = logging.getLogger(__name__)

MIN_POINTS = 4  # fewer points cannot determine a 3-D affine map


@dataclass
class Result:
    """What :func:`register` returns.

    Attributes:
        transform: source frame -> target frame (apply it to any points of the source space).
        warped: ``(N, D)`` the source points moved into the target frame, data units.
        displacement: ``(N, D)`` ``warped - source``, data units.
        confidence: ``(N,)`` transported-mass ratio of each source point at the last matching
            (1 = fully matched, 0 = treated as an outlier); points outside the matched
            subsample take their nearest matched neighbour's value.
        stages: per stage run: name, seconds and the stage's level reports.
        metrics: counts, residuals before/after (chamfer, data units, lower is better),
            backend and device, and the reliability report (``reliability``, as a dict).
        config: the configuration that ran, lengths resolved to data units.
        reliability: the :class:`~register.reliability.Reliability` report: matched mass,
            held-out residual before/after, folding, and its verdict (``ok`` / ``suspect: ...``).
    """

    transform: Composite
    warped: np.ndarray
    displacement: np.ndarray
    confidence: np.ndarray
    stages: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    config: PipelineConfig | None = None
    reliability: Reliability | None = None


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; checks an explicit CUDA request."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    return device


def masses(cloud: PointCloud, name: str) -> np.ndarray:
    """Per-point masses ``(N,)``: uniform, or the point attribute ``name`` (e.g. vessel radius)."""
    from register.io.weights import read_weights

    if not name:
        return np.ones(len(cloud))
    try:
        return read_weights(cloud, name)
    except InputError as exc:
        raise InputError(f"--weights {name}: {exc}") from None


def _feature(cloud: PointCloud, name: str) -> np.ndarray | None:
    """``(N,)`` point attribute ``name`` fed to the flow network, or ``None`` when absent."""
    from register.io.weights import read_weights

    if not name or name not in cloud.point_data:
        return None
    try:
        return read_weights(cloud, name)
    except InputError as exc:
        raise InputError(f"--stages flow: the flow model reads the point attribute '{name}': {exc}") from None


# How far beyond the bulk of a cloud a point may lie, in extents of the cloud's central 98 %.
# The matching normalises both clouds by their joint extent and runs in float32 (24-bit
# mantissa, ~6e-8 relative): one point 1e6 extents away squeezes the rest of the cloud into
# fewer than ~16 distinguishable positions per axis, and the result is noise or a failure
# deep in the solver (a NaN schedule length, a non-converging SVD). Such a point is an error
# in the file (a sentinel value, a unit slip), so it is refused with its row, not "handled".
MAX_SPREAD = 1e6


def _check_spread(cloud: PointCloud) -> None:
    """Refuse a cloud with points more than :data:`MAX_SPREAD` robust extents from its centre."""
    p = cloud.points
    lo, hi = np.percentile(p, [1, 99], axis=0)
    extent = float(np.linalg.norm(hi - lo))
    if extent == 0.0:  # the bulk is one point: nothing to resolve (a degenerate cloud)
        return
    distance = np.linalg.norm(p - np.median(p, axis=0), axis=1)
    far = distance > MAX_SPREAD * extent
    if far.any():
        i = int(np.argmax(distance))
        raise InputError(
            f"{cloud.label}: point {i} (0-based) at {p[i].tolist()} lies {distance[i] / extent:.2g} times "
            f"the extent of the cloud's central 98 % from its centre ({int(far.sum())} such point(s)); "
            "registration cannot resolve the rest of the cloud at that scale: remove the point or fix "
            "its units"
        )


def _as_cloud(points, what: str) -> PointCloud:
    cloud = points if isinstance(points, PointCloud) else PointCloud(np.asarray(points), path=what)
    p = cloud.points
    if p.ndim != 2 or p.shape[1] not in (2, 3):
        raise InputError(f"{cloud.label}: expected (N, 3) points (or (N, 2)), got shape {p.shape}")
    if len(p) < MIN_POINTS:
        raise InputError(f"{cloud.label}: {len(p)} points; registration needs at least {MIN_POINTS}")
    if not np.isfinite(p).all():
        raise InputError(f"{cloud.label}: coordinates contain NaN or Inf; clean the file first")
    _check_spread(cloud)
    return cloud


def check_extent(cfg: PipelineConfig, cloud: PointCloud, settings: str = "these settings") -> None:
    """Refuse ``cloud`` when its bounding-box diagonal (data units) lies outside
    ``[pipeline.min_extent, pipeline.max_extent]``: settings whose lengths are physical
    (``pipeline.units``) would run every blur, reach and kernel width off by the factor between
    the units. ``settings`` names them in the message (e.g. ``"the lung preset"``).

    Raises:
        InputError: naming the cloud, its extent, the expected range and the unit.
    """
    lo, hi = cfg.pipeline.min_extent, cfg.pipeline.max_extent
    if lo <= 0 and math.isinf(hi):
        return
    p = cloud.points
    extent = float(np.linalg.norm(p.max(0) - p.min(0)))
    if lo <= extent <= hi:
        return
    unit = cfg.pipeline.units or "data units"
    raise InputError(
        f"{cloud.label} spans {extent:.3g} units (bounding-box diagonal), but the units of {settings} are "
        f"{unit}, in which such clouds span {lo:g}-{hi:g} (pipeline.min_extent, max_extent): "
        f"rescale the points to {unit}, or use settings without units (preset default)"
    )


# A later candidate frame of the flow network replaces the first (the data's declared
# convention) only when its end state scores this much lower (relative): differences of a few
# tenths of a percent in the final matching cost are within the OT solutions' noise.
FRAME_MARGIN = 0.01


def keep_frame(scores: list[float]) -> int:
    """Index of the candidate frame to keep, from the end-state scores (lower is better)."""
    adjusted = [s if i == 0 else s * (1 + FRAME_MARGIN) for i, s in enumerate(scores)]
    return min(range(len(scores)), key=adjusted.__getitem__)


@dataclass
class _TailRun:
    """The flow and spline stages run from one state (one candidate frame of the network).

    ``cost``: the spline stage's final matching cost (None without the stage)."""

    steps: list
    current: np.ndarray
    stages: list[dict]
    confidence: np.ndarray | None
    conf_points: np.ndarray | None
    cost: float | None
    seconds: float

    def score(self, y: np.ndarray) -> float:
        """How well the end state fits the target ``y``, lower is better: the final matching
        cost when the spline stage ran (same clouds, blur and reach for every candidate), else
        the chamfer distance (data units)."""
        return float(self.cost) if self.cost is not None else chamfer(self.current, y)


def _run_tail(
    tail, current, y, a, b, cfg, ms, rng, *, flow_model, features, notify, axes, classes=None
) -> _TailRun:
    """Run the stages of ``tail`` (``flow``, ``spline``) from ``current (N, D)`` points, the
    network in frame ``axes``; ``features``: the flow model's source and target features;
    ``classes``: label-aware matching's classes (the spline stage's; the flow network has none)."""
    t_start = time.perf_counter()
    steps, stages = [], []
    confidence_sub = conf_points = cost = None
    for name in tail:
        notify(name, "start")
        t0 = time.perf_counter()
        if name == "flow":
            res = flow_predict(
                current,
                y,
                a,
                cfg.flow,
                flow_model,
                rng=rng,
                source_feature=features[0],
                target_feature=features[1],
                axes=axes,
            )
            steps.append(res.field)
            current = res.field.apply(current)
            stages.append(
                {
                    "name": name,
                    "seconds": time.perf_counter() - t0,
                    "network_seconds": res.network_seconds,
                    "model": flow_model.name,
                    "axes": axes,
                    "points": len(res.indices),
                    "sigma": cfg.flow.sigma,
                    "mean_flow": float(np.linalg.norm(res.flow, axis=1).mean()),
                    "projection_residual": res.residual,
                }
            )
        elif name == "spline":
            res = spline_robot(current, y, a, b, cfg.spline, ms, rng=rng, classes=classes)
            steps.extend(res.fields)
            confidence_sub, conf_points, cost = res.confidence, res.indices, res.cost
            current = Composite(res.fields).apply(current)
            stages.append(
                {"name": name, "seconds": time.perf_counter() - t0, "cost": res.cost, "levels": res.levels}
            )
        notify(name, "done")
    return _TailRun(steps, current, stages, confidence_sub, conf_points, cost, time.perf_counter() - t_start)


def _reliability(transform, x, y, a, b, warped, run: _TailRun, cfg, ms: MatchSettings, seed) -> Reliability:
    """The reliability report of the run (:func:`register.reliability.assess`).

    Matched mass: from the spline stage's last matching when its reach is finite; otherwise
    (balanced: every point's mass is transported by construction, or no spline stage) from one
    matching of the report's own, at the last level's reach when finite, with the run's backend,
    device and mass normalisation. The last level's blur bounds the held-out truncation from
    below. Its own seeded generators: the run's random stream is untouched.
    """
    stages = cfg.pipeline.stages
    blur = reach = None
    if "spline" in stages:
        blur, reach = cfg.spline.blurs[-1], per_level(cfg.spline.reach, len(cfg.spline.blurs))[-1]
    elif "affine" in stages:
        blur, reach = cfg.affine.blurs[-1], per_level(cfg.affine.reach, len(cfg.affine.blurs))[-1]
    given = {}
    if "spline" in stages and math.isfinite(reach) and run.conf_points is not None:
        given = {"confidence": run.confidence, "confidence_indices": run.conf_points}
    return assess(
        transform,
        x,
        y,
        a,
        b,
        warped=warped,
        blur=blur,
        reach=reach,
        match=_report_matcher(ms),
        seed=seed,
        **given,
    )


def _report_matcher(ms: MatchSettings):
    """The reliability report's matcher: the run's backend, device and mass normalisation."""
    report_ms = ms.capped(MATCH_MAX_ITER)

    def match(xs, ys, a_s, b_s, blur_, reach_):
        return to_numpy(report_ms.match(xs, ys, a_s, b_s, blur_, reach_).confidence)

    return match


def early_fallback_reasons(affine: Affine, x, y, a, b, warped, cfg, ms: MatchSettings, seed) -> list[str]:
    """Why the pair calls for the fallback settings already after the affine stage (empty: it
    does not): either matched mass of the report (at its reach of a few target spacings) below
    ``pipeline.fallback_early_matched_mass``. A complete pair, however much non-rigid motion is
    left, still has most of its mass within that reach of a counterpart."""
    blur, reach = cfg.affine.blurs[-1], per_level(cfg.affine.reach, len(cfg.affine.blurs))[-1]
    report = assess(
        affine, x, y, a, b, warped=warped, blur=blur, reach=reach, match=_report_matcher(ms), seed=seed
    )
    least = min(report.matched_mass, report.target_matched_mass)
    threshold = cfg.pipeline.fallback_early_matched_mass
    return [f"after the affine stage, matched mass {least:.2f} < {threshold:g}"] if least < threshold else []


def register(
    source: PointCloud | np.ndarray,
    target: PointCloud | np.ndarray,
    config: PipelineConfig | str = "default",
    *,
    init: Affine | None = None,
    device: str = "auto",
    seed: int = 0,
    on_stage: Callable[[str, str], None] | None = None,
) -> Result:
    """Register ``source`` onto ``target``.

    Args:
        source: ``(N, D)`` points or a :class:`PointCloud` (D = 3, or 2), data units.
        target: ``(M, D)`` points or a :class:`PointCloud`, same units and dimension.
        config: a :class:`PipelineConfig` or a preset name / TOML path.
        init: initial affine map (replaces the multi-start / identity start of stage 1).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seed of every random subsample, an integer >= 0 (results are reproducible for a
            seed).
        on_stage: called as ``on_stage(name, "start" | "done")`` (the CLI's progress display).

    With ``pipeline.fallback`` set (the ``lung`` preset), a first result whose reliability
    report is suspect, or whose matched mass (source or target) is below
    ``pipeline.fallback_matched_mass``, is registered again with the fallback settings; the
    second result is kept unless it is suspect while the first was not. With
    ``pipeline.fallback_early_matched_mass``, the first run already stops after its affine stage
    when a matched mass there is below it (:func:`early_fallback_reasons`).
    ``metrics["fallback"]`` records the choice.

    Returns:
        :class:`Result`.

    Raises:
        InputError: a bad argument (``seed``, ``device``, the clouds' shapes, NaN / Inf
            coordinates, a point far beyond the rest of its cloud) or config value.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed = {seed!r}: must be a non-negative integer")
    cfg = load_config(config) if isinstance(config, str) else config
    fallback = _fallback_config(cfg)
    src, tgt = _as_cloud(source, "source"), _as_cloud(target, "target")
    if src.points.shape[1] != tgt.points.shape[1]:
        raise InputError(
            f"{src.label} is {src.points.shape[1]}-D but {tgt.label} is {tgt.points.shape[1]}-D; "
            "both clouds must have the same dimension"
        )
    for cloud in (src, tgt):  # before any work: settings in physical units on the wrong scale
        check_extent(cfg, cloud, f"the {config} preset" if isinstance(config, str) else "these settings")
    device = resolve_device(device)
    notify = on_stage or (lambda name, state: None)
    first = _register_once(src, tgt, cfg, init, device, seed, notify, early=fallback is not None)
    if fallback is None:
        return first
    if isinstance(first, list):  # abandoned after its affine stage, for these reasons
        reasons, first = first, None
    else:
        reasons = fallback_reasons(
            first.reliability, cfg.pipeline.fallback_matched_mass, cfg.pipeline.fallback_stray_fraction
        )
    record = {"settings": cfg.pipeline.fallback, "triggered_by": reasons, "kept": "first"}
    result = first
    if reasons:
        log.info("fallback settings %s: %s", cfg.pipeline.fallback, "; ".join(reasons))
        notify("fallback", "start")
        second = _register_once(src, tgt, fallback, init, device, seed, notify)
        notify("fallback", "done")
        keep_first = first is not None and bool(second.reliability.reasons) and not first.reliability.reasons
        result = first if keep_first else second
        record.update(
            kept="first" if keep_first else "fallback",
            first=None if first is None else _run_summary(first),
            fallback=_run_summary(second),
        )
    result.metrics["fallback"] = record
    return result


def fallback_reasons(
    report: Reliability, min_matched_mass: float, max_stray_fraction: float = 1.0
) -> list[str]:
    """Why the first result calls for the fallback settings (empty: it does not): a suspect
    verdict, a matched mass (either side) below ``min_matched_mass``, a copy pair's partnered
    fraction below it, or a stray fraction above ``max_stray_fraction``
    (:mod:`register.partners`)."""
    reasons = list(report.reasons)
    # (the verdict's own reasons already name a matched mass below MIN_MATCHED_MASS)
    if report.matched_mass >= MIN_MATCHED_MASS and not report.matched_mass >= min_matched_mass:
        reasons.append(f"matched mass {report.matched_mass:.2f} < {min_matched_mass:g}")
    if not report.target_matched_mass >= min_matched_mass:
        reasons.append(f"target matched mass {report.target_matched_mass:.2f} < {min_matched_mass:g}")
    if report.copy_pair and not report.partnered_fraction >= min_matched_mass:
        reasons.append(
            f"copy pair, partnered fraction {report.partnered_fraction:.2f} < {min_matched_mass:g}"
        )
    if report.stray_fraction > max_stray_fraction:
        reasons.append(f"stray fraction {report.stray_fraction:.3f} > {max_stray_fraction:g}")
    return reasons


def _fallback_config(cfg: PipelineConfig) -> PipelineConfig | None:
    """The settings of ``pipeline.fallback`` (None when unset), loaded before any work."""
    if not cfg.pipeline.fallback:
        return None
    fallback = load_config(cfg.pipeline.fallback)
    if fallback.pipeline.fallback:
        raise ConfigError(
            f"pipeline.fallback = {cfg.pipeline.fallback!r}: those settings have a fallback of their own "
            f"({fallback.pipeline.fallback!r}); a fallback must not"
        )
    if cfg.pipeline.labels:  # the labels describe the data: the second run uses them too
        fallback = dataclasses.replace(
            fallback, pipeline=dataclasses.replace(fallback.pipeline, labels=cfg.pipeline.labels)
        )
    return fallback


def match_classes(src: PointCloud, tgt: PointCloud, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``(N,)`` and ``(M,)`` int64 classes of label-aware matching (``pipeline.labels``), or
    ``None`` when ``name`` is empty.

    Raises:
        InputError: a cloud lacks the attribute, or it is not one integer per point.
    """
    if not name:
        return None
    out = []
    for cloud in (src, tgt):
        if name not in cloud.point_data:
            have = ", ".join(sorted(cloud.point_data)) or "none"
            raise InputError(
                f"{cloud.label}: no point attribute '{name}' for --labels (attributes: {have}); "
                "give both clouds the label attribute or drop --labels"
            )
        values = np.asarray(cloud.point_data[name], dtype=np.float64)
        if values.ndim != 1 or not np.isfinite(values).all() or (values != np.round(values)).any():
            raise InputError(
                f"{cloud.label}: attribute '{name}' must hold one integer label per point for --labels"
            )
        out.append(values.astype(np.int64))
    shared = np.intersect1d(out[0], out[1])
    if len(shared) == 0:
        raise InputError(
            f"--labels {name}: the source's labels {sorted(set(out[0].tolist()))[:8]} and the target's "
            f"{sorted(set(out[1].tolist()))[:8]} have none in common; nothing could match"
        )
    return out[0], out[1]


def _run_summary(result: Result) -> dict:
    """Verdict, matched mass and seconds of one run (the fallback record)."""
    return {
        "verdict": result.reliability.verdict,
        "matched_mass": result.reliability.matched_mass,
        "seconds": sum(result.metrics["stage_seconds"].values()) + result.metrics["reliability_seconds"],
    }


def _register_once(
    src: PointCloud,
    tgt: PointCloud,
    cfg: PipelineConfig,
    init,
    device: str,
    seed: int,
    notify,
    *,
    early=False,
) -> Result | list[str]:
    """One registration of ``src`` onto ``tgt`` with ``cfg`` (arguments checked by :func:`register`).

    With ``early`` (a fallback is configured) and ``pipeline.fallback_early_matched_mass > 0``,
    the run stops after its affine stage when :func:`early_fallback_reasons` finds any, and
    returns them instead of a result."""
    x, y = src.points, tgt.points
    flow_model = None
    if "flow" in cfg.pipeline.stages:  # load and check now, before any work
        flow_model = load_flow_model(cfg.flow, device)
        check_inputs(flow_model, len(x), len(y), x.shape[1], cfg.flow)
    weights = cfg.pipeline.weights
    if weights and cfg.pipeline.weights_optional and not all(weights in c.point_data for c in (src, tgt)):
        log.warning("attribute '%s' missing from a cloud: uniform masses (the preset allows it)", weights)
        weights = ""
    a, b = masses(src, weights), masses(tgt, weights)
    classes = match_classes(src, tgt, cfg.pipeline.labels)
    diameter = float(np.linalg.norm(y.max(0) - y.min(0))) or 1.0
    cfg = cfg.in_data_units(diameter)
    n_match = max(min(len(x), cfg.spline.max_points), min(len(x), cfg.affine.max_points))
    m_match = max(min(len(y), cfg.spline.max_points), min(len(y), cfg.affine.max_points))
    choice = choose_backend(n_match, m_match, device, cfg.pipeline.backend)
    log.info("backend %s (%s), device %s", choice.name, choice.reason, device)
    ms = MatchSettings(
        choice.name,
        device,
        cfg.pipeline.scaling,
        cfg.pipeline.tol,
        cfg.pipeline.max_iter,
        cfg.pipeline.mass,
        cfg.pipeline.warm_start,
    )
    rng = np.random.default_rng(seed)

    steps: list = [init] if init is not None and "affine" not in cfg.pipeline.stages else []
    current = init.apply(x) if steps else x
    stages: list[dict] = []
    if "affine" in cfg.pipeline.stages:
        notify("affine", "start")
        t0 = time.perf_counter()
        res = affine_robot(x, y, a, b, cfg.affine, ms, rng=rng, init=init, classes=classes)
        steps.append(res.transform)
        current = res.transform.apply(x)
        stages.append(
            {
                "name": "affine",
                "seconds": time.perf_counter() - t0,
                "cost": res.cost,
                "matrix": res.transform.matrix.tolist(),
                "translation": res.transform.translation.tolist(),
                "multistart_choice": res.start,
                "levels": res.levels,
            }
        )
        notify("affine", "done")
        if early and cfg.pipeline.fallback_early_matched_mass > 0:
            reasons = early_fallback_reasons(res.transform, x, y, a, b, current, cfg, ms, seed)
            if reasons:
                return reasons
    # The later stages, once per candidate frame of the flow network (``flow.axes``; one run
    # without the flow stage), each from the same random state; the run whose end state fits
    # the target best (:meth:`_TailRun.score`, :func:`keep_frame`) is kept and every candidate's
    # score recorded.
    tail = [s for s in cfg.pipeline.stages if s != "affine"]
    frames = cfg.flow.axes if "flow" in tail else cfg.flow.axes[:1]
    features = (
        (_feature(src, flow_model.feature), _feature(tgt, flow_model.feature)) if flow_model else (None, None)
    )
    runs = [
        _run_tail(
            tail,
            current,
            y,
            a,
            b,
            cfg,
            ms,
            copy.deepcopy(rng),
            flow_model=flow_model,
            features=features,
            notify=notify,
            axes=axes,
            classes=classes,
        )
        for axes in frames
    ]
    run = runs[0]
    if len(runs) > 1:
        scores = [r.score(y) for r in runs]
        best = keep_frame(scores)
        run = runs[best]
        flow_record = next(r for r in run.stages if r["name"] == "flow")
        flow_record["frame_candidates"] = [
            {"axes": axes, "score": score, "seconds": r.seconds}
            for axes, score, r in zip(frames, scores, runs, strict=True)
        ]
        log.info(
            "flow.axes: %s kept (end-state scores %s)",
            frames[best],
            ", ".join(f"{axes}: {score:.4g}" for axes, score in zip(frames, scores, strict=True)),
        )
    steps += run.steps
    current = run.current
    stages += run.stages
    confidence = np.ones(len(x))
    if run.conf_points is not None:
        # Spread the subsample's confidences to every point by nearest neighbour.
        nearest = cKDTree(x[run.conf_points]).query(x, k=1, workers=-1)[1]
        confidence = run.confidence[nearest]
    transform = Composite(steps)
    # `current` is already transform.apply(x): each step was applied as it was fitted.
    warped = current if steps else x.copy()
    metrics = {
        "source_points": len(x),
        "target_points": len(y),
        "dimension": x.shape[1],
        "seed": seed,
        "device": device,
        "backend": choice.name,
        "backend_reason": choice.reason,
        "weights": weights or "uniform",
        "labels": cfg.pipeline.labels or None,
        "target_diameter": diameter,
        "chamfer_before": chamfer(x, y),
        "chamfer_after": chamfer(warped, y),
        "stage_seconds": {s["name"]: s["seconds"] for s in stages},
    }
    t0 = time.perf_counter()
    notify("reliability", "start")
    reliability = _reliability(transform, x, y, a, b, warped, run, cfg, ms, seed)
    notify("reliability", "done")
    metrics["reliability"] = reliability.to_dict()
    metrics["reliability_seconds"] = time.perf_counter() - t0
    log.info("reliability: %s (%.2f s)", reliability.verdict, metrics["reliability_seconds"])
    return Result(transform, warped, warped - x, confidence, stages, metrics, cfg, reliability)
