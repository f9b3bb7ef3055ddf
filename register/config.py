"""Typed, strict pipeline configuration, loaded from TOML presets.

A configuration has one table per part: ``[pipeline]``, ``[affine]``, ``[flow]``, ``[spline]``.
Every key is typed and checked (the rules: :mod:`register.config_checks`); an unknown key or a
bad value raises :class:`ConfigError` naming it. Presets live in the top-level folder
``pipelines/<name>.toml`` (installed as ``register/pipelines/`` inside the wheel); a user file
with the same tables (all keys optional) can be given instead of a preset name.

Length knobs (``blurs``, ``reach``, ``sigmas``) are in the unit named by
``pipeline.length_unit``: ``"data"`` (the points' own units, e.g. mm) or ``"relative"``
(fractions of the target's bounding-box diagonal, scale-free). :meth:`PipelineConfig.in_data_units`
resolves them to data units before the stages run.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from register.config_checks import STAGES as STAGES
from register.config_checks import check_values, coerce
from register.errors import ConfigError


def _preset_dir() -> Path:
    """The presets' folder: ``register/pipelines`` inside an installed wheel (``pyproject.toml``
    maps the top-level ``pipelines/`` there), else ``pipelines/`` beside the package in a source
    checkout or an editable install."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "pipelines", here.parent / "pipelines"):
        if (candidate / "default.toml").is_file():
            return candidate
    raise ConfigError(
        f"the preset folder is missing: neither {here / 'pipelines'} nor {here.parent / 'pipelines'}"
    )


PRESET_DIR = _preset_dir()


@dataclass(frozen=True)
class AffineConfig:
    """Stage 1, affine RobOT pre-alignment.

    Attributes:
        mode: ``rigid`` (rotation + translation), ``similarity`` (+ isotropic scale) or ``affine``.
        blurs: matching blur per level, coarse to fine (length unit).
        reach: OT reach per level (length unit; ``inf`` = balanced). One value is broadcast.
        target_reach_ratio: the target marginal's reach is ``target_reach_ratio * reach``
            (``register.ot.robust_match``'s ``target_reach``); 1: symmetric. Above 1, unmatched
            target mass costs more than unmatched source mass, so the source cannot shrink onto
            part of the target while its own missing or extra parts still drop out.
        reach_floor: every reach of the stage is at least this many sampling spacings of the
            target points it matches (the median distance of a point to its nearest neighbour,
            :func:`register.core.sampling.sampling_spacing`); 0: off. A reach below the spacing
            drops every point whose partner sample is merely one spacing away, which is all of
            them when the clouds were sampled independently; a global map needs no finer reach.
        iterations: at most this many match-then-fit rounds per level (a level stops once no
            point moves by more than ``move_tol`` times its blur).
        move_tol: a level's rounds stop once a round moves no point by more than this fraction
            of the level's blur.
        multistart: start from 28 rotations in 3-D (24 cube rotations, 4 principal-axis
            alignments; 14 in 2-D), keep the best (for rotations beyond ~45 degrees).
        max_points: matching runs on at most this many points per cloud (seeded subsample).
        max_iter: cap on Sinkhorn iterations at the final blur of this stage's matchings
            (0: ``pipeline.max_iter``). A global least-squares fit needs less converged plans
            than the spline stage's local displacements.
        cluster: matchings run on voxel clusters of side ``cluster * blur`` of the source (in
            its original frame) and the target (weighted centroids, summed masses), and the map
            is fitted to the clusters' matches (an affine map sends centroids to centroids);
            0: on the points.
    """

    mode: str = "affine"
    blurs: list[float] = field(default_factory=lambda: [0.1, 0.05, 0.02])
    reach: list[float] = field(default_factory=lambda: [math.inf])
    target_reach_ratio: float = 1.0
    reach_floor: float = 0.0
    iterations: int = 10
    move_tol: float = 0.01
    multistart: bool = False
    max_points: int = 3000
    max_iter: int = 0
    cluster: float = 0.0


@dataclass(frozen=True)
class FlowConfig:
    """Stage 2, deep point-flow prediction, projected onto a smooth kernel field (stage 2.b).

    Attributes:
        model: a shipped model name (``register info`` lists them) or the path of a checkpoint
            written by ``register train``.
        sigma: Gaussian kernel width of the smooth field the network's flow is projected onto
            (length unit): detail finer than this is left to the spline stage.
        regularization: weight of the smoothness (RKHS norm) term of the projection, relative to
            the data term (dimensionless; larger is smoother).
        max_controls: at most this many control points carry the field.
        points: points per cloud fed to the network (seeded subsample); 0 = as many as the
            model was trained on.
        axes: candidate frames of the network: each names the data axes that play the model's
            ``x``, ``y`` and ``z``, optionally signed (:mod:`register.core.axes`). The network
            is not rotation invariant: clouds must reach it in the frame it was trained in
            (``sceneflow``: ``x`` forward, ``y`` left, ``z`` up; a camera frame, ``x`` right,
            ``y`` down, ``z`` forward, is ``"z,-x,-y"``). With several, the flow and spline
            stages run once per frame and the end state that fits the target best is kept
            (the spline stage's final matching cost; the chamfer distance without it); a
            later frame must score 1 % lower than the first to replace it.
    """

    model: str = "shapes"
    sigma: float = 0.05
    regularization: float = 1e-3
    max_controls: int = 2000
    points: int = 0
    axes: list[str] = field(default_factory=lambda: ["x,y,z"])


@dataclass(frozen=True)
class SplineConfig:
    """Stage 3, spline RobOT post-processing.

    Attributes:
        sigmas: Gaussian kernel width of the fitted field per level, coarse to fine (length unit).
        blurs: matching blur per level (length unit).
        reach: OT reach per level (length unit; ``inf`` = balanced). One value is broadcast.
        target_reach_ratio: the target marginal's reach over ``reach`` (as ``affine.``).
        reach_floor: reaches of at least this many target sampling spacings (as ``affine.``).
        iterations: match-then-fit rounds per level.
        regularization: weight of the smoothness (RKHS norm) term, relative to the data
            term (dimensionless; larger is smoother).
        max_controls: at most this many control points carry the field.
        control_spacing: where at most ``max_controls`` voxels of side ``control_spacing *
            sigma`` hold matched points, their centroids are the controls (a wide kernel needs
            few); otherwise, and always when 0, a fixed seeded subsample of ``max_controls``
            matched points.
        max_points: matching runs on at most this many points per cloud.
        max_iter: cap on Sinkhorn iterations at the final blur of each level's matchings
            (0: ``pipeline.max_iter``); one value per level or one for all (a bare number is
            one value).
        cluster: matchings run on voxel clusters of side ``cluster * blur`` (weighted
            centroids, summed masses; :mod:`register.core.clusters`) instead of the points;
            0: on the points. Detail finer than the blur is not resolved by the matching, so
            merging it costs little accuracy and saves most of the work at coarse blurs.
        debias: fit the field to the debiased displacements ``T_xy(z_i) - T_xx(z_i)`` (the
            target barycentre minus the source's own barycentre at the same blur: the gradient
            of the Sinkhorn divergence) instead of ``T_xy(z_i) - z_i``, so that the entropic
            blur does not pull the boundary of the source inwards.
        holdout: each round passes a two-fold check of its matches (:mod:`register.stages.holdout`):
            a field fitted to half of them must predict the other half better than no motion,
            else the round is refitted smoother, and dropped when no smoothing helps; a dropped
            round ends its level, two in a row end the stage. Skipped while the clouds share
            samples (keypoint pairs, a damaged copy of one cloud).
    """

    sigmas: list[float] = field(default_factory=lambda: [0.2, 0.1, 0.05])
    blurs: list[float] = field(default_factory=lambda: [0.04, 0.02, 0.01])
    reach: list[float] = field(default_factory=lambda: [math.inf])
    target_reach_ratio: float = 1.0
    reach_floor: float = 0.0
    iterations: int = 1
    regularization: float = 1e-3
    max_controls: int = 2000
    control_spacing: float = 0.5
    max_points: int = 6000
    max_iter: list[int] = field(default_factory=lambda: [0])
    cluster: float = 0.0
    debias: bool = False
    holdout: bool = False


@dataclass(frozen=True)
class RunConfig:
    """Settings of the whole run.

    Attributes:
        stages: stages to run, in pipeline order (subset of ``affine``, ``flow``, ``spline``).
        length_unit: ``data`` or ``relative`` (see module docstring).
        weights: name of a point attribute used as per-point mass ("" = uniform).
        weights_optional: when true, clouds without the ``weights`` attribute get uniform
            masses (logged and recorded in the metrics); when false that is an error.
        labels: name of an integer point attribute both clouds carry (artery / vein, lobe):
            points match points of the same label only ("" = no labels). Kept by the fallback
            settings (it describes the data, not the method).
        mass: ``total`` (each cloud has total mass 1: clouds of different densities) or
            ``point`` (one unit of mass per point in both clouds: extra target points such
            as outliers or clutter add mass instead of diluting the inliers).
        backend: kernel backend, ``auto``, ``dense``, ``sparse``, ``keops`` or ``geomloss``.
        scaling: ratio of successive blurs in Sinkhorn's epsilon-scaling, in (0, 1).
        tol: Sinkhorn stops when potentials move less than ``tol * blur^2``.
        max_iter: cap on Sinkhorn iterations at the final blur.
        warm_start: each matching of a stage starts from the potentials of the previous one
            (same clouds, source moved by the last fit): its epsilon schedule then runs from
            the previous blur instead of the diameter. Off by default: the presets were tuned
            with ``max_iter`` Sinkhorn steps from scratch per matching, and warm starts carry the
            balanced plans further towards convergence, which matches worse (Lung250M-4B case
            002: 1.26 -> 4.52 mm).
        fallback: settings (a preset name or a ``.toml`` path; "" = none) with which the
            registration runs again, from the inputs, when the first result's reliability
            report is suspect, its matched mass is below ``fallback_matched_mass``, or its
            counterparts (:mod:`register.partners`) say the pair is incomplete: the
            balanced schedules that are most accurate on complete pairs (every point with a
            partner) can end far off when the clouds are not complete. The second result is
            kept unless it is suspect while the first was not. ``--set`` changes the first
            run only; the fallback settings may not have a fallback of their own.
        fallback_matched_mass: matched mass (the reliability report's, in [0, 1]) below which
            the fallback runs: complete, well-registered pairs leave ~5 % of the mass unmatched
            (the entropic blur of the report's matching); below 0.9, a tenth of the mass has
            no counterpart within the report's reach. The same threshold applies to a copy pair's
            partnered fraction (``register.partners`` (1): complete copy pairs read 0.99-1.00).
        fallback_stray_fraction: stray fraction (``register.partners`` (2)) above which the
            fallback runs: complete pairs after registration leave at most 0.2 % of either
            cloud stray (Lung250M-4B keypoints), outliers scattered around a shape about 1 %.
        fallback_early_matched_mass: the same test once already after the affine stage, with
            this threshold (0: off): below it, the first run stops there and the fallback runs
            at once (a pair that far from complete will call for it anyway).
        units: the physical unit the settings' lengths assume (``millimetres``, ``metres``;
            "" for none), named by the extent check's message.
        min_extent, max_extent: the range of a cloud's bounding-box diagonal, in data units,
            that settings with ``units`` expect: a cloud outside it is refused before any work
            (a lung given in metres, a normalised shape given to a millimetre preset), since
            every blur, reach and kernel width would be off by the same factor. 0 and inf: no
            check.
    """

    stages: list[str] = field(default_factory=lambda: ["affine", "spline"])
    length_unit: str = "relative"
    weights: str = ""
    weights_optional: bool = False
    labels: str = ""
    mass: str = "total"
    backend: str = "auto"
    scaling: float = 0.5
    tol: float = 1e-3
    max_iter: int = 10
    warm_start: bool = False
    fallback: str = ""
    fallback_matched_mass: float = 0.9
    fallback_stray_fraction: float = 0.005
    fallback_early_matched_mass: float = 0.0
    units: str = ""
    min_extent: float = 0.0
    max_extent: float = math.inf


@dataclass(frozen=True)
class PipelineConfig:
    """The whole configuration: one table per part."""

    pipeline: RunConfig = field(default_factory=RunConfig)
    affine: AffineConfig = field(default_factory=AffineConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    spline: SplineConfig = field(default_factory=SplineConfig)

    def in_data_units(self, diameter: float) -> PipelineConfig:
        """Lengths multiplied by ``diameter`` when ``length_unit == "relative"``."""
        if self.pipeline.length_unit == "data":
            return self
        scale = diameter

        def scaled(values: list[float]) -> list[float]:
            return [v * scale for v in values]

        return replace(
            self,
            pipeline=replace(self.pipeline, length_unit="data"),
            affine=replace(self.affine, blurs=scaled(self.affine.blurs), reach=scaled(self.affine.reach)),
            flow=replace(self.flow, sigma=self.flow.sigma * scale),
            spline=replace(
                self.spline,
                sigmas=scaled(self.spline.sigmas),
                blurs=scaled(self.spline.blurs),
                reach=scaled(self.spline.reach),
            ),
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


def from_dict(
    data: dict[str, Any], origin: str = "config", base: PipelineConfig | None = None
) -> PipelineConfig:
    """Build a checked :class:`PipelineConfig` from nested tables, over ``base`` (defaults)."""
    base = base or PipelineConfig()
    tables = {f.name: f for f in fields(PipelineConfig)}
    updates = {}
    for table, values in data.items():
        if table not in tables:
            raise ConfigError(f"{origin}: unknown table [{table}]; known tables: {', '.join(tables)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{table}] must be a table of keys")
        current = getattr(base, table)
        hints = get_type_hints(type(current))
        changes = {}
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(
                    f"{origin}: unknown key '{table}.{key}'; known keys of [{table}]: {', '.join(hints)}"
                )
            changes[key] = coerce(f"{origin}: {table}.{key}", value, hints[key])
        updates[table] = replace(current, **changes)
    cfg = replace(base, **updates)
    check_values(cfg, origin)
    return cfg


def preset_names() -> list[str]:
    """Names of the bundled presets (``default``, ``lung``, ...)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_config(name_or_path: str = "default") -> PipelineConfig:
    """Load a bundled preset by name, or a TOML file by path; strict (see module docstring)."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PRESET_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise ConfigError(
                f"config={name_or_path!r}: unknown preset; choose one of {', '.join(preset_names())} "
                "or give a path to a .toml file"
            )
    elif not path.is_file():
        raise ConfigError(f"config={str(path)!r}: file not found")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(data, origin=str(path))


def with_overrides(cfg: PipelineConfig, assignments: list[str]) -> PipelineConfig:
    """Apply ``table.key=value`` overrides (values parsed as TOML, e.g. ``affine.mode="rigid"``)."""
    data: dict[str, dict[str, Any]] = {}
    for item in assignments:
        dotted, sep, raw = item.partition("=")
        table, dot, key = dotted.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(f"overrides={item!r}: expected TABLE.KEY=VALUE, e.g. affine.mode=rigid")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()  # a bare word is taken as a string: affine.mode=rigid
        data.setdefault(table, {})[key] = value
    return from_dict(data, origin="overrides", base=cfg)


def with_attributes(
    cfg: PipelineConfig, *, weights: str | None = None, labels: str | None = None, origin: str = "arguments"
) -> PipelineConfig:
    """``cfg`` with the point attributes a caller names (``None``: the config's own): ``weights``
    as per-point mass (``pipeline.weights``, then required: ``weights_optional = false``) and
    ``labels`` for label-aware matching (``pipeline.labels``); checked like the config's values,
    ``origin`` naming them in messages."""
    table: dict[str, Any] = {}
    if weights is not None:
        table.update(weights=weights, weights_optional=False)
    if labels is not None:
        table["labels"] = labels
    return from_dict({"pipeline": table}, origin=origin, base=cfg) if table else cfg


def to_toml(cfg: PipelineConfig) -> str:
    """Serialise ``cfg`` as TOML (the resolved configuration written next to every result)."""

    def fmt(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return "inf" if math.isinf(value) else repr(value)
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(value, list):
            return "[" + ", ".join(fmt(v) for v in value) + "]"
        return str(value)

    lines = []
    for table, values in cfg.to_dict().items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {fmt(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)
