"""The models shipped in ``register/models/weights/`` and :func:`load_model`.

A shipped model ``NAME`` is the checkpoint ``weights/NAME.pt`` with its model card
``weights/NAME.md`` (training data, the command that reproduces it, seed, steps, time,
validation error). Anything else is loaded by path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from register.errors import InputError
from register.models.checkpoint import FlowModel, read_checkpoint

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ModelInfo:
    """One shipped model, as ``register info`` lists it.

    Attributes:
        name: the name to pass as ``flow.model``; path: its checkpoint; card: its model card
        (``None`` if missing); preset: the training preset; steps: training steps;
        validation: held-out validation errors recorded at the end of training (data units).
    """

    name: str
    path: Path
    card: Path | None
    preset: str
    steps: int
    validation: dict

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "card": str(self.card) if self.card else None,
            "preset": self.preset,
            "steps": self.steps,
            "validation": self.validation,
        }


def available_models(directory: Path = WEIGHTS_DIR) -> list[ModelInfo]:
    """The checkpoints ``*.pt`` of ``directory``, sorted by name (empty when none is shipped)."""
    out = []
    for path in sorted(Path(directory).glob("*.pt")):
        meta = read_checkpoint(path, option=f"shipped model {path.name}").get("metadata", {})
        card = path.with_suffix(".md")
        out.append(
            ModelInfo(
                path.stem,
                path,
                card if card.is_file() else None,
                str(meta.get("preset", "")),
                int(meta.get("steps", 0)),
                dict(meta.get("validation", {})),
            )
        )
    return out


def load_model(
    name_or_path: str | os.PathLike,
    device: str = "cpu",
    *,
    option: str = "flow.model",
    directory: Path = WEIGHTS_DIR,
) -> FlowModel:
    """A shipped model by name, or a checkpoint by path, on ``device``.

    Args:
        name_or_path: a shipped name (see :func:`available_models`) or a ``.pt`` path.
        device: torch device string.
        option: how the caller names the setting in error messages.
        directory: where shipped models live.

    Raises:
        InputError: unknown name (the message lists the shipped models), unreadable file.
    """
    text = str(name_or_path)
    shipped = Path(directory) / f"{text}.pt"
    if os.sep not in text and not text.endswith(".pt") and shipped.is_file():
        return FlowModel.from_checkpoint(read_checkpoint(shipped, option), device, text)
    path = Path(text)
    if path.is_file() or text.endswith(".pt") or os.sep in text:
        return FlowModel.from_checkpoint(read_checkpoint(path, option), device, text)
    names = [m.name for m in available_models(directory)]
    shipped_list = ", ".join(names) if names else "none (no trained flow model ships with this version)"
    raise InputError(
        f"{option} = {text!r}: no such flow model. Shipped models: {shipped_list}. Give a shipped name or "
        "the path of a checkpoint written by `register train` (e.g. flow.model = 'model.pt'), "
        "or leave 'flow' out of pipeline.stages"
    )
