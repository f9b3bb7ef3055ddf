"""Command-line interface (Typer). The only package that prints, reads argv or exits.

``register SRC TGT [OPTIONS]`` is shorthand for ``register run SRC TGT [OPTIONS]``.
Heavy modules (torch, pyvista) are imported inside the commands so that ``--help`` is instant.

This module creates :data:`app`, registers the commands of the modules below (in the order of
``register --help``) and holds :func:`main`, the console-script entry point:

- :mod:`~register.app.cli.common`: exit codes, option aliases, error policy, console, checks;
- :mod:`~register.app.cli.register_cmd`: ``run``;
- :mod:`~register.app.cli.transforms`: ``eval``, ``warp``, ``export``;
- :mod:`~register.app.cli.batch_cmds`: ``batch``, ``report``, ``show``;
- :mod:`~register.app.cli.info`: ``info``, ``--version``;
- :mod:`~register.app.cli.train_cmds`: ``train``;
- :mod:`~register.app.cli.images`: ``field``, ``warp-image``, ``mask-points``.
"""

from __future__ import annotations

import os
import sys

import typer

from register.app.cli import batch_cmds, images, info, register_cmd, train_cmds, transforms

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
app.callback()(info.root_options)
app.command("run")(register_cmd.run)
app.command("eval")(transforms.evaluate)
app.command("warp")(transforms.warp)
app.command("export")(transforms.export)
app.command("batch")(batch_cmds.batch)
app.command("report")(batch_cmds.report_command)
app.command("show")(batch_cmds.show_command)
app.command("info")(info.info)
app.command("train")(train_cmds.train_command)
app.command("field")(images.field_command)
app.command("warp-image")(images.warp_image_command)
app.command("mask-points")(images.mask_points_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: ``register SRC TGT`` runs ``register run SRC TGT``."""
    # Idle OpenMP threads must sleep, not spin: on a 2-core machine with any other load,
    # spinning workers slow torch's reductions down 10-100x. Set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in COMMANDS and args[0] not in ("-h", "--help", "--version"):
        args.insert(0, "run")
    app(args=args, prog_name="register")
