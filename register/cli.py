"""Command-line interface (Typer). The only module that prints, reads argv or exits.

``register SRC TGT [OPTIONS]`` is shorthand for ``register run SRC TGT [OPTIONS]``.
Heavy modules (torch, pyvista) are imported inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from register.errors import InputError

EXIT_INPUT = 2
COMMANDS = ("run", "warp", "eval", "info", "train")
ADVANCED = "Advanced"

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
        "  register train --preset lung --steps 2000 --out lung.pt\n\n"
        "  register info"
    ),
)


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    from rich.markup import escape

    # Escaped: "[affine]" in a message is text, not markup; soft_wrap: paths are never split.
    _console().print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_INPUT)


def _setup_logging(verbose: bool, quiet: bool) -> None:
    import logging

    from rich.logging import RichHandler

    level = logging.INFO if verbose else logging.WARNING
    if quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=_console())])


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in (
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
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _parse_stages(stages: str | None, cfg):
    """``cfg`` with ``pipeline.stages`` from a comma-separated ``--stages`` value (checked)."""
    from register.config import from_dict

    if stages is None:
        return cfg
    names = [s.strip() for s in stages.split(",") if s.strip()]
    return from_dict({"pipeline": {"stages": names}}, origin="--stages", base=cfg)


@app.command("run")
def run(
    source: Annotated[
        Path,
        typer.Argument(
            help="Source points (moved onto the target): .ply .pcd .xyz .txt .csv .npy .npz .vtk .vtp .vtu"
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
    json_out: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")
    ] = False,
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
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a config key: TABLE.KEY=VALUE (repeatable).", rich_help_panel=ADVANCED
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="Kernel backend: auto, dense, sparse (multiscale truncated above 16M kernel entries), keops.",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Log each level of each stage.", rich_help_panel=ADVANCED)
    ] = False,
) -> None:
    """Register SRC onto TGT and write the transform, warped source and deformation field."""
    _setup_logging(verbose, quiet or json_out)
    try:
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
            set_ or [],
            backend,
            landmarks,
        )
    except InputError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        from register.outputs import json_safe

        typer.echo(json.dumps(json_safe(summary), indent=2))


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
) -> dict:
    from register.config import load_config, with_overrides
    from register.io import read_points
    from register.outputs import check_output_dir, write_result
    from register.pipeline import MIN_POINTS

    outdir = output or Path(f"{source.stem}_to_{target.stem}")
    check_output_dir(outdir, overwrite)
    if screenshot is not None:
        if screenshot.suffix.lower() != ".png":
            raise InputError(f"--screenshot {screenshot}: must be a .png file")
        if screenshot.exists() and not overwrite:
            raise InputError(
                f"--screenshot {screenshot}: file exists; choose another name or pass --overwrite"
            )
    cfg = load_config(pipeline)
    cfg = _parse_stages(stages, cfg)
    extra = list(overrides)
    if weights is not None:
        extra += [f'pipeline.weights="{weights}"', "pipeline.weights_optional=false"]
    if backend is not None:
        extra.append(f'pipeline.backend="{backend}"')
    if extra:
        cfg = with_overrides(cfg, extra)
    src = read_points(source, min_points=MIN_POINTS)
    tgt = read_points(target, min_points=MIN_POINTS)
    pairs = _read_landmarks(landmarks, src.points.shape[1]) if landmarks else None

    t0 = time.perf_counter()
    result = _register_with_progress(src, tgt, cfg, device, seed, quiet)
    seconds = time.perf_counter() - t0
    metrics = {
        **result.metrics,
        "source": str(source),
        "target": str(target),
        "pipeline": pipeline,
        "total_seconds": seconds,
        "stages": result.stages,
        "versions": _versions(),
    }
    if pairs is not None:
        metrics["landmarks"] = _landmark_errors(result.transform, *pairs)
    from register.viz import render

    title = f"{source.name} -> {target.name}"
    if screenshot is not None:
        # Rendered before the results are written: a rendering error leaves no output folder.
        render(src.points, tgt.points, result.warped, screenshot=screenshot, title=title)
    try:
        warped_path = write_result(outdir, src, result, metrics, overwrite=overwrite)
    except BaseException:
        if screenshot is not None:
            screenshot.unlink(missing_ok=True)
        raise
    if show:
        render(src.points, tgt.points, result.warped, show=True, title=title)
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
        "seconds": seconds,
        "stage_seconds": metrics["stage_seconds"],
        "device": metrics["device"],
        "backend": metrics["backend"],
        "landmarks": metrics.get("landmarks"),
    }
    if not quiet:
        _print_summary(summary)
    return summary


def _register_with_progress(src, tgt, cfg, device, seed, quiet):
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from register.pipeline import register

    if quiet:
        return register(src, tgt, cfg, device=device, seed=seed)
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
                tasks[name] = progress.add_task(
                    f"{name} RobOT" if name != "flow" else "flow network", total=1
                )
            else:
                progress.update(tasks[name], completed=1)

        return register(src, tgt, cfg, device=device, seed=seed, on_stage=on_stage)


def _print_summary(summary: dict) -> None:
    from rich.table import Table

    table = Table(title="register", show_header=False, title_justify="left")
    table.add_row("points", f"{summary['source_points']:,} -> {summary['target_points']:,}")
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
    _console().print(table)


def _read_landmarks(paths: tuple[Path, Path], dim: int):
    """Source and target landmark arrays ``(L, D)``, rows in correspondence."""
    from register.io import read_points

    src_lm, tgt_lm = (read_points(p).points for p in paths)
    if src_lm.shape != tgt_lm.shape:
        raise InputError(
            f"--landmarks {paths[0]} {paths[1]}: {len(src_lm)} and {len(tgt_lm)} rows "
            f"({src_lm.shape[1]}-D and {tgt_lm.shape[1]}-D); rows must correspond one to one"
        )
    if src_lm.shape[1] != dim:
        raise InputError(f"--landmarks {paths[0]}: {src_lm.shape[1]}-D landmarks for {dim}-D clouds")
    return src_lm, tgt_lm


def _landmark_errors(transform, src_lm, tgt_lm) -> dict:
    """TRE before and after ``transform`` (data units, lower is better) and per landmark."""
    import numpy as np

    from register.metrics import tre

    warped = transform.apply(src_lm)
    return {
        "count": len(src_lm),
        "before": tre(src_lm, tgt_lm),
        "after": tre(warped, tgt_lm),
        "per_landmark_after": np.linalg.norm(warped - tgt_lm, axis=1).tolist(),
    }


@app.command("eval")
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
) -> None:
    """Evaluate a saved transform: landmark TRE, or scene-flow EPE3D / Acc3DS / Acc3DR / Outliers3D."""
    try:
        from register.core.transforms import Transform
        from register.io import read_points
        from register.metrics import scene_flow

        if landmarks is None and flow_gt is None:
            raise InputError("give --landmarks SRC_LM TGT_LM and/or --flow-gt FLOW --source SRC")
        tf = Transform.load(transform)
        out: dict = {"transform": str(transform)}
        if landmarks is not None:
            out["landmarks"] = _landmark_errors(tf, *_read_landmarks(landmarks, tf.dim))
        if flow_gt is not None:
            if source is None:
                raise InputError("--flow-gt needs --source (the points the flow rows belong to)")
            pts = read_points(source).points
            gt = read_points(flow_gt).points
            if gt.shape != pts.shape:
                raise InputError(f"--flow-gt {flow_gt}: shape {gt.shape} but --source has {pts.shape}")
            out["scene_flow"] = scene_flow(tf.apply(pts) - pts, gt)
    except InputError as exc:
        raise _fail(str(exc)) from None
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
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.")] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")
    ] = False,
) -> None:
    """Apply a saved transform to any points or mesh (faces and attributes are kept)."""
    try:
        from register.core.transforms import Transform
        from register.io import read_points, write_points

        if output.exists() and not overwrite:
            raise InputError(f"-o {output}: file exists; choose another name or pass --overwrite")
        if output.resolve() == input_.resolve():
            raise InputError(f"-o {output}: same file as INPUT; write the result elsewhere")
        tf = Transform.load(transform)
        cloud = read_points(input_)
        if cloud.points.shape[1] != tf.dim:
            raise InputError(
                f"{input_}: {cloud.points.shape[1]}-D points, but {transform} is a {tf.dim}-D transform"
            )
        moved = tf.apply(cloud.points)
        write_points(output, cloud.with_points(moved))
    except InputError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        typer.echo(json.dumps({"status": "ok", "output": str(output), "points": len(moved)}))
    else:
        _console().print(f"wrote {output} ({len(moved):,} points)")


@app.command("info")
def info(
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON on stdout.")] = False,
) -> None:
    """Versions, kernel backends, devices, presets, file formats and flow models."""
    import torch

    from register.config import preset_names
    from register.io import SUPPORTED_EXTENSIONS

    cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    data = {
        "versions": _versions(),
        "devices": {"cpu_threads": torch.get_num_threads(), "cuda": cuda},
        "backends": {
            "dense": "torch tensorised reductions (CPU and CUDA)",
            "keops": "KeOps online reductions (CUDA; CPU works but compiles and runs slower)",
            "sparse": "multiscale truncated Sinkhorn over neighbour lists above 16M entries (explicit only)",
            "auto": "dense on CPU; keops on CUDA for large problems",
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
    _console().print(table)


def _flow_models() -> list[dict]:
    """The shipped flow models (``register info``)."""
    from register.models.registry import available_models

    try:
        return [m.to_dict() for m in available_models()]
    except InputError as exc:
        raise _fail(str(exc)) from None


def _flow_model_rows(table, models: list[dict]) -> None:
    if not models:
        table.add_row("flow models", "none shipped with this version (train one: register train --help)")
    for m in models:
        val = m["validation"]
        err = f", validation EPE {val['epe']:.3g} (zero flow {val['epe_zero']:.3g})" if val else ""
        table.add_row(f"flow model {m['name']}", f"preset {m['preset']}, {m['steps']} steps{err}")


@app.command("train")
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
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress bar and no summary.")] = False,
) -> None:
    """Train a flow network (stage 2) on synthetic pairs with known flow, and save it.

    Supervised multi-scale end-point-error loss on pairs drawn on the fly (same seed, same
    pairs, same weights). The training state is checkpointed every --checkpoint-every steps
    and on Ctrl-C; --resume continues it to the same result as an uninterrupted run. Use the
    model with --set flow.model=OUT --stages affine,flow,spline.

    Example: register train --preset lung --steps 2000 --out lung.pt
    """
    _setup_logging(False, quiet)
    try:
        from register.models.train import TrainSettings

        settings = TrainSettings(
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
        )
        result = _train_with_progress(settings, out, resume, overwrite, device, command, quiet)
    except InputError as exc:
        raise _fail(str(exc)) from None
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
    from register.models.train import train

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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: ``register SRC TGT`` runs ``register run SRC TGT``."""
    # Idle OpenMP threads must sleep, not spin: on a 2-core machine with any other load,
    # spinning workers slow torch's reductions down 10-100x. Set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in COMMANDS and args[0] not in ("-h", "--help"):
        args.insert(0, "run")
    app(args=args, prog_name="register")


if __name__ == "__main__":
    main()
