"""``register run SRC TGT`` (and plain ``register SRC TGT``): one registration from files to an
output folder, with a progress display and a summary table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from register.app.cli.common import (
    ADVANCED,
    JsonOut,
    check_screenshot,
    guarded,
    log_line,
    setup_logging,
    stderr_console,
)
from register.errors import InputError

if TYPE_CHECKING:
    from register.app.run import RunRequest


@guarded
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
    setup_logging(verbose, quiet or json_out)
    if labels is not None and not labels.strip():
        raise InputError(f"--labels {labels!r}: give the name of a point attribute, e.g. --labels label")
    from register.app.run import RunRequest

    request = RunRequest(
        source=source,
        target=target,
        pipeline=pipeline,
        stages=stages,
        weights=weights,
        device=device,
        seed=seed,
        labels=labels,
        overrides=tuple(set_ or ()),
        backend=backend,
        landmarks=landmarks,
        drop_nan=drop_nan,
    )
    options = RunOptions(
        request, output=output, quiet=quiet, show=show, screenshot=screenshot, overwrite=overwrite
    )
    summary = _run(options)
    if json_out:
        from register.app.outputs import json_safe

        typer.echo(json.dumps(json_safe(summary), indent=2))


@dataclass(frozen=True)
class RunOptions:
    """One ``register run``: the registration asked for and what to do with its result.

    Attributes:
        request: the registration (:class:`~register.app.run.RunRequest`: clouds, pipeline, seed...).
        output: output folder, or ``None`` for ``SRC-stem_to_TGT-stem`` (:attr:`outdir`).
        quiet: no progress and no summary table.
        show: open a 3-D window on the result.
        screenshot: render the same view off-screen to this PNG.
        overwrite: replace an existing output folder / screenshot.
    """

    request: RunRequest
    output: Path | None = None
    quiet: bool = False
    show: bool = False
    screenshot: Path | None = None
    overwrite: bool = False

    @property
    def outdir(self) -> Path:
        """The output folder: -o, or named after the two clouds."""
        return self.output or Path(f"{_stem(self.request.source)}_to_{_stem(self.request.target)}")


def _stem(path: Path) -> str:
    """A cloud's name for the default output folder: ``lung.ply`` -> ``lung``,
    ``pair.npz:pc1`` -> ``pair_pc1``."""
    from register.io import split_member

    file, key = split_member(path)
    return file.stem if key is None else f"{file.stem}_{key}"


def _run(options: RunOptions) -> dict:
    """Check, register, write the output folder (and screenshot / window); the run's summary."""
    from register.app.outputs import check_output
    from register.app.run import check_request, input_files, prepare, result_size

    request, outdir = options.request, options.outdir
    check_request(request)
    # Before any work: the output folder (never over an input or a folder of the user's) ...
    out = check_output(outdir, overwrite=options.overwrite, inputs=input_files(request))
    if options.screenshot is not None:
        _check_run_screenshot(options.screenshot, options.overwrite, out.path, outdir)
    if options.show:  # no window can open: say so before the work, not after it
        from register.app.viz import require_display

        require_display()
    inputs = prepare(request)
    # ... and, once the clouds are read, room for the result and working writers for it.
    out.check_space(result_size(inputs))
    out.check_writers(inputs.source)
    result, metrics = _register_with_progress(inputs, options.quiet)
    warped_path = _write(options, out, inputs, result, metrics)
    summary = _summary(outdir, warped_path, options.screenshot, metrics)
    if not options.quiet:
        _print_summary(summary)
    return summary


def _check_run_screenshot(screenshot: Path, overwrite: bool, folder: Path, outdir: Path) -> None:
    """Refuse a --screenshot that :func:`check_screenshot` refuses or that lies in the output folder
    (``folder``: the resolved ``-o outdir``)."""
    check_screenshot(screenshot, overwrite)
    if folder in screenshot.resolve().parents:
        raise InputError(
            f"--screenshot {screenshot}: inside the output folder -o {outdir}, which is written as a "
            "whole; put the picture elsewhere"
        )


def _write(options: RunOptions, out, inputs, result, metrics) -> Path:
    """Write the result folder (:func:`~register.app.outputs.write_result`), the --screenshot
    before it and the --show window after; the warped source's path."""
    from register.app.outputs import write_result
    from register.app.viz import figures_of, render

    src, tgt = inputs.source, inputs.target
    screenshot = options.screenshot
    title = f"{options.request.source.name} -> {options.request.target.name}"
    if screenshot is not None:
        # Rendered before the results are written: a rendering error leaves no output folder.
        figures = figures_of(result, metrics)
        render(src.points, tgt.points, result.warped, screenshot=screenshot, title=title, **figures)
    try:
        warped_path = write_result(out, src, result, metrics)
    except BaseException:
        if screenshot is not None:
            screenshot.unlink(missing_ok=True)
        raise
    if options.show:
        from register.app.viz_show import ResultView, show_result

        view = ResultView.from_result(src.points, tgt.points, result, inputs.landmarks, title=title)
        show_result(view)
    return warped_path


def _summary(outdir: Path, warped_path: Path, screenshot: Path | None, metrics: dict) -> dict:
    """The run's summary (--json, and the table): the files written and the main metrics."""
    return {
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


# Progress-bar labels of the steps that are not RobOT stages (the others: "<stage> RobOT").
STEP_LABELS = {
    "flow": "flow network",
    "reliability": "reliability report",
    "fallback": "again, fallback settings",
}


def _register_with_progress(inputs, quiet):
    """:func:`~register.app.run.execute`, with a line per step on stderr unless ``quiet``: its
    level counter (``3/4``), elapsed time and, once a level has passed, the time left (from the
    levels' pace so far)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from register.app.run import execute

    if quiet:
        return execute(inputs)
    console = stderr_console()
    if not console.is_terminal:  # a log file: one timestamped line per step
        return execute(inputs, on_stage=_step_logger())
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=12),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks = {}

        def on_stage(name: str, state: str) -> None:
            if state == "start":
                tasks[name] = progress.add_task(step_label(name), total=None)
            elif state.startswith("level "):
                done, total = (int(v) for v in state.split()[1].split("/"))
                progress.update(tasks[name], completed=done, total=total)
            else:
                total = progress.tasks[tasks[name]].total or 1
                progress.update(tasks[name], completed=total, total=total)

        return execute(inputs, on_stage=on_stage)


def step_label(name: str) -> str:
    """The label of a step: ``spline`` -> ``spline RobOT``; ``flow (frame x,y,z)`` -> ``flow
    network (frame x,y,z)`` (a stage run once per candidate frame of the flow network)."""
    stage, _, tag = name.partition(" (")
    label = STEP_LABELS.get(stage, f"{stage} RobOT")
    return f"{label} ({tag}" if tag else label


def _step_logger():
    """The ``on_stage`` callback when stderr is a file: a timestamped line (:func:`log_line`) per
    started and finished step (with its seconds) and per level passed."""
    import time

    started: dict[str, float] = {}

    def on_stage(name: str, state: str) -> None:
        now = time.perf_counter()
        if state == "start":
            started[name] = now
            text = "started"
        elif state.startswith("level 0/"):
            return
        elif state.startswith("level "):
            text = f"{state} after {now - started.get(name, now):.1f} s"
        else:
            text = f"done in {now - started.pop(name, now):.1f} s"
        log_line(f"{step_label(name)}: {text}")

    return on_stage


def _print_summary(summary: dict) -> None:
    """The run's summary table, on stderr."""
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
    stderr_console().print(table)


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
