"""The value rules of :mod:`register.config`: typing of raw TOML values and the checks of a
built configuration.

:func:`coerce` turns one raw value (from a TOML table or a ``--set`` override) into the type
its dataclass field declares; :func:`check_values` checks the values of a whole
:class:`~register.config.PipelineConfig` against each other and against their ranges. Both
raise :class:`~register.errors.ConfigError` naming the offending key and its origin (a file
path, ``--set``). Lengths are checked in whatever unit ``pipeline.length_unit`` names (only
signs and finiteness are checked, never magnitudes).
"""

from __future__ import annotations

import math
from typing import Any, get_args, get_origin

from register.core.axes import axes_matrix
from register.errors import ConfigError
from register.kernels.select import BACKENDS

# The stages a pipeline may run, in their only possible order.
STAGES = ("affine", "flow", "spline")

_CHOICES = {
    ("pipeline", "length_unit"): ("data", "relative"),
    ("pipeline", "backend"): BACKENDS,
    ("pipeline", "mass"): ("total", "point"),
    ("affine", "mode"): ("rigid", "similarity", "affine"),
}
_POSITIVE_LISTS = {
    ("affine", "blurs"),
    ("affine", "reach"),
    ("spline", "sigmas"),
    ("spline", "blurs"),
    ("spline", "reach"),
}

_FINITE = {
    ("pipeline", "tol"),
    ("affine", "move_tol"),
    ("affine", "cluster"),
    ("spline", "regularization"),
    ("spline", "cluster"),
    ("spline", "control_spacing"),
    ("flow", "sigma"),
    ("flow", "regularization"),
}


def coerce(where: str, value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint`` (``bool``, ``int``, ``float``, ``str`` or ``list[...]`` of
    them; an int is accepted as a float, a bare value as a one-value list); ``where`` names the
    key in the error."""
    origin = get_origin(hint)
    if origin is list:
        (item,) = get_args(hint)
        if not isinstance(value, list):
            value = [value]  # a bare value is a one-value list (broadcast to every level)
        if not value:
            raise ConfigError(f"{where}: expected a non-empty list, got {value!r}")
        return [coerce(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover - programming error


def check_values(cfg: Any, origin: str) -> None:
    """Raise :class:`ConfigError` (prefixed by ``origin``) at the first value of ``cfg`` (a
    :class:`~register.config.PipelineConfig`, untyped here: :mod:`register.config` imports this
    module, never the reverse) out of its range; the checks run in a fixed order, so the same
    configuration names the same key."""
    _check_tabled(cfg, origin)
    _check_run(cfg, origin)
    _check_stage_knobs(cfg, origin)
    _check_counts(cfg, origin)


def _check_tabled(cfg: Any, origin: str) -> None:
    """The rules of the tables above (choices, positive and finite values) and the per-level
    lists' lengths (one value, or one per blur)."""
    for (table, key), choices in _CHOICES.items():
        value = getattr(getattr(cfg, table), key)
        if value not in choices:
            raise ConfigError(f"{origin}: {table}.{key} = {value!r}; choose one of {', '.join(choices)}")
    for table, key in _POSITIVE_LISTS:
        values = getattr(getattr(cfg, table), key)
        if any(not v > 0 for v in values):
            raise ConfigError(f"{origin}: {table}.{key} = {values}: every value must be > 0")
        # A blur or kernel width is a finest detail / a smoothness scale: infinite makes no
        # schedule and no kernel (only a reach may be inf: balanced OT).
        if key != "reach" and not all(math.isfinite(v) for v in values):
            raise ConfigError(f"{origin}: {table}.{key} = {values}: every value must be finite")
    for table, key in _FINITE:
        value = getattr(getattr(cfg, table), key)
        if not math.isfinite(value):
            raise ConfigError(f"{origin}: {table}.{key} = {value}: must be finite")
    for table, n_key in (("affine", "blurs"), ("spline", "blurs")):
        n = len(getattr(getattr(cfg, table), n_key))
        for key in ("reach", "sigmas", "max_iter") if table == "spline" else ("reach",):
            m = len(getattr(getattr(cfg, table), key))
            if m not in (1, n):
                raise ConfigError(
                    f"{origin}: {table}.{key} has {m} values but {table}.blurs has {n}; give one value or {n}"
                )


def _check_run(cfg: Any, origin: str) -> None:
    """``[pipeline]``: the fallback thresholds (fractions), the extent range, the stages and
    the epsilon-scaling ratio."""
    for key in ("fallback_matched_mass", "fallback_stray_fraction", "fallback_early_matched_mass"):
        value = getattr(cfg.pipeline, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{origin}: pipeline.{key} = {value}: must be in [0, 1]")
    lo, hi = cfg.pipeline.min_extent, cfg.pipeline.max_extent
    if not (math.isfinite(lo) and 0 <= lo < hi):
        raise ConfigError(
            f"{origin}: pipeline.min_extent = {lo:g}, max_extent = {hi:g}: need 0 <= min_extent < max_extent"
        )
    unknown = [s for s in cfg.pipeline.stages if s not in STAGES]
    if unknown:
        raise ConfigError(
            f"{origin}: pipeline.stages: unknown stage(s) {unknown}; choose from {', '.join(STAGES)}"
        )
    if len(set(cfg.pipeline.stages)) != len(cfg.pipeline.stages) or cfg.pipeline.stages != [
        s for s in STAGES if s in cfg.pipeline.stages
    ]:
        raise ConfigError(
            f"{origin}: pipeline.stages = {cfg.pipeline.stages}: each stage at most once, in the order "
            f"{' -> '.join(STAGES)}"
        )
    if not 0 < cfg.pipeline.scaling < 1:
        raise ConfigError(f"{origin}: pipeline.scaling = {cfg.pipeline.scaling}: must be in (0, 1)")


def _check_stage_knobs(cfg: Any, origin: str) -> None:
    """Signs of the tolerance and smoothness knobs, the matchings' clusters, reach ratios and
    floors (``[affine]``, ``[spline]``), and the flow's frames and point count."""
    for table, key in (
        ("pipeline", "tol"),
        ("spline", "regularization"),
        ("flow", "sigma"),
        ("flow", "regularization"),
    ):
        if not getattr(getattr(cfg, table), key) > 0:
            raise ConfigError(f"{origin}: {table}.{key} must be > 0")
    for table in ("affine", "spline"):
        if not getattr(cfg, table).cluster >= 0:
            raise ConfigError(
                f"{origin}: {table}.cluster = {getattr(cfg, table).cluster}: must be >= 0 (0: match the points)"
            )
    for table in ("affine", "spline"):
        ratio = getattr(cfg, table).target_reach_ratio
        if not ratio > 0:
            raise ConfigError(
                f"{origin}: {table}.target_reach_ratio = {ratio}: must be > 0 (1: symmetric; inf: "
                "every target point matched)"
            )
    for table in ("affine", "spline"):
        floor = getattr(cfg, table).reach_floor
        if not (math.isfinite(floor) and floor >= 0):
            raise ConfigError(
                f"{origin}: {table}.reach_floor = {floor}: must be a finite number >= 0 (sampling spacings; 0: off)"
            )
    if not cfg.affine.move_tol > 0:
        raise ConfigError(
            f"{origin}: affine.move_tol = {cfg.affine.move_tol}: must be > 0 (a fraction of the blur)"
        )
    if not cfg.spline.control_spacing >= 0:
        raise ConfigError(f"{origin}: spline.control_spacing = {cfg.spline.control_spacing}: must be >= 0")
    for axes in cfg.flow.axes:
        try:
            axes_matrix(axes)
        except ValueError as exc:
            raise ConfigError(f"{origin}: flow.axes = {exc}") from None
    if cfg.flow.points < 0:
        raise ConfigError(f"{origin}: flow.points must be >= 0 (0: the model's training size)")


def _check_counts(cfg: Any, origin: str) -> None:
    """Iteration caps (>= 0, 0: ``pipeline.max_iter``) and the counts that must be >= 1."""
    for table, caps in (("affine", [cfg.affine.max_iter]), ("spline", cfg.spline.max_iter)):
        if any(cap < 0 for cap in caps):
            raise ConfigError(f"{origin}: {table}.max_iter must be >= 0 (0: pipeline.max_iter)")
    for table, key in (
        ("pipeline", "max_iter"),
        ("affine", "iterations"),
        ("affine", "max_points"),
        ("spline", "iterations"),
        ("spline", "max_controls"),
        ("spline", "max_points"),
        ("flow", "max_controls"),
    ):
        if getattr(getattr(cfg, table), key) < 1:
            raise ConfigError(f"{origin}: {table}.{key} must be >= 1")
