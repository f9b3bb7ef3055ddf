"""What the installation offers: ``register info`` (versions, backends, devices, presets, formats,
flow models) and ``register --version`` (the root callback of the app)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from register.app import DISTRIBUTION
from register.app.cli.common import Verbose, guarded


def print_version(value: bool) -> None:
    """The --version callback: print ``register X.Y.Z`` and exit."""
    if value:
        from importlib import metadata

        typer.echo(f"register {metadata.version(DISTRIBUTION)}")
        raise typer.Exit()


def root_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Register 3-D point clouds with robust optimal transport."""


@guarded
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
    """The flow models' rows of the ``register info`` table."""
    if not models:
        table.add_row("flow models", "none shipped with this version (train one: register train --help)")
    for m in models:
        val = m["validation"]
        err = f", validation EPE {val['epe']:.3g} (zero flow {val['epe_zero']:.3g})" if val else ""
        table.add_row(f"flow model {m['name']}", f"preset {m['preset']}, {m['steps']} steps{err}")
