"""Command-line interface (Typer). The only module that prints, reads argv or exits.

``register SRC TGT [OPTIONS]`` is shorthand for ``register run SRC TGT [OPTIONS]``.
Heavy modules (torch, pyvista) are imported inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from register.app import DISTRIBUTION
from register.errors import InputError

EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_PAIRS_FAILED = 3
EXIT_INTERRUPTED = 130
COMMANDS = (
    "run",
    "warp",
    "eval",
    "info",
    "batch",
    "show",
    "report",
    "train",
    "field",
    "warp-image",
    "mask-points",
    "export",
)
ADVANCED = "Advanced"
JsonOut = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")]
Overwrite = Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.")]
Verbose = Annotated[
    bool,
    typer.Option(
        "-v", "--verbose", help="Print the traceback of an unexpected error.", rich_help_panel=ADVANCED
    ),
]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    help=(
        "Register 3-D point clouds with robust optimal transport.\n\n"
        "[bold]register SRC TGT[/bold] (same as [bold]register run SRC TGT[/bold]) aligns SRC onto TGT and "
        "writes a reusable transform, the warped source and the deformation field.\n\n"
        "Examples:\n\n"
        "  register data_samples/lung_source.ply data_samples/lung_target.ply -p lung --weights radius -o out\n\n"
        "  register warp out/transform.npz landmarks.csv -o landmarks_warped.csv\n\n"
        "  register batch cohort.csv -o cohort_out --workers 2 -p lung\n\n"
        "  register report cohort_out\n\n"
        "  register train --preset lung --steps 2000 --out lung.pt\n\n"
        "  register info"
    ),
)


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        typer.echo(f"register {metadata.version(DISTRIBUTION)}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Register 3-D point clouds with robust optimal transport."""


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _fail(message: str, code: int = EXIT_INPUT) -> typer.Exit:
    """Print ``error: message`` (one line) on stderr; the :class:`typer.Exit` to raise."""
    try:
        from rich.markup import escape

        # Escaped: "[affine]" in a message is text, not markup; soft_wrap: paths are never split.
        _console().print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    except Exception:  # e.g. out of memory: rich itself cannot be imported
        sys.stderr.write(f"error: {message}\n")
    return typer.Exit(code)


def _out_of_memory(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is the machine running out of memory: MemoryError,
    torch's allocator errors, and the ImportError / OSError of a lazy import that cannot map its
    shared library under an address-space limit."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc).lower()
        if isinstance(exc, MemoryError):
            return True
        if isinstance(exc, RuntimeError) and any(
            s in text for s in ("can't allocate memory", "out of memory", "not enough memory")
        ):
            return True
        if isinstance(exc, ImportError | OSError) and (
            "failed to map segment" in text
            or "cannot allocate memory" in text
            or getattr(exc, "errno", None) == errno.ENOMEM
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__


def _guarded(command):
    """The error policy of every command.

    A user error (:class:`InputError`: a file, option or key the user can fix) is one line and
    exit 2; running out of memory is one line saying what to do and exit 1; any other failure
    (a bug) is one line and exit 1, its traceback printed only with ``-v``.
    """

    @functools.wraps(command)
    def run_command(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):  # the command's own exit code
            raise
        except InputError as exc:
            raise _fail(str(exc)) from None
        except Exception as exc:
            if _out_of_memory(exc):
                raise _fail(
                    f"out of memory ({_first_line(exc)}); use fewer points (e.g. --set "
                    "affine.max_points=2000 --set spline.max_points=2000, or subsample the clouds), "
                    "free memory, or use a machine with more",
                    EXIT_FAILED,
                ) from None
            if kwargs.get("verbose"):
                _console().print_exception()
            raise _fail(
                f"unexpected {_first_line(exc)}. This is a bug: run again with -v for the "
                "traceback and report it",
                EXIT_FAILED,
            ) from None

    return run_command


def _setup_logging(verbose: bool, quiet: bool) -> None:
    import logging

    from rich.logging import RichHandler

    level = logging.INFO if verbose else logging.WARNING
    if quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=_console())])


@app.command("run")
@_guarded
def run(
    source: Annotated[
        Path,
        typer.Argument(
            help="Source points (moved onto the target): .ply .pcd .xyz .txt .csv .npy .npz (ARCHIVE.npz:KEY for one array) .vtk .vtp .vtu, meshes .obj .stl .off, LiDAR .las .laz .bin (KITTI), masks .nii.gz .nrrd .mha"
        ),
    ],
    target: Annotated[Path, typer.Argument(help="Target points (stay fixed), same units as SRC.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Output folder (default: SRC-stem_to_TGT-stem).")
    ] = None,
    pipeline: Annotated[
        str,
        typer.Option(
            "-p", "--pipeline", help="Preset (default, lung, rigid, sceneflow, shapes) or a .toml file."
        ),
    ] = "default",
    stages: Annotated[
        str | None, typer.Option(help="Comma-separated stages to run, e.g. affine or affine,spline.")
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="Point attribute used as per-point mass, e.g. radius.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of every random subsample.")] = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress and no summary table.")] = False,
    json_out: JsonOut = False,
    show: Annotated[bool, typer.Option(help="Open a 3-D window: source, target, warped source.")] = False,
    screenshot: Annotated[
        Path | None, typer.Option(help="Render the same view off-screen to this PNG.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder / screenshot.")] = False,
    landmarks: Annotated[
        tuple[Path, Path] | None,
        typer.Option(
            help="SRC_LM TGT_LM: corresponding landmarks (rows match); TRE before/after is reported."
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help="Label-aware matching: a point attribute of both clouds (e.g. artery / vein label); "
            "points match points of the same label only.",
        ),
    ] = None,
    drop_nan: Annotated[
        bool,
        typer.Option(
            help="Drop points with NaN/Inf coordinates (LiDAR returns) instead of refusing the file."
        ),
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a config key: TABLE.KEY=VALUE (repeatable).", rich_help_panel=ADVANCED
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="Kernel backend: auto, dense, sparse (multiscale block-sparse above 1M kernel entries), keops, "
            "geomloss (GeomLoss's own solver, for comparisons).",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "-v",
            "--verbose",
            help="Log each level of each stage; print the traceback of an unexpected error.",
            rich_help_panel=ADVANCED,
        ),
    ] = False,
) -> None:
    """Register SRC onto TGT and write the transform, warped source and deformation field."""
    _setup_logging(verbose, quiet or json_out)
    overrides = list(set_ or [])
    if labels is not None:
        if not labels.strip() or '"' in labels:
            raise InputError(f"--labels {labels!r}: give the name of a point attribute, e.g. --labels label")
        overrides.append(f'pipeline.labels="{labels}"')
    summary = _run(
        source,
        target,
        output,
        pipeline,
        stages,
        weights,
        device,
        seed,
        quiet,
        show,
        screenshot,
        overwrite,
        overrides,
        backend,
        landmarks,
        drop_nan,
    )
    if json_out:
        from register.app.outputs import json_safe

        typer.echo(json.dumps(json_safe(summary), indent=2))


def _stem(path: Path) -> str:
    """A cloud's name for the default output folder: ``lung.ply`` -> ``lung``,
    ``pair.npz:pc1`` -> ``pair_pc1``."""
    from register.io import split_member

    file, key = split_member(path)
    return file.stem if key is None else f"{file.stem}_{key}"


def _run(
    source,
    target,
    output,
    pipeline,
    stages,
    weights,
    device,
    seed,
    quiet,
    show,
    screenshot,
    overwrite,
    overrides,
    backend,
    landmarks,
    drop_nan=False,
) -> dict:
    from register.app.outputs import check_output, write_result
    from register.app.run import RunRequest, check_request, input_files, prepare, result_size

    outdir = output or Path(f"{_stem(source)}_to_{_stem(target)}")
    request = RunRequest(
        source,
        target,
        pipeline,
        stages,
        weights,
        device,
        seed,
        tuple(overrides),
        backend,
        landmarks,
        drop_nan,
    )
    check_request(request)
    # Before any work: the output folder (never over an input or a folder of the user's) ...
    out = check_output(outdir, overwrite=overwrite, inputs=input_files(request))
    if screenshot is not None:
        if screenshot.suffix.lower() != ".png":
            raise InputError(f"--screenshot {screenshot}: must be a .png file")
        if screenshot.exists() and not overwrite:
            raise InputError(
                f"--screenshot {screenshot}: file exists; choose another name or pass --overwrite"
            )
        if out.path in screenshot.resolve().parents:
            raise InputError(
                f"--screenshot {screenshot}: inside the output folder -o {outdir}, which is written as a "
                "whole; put the picture elsewhere"
            )
    inputs = prepare(request)
    # ... and, once the clouds are read, room for the result and working writers for it.
    out.check_space(result_size(inputs))
    out.check_writers(inputs.source)
    result, metrics = _register_with_progress(inputs, quiet)
    from register.app.viz import render

    src, tgt = inputs.source, inputs.target
    title = f"{source.name} -> {target.name}"
    if screenshot is not None:
        # Rendered before the results are written: a rendering error leaves no output folder.
        render(src.points, tgt.points, result.warped, screenshot=screenshot, title=title)
    try:
        warped_path = write_result(out, src, result, metrics)
    except BaseException:
        if screenshot is not None:
            screenshot.unlink(missing_ok=True)
        raise
    if show:
        from register.app.viz import ResultView, show_result

        view = ResultView.from_result(src.points, tgt.points, result, inputs.landmarks, title=title)
        show_result(view)
    summary = {
        "status": "ok",
        "output": str(outdir),
        "transform": str(outdir / "transform.npz"),
        "warped": str(warped_path),
        "screenshot": str(screenshot) if screenshot else None,
        "source_points": metrics["source_points"],
        "target_points": metrics["target_points"],
        "chamfer_before": metrics["chamfer_before"],
        "chamfer_after": metrics["chamfer_after"],
        "seconds": metrics["total_seconds"],
        "stage_seconds": metrics["stage_seconds"],
        "device": metrics["device"],
        "backend": metrics["backend"],
        "landmarks": metrics.get("landmarks"),
        "reliability": metrics.get("reliability"),
        "fallback": metrics.get("fallback"),
        "dropped_points": metrics.get("dropped_points"),
    }
    if not quiet:
        _print_summary(summary)
    return summary


# Progress-bar labels of the steps that are not RobOT stages (the others: "<stage> RobOT").
STEP_LABELS = {
    "flow": "flow network",
    "reliability": "reliability report",
    "fallback": "again, fallback settings",
}


def _register_with_progress(inputs, quiet):
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from register.app.run import execute

    if quiet:
        return execute(inputs)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=_console(),
        transient=False,
    ) as progress:
        tasks = {}

        def on_stage(name: str, state: str) -> None:
            if state == "start":
                tasks[name] = progress.add_task(STEP_LABELS.get(name, f"{name} RobOT"), total=1)
            else:
                progress.update(tasks[name], completed=1)

        return execute(inputs, on_stage=on_stage)


def _print_summary(summary: dict) -> None:
    from rich.table import Table

    table = Table(title="register", show_header=False, title_justify="left")
    table.add_row("points", f"{summary['source_points']:,} -> {summary['target_points']:,}")
    if summary.get("dropped_points"):
        dropped = summary["dropped_points"]
        table.add_row("dropped (NaN/Inf)", f"{dropped['source']:,} source, {dropped['target']:,} target")
    table.add_row(
        "chamfer before -> after",
        f"{summary['chamfer_before']:.4g} -> {summary['chamfer_after']:.4g} (data units)",
    )
    stage_times = ", ".join(f"{k} {v:.1f} s" for k, v in summary["stage_seconds"].items())
    table.add_row("time", f"{summary['seconds']:.1f} s ({stage_times})")
    table.add_row("device / backend", f"{summary['device']} / {summary['backend']}")
    table.add_row("output", summary["output"])
    if summary["screenshot"]:
        table.add_row("screenshot", summary["screenshot"])
    if summary.get("landmarks"):
        lm = summary["landmarks"]
        table.add_row(
            f"TRE, {lm['count']} landmarks (mean / p95)",
            f"{lm['before']['mean']:.3g} / {lm['before']['p95']:.3g} -> {lm['after']['mean']:.3g} / "
            f"{lm['after']['p95']:.3g} (data units)",
        )
    if summary.get("reliability"):
        _reliability_rows(table, summary["reliability"])
    if summary.get("fallback") and summary["fallback"]["triggered_by"]:
        fb = summary["fallback"]
        kept = "its result kept" if fb["kept"] == "fallback" else "the first result kept"
        table.add_row("fallback settings", f"{fb['settings']}: ran ({'; '.join(fb['triggered_by'])}), {kept}")
    _console().print(table)


def _reliability_rows(table, rel: dict) -> None:
    """The reliability report's rows of the run summary (:mod:`register.reliability`)."""
    from rich.markup import escape

    colour = "green" if rel["verdict"] == "ok" else "yellow"
    table.add_row("reliability", f"[{colour}]{escape(rel['verdict'])}[/{colour}]")
    std = rel["log_jacobian_std"]
    table.add_row(
        "matched mass, held-out residual",
        f"{rel['matched_mass']:.2f}, {rel['heldout_residual_before']:.4g} -> "
        f"{rel['heldout_residual_after']:.4g} (data units)",
    )
    table.add_row(
        "folded, log-Jacobian std",
        f"{rel['folded_fraction']:.1%}, " + ("-" if std is None else f"{std:.3g}"),
    )


@app.command("eval")
@_guarded
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
    _console().print(table)


@app.command("warp")
@_guarded
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
        _console().print(f"wrote {output} ({len(moved):,} points{', inverse transform' if inverse else ''})")


@app.command("export")
@_guarded
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
    _refuse_existing(output, overwrite, (transform, "TRANSFORM"))
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
        _console().print(f"wrote {output} ({written}: {what}{transform})")


@app.command("batch")
@_guarded
def batch(
    manifest: Annotated[
        Path,
        typer.Argument(
            help="CSV (header row) or JSON lines (.jsonl): id, source, target, and optionally "
            "source_landmarks, target_landmarks, pipeline, weights. Relative paths start at the manifest's folder."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", help="Batch folder: OUTDIR/<id>/ per pair, summary.csv/json, report.html."
        ),
    ],
    workers: Annotated[
        int | None, typer.Option(help="Pairs run side by side in local processes (default 1).", min=1)
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Run the pairs on this Dask cluster: tcp://HOST:8786 or a scheduler file (.json). "
            "Needs pip install 'register\\[distributed]' and files at the same paths on the workers."
        ),
    ] = None,
    retries: Annotated[
        int,
        typer.Option(
            help="Re-run a pair this many times after an unexpected failure (not bad input).", min=0
        ),
    ] = 0,
    pipeline: Annotated[
        str, typer.Option("-p", "--pipeline", help="Preset or TOML for pairs without a 'pipeline' cell.")
    ] = "default",
    weights: Annotated[
        str | None, typer.Option(help="Point attribute used as mass, for pairs without a 'weights' cell.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every pair (same seed, same results, any runner).")] = 0,
    images: Annotated[
        bool, typer.Option(help="Render OUTDIR/<id>/qa.png (before / after) off-screen for every pair.")
    ] = True,
    report: Annotated[bool, typer.Option(help="Write OUTDIR/report.html at the end.")] = True,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress and no table.")] = False,
    json_out: JsonOut = False,
    threads: Annotated[
        int | None,
        typer.Option(
            help="Torch threads per pair (default: cores // workers locally, 1 on a Dask cluster).",
            min=1,
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    device: Annotated[
        str, typer.Option(help="auto, cpu, cuda or cuda:N, for every pair.", rich_help_panel=ADVANCED)
    ] = "auto",
    stages: Annotated[
        str | None, typer.Option(help="Stages to run, e.g. affine,spline.", rich_help_panel=ADVANCED)
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a config key of every pair: TABLE.KEY=VALUE.", rich_help_panel=ADVANCED
        ),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Register every pair of a manifest; resumable, in parallel, on one machine or a Dask cluster.

    Each pair writes OUTDIR/<id>/ (what 'register run' writes, plus register.log, qa.png and
    status.json). Running the same command again skips the complete pairs and redoes the
    failed and interrupted ones. Exit code 0: every pair succeeded; 3: some failed (see
    summary.csv); 2: bad manifest or option (nothing ran).

    Examples:

      register batch cohort.csv -o cohort_out --workers 2 -p lung

      register batch cohort.csv -o cohort_out --scheduler tcp://10.0.0.5:8786 --json
    """
    _setup_logging(False, quiet or json_out)
    try:
        from register.app.batch import BatchOptions

        options = BatchOptions(pipeline, weights, seed, device, tuple(set_ or ()), stages, images, retries)
        rows, info = _batch(manifest, output, options, workers, scheduler, threads, quiet or json_out)
        report_path = None
        if report:
            from register.app.report import write_report

            report_path = write_report(output)
    except KeyboardInterrupt:
        _console().print(f"interrupted; run the same command again to finish the batch in {output}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    failed = [r for r in rows if r["status"] != "ok"]
    if json_out:
        from register.app.outputs import json_safe

        summary = {
            "status": "failed" if failed else "ok",
            "output": str(output),
            "summary_csv": str(output / "summary.csv"),
            "summary_json": str(output / "summary.json"),
            "report": str(report_path) if report_path else None,
            **info["counts"],
            "wall_seconds": info["wall_seconds"],
            "failed_ids": [r["id"] for r in failed],
        }
        typer.echo(json.dumps(json_safe(summary), indent=2))
    elif not quiet:
        _print_batch_table(rows, info, report_path)
    if failed:
        raise typer.Exit(EXIT_PAIRS_FAILED)


def _batch(manifest, output, options, workers, scheduler, threads, quiet):
    from register.app.batch import check_outdir, check_pair_inputs, plan, read_manifest, run_batch
    from register.app.run import build_config, check_seed

    if scheduler is not None and workers is not None:
        raise InputError(
            "--workers and --scheduler: choose one (on a Dask cluster the workers run the pairs)"
        )
    check_seed(options.seed)
    device = options.device
    if device != "auto" and device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    if device.startswith("cuda"):  # every pair would fail on it: refused before any pair runs
        from register.pipeline import resolve_device

        resolve_device(device)
    pairs = read_manifest(manifest)
    # Every configuration a pair will use is checked now, before any work.
    for name in sorted({p.pipeline or options.pipeline for p in pairs}):
        build_config(name, stages=options.stages, weights=options.weights, overrides=options.overrides)
    check_outdir(output)
    jobs = plan(pairs, output, options)
    check_pair_inputs(jobs)
    if scheduler is not None:
        from register.app.batch.dask_runner import DaskRunner

        runner = DaskRunner(scheduler, threads)
    else:
        from register.app.batch.local import LocalRunner

        runner = LocalRunner(workers or 1, threads)
    with runner, _batch_progress(len(jobs), quiet) as on_event:
        return run_batch(jobs, output, runner, options, manifest=manifest, on_event=on_event)


def _batch_progress(total: int, quiet: bool):
    """Context manager yielding the ``on_event`` callback of :func:`run_batch` (a progress bar)."""
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if quiet:
        return contextlib.nullcontext(None)
    progress = Progress(
        TextColumn("pairs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=_console(),
    )

    @contextlib.contextmanager
    def running():
        with progress:
            task = progress.add_task("", total=total)
            running_ids: list[str] = []

            def on_event(event: str, job, record) -> None:
                if event == "started":
                    running_ids.append(job.id)
                elif event in ("done", "retry"):
                    running_ids.remove(job.id)
                if event in ("done", "skipped"):
                    progress.advance(task)
                if event == "done" and record["status"] != "ok":
                    progress.console.print(f"[red]{job.id} failed:[/red] {record['error']}", highlight=False)
                if event == "retry":
                    progress.console.print(
                        f"{job.id}: attempt {job.attempt} failed, retrying", highlight=False
                    )
                shown = ", ".join(running_ids[:4]) + (" ..." if len(running_ids) > 4 else "")
                progress.update(task, description=f"running {shown}" if running_ids else "")

            yield on_event

    return running()


def _print_batch_table(rows: list[dict], info: dict, report_path) -> None:
    from rich.markup import escape
    from rich.table import Table

    def num(value, fmt="{:.3g}"):
        return "" if value is None else fmt.format(value)

    def change(row, key):
        before, after = row[f"{key}_before"], row[f"{key}_after"]
        return "" if after is None else f"{num(before)} -> {num(after)}"

    counts = info["counts"]
    table = Table(
        title=f"register batch: {counts['ok']} ok, {counts['failed']} failed, {counts['pending']} pending "
        f"({counts['skipped']} complete from an earlier run) in {info['wall_seconds']:.1f} s",
        title_justify="left",
    )
    landmarks = any(r["tre_after"] is not None for r in rows)
    columns = ["pair", "status", "seconds", "points", "chamfer before -> after"]
    columns += ["TRE before -> after"] if landmarks else []
    columns += ["reliability"]
    for name in [*columns, "error"]:
        table.add_column(name, overflow="fold")
    for r in rows:
        status = {"ok": "[green]ok[/green]", "failed": "[red]failed[/red]"}.get(r["status"], r["status"])
        if r["action"] == "skipped":
            status += " (earlier)"
        points = "" if r["source_points"] is None else f"{r['source_points']:,} -> {r['target_points']:,}"
        cells = [escape(r["id"]), status, num(r["seconds"], "{:.1f}"), points, change(r, "chamfer")]
        cells += [change(r, "tre")] if landmarks else []
        cells += [escape(r.get("verdict") or "")]
        table.add_row(*cells, escape(r["error"] or ""))
    console = _console()
    console.print(table)
    if report_path:
        console.print(f"report: {report_path}", highlight=False, soft_wrap=True)


@app.command("report")
@_guarded
def report_command(
    outdir: Annotated[Path, typer.Argument(help="Output folder of 'register batch'.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="HTML file to write (default OUTDIR/report.html).")
    ] = None,
    embed: Annotated[
        bool, typer.Option(help="Embed the pictures in the page (one movable file) instead of linking them.")
    ] = False,
    overwrite: Overwrite = False,
    verbose: Verbose = False,
) -> None:
    """Write an HTML page over a batch: one row per pair, pictures and errors; failures first.

    The page is self-contained (inline style and script, no network) and opens from disk.
    """
    from register.app.report import write_report

    path = write_report(outdir, output, embed=embed, overwrite=overwrite)
    _console().print(f"wrote {path}", highlight=False, soft_wrap=True)


@app.command("show")
@_guarded
def show_command(
    result: Annotated[
        Path, typer.Argument(help="A result folder: OUTDIR/<id> of a batch, or -o of 'register run'.")
    ],
    target: Annotated[
        Path | None, typer.Option(help="Target points, when the file recorded in metrics.json has moved.")
    ] = None,
    landmarks: Annotated[
        tuple[Path, Path] | None,
        typer.Option(help="SRC_LM TGT_LM, when not recorded in metrics.json (or moved)."),
    ] = None,
    screenshot: Annotated[
        Path | None, typer.Option(help="Render the view off-screen to this PNG instead of opening a window.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the --screenshot file if it exists.")] = False,
    verbose: Verbose = False,
) -> None:
    """Reopen a result in 3-D: source, target and warped source (toggle each), displacement as colour, landmark errors as lines."""
    from register.app.viz import show_result

    if screenshot is not None:
        if screenshot.suffix.lower() != ".png":
            raise InputError(f"--screenshot {screenshot}: must be a .png file")
        if screenshot.exists() and not overwrite:
            raise InputError(
                f"--screenshot {screenshot}: file exists; choose another name or pass --overwrite"
            )
    from register.app.outputs import read_result
    from register.app.viz import ResultView

    view = ResultView(**read_result(result, target=target, landmarks=landmarks))
    show_result(view, screenshot=screenshot)
    if screenshot is not None:
        _console().print(f"wrote {screenshot}", highlight=False, soft_wrap=True)


@app.command("info")
@_guarded
def info(
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON on stdout.")] = False,
    verbose: Verbose = False,
) -> None:
    """Versions, kernel backends, devices, presets, file formats and flow models."""
    import torch

    from register.app.run import versions
    from register.config import preset_names
    from register.io import SUPPORTED_EXTENSIONS

    cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    data = {
        "versions": versions(),
        "devices": {"cpu_threads": torch.get_num_threads(), "cuda": cuda},
        "backends": {
            "dense": "torch tensorised reductions (CPU and CUDA)",
            "keops": "KeOps online reductions (CUDA; CPU works but compiles and runs slower)",
            "sparse": "multiscale Sinkhorn with certified block-sparse reductions above 1M entries (CPU default)",
            "geomloss": "GeomLoss's Sinkhorn solver (tensorized / KeOps online / multiscale by size; explicit only)",
            "auto": "CPU: sparse above 1M kernel entries, dense below; CUDA: dense, keops for large problems",
        },
        "presets": preset_names(),
        "formats": list(SUPPORTED_EXTENSIONS),
        "models": _flow_models(),
    }
    if json_out:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.table import Table

    table = Table(title="register info", show_header=False, title_justify="left")
    for k, v in data["versions"].items():
        table.add_row(k, v)
    table.add_row("CPU threads", str(data["devices"]["cpu_threads"]))
    table.add_row("CUDA devices", ", ".join(cuda) or "none")
    for k, v in data["backends"].items():
        table.add_row(f"backend {k}", v)
    table.add_row("presets", ", ".join(data["presets"]))
    table.add_row("formats", " ".join(data["formats"]))
    _flow_model_rows(table, data["models"])
    from rich.console import Console

    Console().print(table)  # the answer itself: stdout, like --json


def _flow_models() -> list[dict]:
    """The shipped flow models (``register info``)."""
    from register.models.registry import available_models

    return [m.to_dict() for m in available_models()]


def _flow_model_rows(table, models: list[dict]) -> None:
    if not models:
        table.add_row("flow models", "none shipped with this version (train one: register train --help)")
    for m in models:
        val = m["validation"]
        err = f", validation EPE {val['epe']:.3g} (zero flow {val['epe_zero']:.3g})" if val else ""
        table.add_row(f"flow model {m['name']}", f"preset {m['preset']}, {m['steps']} steps{err}")


@app.command("train")
@_guarded
def train_command(
    preset: Annotated[
        str, typer.Option(help="Synthetic training data and normalisation: lung, sceneflow or shapes.")
    ],
    steps: Annotated[int, typer.Option(help="Total optimisation steps of the run.")],
    out: Annotated[Path, typer.Option(help="Where to write the trained model (.pt).")],
    resume: Annotated[
        bool, typer.Option(help="Continue the run whose training state (OUT-stem.state.pt) is next to --out.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out and training state.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and of the training pairs.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Synthetic pairs per step.")] = 4,
    points: Annotated[int, typer.Option(help="Points per cloud of each training pair.")] = 4096,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(help="CPU threads of torch (default: torch's choice).", rich_help_panel=ADVANCED),
    ] = None,
    lr: Annotated[
        float,
        typer.Option(help="Initial learning rate (cosine-annealed to a tenth).", rich_help_panel=ADVANCED),
    ] = 1e-3,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            help="Steps between training-state checkpoints and validations.", rich_help_panel=ADVANCED
        ),
    ] = 100,
    validation_pairs: Annotated[
        int, typer.Option(help="Held-out synthetic pairs of each validation.", rich_help_panel=ADVANCED)
    ] = 8,
    real: Annotated[
        Path | None,
        typer.Option(
            help="Real, unlabelled pairs for an unsupervised OT loss: a manifest (.csv / .jsonl with "
            "id,source,target) or a folder DIR/<id>/source.<ext> + target.<ext>."
        ),
    ] = None,
    ot_weight: Annotated[
        float, typer.Option(help="Weight of the OT loss on --real pairs.", rich_help_panel=ADVANCED)
    ] = 1.0,
    ot_blur: Annotated[
        float,
        typer.Option(
            help="Blur of the OT loss, model units (1 = the source's RMS radius; 10 m for sceneflow).",
            rich_help_panel=ADVANCED,
        ),
    ] = 0.02,
    ot_reach: Annotated[
        float,
        typer.Option(help="Reach of the OT loss, model units (inf: balanced).", rich_help_panel=ADVANCED),
    ] = float("inf"),
    init: Annotated[
        Path | None,
        typer.Option(help="Start from this model's weights (fine-tuning), e.g. with --real."),
    ] = None,
    keypoint_fraction: Annotated[
        float,
        typer.Option(
            help="--preset lung: share of training shapes drawn as keypoint-like clouds (points near "
            "the vessels and through the lung volume, no radius) instead of vessel trees.",
            rich_help_panel=ADVANCED,
        ),
    ] = 0.0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress bar and no summary.")] = False,
    verbose: Verbose = False,
) -> None:
    """Train a flow network (stage 2) on synthetic pairs with known flow, and save it.

    Supervised multi-scale end-point-error loss on pairs drawn on the fly (same seed, same
    pairs, same weights). The training state is checkpointed every --checkpoint-every steps
    and on Ctrl-C; --resume continues it to the same result as an uninterrupted run. Use the
    model with --set flow.model=OUT --stages affine,flow,spline.

    Example: register train --preset lung --steps 2000 --out lung.pt

    Fine-tuning on real pairs: register train --preset lung --steps 500 --out lung_ft.pt
    --init lung.pt --real pairs.csv
    """
    _setup_logging(False, quiet)
    from register.app.run import check_seed
    from register.app.train import TrainSettings

    check_seed(seed)

    net = None
    if init is not None:  # the run's network is the initial model's
        from register.models.checkpoint import read_checkpoint
        from register.models.pointpwc import FlowNetConfig

        net = FlowNetConfig(**read_checkpoint(init, option="--init")["architecture"])
    settings = TrainSettings(
        net=net,
        real=str(real) if real is not None else "",
        ot_weight=ot_weight,
        ot_blur=ot_blur,
        ot_reach=ot_reach,
        init=str(init) if init is not None else "",
        keypoint_fraction=keypoint_fraction,
        preset=preset,
        steps=steps,
        batch_size=batch_size,
        points=points,
        seed=seed,
        lr=lr,
        lr_final=lr / 10,
        checkpoint_every=checkpoint_every,
        validation_pairs=validation_pairs,
    )
    from register.pipeline import resolve_device

    device = resolve_device(device)
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads {threads}: must be >= 1")
        import torch

        torch.set_num_threads(threads)
    command = (
        f"register train --preset {preset} --steps {steps} --out {out.name} --seed {seed} "
        f"--batch-size {batch_size} --points {points}"
        + (f" --lr {lr}" if lr != 1e-3 else "")
        # float sums may depend on the thread count: record it for bit-for-bit reproduction
        + (f" --threads {threads}" if threads is not None else "")
        + (f" --validation-pairs {validation_pairs}" if validation_pairs != 8 else "")
        + (f" --init {init}" if init is not None else "")
        + (f" --keypoint-fraction {keypoint_fraction}" if keypoint_fraction else "")
        + (
            f" --real {real} --ot-weight {ot_weight} --ot-blur {ot_blur} --ot-reach {ot_reach}"
            if real is not None
            else ""
        )
    )
    result = _train_with_progress(settings, out, resume, overwrite, device, command, quiet)
    if quiet:
        return
    from rich.table import Table

    table = Table(title=f"register train --preset {preset}", show_header=False, title_justify="left")
    table.add_row("model", str(result.out))
    table.add_row("model card", str(result.out.with_suffix(".md")))
    table.add_row("steps", f"{result.steps} ({result.seconds / 60:.1f} min of training)")
    table.add_row("parameters", f"{result.parameters:,}")
    if result.validation:
        val = result.validation[-1]
        table.add_row(
            f"validation EPE, {val['pairs']} held-out pairs",
            f"{val['epe']:.4g} (zero flow {val['epe_zero']:.4g}), data units",
        )
    _console().print(table)


def _train_with_progress(settings, out, resume, overwrite, device, command, quiet):
    from register.app.train import train

    if quiet:
        return train(settings, out, resume=resume, overwrite=overwrite, device=device, command=command)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  val {task.fields[val]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_console(),
    ) as progress:
        tasks: list = []  # added at the first step: a refused --out shows no empty bar

        def on_progress(p) -> None:
            if not tasks:
                tasks.append(
                    progress.add_task("train", total=p.steps, completed=p.step - 1, loss="-", val="-")
                )
            fields = {"loss": f"{p.loss:.4f}"}
            if p.validation:
                fields["val"] = f"{p.validation['epe']:.3g} (zero {p.validation['epe_zero']:.3g})"
            progress.update(tasks[0], completed=p.step, **fields)

        return train(
            settings,
            out,
            resume=resume,
            overwrite=overwrite,
            device=device,
            command=command,
            on_progress=on_progress,
        )


def _refuse_existing(output: Path, overwrite: bool, *inputs: tuple[Path, str]) -> None:
    """Refuse to replace ``output`` without ``--overwrite``, or to write over one of ``inputs``."""
    if output.exists() and not overwrite:
        raise InputError(f"-o {output}: file exists; choose another name or pass --overwrite")
    for other, name in inputs:
        if other.exists() and output.resolve() == other.resolve():
            raise InputError(f"-o {output}: same file as {name}; write the result elsewhere")


def _grid_field(transform: Path, reference: Path, tolerance: float | None, inverse: bool = False):
    """The transform at ``transform`` (or its inverse) evaluated on the grid of the image
    ``reference``."""
    from register.core.transforms import Transform
    from register.fields import displacement_on_grid
    from register.io.images import grid_of, read_sitk

    tf = Transform.load(transform)
    if tf.dim != 3:
        raise InputError(f"{transform}: a {tf.dim}-D transform; an image grid needs a 3-D one")
    if tolerance is not None and not tolerance > 0:
        raise InputError(f"--tolerance {tolerance}: must be > 0 (mm)")
    grid = grid_of(read_sitk(reference))
    return displacement_on_grid(tf.inverse() if inverse else tf, grid, tolerance=tolerance)


Inverse = Annotated[
    bool,
    typer.Option(
        "--inverse",
        help="Use the inverse transform: for a MOVING -> FIXED registration (refused where the field folds).",
    ),
]

Tolerance = Annotated[
    float | None,
    typer.Option(
        help="Largest interpolation error accepted, mm (measured at sampled voxels; default: "
        "1/20 of the smallest voxel spacing).",
        rich_help_panel=ADVANCED,
    ),
]


@app.command("field")
@_guarded
def field_command(
    transform: Annotated[Path, typer.Argument(help="transform.npz of a FIXED -> MOVING registration.")],
    reference: Annotated[
        Path, typer.Option("--reference", help="The fixed image (.nii.gz .nii .mha .nrrd): the field's grid.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Field image: .nii.gz .nii .mha .nrrd.")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="itk: LPS mm vectors (SimpleITK DisplacementFieldTransform, ANTs, Slicer); "
            "learn2reg: voxel units, channels last (X, Y, Z, 3).",
        ),
    ] = "itk",
    inverse: Inverse = False,
    tolerance: Tolerance = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
    verbose: Verbose = False,
) -> None:
    """Write the displacement d(x) = T(x) - x on every voxel of the reference (fixed) image.

    Register FIXED -> MOVING points: the field then maps each fixed voxel to where its content
    is in the moving image, the pull-back that warps the moving image onto the fixed one.
    """
    from register.fields import FIELD_FORMATS, write_field
    from register.io.images import image_extension

    if fmt not in FIELD_FORMATS:
        raise InputError(f"--format {fmt}: unknown; use one of {', '.join(FIELD_FORMATS)}")
    if image_extension(output) is None:
        raise InputError(f"-o {output}: a field is an image; use .nii.gz, .nii, .mha or .nrrd")
    _refuse_existing(output, overwrite, (transform, "TRANSFORM"), (reference, "--reference"))
    field = _grid_field(transform, reference, tolerance, inverse)
    write_field(output, field, fmt)
    out = {
        "status": "ok",
        "output": str(output),
        "format": fmt,
        "inverse": inverse,
        "grid": list(field.grid.shape),
        "stride": field.stride,
        "max_error_mm": field.max_error,
        "checked_voxels": field.checked,
        "seconds": round(field.seconds, 3),
    }
    if json_out:
        typer.echo(json.dumps(out))
    else:
        _console().print(
            f"wrote {output} ({fmt}, {field.grid.describe()}; exact every {field.stride} voxels, "
            f"interpolation error <= {field.max_error:.2g} mm at {field.checked:,} checked voxels, "
            f"{field.seconds:.1f} s)"
        )


@app.command("warp-image")
@_guarded
def warp_image_command(
    transform: Annotated[Path, typer.Argument(help="transform.npz of a FIXED -> MOVING registration.")],
    moving: Annotated[
        Path, typer.Argument(help="The moving image (CT or label map): .nii.gz .nii .mha .nrrd.")
    ],
    reference: Annotated[Path, typer.Option("--reference", help="The fixed image: the output's grid.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Warped image: .nii.gz .nii .mha .nrrd.")],
    interpolation: Annotated[
        str, typer.Option(help="linear (intensities) or nearest (label maps).")
    ] = "linear",
    inverse: Inverse = False,
    tolerance: Tolerance = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
    verbose: Verbose = False,
) -> None:
    """Resample MOVING onto the reference grid through the transform: out(x) = MOVING(T(x))."""
    from register.fields import warp_image
    from register.io.images import image_extension, read_sitk, write_sitk

    if interpolation not in ("linear", "nearest"):
        raise InputError(f"--interpolation {interpolation}: use linear or nearest")
    if image_extension(output) is None:
        raise InputError(f"-o {output}: use an image extension (.nii.gz, .nii, .mha or .nrrd)")
    _refuse_existing(
        output, overwrite, (transform, "TRANSFORM"), (moving, "MOVING"), (reference, "--reference")
    )
    image = read_sitk(moving)
    field = _grid_field(transform, reference, tolerance, inverse)
    write_sitk(output, warp_image(image, field, interpolation=interpolation))
    if json_out:
        typer.echo(json.dumps({"status": "ok", "output": str(output), "max_error_mm": field.max_error}))
    else:
        _console().print(f"wrote {output} ({field.grid.describe()}, {interpolation})")


@app.command("mask-points")
@_guarded
def mask_points_command(
    mask: Annotated[Path, typer.Argument(help="Segmentation mask or label map: .nii.gz .nii .mha .nrrd.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Point cloud to write (e.g. .vtk, .ply).")],
    skeleton: Annotated[
        bool,
        typer.Option(help="Keep the mask's 3-D skeleton only (vessel centre lines; needs scikit-image)."),
    ] = False,
    labels: Annotated[
        str | None,
        typer.Option(help="Comma-separated label values to keep, e.g. 1,2 (default: all non-zero)."),
    ] = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
    verbose: Verbose = False,
) -> None:
    """Turn a mask into points: voxel centres in world LPS mm, with radius (mm) and label attributes."""
    from register.io import write_points
    from register.io.images import read_mask

    keep = None
    if labels is not None:
        try:
            keep = tuple(int(v) for v in labels.split(",") if v.strip())
        except ValueError:
            raise InputError(
                f"--labels {labels}: expected whole numbers separated by commas, e.g. 1,2"
            ) from None
        if not keep:
            raise InputError(f"--labels {labels!r}: give at least one label value")
    _refuse_existing(output, overwrite, (mask, "MASK"))
    cloud = read_mask(mask, labels=keep, skeleton=skeleton)
    write_points(output, cloud)
    if json_out:
        typer.echo(json.dumps({"status": "ok", "output": str(output), "points": len(cloud)}))
    else:
        _console().print(f"wrote {output} ({len(cloud):,} points, world LPS mm)")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: ``register SRC TGT`` runs ``register run SRC TGT``."""
    # Idle OpenMP threads must sleep, not spin: on a 2-core machine with any other load,
    # spinning workers slow torch's reductions down 10-100x. Set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in COMMANDS and args[0] not in ("-h", "--help", "--version"):
        args.insert(0, "run")
    app(args=args, prog_name="register")


if __name__ == "__main__":
    main()
