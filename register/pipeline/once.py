"""One registration of a source onto a target with one set of settings: prepare the run (masses,
classes, lengths in data units, backend), run the affine stage, then the later stages once per
candidate frame of the flow network, keep the best frame, and report."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree

from register.config import PipelineConfig
from register.core.pointcloud import PointCloud
from register.core.transforms import Affine, Composite
from register.kernels.select import choose_backend
from register.metrics import chamfer
from register.pipeline.frames import keep_frame
from register.pipeline.inputs import feature, masses, match_classes
from register.pipeline.report import early_fallback_reasons, reliability
from register.pipeline.result import Result
from register.pipeline.steps import Context, State, run_stages
from register.stages.common import MatchSettings
from register.stages.flow import check_inputs, load_flow_model

log = logging.getLogger(__name__)


def _context(
    src: PointCloud, tgt: PointCloud, cfg: PipelineConfig, init: Affine | None, device: str
) -> tuple[Context, dict]:
    """The run's :class:`Context` (settings in data units) and the metrics it decides
    (weights, backend, target diameter). The flow model is loaded and checked here, before any work."""
    x, y = src.points, tgt.points
    flow_model = features = None
    if "flow" in cfg.pipeline.stages:
        flow_model = load_flow_model(cfg.flow, device)
        check_inputs(flow_model, len(x), len(y), x.shape[1], cfg.flow)
        features = (feature(src, flow_model.feature), feature(tgt, flow_model.feature))
    weights = cfg.pipeline.weights
    if weights and cfg.pipeline.weights_optional and not all(weights in c.point_data for c in (src, tgt)):
        log.warning("attribute '%s' missing from a cloud: uniform masses (the preset allows it)", weights)
        weights = ""
    diameter = float(np.linalg.norm(y.max(0) - y.min(0))) or 1.0
    cfg = cfg.in_data_units(diameter)
    n_match = max(min(len(x), cfg.spline.max_points), min(len(x), cfg.affine.max_points))
    m_match = max(min(len(y), cfg.spline.max_points), min(len(y), cfg.affine.max_points))
    choice = choose_backend(n_match, m_match, device, cfg.pipeline.backend)
    log.info("backend %s (%s), device %s", choice.name, choice.reason, device)
    p = cfg.pipeline
    ms = MatchSettings(choice.name, device, p.scaling, p.tol, p.max_iter, p.mass, p.warm_start)
    ctx = Context(
        target=y,
        source_mass=masses(src, weights),
        target_mass=masses(tgt, weights),
        cfg=cfg,
        match=ms,
        classes=match_classes(src, tgt, p.labels),
        init=init,
        flow_model=flow_model,
        features=features or (None, None),
    )
    decided = {
        "backend": choice.name,
        "backend_reason": choice.reason,
        "weights": weights or "uniform",
        "target_diameter": diameter,
    }
    return ctx, decided


def _frames(ctx: Context, state: State, rng: np.random.Generator, notify) -> State:
    """The stages after the affine one, once per candidate frame of the flow network
    (``flow.axes``; one run without the flow stage), each from the same state and random state;
    the end state that fits the target best (:meth:`State.score`, :func:`keep_frame`) is kept
    and every candidate's score recorded in the flow stage's record."""
    cfg = ctx.cfg
    tail = [s for s in cfg.pipeline.stages if s != "affine"]
    frames = cfg.flow.axes if "flow" in tail else cfg.flow.axes[:1]
    runs = [
        run_stages(
            tail,
            ctx,
            State(state.current),
            copy.deepcopy(rng),
            notify,
            axes=axes,
            tag=f"frame {axes}" if len(frames) > 1 else "",
        )
        for axes in frames
    ]
    best = 0
    if len(runs) > 1:
        scores = [r.score(ctx.target) for r in runs]
        best = keep_frame(scores)
        flow_record = next(r for r in runs[best].records if r["name"] == "flow")
        flow_record["frame_candidates"] = [
            {"axes": axes, "score": score, "seconds": r.seconds}
            for axes, score, r in zip(frames, scores, runs, strict=True)
        ]
        log.info(
            "flow.axes: %s kept (end-state scores %s)",
            frames[best],
            ", ".join(f"{axes}: {score:.4g}" for axes, score in zip(frames, scores, strict=True)),
        )
    run = runs[best]
    return State(
        run.current,
        state.steps + run.steps,
        state.records + run.records,
        run.confidence,
        run.conf_points,
        run.cost,
        state.seconds + run.seconds,
    )


def register_once(
    src: PointCloud,
    tgt: PointCloud,
    cfg: PipelineConfig,
    init: Affine | None,
    device: str,
    seed: int,
    notify: Callable[[str, str], None],
    *,
    early: bool = False,
) -> Result | list[str]:
    """One registration of ``src`` onto ``tgt`` with ``cfg`` (arguments checked by
    :func:`register.pipeline.register`).

    With ``early`` (a fallback is configured) and ``pipeline.fallback_early_matched_mass > 0``,
    the run stops after its affine stage when :func:`register.pipeline.report.early_fallback_reasons` finds any,
    and returns them instead of a result."""
    x, y = src.points, tgt.points
    ctx, decided = _context(src, tgt, cfg, init, device)
    cfg = ctx.cfg
    rng = np.random.default_rng(seed)
    without_affine = init is not None and "affine" not in cfg.pipeline.stages
    state = State(init.apply(x), [init]) if without_affine else State(x)
    if "affine" in cfg.pipeline.stages:
        run_stages(["affine"], ctx, state, rng, notify)
        if early and cfg.pipeline.fallback_early_matched_mass > 0:
            a, b = ctx.source_mass, ctx.target_mass
            reasons = early_fallback_reasons(state.steps[-1], x, y, a, b, state.current, cfg, ctx.match, seed)
            if reasons:
                return reasons
    state = _frames(ctx, state, rng, notify)
    return _result(x, y, ctx, state, decided, seed, device, notify)


def _result(x, y, ctx: Context, state: State, decided: dict, seed: int, device: str, notify) -> Result:
    """The :class:`Result` of a finished run: the composite transform, confidences spread to
    every source point, the metrics and the reliability report."""
    confidence = np.ones(len(x))
    if state.conf_points is not None:
        # Spread the subsample's confidences to every point by nearest neighbour.
        nearest = cKDTree(x[state.conf_points]).query(x, k=1, workers=-1)[1]
        confidence = state.confidence[nearest]
    transform = Composite(state.steps)
    # `state.current` is already transform.apply(x): each step was applied as it was fitted.
    warped = state.current if state.steps else x.copy()
    metrics = {
        "source_points": len(x),
        "target_points": len(y),
        "dimension": x.shape[1],
        "seed": seed,
        "device": device,
        "backend": decided["backend"],
        "backend_reason": decided["backend_reason"],
        "weights": decided["weights"],
        "labels": ctx.cfg.pipeline.labels or None,
        "target_diameter": decided["target_diameter"],
        "chamfer_before": chamfer(x, y),
        "chamfer_after": chamfer(warped, y),
        "stage_seconds": {s["name"]: s["seconds"] for s in state.records},
    }
    t0 = time.perf_counter()
    notify("reliability", "start")
    a, b = ctx.source_mass, ctx.target_mass
    rel = reliability(transform, x, y, a, b, warped, state, ctx.cfg, ctx.match, seed)
    notify("reliability", "done")
    metrics["reliability"] = rel.to_dict()
    metrics["reliability_seconds"] = time.perf_counter() - t0
    log.info("reliability: %s (%.2f s)", rel.verdict, metrics["reliability_seconds"])
    return Result(transform, warped, warped - x, confidence, state.records, metrics, ctx.cfg, rel)
