"""Model cards: the Markdown file next to each trained model (``model.pt`` -> ``model.md``).

Written by :func:`register.app.train.train` from the checkpoint's own metadata, so the card
always describes the weights it sits next to: training data, the command that reproduces
them, seed, steps, time, validation error, architecture and normalisation.
"""

from __future__ import annotations

from pathlib import Path


def card_path(model: Path) -> Path:
    """``model.pt`` -> ``model.md``."""
    return Path(model).with_suffix(".md")


def _schedule_rows(schedule: list) -> list[str]:
    """A card row when ``--steps`` changed on ``--resume`` (the command alone does not reproduce
    the weights then: the learning rate of every step depends on the scheduled total)."""
    if len(schedule) < 2:
        return []
    parts = [f"--steps {steps} from step {first}" for first, steps in schedule]
    return [
        f"| learning-rate schedule | {'; then '.join(parts)} (changed with --resume): to reproduce, run the "
        f"command with --steps {schedule[0][1]}, stop it at step {schedule[1][0]} and continue with "
        "--resume and the next --steps |"
    ]


def model_card(payload: dict, name: str) -> str:
    """The Markdown card of a checkpoint dict (see :mod:`register.models.checkpoint`)."""
    meta = payload.get("metadata", {})
    arch = payload["architecture"]
    norm = payload["normalisation"]
    val = meta.get("validation") or {}
    history = meta.get("validation_history", [])
    lines = [
        f"# Flow model `{name}`",
        "",
        f"Stage 2 of `register` (a PointPWC-style point-flow network), preset `{meta.get('preset', '?')}`.",
        "",
        "| | |",
        "|---|---|",
        f"| training data | {meta.get('data', '?')} |",
        f"| command | `{meta.get('command') or '(library call)'}` |",
        *_schedule_rows(meta.get("schedule", [])),
        f"| seed | {meta.get('seed', '?')} |",
        f"| steps | {meta.get('steps', '?')} (batch {meta.get('batch_size', '?')}, {meta.get('points', '?')} points per cloud) |",
        f"| training time | {meta.get('seconds', 0) / 3600:.2f} h ({meta.get('seconds', 0):.0f} s, torch {meta.get('torch', '?')}) |",
        f"| parameters | {meta.get('parameters', 0):,} |",
        f"| input feature | {payload.get('feature') or 'none'} |",
        f"| normalisation | {norm['mode']}"
        + (f", {norm['length']} data units per model unit" if norm["mode"] == "fixed" else "")
        + " |",
        f"| architecture | channels {arch['channels']}, estimator {arch['estimator']}, k {arch['k']}, "
        f"k_cost {arch['k_cost']}, ratio {arch['ratio']} |",
    ]
    if val:
        lines.append(
            f"| validation | mean end-point error {val['epe']:.4g} against {val['epe_zero']:.4g} for zero flow "
            f"(data units), {val['pairs']} held-out synthetic pairs |"
        )
    if history:
        lines += ["", "Validation during training (mean end-point error, data units):", ""]
        lines += ["| step | EPE | zero flow |", "|---|---|---|"]
        lines += [f"| {h['step']} | {h['epe']:.4g} | {h['epe_zero']:.4g} |" for h in history]
    lines += [
        "",
        "Use: `register SRC TGT -p PRESET --stages affine,flow,spline --set flow.model=PATH` "
        "(or the model's name once it ships in `register/models/weights/`).",
        "",
    ]
    return "\n".join(lines)
