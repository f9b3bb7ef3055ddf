"""``register train``: train a flow network on synthetic pairs (or fine-tune one on real pairs
with ``--init`` / ``--real``), with its progress bar and summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from register.app.cli.common import ADVANCED, Verbose, guarded, setup_logging, stderr_console
from register.errors import InputError


@guarded
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
    setup_logging(False, quiet)
    from register.app.run import check_seed
    from register.app.train import TrainSettings

    check_seed(seed)
    settings = TrainSettings(
        net=_initial_network(init),
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
    _check_threads(threads)
    command = _command_line(settings, out, threads)
    from register.core.threads import torch_threads

    with torch_threads(threads):  # restored after: the caller's count is its own
        result = _train_with_progress(settings, out, resume, overwrite, device, command, quiet)
    if not quiet:
        _print_result(result, preset)


def _initial_network(init: Path | None):
    """The network configuration of the --init model (fine-tuning keeps it), or ``None``."""
    if init is None:
        return None
    from register.models.checkpoint import read_checkpoint
    from register.models.pointpwc import FlowNetConfig

    return FlowNetConfig(**read_checkpoint(init, option="--init")["architecture"])


def _check_threads(threads: int | None) -> None:
    """Refuse a --threads below 1."""
    if threads is not None and threads < 1:
        raise InputError(f"--threads {threads}: must be >= 1")


def _command_line(settings, out: Path, threads: int | None) -> str:
    """The ``register train`` command line that reproduces the run (recorded in the model);
    options left at their defaults are left out."""
    s = settings
    return (
        f"register train --preset {s.preset} --steps {s.steps} --out {out.name} --seed {s.seed} "
        f"--batch-size {s.batch_size} --points {s.points}"
        + (f" --lr {s.lr}" if s.lr != 1e-3 else "")
        # float sums may depend on the thread count: record it for bit-for-bit reproduction
        + (f" --threads {threads}" if threads is not None else "")
        + (f" --validation-pairs {s.validation_pairs}" if s.validation_pairs != 8 else "")
        + (f" --init {s.init}" if s.init else "")
        + (f" --keypoint-fraction {s.keypoint_fraction}" if s.keypoint_fraction else "")
        + (
            f" --real {s.real} --ot-weight {s.ot_weight} --ot-blur {s.ot_blur} --ot-reach {s.ot_reach}"
            if s.real
            else ""
        )
    )


def _print_result(result, preset: str) -> None:
    """The summary table of a finished training run, on stderr."""
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
    stderr_console().print(table)


def _train_with_progress(settings, out, resume, overwrite, device, command, quiet):
    """:func:`~register.app.train.train`, with a progress bar on stderr unless ``quiet``."""
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
        console=stderr_console(),
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
