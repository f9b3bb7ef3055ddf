"""Checkpoint bookkeeping of a training run: its checks, its starting point and its state.

:func:`check_paths` refuses, before any work, to clobber a model, its card or a training state,
and loads the training state a resumed run continues (same settings but ``steps`` and
``checkpoint_every``). :class:`TrainingRun` holds what the checkpoints record (network,
optimiser, step, seconds, validation history, learning-rate schedules) and writes the training
state (:func:`~register.app.train_settings.state_path`) and the final model with its card.
Every write is atomic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from register.app.train_settings import RESUMABLE_CHANGES, TrainSettings, state_path
from register.core.files import atomic_write
from register.errors import InputError
from register.models.card import card_path, model_card
from register.models.checkpoint import make_checkpoint, read_checkpoint, save_checkpoint
from register.models.pointpwc import FlowNet, count_parameters, init_parameters
from register.synth.pairs import TRAIN_STREAM


def check_paths(settings: TrainSettings, out: Path, resume: bool, overwrite: bool) -> dict | None:
    """Refuse to clobber files; load the training state when resuming."""
    state = state_path(out)
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: folder {out.parent} does not exist; create it first")
    for existing in (out, card_path(out)):
        if existing.exists() and not overwrite:
            raise InputError(f"--out {out}: {existing} exists; choose another name or pass --overwrite")
    if not resume:
        if state.exists() and not overwrite:
            raise InputError(
                f"--out {out}: the training state {state} of an earlier run exists; pass --resume to "
                "continue it, or --overwrite to start again"
            )
        return None
    if not state.exists():
        raise InputError(f"--resume: no training state {state} for --out {out}; start without --resume")
    payload = read_checkpoint(state, option="--resume")
    if "training" not in payload:
        raise InputError(f"--resume: {state} holds no training state (optimizer, step)")
    saved = dict(payload["training"]["settings"])
    current = settings.to_dict()
    # A key the saved run predates had its default value then.
    defaults = TrainSettings(preset=settings.preset, net=settings.network()).to_dict()
    changed = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k, defaults[k]) != current[k]]
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise InputError(f"--resume: {state} was trained with other settings ({diffs}); use the same ones")
    return payload


def load_init(net: FlowNet, settings: TrainSettings) -> None:
    """Start ``net`` from the weights of ``settings.init`` (same architecture, normalisation and
    input feature as the run, else :class:`InputError`)."""
    payload = read_checkpoint(settings.init, option="--init")
    spec = settings.spec
    if payload["architecture"] != net.cfg.to_dict():
        raise InputError(f"--init {settings.init}: its network architecture differs from this run's")
    if payload["normalisation"] != spec.normalisation.to_dict() or payload["feature"] != spec.feature:
        raise InputError(
            f"--init {settings.init}: trained with another normalisation or input feature than "
            f"--preset {settings.preset}"
        )
    net.load_state_dict(payload["state_dict"])


@dataclass
class TrainingRun:
    """The state of a training run, as its checkpoints record it.

    Attributes:
        settings: the run's settings; out: path of the final model.
        net: the network (on the training device); optimiser: its Adam optimiser.
        command: the command line that started the run.
        real: the real pairs of the OT loss (3) (:class:`register.app.finetune.RealPairs`),
            or ``None``.
        step: steps done; seconds: training time so far (all sessions), s.
        history: every validation so far (``step``, ``epe``, ``epe_zero`` in data units, ``pairs``).
        schedule: ``[first step, scheduled steps]`` of each learning-rate schedule (2).
        consistent: ``False`` while the weights and ``step`` disagree (inside an update).
    """

    settings: TrainSettings
    out: Path
    net: FlowNet
    optimiser: torch.optim.Optimizer
    command: str = ""
    real: object | None = None
    step: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    schedule: list[list[int]] = field(default_factory=list)
    consistent: bool = True

    @classmethod
    def start(
        cls, settings: TrainSettings, out: Path, payload: dict | None, device: str, command: str = ""
    ) -> TrainingRun:
        """A new run's network (seeded, or from ``settings.init``) and optimiser on ``device``,
        continued from the training state ``payload`` when resuming (:func:`check_paths`), with
        the real pairs of ``settings.real`` read."""
        net = FlowNet(settings.network())
        init_parameters(net, settings.seed)
        if settings.init:
            load_init(net, settings)
        net.to(device).train()
        # foreach: one multi-tensor update instead of ~150 small ones (the for-loop default on CPU).
        optimiser = torch.optim.Adam(net.parameters(), lr=settings.lr, foreach=True)
        run = cls(settings, out, net, optimiser, command, schedule=[[0, settings.steps]])
        if payload is not None:
            run._resume(payload)
        if settings.real:
            from register.app.finetune import RealPairs, real_pair_files

            run.real = RealPairs(real_pair_files(settings.real), settings.spec.feature)
        return run

    def _resume(self, payload: dict) -> None:
        """Take the weights, optimiser, step, time, history and schedules of a training state; a
        changed ``steps`` starts a new schedule at the current step."""
        self.net.load_state_dict(payload["state_dict"])
        self.optimiser.load_state_dict(payload["training"]["optimizer"])
        self.step, self.seconds = int(payload["training"]["step"]), float(payload["training"]["seconds"])
        self.history = list(payload["metadata"].get("validation_history", []))
        saved_steps = int(payload["training"]["settings"]["steps"])
        self.schedule = [list(s) for s in payload["metadata"].get("schedule", [[0, saved_steps]])]
        if self.settings.steps != self.schedule[-1][1]:
            self.schedule.append([self.step, self.settings.steps])

    def data(self) -> str:
        """How the training data was made (the model card's "data")."""
        s = self.settings
        kind = s.spec.kind
        return (
            f"synthetic '{kind}' pairs (register.synth.pairs.RECIPES['{kind}']), "
            f"pair seeds pair_seed({s.seed}, {TRAIN_STREAM}, i), {s.shape_pool} shapes"
            + (
                f"; OT loss (weight {s.ot_weight}, blur {s.ot_blur}, reach "
                f"{s.ot_reach}) on {len(self.real)} real pairs from {s.real}"
                if self.real is not None
                else ""
            )
            + (
                f"; {s.keypoint_fraction:.0%} of the shapes as keypoint-like clouds"
                if s.keypoint_fraction
                else ""
            )
            + (f"; started from {s.init}" if s.init else "")
        )

    def metadata(self) -> dict:
        """The checkpoint's metadata (the model card is written from it)."""
        s = self.settings
        return {
            "preset": s.preset,
            "data": self.data(),
            "seed": s.seed,
            "steps": self.step,
            "schedule": self.schedule,
            "batch_size": s.batch_size,
            "points": s.points,
            "seconds": round(self.seconds, 1),
            "parameters": count_parameters(self.net),
            "command": self.command,
            "torch": str(torch.__version__),  # a TorchVersion object would not load with weights_only
            "validation": self.history[-1] if self.history else {},
            "validation_history": self.history,
        }

    def save_state(self) -> None:
        """Write the training state (network, optimiser, step, settings, metadata) to
        :func:`state_path`."""
        training = {
            "settings": self.settings.to_dict(),
            "optimizer": self.optimiser.state_dict(),
            "step": self.step,
            "seconds": self.seconds,
        }
        spec = self.settings.spec
        ckpt = make_checkpoint(
            self.net,
            spec.normalisation,
            spec.feature,
            self.settings.points,
            self.metadata(),
            training=training,
        )
        save_checkpoint(state_path(self.out), ckpt)

    def save_model(self) -> None:
        """Write the final model (no optimiser) to ``out`` and its model card next to it."""
        spec, out = self.settings.spec, self.out
        final = make_checkpoint(
            self.net, spec.normalisation, spec.feature, self.settings.points, self.metadata()
        )
        save_checkpoint(out, final)
        atomic_write(
            card_path(out), lambda tmp: tmp.write_text(model_card(final, out.stem), encoding="utf-8")
        )
