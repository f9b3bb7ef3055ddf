"""One registration from files: read and check the inputs, register, measure.

The code path shared by ``register run SRC TGT`` and by every pair of ``register batch``, so
both write the same result for the same request:

    request = RunRequest(Path("src.ply"), Path("tgt.ply"), pipeline="lung")
    inputs = prepare(request)            # every input check; raises InputError, nothing written
    result, metrics = execute(inputs)    # the registration and its metrics.json content

Writing the result folder is :func:`register.app.outputs.write_result`'s job.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from register.app import DISTRIBUTION
from register.app.landmarks import landmark_errors, read_landmarks
from register.errors import InputError

VERSIONED_PACKAGES = (
    "register",
    "numpy",
    "scipy",
    "torch",
    "pykeops",
    "geomloss",
    "open3d-cpu",
    "open3d",
    "pyvista",
    "vtk",
    "typer",
    "rich",
)


@dataclass(frozen=True)
class RunRequest:
    """Everything one registration needs, as a user gives it.

    Attributes:
        source, target: point files (source is moved onto target; same length unit).
        pipeline: preset name or TOML path.
        stages: comma-separated stages (``"affine,spline"``), or ``None`` for the pipeline's.
        weights: point attribute used as per-point mass, or ``None`` for the pipeline's choice.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seed of every random subsample.
        overrides: ``TABLE.KEY=VALUE`` config overrides.
        backend: kernel backend, or ``None`` for the pipeline's.
        landmarks: ``(source_landmarks, target_landmarks)`` files, rows in correspondence.
        drop_nan: drop points with NaN/Inf coordinates on reading instead of refusing the file.
        labels: point attribute of label-aware matching, or ``None`` for the pipeline's.
    """

    source: Path
    target: Path
    pipeline: str = "default"
    stages: str | None = None
    weights: str | None = None
    device: str = "auto"
    seed: int = 0
    overrides: tuple[str, ...] = ()
    backend: str | None = None
    landmarks: tuple[Path, Path] | None = None
    drop_nan: bool = False
    labels: str | None = None


@dataclass
class Inputs:
    """A checked request: the configuration and the clouds, read.

    Attributes:
        request: what was asked.
        config: the :class:`~register.config.PipelineConfig` to run.
        source, target: the clouds (:class:`~register.core.pointcloud.PointCloud`).
        landmarks: ``(L, D)`` source and target landmark arrays, or ``None``.
    """

    request: RunRequest
    config: object
    source: object
    target: object
    landmarks: tuple[np.ndarray, np.ndarray] | None


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages ``register`` uses (``register``: this
    package, whose distribution is named :data:`register.app.DISTRIBUTION`)."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = metadata.version(DISTRIBUTION if pkg == "register" else pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def parse_stages(stages: str | None, cfg):
    """``cfg`` with ``pipeline.stages`` from a comma-separated ``--stages`` value (checked)."""
    from register.config import from_dict

    if stages is None:
        return cfg
    names = [s.strip() for s in stages.split(",") if s.strip()]
    return from_dict({"pipeline": {"stages": names}}, origin="--stages", base=cfg)


def build_config(
    pipeline: str = "default",
    *,
    stages: str | None = None,
    weights: str | None = None,
    overrides: tuple[str, ...] = (),
    backend: str | None = None,
    labels: str | None = None,
):
    """The checked :class:`~register.config.PipelineConfig`: the preset, then ``stages``, the
    ``TABLE.KEY=VALUE`` overrides, then ``weights``, ``labels``
    (:func:`~register.config.with_attributes`) and ``backend`` (typed values, checked like the
    config's own)."""
    from register.config import from_dict, load_config, with_attributes, with_overrides

    cfg = parse_stages(stages, load_config(pipeline))
    if overrides:
        cfg = with_overrides(cfg, list(overrides))
    cfg = with_attributes(cfg, weights=weights, labels=labels, origin="command line")
    if backend is not None:
        cfg = from_dict({"pipeline": {"backend": backend}}, origin="command line", base=cfg)
    return cfg


MAX_SEED = 2**64 - 1


def check_seed(seed, option: str = "--seed") -> None:
    """Refuse a seed that is not an integer from 0 to :data:`MAX_SEED` (the message names ``option``)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"{option} {seed}: must be a whole number from 0 to {MAX_SEED}")


def check_request(request: RunRequest) -> None:
    """Check the options of ``request`` that need no file (the seed), naming the option."""
    check_seed(request.seed)


def input_files(request: RunRequest) -> list[Path]:
    """Every file ``request`` reads: points, landmarks and a pipeline ``.toml`` (none of them may be
    inside the output folder)."""
    from register.io import file_part

    files = [
        file_part(request.source),
        file_part(request.target),
        *(Path(p) for p in request.landmarks or ()),
    ]
    if request.pipeline.endswith(".toml"):
        files.append(Path(request.pipeline))
    return files


def result_size(inputs: Inputs) -> int:
    """An upper estimate of the result folder's size for ``inputs``, bytes
    (:func:`register.app.outputs.result_bytes`)."""
    from register.app.outputs import result_bytes

    src, cfg = inputs.source, inputs.config
    values = sum(int(np.prod(v.shape[1:], dtype=int)) for v in src.point_data.values())
    stages = cfg.pipeline.stages
    levels = 1 + ("flow" in stages) + (len(cfg.spline.blurs) if "spline" in stages else 0)
    landmarks = 0 if inputs.landmarks is None else len(inputs.landmarks[0])
    return result_bytes(len(src), src.points.shape[1], values, levels, landmarks)


def prepare(request: RunRequest) -> Inputs:
    """Check ``request`` and read its files.

    Raises:
        InputError: a bad option, config value or file (the message names it).
    """
    from register.io import read_points
    from register.pipeline import MIN_POINTS, check_extent

    check_request(request)
    r = request
    cfg = build_config(
        r.pipeline,
        stages=r.stages,
        weights=r.weights,
        overrides=r.overrides,
        backend=r.backend,
        labels=r.labels,
    )
    src = read_points(request.source, min_points=MIN_POINTS, drop_nan=r.drop_nan)
    tgt = read_points(request.target, min_points=MIN_POINTS, drop_nan=r.drop_nan)
    settings = f"the settings of {r.pipeline}" if r.pipeline.endswith(".toml") else f"the {r.pipeline} preset"
    for cloud in (src, tgt):
        check_extent(cfg, cloud, settings)
    pairs = read_landmarks(request.landmarks, src.points.shape[1]) if request.landmarks else None
    return Inputs(request, cfg, src, tgt, pairs)


def execute(inputs: Inputs, on_stage: Callable[[str, str], None] | None = None):
    """Register the prepared clouds.

    Args:
        inputs: from :func:`prepare`.
        on_stage: progress callback ``on_stage(name, "start" | "level k/n" | "done")``.

    Returns:
        ``(result, metrics)``: the :class:`~register.pipeline.Result` and the content of
        ``metrics.json`` (times in s, counts, chamfer before/after in data units, TRE when
        landmarks are given, versions).
    """
    from register.pipeline import register

    req = inputs.request
    t0 = time.perf_counter()
    result = register(
        inputs.source, inputs.target, inputs.config, device=req.device, seed=req.seed, on_stage=on_stage
    )
    seconds = time.perf_counter() - t0
    metrics = {
        **result.metrics,
        # Absolute, so that `register show` finds them from any folder (write_result adds
        # the paths relative to the result folder, for a project moved as a whole).
        "source": os.path.abspath(req.source),
        "target": os.path.abspath(req.target),
        "pipeline": req.pipeline,
        "total_seconds": seconds,
        "stages": result.stages,
        "versions": versions(),
    }
    if req.drop_nan:
        metrics["dropped_points"] = {"source": inputs.source.dropped, "target": inputs.target.dropped}
    if inputs.landmarks is not None:
        metrics["landmarks"] = {
            **landmark_errors(result.transform, *inputs.landmarks),
            "files": [os.path.abspath(p) for p in req.landmarks],
        }
    return result, metrics
