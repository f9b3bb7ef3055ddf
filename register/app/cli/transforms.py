"""Commands on a saved transform (``transform.npz``) and points: ``eval`` (landmark TRE, scene-flow
errors), ``warp`` (move any points or mesh) and ``export`` (its affine form for other tools)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from register.app.cli.common import JsonOut, Overwrite, Verbose, guarded, refuse_existing, stderr_console
from register.errors import InputError


@guarded
def evaluate(
    transform: Annotated[Path, typer.Argument(help="transform.npz written by a registration.")],
    landmarks: Annotated[
        tuple[Path, Path] | None, typer.Option(help="SRC_LM TGT_LM: corresponding landmarks (rows match).")
    ] = None,
    flow_gt: Annotated[
        Path | None, typer.Option(help="Ground-truth flow (N, 3) of the --source points (scene flow, m).")
    ] = None,
    source: Annotated[Path | None, typer.Option(help="Source points the --flow-gt rows belong to.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON on stdout.")] = False,
    verbose: Verbose = False,
) -> None:
    """Evaluate a saved transform: landmark TRE, or scene-flow EPE3D / Acc3DS / Acc3DR / Outliers3D."""
    from register.app.landmarks import landmark_errors, read_landmarks
    from register.core.transforms import Transform
    from register.io import read_points
    from register.metrics import scene_flow

    if landmarks is None and flow_gt is None:
        raise InputError("give --landmarks SRC_LM TGT_LM and/or --flow-gt FLOW --source SRC")
    tf = Transform.load(transform)
    out: dict = {"transform": str(transform)}
    if landmarks is not None:
        out["landmarks"] = landmark_errors(tf, *read_landmarks(landmarks, tf.dim))
    if flow_gt is not None:
        if source is None:
            raise InputError("--flow-gt needs --source (the points the flow rows belong to)")
        pts = read_points(source).points
        gt = read_points(flow_gt).points
        if gt.shape != pts.shape:
            raise InputError(f"--flow-gt {flow_gt}: shape {gt.shape} but --source has {pts.shape}")
        out["scene_flow"] = scene_flow(tf.apply(pts) - pts, gt)
    if json_out:
        typer.echo(json.dumps(out, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"register eval {transform}", show_header=False, title_justify="left")
    if "landmarks" in out:
        lm = out["landmarks"]
        for key in ("mean", "median", "p75", "p95", "max"):
            table.add_row(f"TRE {key}", f"{lm['before'][key]:.4g} -> {lm['after'][key]:.4g}")
    for key, value in out.get("scene_flow", {}).items():
        table.add_row(key, f"{value:.4g}")
    stderr_console().print(table)


@guarded
def warp(
    transform: Annotated[Path, typer.Argument(help="transform.npz written by a registration.")],
    input_: Annotated[
        Path,
        typer.Argument(metavar="INPUT", help="Points or mesh in the source space (any supported format)."),
    ],
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="Where to write the moved points (format from the extension)."),
    ],
    inverse: Annotated[
        bool,
        typer.Option(
            "--inverse",
            help="Apply the inverse transform (INPUT in the target space, moved to the source); "
            "refused where the field folds.",
        ),
    ] = False,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
    verbose: Verbose = False,
) -> None:
    """Apply a saved transform to any points or mesh (faces and attributes are kept)."""
    from register.core.transforms import Transform
    from register.io import read_points, write_points

    if output.exists() and not overwrite:
        raise InputError(f"-o {output}: file exists; choose another name or pass --overwrite")
    for other, name in ((input_, "INPUT"), (transform, "TRANSFORM")):
        if output.resolve() == other.resolve():
            raise InputError(f"-o {output}: same file as {name}; write the result elsewhere")
    tf = Transform.load(transform)
    cloud = read_points(input_)
    if cloud.points.shape[1] != tf.dim:
        raise InputError(
            f"{input_}: {cloud.points.shape[1]}-D points, but {transform} is a {tf.dim}-D transform"
        )
    import numpy as np

    if inverse:
        tf = tf.inverse()
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, not warned
        moved = tf.apply(cloud.points)
    bad = ~np.isfinite(moved).all(axis=1)
    if bad.any():
        raise InputError(
            f"{transform}: moves {int(bad.sum()):,} of the {len(moved):,} points of {input_} to non-finite "
            f"coordinates (first: point {int(np.argmax(bad))}); the transform is damaged or not meant for "
            "these points; nothing was written"
        )
    write_points(output, cloud.with_points(moved))
    if json_out:
        typer.echo(
            json.dumps({"status": "ok", "output": str(output), "points": len(moved), "inverse": inverse})
        )
    else:
        stderr_console().print(
            f"wrote {output} ({len(moved):,} points{', inverse transform' if inverse else ''})"
        )


@guarded
def export(
    transform: Annotated[Path, typer.Argument(help="transform.npz of a run (or `register warp`'s input).")],
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            help="The file to write: .txt (4x4 matrix, y = M [x; 1]) or .tfm / .h5 (ITK AffineTransform).",
        ),
    ],
    affine_only: Annotated[
        bool,
        typer.Option(
            "--affine-only",
            help="Export the leading affine steps only (the affine stage of an affine + spline run); "
            "without it a transform with a non-linear part is refused (use `register field`).",
        ),
    ] = False,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
    verbose: Verbose = False,
) -> None:
    """Write a transform's affine form for other tools: a 4x4 matrix or an ITK transform file."""
    from register.core.transforms import Transform
    from register.exports import EXPORT_KINDS, export_transform, leading_affine, nonlinear

    kind = EXPORT_KINDS.get(output.suffix.lower())
    if kind is None:
        raise InputError(f"-o {output}: unknown export format; use {', '.join(EXPORT_KINDS)}")
    refuse_existing(output, overwrite, (transform, "TRANSFORM"))
    tf = Transform.load(transform)
    partial = affine_only and nonlinear(tf)
    if affine_only:
        head = leading_affine(tf)
        if head is None:
            raise InputError(f"{transform}: its first step is not affine; there is no affine part to export")
        tf = head
    written = export_transform(output, tf)
    summary = {"status": "ok", "output": str(output), "kind": written, "affine_only": partial}
    if json_out:
        typer.echo(json.dumps(summary))
    else:
        what = "the affine part of " if partial else ""
        stderr_console().print(f"wrote {output} ({written}: {what}{transform})")
