"""``register(source, target, config) -> Result``: chains the stages.

affine RobOT  ->  flow network (projected onto a smooth field)  ->  spline RobOT

Each stage sees the source as moved by the previous ones; the result is one
:class:`~register.core.transforms.Composite` transform, source frame -> target frame,
in the data's own units.

Modules: :mod:`.inputs` (checks before any work), :mod:`.steps` (the stage records and their
loop), :mod:`.frames` (the flow network's candidate frames), :mod:`.once` (one run with one set
of settings), :mod:`.report` (its reliability report), :mod:`.fallback` (the second run with
``pipeline.fallback``), :mod:`.result`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from register.config import PipelineConfig, load_config, with_attributes
from register.core.pointcloud import PointCloud
from register.core.transforms import Affine
from register.errors import InputError
from register.pipeline import once
from register.pipeline.fallback import fallback_config, fallback_reasons, run_summary
from register.pipeline.frames import keep_frame
from register.pipeline.inputs import MIN_POINTS, as_cloud, check_extent, match_classes, resolve_device
from register.pipeline.report import early_fallback_reasons
from register.pipeline.result import Result

__all__ = [
    "MIN_POINTS",
    "Result",
    "check_extent",
    "early_fallback_reasons",
    "fallback_reasons",
    "keep_frame",
    "match_classes",
    "register",
    "resolve_device",
]

log = logging.getLogger(__name__)


def register(
    source: PointCloud | np.ndarray,
    target: PointCloud | np.ndarray,
    config: PipelineConfig | str = "default",
    *,
    init: Affine | None = None,
    device: str = "auto",
    seed: int = 0,
    on_stage: Callable[[str, str], None] | None = None,
    weights: str | None = None,
    labels: str | None = None,
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
        on_stage: called as ``on_stage(name, "start" | "level k/n" | "done")`` (the CLI's
            progress display; ``level`` as the stage's levels pass).
        weights: a point attribute of both clouds used as per-point mass (e.g. ``"radius"``);
            replaces ``pipeline.weights`` (and the attribute must exist). ``None``: the config's.
        labels: a point attribute of both clouds holding integer labels: points match only
            points of their own label (``pipeline.labels``). ``None``: the config's.

    With ``pipeline.fallback`` set (the ``lung`` preset), a first result whose reliability
    report is suspect, or whose matched mass (source or target) is below
    ``pipeline.fallback_matched_mass``, is registered again with the fallback settings; the
    second result is kept unless it is suspect while the first was not. With
    ``pipeline.fallback_early_matched_mass``, the first run already stops after its affine stage
    when a matched mass there is below it (:func:`register.pipeline.report.early_fallback_reasons`).
    ``metrics["fallback"]`` records the choice.

    Returns:
        :class:`Result`.

    Raises:
        InputError: a bad argument (``seed``, ``device``, the clouds' shapes, NaN / Inf
            coordinates, a point far beyond the rest of its cloud) or config value.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed={seed!r}: must be a non-negative integer")
    cfg = load_config(config) if isinstance(config, str) else config
    cfg = with_attributes(cfg, weights=weights, labels=labels)
    fallback = fallback_config(cfg)
    src, tgt = as_cloud(source, "source"), as_cloud(target, "target")
    if src.points.shape[1] != tgt.points.shape[1]:
        raise InputError(
            f"{src.label} is {src.points.shape[1]}-D but {tgt.label} is {tgt.points.shape[1]}-D; "
            "both clouds must have the same dimension"
        )
    for cloud in (src, tgt):  # before any work: settings in physical units on the wrong scale
        check_extent(cfg, cloud, f"the {config} preset" if isinstance(config, str) else "these settings")
    device = resolve_device(device)
    notify = on_stage or (lambda name, state: None)
    first = once.register_once(src, tgt, cfg, init, device, seed, notify, early=fallback is not None)
    if fallback is None:
        return first
    return _with_fallback(first, src, tgt, cfg, fallback, init, device, seed, notify)


def _with_fallback(first, src, tgt, cfg, fallback, init, device, seed, notify) -> Result:
    """The result kept when ``pipeline.fallback`` is set: ``first`` (a :class:`Result`, or the
    reasons it stopped after its affine stage), or the run with the ``fallback`` settings when
    :func:`fallback_reasons` calls for it (see :func:`register`)."""
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
        second = once.register_once(src, tgt, fallback, init, device, seed, notify)
        notify("fallback", "done")
        keep_first = first is not None and bool(second.reliability.reasons) and not first.reliability.reasons
        result = first if keep_first else second
        record.update(
            kept="first" if keep_first else "fallback",
            first=None if first is None else run_summary(first),
            fallback=run_summary(second),
        )
    result.metrics["fallback"] = record
    return result
