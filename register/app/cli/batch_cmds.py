"""Commands over many results: ``batch`` (every pair of a manifest, resumable, local processes or
a Dask cluster, with its progress bar and table), ``report`` (the HTML page of a batch) and
``show`` (reopen one result in 3-D)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from register.app.cli.common import (
    ADVANCED,
    EXIT_INTERRUPTED,
    EXIT_PAIRS_FAILED,
    JsonOut,
    Overwrite,
    Verbose,
    check_screenshot,
    guarded,
    log_line,
    setup_logging,
    stderr_console,
)
from register.errors import InputError


@guarded
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
    setup_logging(False, quiet or json_out)
    try:
        from register.app.batch import BatchOptions

        options = BatchOptions(pipeline, weights, seed, device, tuple(set_ or ()), stages, images, retries)
        rows, info = _batch(manifest, output, options, workers, scheduler, threads, quiet or json_out)
        report_path = None
        if report:
            from register.app.report import write_report

            report_path = write_report(output)
    except KeyboardInterrupt:
        stderr_console().print(f"interrupted; run the same command again to finish the batch in {output}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    failed = [r for r in rows if r["status"] != "ok"]
    if json_out:
        from register.app.outputs import json_safe

        typer.echo(json.dumps(json_safe(_batch_summary(output, info, failed, report_path)), indent=2))
    elif not quiet:
        _print_batch_table(rows, info, report_path)
    if failed:
        raise typer.Exit(EXIT_PAIRS_FAILED)


def _batch_summary(output: Path, info: dict, failed: list[dict], report_path) -> dict:
    """The --json summary of a batch: its files, the pair counts and the failed pairs' ids."""
    return {
        "status": "failed" if failed else "ok",
        "output": str(output),
        "summary_csv": str(output / "summary.csv"),
        "summary_json": str(output / "summary.json"),
        "report": str(report_path) if report_path else None,
        **info["counts"],
        "wall_seconds": info["wall_seconds"],
        "failed_ids": [r["id"] for r in failed],
    }


def _batch(manifest, output, options, workers, scheduler, threads, quiet):
    """Check everything (options, manifest, configurations, inputs), then run the pairs; the
    ``(rows, info)`` of :func:`~register.app.batch.run_batch`."""
    from register.app.batch import check_outdir, check_pair_inputs, plan, read_manifest, run_batch
    from register.app.run import build_config

    _check_batch_options(options, workers, scheduler)
    pairs = read_manifest(manifest)
    # Every configuration a pair will use is checked now, before any work.
    for name in sorted({p.pipeline or options.pipeline for p in pairs}):
        build_config(name, stages=options.stages, weights=options.weights, overrides=options.overrides)
    check_outdir(output)
    jobs = plan(pairs, output, options)
    check_pair_inputs(jobs)
    runner = _runner(workers, scheduler, threads)
    with runner, _batch_progress(len(jobs), quiet) as on_event:
        return run_batch(jobs, output, runner, options, manifest=manifest, on_event=on_event)


def _check_batch_options(options, workers: int | None, scheduler: str | None) -> None:
    """Refuse --workers with --scheduler, a bad --seed and a --device no pair could run on."""
    from register.app.run import check_seed

    if scheduler is not None and workers is not None:
        raise InputError(
            "--workers and --scheduler: choose one (on a Dask cluster the workers run the pairs)"
        )
    check_seed(options.seed)
    from register.pipeline import resolve_device

    resolve_device(options.device)  # a device no pair could run on: refused before any pair runs


def _runner(workers: int | None, scheduler: str | None, threads: int | None):
    """The runner of the pairs: a Dask cluster's (--scheduler) or local processes (--workers)."""
    if scheduler is not None:
        from register.app.batch.dask_runner import DaskRunner

        return DaskRunner(scheduler, threads)
    from register.app.batch.local import LocalRunner

    return LocalRunner(workers or 1, threads)


def _batch_progress(total: int, quiet: bool):
    """Context manager yielding the ``on_event`` callback of :func:`run_batch` (a progress bar)."""
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if quiet:
        return contextlib.nullcontext(None)
    console = stderr_console()
    if not console.is_terminal:  # a log file (SLURM, nohup): one plain line per event
        return contextlib.nullcontext(_log_lines(total))
    progress = Progress(
        TextColumn("pairs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=stderr_console(),
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


def pair_line(record: dict) -> str:
    """What a log line says of a finished pair: status, seconds, TRE or chamfer, verdict or error."""
    if record["status"] != "ok":
        return f"failed: {record.get('error')}"
    parts = [f"ok in {record.get('seconds') or 0.0:.1f} s"]
    for key, name in (("tre", "TRE"), ("chamfer", "chamfer")):
        if record.get(f"{key}_after") is not None:
            parts.append(f"{name} {record[f'{key}_before']:.4g} -> {record[f'{key}_after']:.4g}")
            break
    if record.get("verdict"):
        parts.append(f"reliability {record['verdict']}")
    return ", ".join(parts)


def _log_lines(total: int):
    """The ``on_event`` callback that prints one timestamped line per started, finished, retried
    or skipped pair on stderr (:func:`log_line`; stderr is a file: no progress bar)."""
    finished = 0

    def on_event(event: str, job, record) -> None:
        nonlocal finished
        if event in ("done", "skipped"):
            finished += 1
        if event == "started":
            text = "started"
        elif event == "done":
            text = f"{pair_line(record)} [{finished}/{total}]"
        elif event == "skipped":
            text = f"complete from an earlier run, skipped [{finished}/{total}]"
        else:
            text = f"attempt {job.attempt} failed, retrying"
        log_line(f"pair {job.id}: {text}")

    return on_event


def _print_batch_table(rows: list[dict], info: dict, report_path) -> None:
    """The table of the pairs (and the report's path), on stderr."""
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
    console = stderr_console()
    console.print(table)
    if report_path:
        console.print(f"report: {report_path}", highlight=False, soft_wrap=True)


@guarded
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
    stderr_console().print(f"wrote {path}", highlight=False, soft_wrap=True)


@guarded
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
    """Reopen a result in 3-D: source, target and warped source (toggle each), landmark errors as tubes coloured by their length.

    Opening a window needs a display; on a machine without one, render the view with
    --screenshot FILE.png.
    """
    if screenshot is not None:
        check_screenshot(screenshot, overwrite)
    from register.app.outputs import read_result
    from register.app.viz_show import ResultView, show_result

    fields = read_result(result, target=target, landmarks=landmarks)
    fields.setdefault("units", _result_units(result))
    show_result(ResultView(**fields), screenshot=screenshot)
    if screenshot is not None:
        stderr_console().print(f"wrote {screenshot}", highlight=False, soft_wrap=True)


def _result_units(folder: Path) -> str:
    """The length unit of a result folder: ``pipeline.units`` of its ``config.toml`` (``""``:
    unknown, shown as data units)."""
    import tomllib

    try:
        with (Path(folder) / "config.toml").open("rb") as fh:
            units = tomllib.load(fh).get("pipeline", {}).get("units", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return units if isinstance(units, str) else ""
