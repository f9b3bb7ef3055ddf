"""Stage 2: deep point-flow prediction, projected onto a smooth kernel field (stage 2.b).

1. The network (:mod:`register.models`) sees the source as moved by the previous stages,
   ``z = T(x)``, and the target ``y``, both subsampled (seeded) to the number of points it was
   trained on and turned into the model's frame (``R z``, ``R y`` with ``R`` the matrix of one
   frame of ``flow.axes``, :mod:`register.core.axes`; the pipeline runs the stage once per
   candidate frame), and predicts a flow ``F_i`` for every fed source point ``z_i`` (data
   units, turned back: ``R^T F``).
2. The raw flow is projected onto the pipeline's smooth deformation model: the same
   confidence-weighted kernel ridge regression as the spline stage
   (:func:`~register.stages.spline.fit_kernel_field`, eq. (4) there) with ``d_i = F_i`` and

       w_i = a_i exp(-dist(z_i + F_i, y)^2 / (2 sigma^2))                                 (1)

   (``a_i`` the source mass, ``dist`` the distance to the nearest target point): a flow that
   sends a point far from every target point (an outlier, a region missing from the target)
   counts less. The result is a :class:`~register.core.transforms.KernelField` ``v``:
   smooth, evaluable at any point (``register warp``), composing with the other stages as
   ``T <- (id + v) o T``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from register.config import FlowConfig
from register.core.axes import axes_matrix
from register.core.kernel_fit import fit_kernel_field
from register.core.sampling import subsample_indices
from register.core.transforms import KernelField
from register.errors import InputError
from register.models.checkpoint import FlowModel

log = logging.getLogger(__name__)


@dataclass
class FlowResult:
    """Output of :func:`flow_predict`.

    Attributes:
        field: the projected smooth field ``v`` (acts in the frame left by the previous stages).
        indices: indices (into the stage's source points) of the points fed to the network.
        flow: ``(n, 3)`` raw network flow of those points, data units.
        weights: ``(n,)`` regression weights (1), before normalisation.
        residual: mean ``|v(z_i) - F_i|`` over those points: the part of the raw flow the smooth
            field does not follow (data units).
        network_seconds: wall time of the network's forward pass; seconds: of the whole stage.
    """

    field: KernelField
    indices: np.ndarray
    flow: np.ndarray
    weights: np.ndarray
    residual: float
    network_seconds: float
    seconds: float


def load_flow_model(cfg: FlowConfig, device: str = "cpu") -> FlowModel:
    """The model named by ``flow.model``; :class:`InputError` naming ``pipeline.stages`` otherwise."""
    from register.models.registry import load_model

    try:
        return load_model(cfg.model, device, option="flow.model")
    except InputError as exc:
        raise InputError(f"pipeline.stages has 'flow': {exc}") from None


def check_inputs(model: FlowModel, n_source: int, n_target: int, dim: int, cfg: FlowConfig) -> None:
    """Refuse clouds the network cannot take (2-D, or too few points), before any work."""
    if dim != 3:
        raise InputError(
            f"pipeline.stages has 'flow': the flow network works on 3-D clouds, these are {dim}-D; drop 'flow'"
        )
    need = model.net.cfg.min_points()
    have = min(n_source, n_target, cfg.points or model.points)
    if have < need:
        if min(n_source, n_target) < need:  # the clouds themselves are too small
            fix = "run without it: pipeline.stages = ['affine', 'spline']"
        else:
            fix = f"raise flow.points to at least {need}, or run without it: pipeline.stages = ['affine', 'spline']"
        raise InputError(
            f"pipeline.stages has 'flow': the flow network needs at least {need} points per cloud, got {have} "
            f"(source {n_source}, target {n_target}, flow.points = {cfg.points}); {fix}"
        )


def flow_predict(
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    cfg: FlowConfig,
    model: FlowModel,
    *,
    rng: np.random.Generator,
    source_feature: np.ndarray | None = None,
    target_feature: np.ndarray | None = None,
    axes: str | None = None,
) -> FlowResult:
    """Predict the flow of ``x`` towards ``y`` and project it onto a smooth field.

    Args:
        x: ``(N, 3)`` source points after the previous stages, data units; y: ``(M, 3)`` target.
        a: ``(N,)`` source masses.
        cfg: stage settings, lengths in data units; model: the loaded network.
        rng: seeded generator for the subsamples.
        source_feature: ``(N,)``, target_feature: ``(M,)`` values of ``model.feature`` (e.g.
            vessel radius, data units), or ``None``.
        axes: the frame the network sees the clouds in (one spec of ``flow.axes``; default the
            first of ``cfg.axes``).

    Returns:
        :class:`FlowResult`.
    """
    t0 = time.perf_counter()
    n = cfg.points or model.points
    check_inputs(model, len(x), len(y), x.shape[1], cfg)
    ix, iy = subsample_indices(len(x), n, rng), subsample_indices(len(y), n, rng)
    z = x[ix]
    fs = None if source_feature is None else source_feature[ix]
    ft = None if target_feature is None else target_feature[iy]
    t_net = time.perf_counter()
    r = axes_matrix(axes or cfg.axes[0])  # rows: the model's axes in data coordinates
    flow = model.predict(z @ r.T, y[iy] @ r.T, fs, ft) @ r
    network_seconds = time.perf_counter() - t_net
    # Regression weights (1): source mass times a Gaussian of the landing distance.
    landing = cKDTree(y).query(z + flow, k=1, workers=-1)[0]
    w = a[ix] * np.exp(-(landing**2) / (2 * cfg.sigma**2))
    if not w.sum() > 0:
        raise InputError(
            "pipeline.stages has 'flow': the network's flow sends every point far from the target; drop 'flow'"
        )
    ic = subsample_indices(len(z), cfg.max_controls, rng)
    fld = fit_kernel_field(z, flow, w, z[ic], cfg.sigma, cfg.regularization)
    residual = float(np.linalg.norm(fld.displacement(z) - flow, axis=1).mean())
    log.info(
        "flow: %d points, mean |F| %.4g, projection residual %.4g (sigma %.4g, %d controls)",
        len(z),
        float(np.linalg.norm(flow, axis=1).mean()),
        residual,
        cfg.sigma,
        len(ic),
    )
    return FlowResult(fld, ix, flow, w, residual, network_seconds, time.perf_counter() - t0)
