"""The stages as records (name, function, settings type, result type) and the loop that runs them.

Each stage function reads the run's fixed :class:`Context` and the :class:`State` left by the
stages before it (the transform steps so far, the source points as they moved), appends its
own transform steps, moves the points, and returns the fields of its record in
``metrics["stages"]`` (the loop adds ``name`` and ``seconds``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from register.config import AffineConfig, FlowConfig, PipelineConfig, SplineConfig
from register.core.transforms import Affine, Composite
from register.metrics import chamfer
from register.stages.affine import AffineResult, affine_robot
from register.stages.common import MatchSettings
from register.stages.flow import FlowResult, flow_predict
from register.stages.spline import SplineResult, spline_robot

# ``on_level(done, total)``: a stage's levels as they pass (progress displays).
Levels = Callable[[int, int], None]


@dataclass(frozen=True)
class Context:
    """What every stage of one run sees, fixed for the run.

    Attributes:
        target: ``(M, D)`` target points, data units.
        source_mass, target_mass: ``(N,)``, ``(M,)`` per-point masses.
        cfg: the settings, lengths in data units.
        match: the run's matcher (backend, device, mass normalisation, Sinkhorn caps).
        classes: the ``(N,)`` / ``(M,)`` classes of label-aware matching, or None.
        init: the initial affine map of the affine stage, or None.
        flow_model: the loaded flow network (when the run has the flow stage), else None.
        features: the flow network's source and target point features (or None each).
    """

    target: np.ndarray
    source_mass: np.ndarray
    target_mass: np.ndarray
    cfg: PipelineConfig
    match: MatchSettings
    classes: tuple[np.ndarray, np.ndarray] | None = None
    init: Affine | None = None
    flow_model: object | None = None
    features: tuple = (None, None)


@dataclass
class State:
    """What the stages pass on.

    Attributes:
        current: ``(N, D)`` the source points moved by ``steps``, data units.
        steps: the transforms fitted so far, in order (each acts in the frame left by the previous).
        records: the stage records so far.
        confidence: ``(n,)`` confidences of the spline stage's last matching on its subsample
            ``conf_points`` (indices into the source); None without that stage.
        cost: the spline stage's final matching cost (squared data units), None without it.
    """

    current: np.ndarray
    steps: list = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    confidence: np.ndarray | None = None
    conf_points: np.ndarray | None = None
    cost: float | None = None
    seconds: float = 0.0

    def score(self, target: np.ndarray) -> float:
        """How well the end state fits ``target``, lower is better: the final matching cost when
        the spline stage ran (same clouds, blur and reach for every candidate frame), else the
        chamfer distance (data units)."""
        return float(self.cost) if self.cost is not None else chamfer(self.current, target)


def _affine(ctx: Context, state: State, rng: np.random.Generator, axes: str | None, on_level: Levels) -> dict:
    res = affine_robot(
        state.current,
        ctx.target,
        ctx.source_mass,
        ctx.target_mass,
        ctx.cfg.affine,
        ctx.match,
        rng=rng,
        init=ctx.init,
        classes=ctx.classes,
        on_level=on_level,
    )
    state.steps.append(res.transform)
    state.current = res.transform.apply(state.current)
    return {
        "cost": res.cost,
        "matrix": res.transform.matrix.tolist(),
        "translation": res.transform.translation.tolist(),
        "multistart_choice": res.start,
        "levels": res.levels,
    }


def _flow(ctx: Context, state: State, rng: np.random.Generator, axes: str | None, on_level: Levels) -> dict:
    res = flow_predict(
        state.current,
        ctx.target,
        ctx.source_mass,
        ctx.cfg.flow,
        ctx.flow_model,
        rng=rng,
        source_feature=ctx.features[0],
        target_feature=ctx.features[1],
        axes=axes,
    )
    state.steps.append(res.field)
    state.current = res.field.apply(state.current)
    return {
        "network_seconds": res.network_seconds,
        "model": ctx.flow_model.name,
        "axes": axes,
        "points": len(res.indices),
        "sigma": ctx.cfg.flow.sigma,
        "mean_flow": float(np.linalg.norm(res.flow, axis=1).mean()),
        "projection_residual": res.residual,
    }


def _spline(ctx: Context, state: State, rng: np.random.Generator, axes: str | None, on_level: Levels) -> dict:
    # The spline stage's classes: the flow network has none.
    res = spline_robot(
        state.current,
        ctx.target,
        ctx.source_mass,
        ctx.target_mass,
        ctx.cfg.spline,
        ctx.match,
        rng=rng,
        classes=ctx.classes,
        on_level=on_level,
    )
    state.steps.extend(res.fields)
    state.confidence, state.conf_points, state.cost = res.confidence, res.indices, res.cost
    state.current = Composite(res.fields).apply(state.current)
    return {"cost": res.cost, "levels": res.levels}


@dataclass(frozen=True)
class Stage:
    """One stage: its name in ``pipeline.stages``, the function that runs it (``run(ctx, state,
    rng, axes, on_level)``), the config table it reads (``settings``) and what its library
    function returns (``result``)."""

    name: str
    run: Callable[[Context, State, np.random.Generator, str | None, Levels], dict]
    settings: type
    result: type


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("affine", _affine, AffineConfig, AffineResult),
        Stage("flow", _flow, FlowConfig, FlowResult),
        Stage("spline", _spline, SplineConfig, SplineResult),
    )
}


def run_stages(
    names: list[str],
    ctx: Context,
    state: State,
    rng: np.random.Generator,
    notify: Callable[[str, str], None],
    axes: str | None = None,
    tag: str = "",
) -> State:
    """Run the stages ``names`` in order on ``state`` (changed in place and returned); ``axes``:
    the flow network's frame. ``notify(name, "start" | "done")`` around each stage and
    ``notify(name, "level k/n")`` as its levels pass (stages with levels), the name followed by
    `` (tag)`` when ``tag`` is given (e.g. the candidate frame)."""
    t_start = time.perf_counter()
    for name in names:
        shown = f"{name} ({tag})" if tag else name
        notify(shown, "start")
        t0 = time.perf_counter()
        fields = STAGES[name].run(
            ctx, state, rng, axes, lambda done, total, s=shown: notify(s, f"level {done}/{total}")
        )
        state.records.append({"name": name, "seconds": time.perf_counter() - t0, **fields})
        notify(shown, "done")
    state.seconds += time.perf_counter() - t_start
    return state
