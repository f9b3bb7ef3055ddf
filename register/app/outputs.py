"""Write a registration result folder, all or nothing, never over anything register did not write.

Layout of ``OUTDIR``:
    transform.npz        the composite transform (``register warp`` reuses it)
    warped.<ext>         the source moved into the target frame, in the source's format,
                         with point attributes ``displacement`` (N, D) and ``confidence`` (N,)
    field.npz            arrays ``points``, ``displacement``, ``confidence`` (source points)
    field.vtk            the same as legacy VTK, for ParaView
    metrics.json         times, counts, residuals, versions, device, seed, input paths
    config.toml          the resolved configuration (lengths in data units)

One routine writes every result folder (``register run``, each pair of ``register batch``):

    out = check_output(Path("out"), overwrite=False, inputs=[src, tgt])   # before any work
    out.check_space(result_bytes(n_points, dim, values, levels))          # once sizes are known
    ...                                                                   # the registration
    write_result(out, source, result, metrics)                            # the commit

This module holds the result files' writers (:func:`write_result`, :func:`result_bytes`,
:func:`json_safe`). The checks before any work and the atomic commit are
:mod:`register.app.output_folder` (:func:`check_output`, :class:`OutputFolder`); reading a
folder back for viewing is :mod:`register.app.result_reader` (:func:`read_result`). Both stay
importable from here.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

# check_output and read_result are re-exported: register.app.cli imports them from here.
from register.app.output_folder import OutputFolder, check_output, warped_name
from register.app.result_reader import read_result
from register.config import to_toml
from register.core.pointcloud import PointCloud


def json_safe(value):
    """``value`` with non-finite floats as strings (``"inf"``), so the JSON is standard."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def result_bytes(n_points: int, dim: int, values: int = 0, levels: int = 1, landmarks: int = 0) -> int:
    """An upper estimate of a result folder's size, bytes.

    Args:
        n_points: source points ``N``; dim: ``D``.
        values: numbers per point in the source's attributes (columns of ``point_data``).
        levels: kernel fields in the transform (each at most ``N`` controls and weights).
        landmarks: landmark pairs (per-landmark errors in ``metrics.json``).
    """
    text = 25  # bytes of a float64 written as text (the largest of the formats)
    warped = n_points * (2 * dim + 1 + values) * text
    field = n_points * (2 * dim + 1) * (8 + text)  # field.npz (binary) and field.vtk
    transform = levels * n_points * 2 * dim * 8
    return int(1.1 * (warped + field + transform + landmarks * text)) + (1 << 20)


def _write_files(tmp: Path, source: PointCloud, result, metrics: dict) -> Path:
    from register.io import write_points

    warped = tmp / warped_name(source)
    result.transform.save(tmp / "transform.npz")
    extra = {"displacement": result.displacement, "confidence": result.confidence}
    write_points(warped, source.with_points(result.warped, **extra))
    np.savez(
        tmp / "field.npz",
        points=source.points,
        displacement=result.displacement,
        confidence=result.confidence,
    )
    write_points(tmp / "field.vtk", PointCloud(source.points, extra))
    (tmp / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
    (tmp / "config.toml").write_text(to_toml(result.config))
    return warped


def _relative_inputs(metrics: dict, folder: Path) -> dict:
    """The input paths of ``metrics`` relative to the result ``folder`` (for a moved project)."""

    def rel(p):
        return os.path.relpath(p, folder) if isinstance(p, str) and os.path.isabs(p) else None

    out = {key: rel(metrics.get(key)) for key in ("source", "target")}
    files = (metrics.get("landmarks") or {}).get("files")
    if files:
        out["landmarks"] = [rel(p) for p in files]
    return out


def write_result(
    outdir: OutputFolder | Path,
    source: PointCloud,
    result,
    metrics: dict,
    *,
    overwrite: bool = False,
    before_commit: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``result`` (a :class:`register.pipeline.Result`) for ``source`` into ``outdir``.

    Args:
        outdir: checked by :func:`check_output` before the registration (or a path, checked
            now with ``overwrite``).
        before_commit: called with the temporary folder once the result files are in it;
            what it adds there is committed with them (``register batch`` adds its log, QA
            picture and ``status.json``).

    Returns:
        The path of the warped source file inside ``outdir``.
    """
    out = outdir if isinstance(outdir, OutputFolder) else check_output(Path(outdir), overwrite=overwrite)
    metrics = {**metrics, "relative": _relative_inputs(metrics, out.path)}
    with out.staged() as tmp:
        warped = _write_files(tmp, source, result, metrics)
        if before_commit is not None:
            before_commit(tmp)
    return out.path / warped.name


__all__ = ["OutputFolder", "check_output", "json_safe", "read_result", "result_bytes", "write_result"]
