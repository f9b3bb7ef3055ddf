"""The settings of a training run: presets, :class:`TrainSettings` and the learning-rate schedule.

A preset (:data:`PRESETS`) fixes the synthetic data, the normalisation to model units and the
input feature; :class:`TrainSettings` holds everything else that determines a run's weights
(checked when made, stored in every checkpoint, compared when a run is resumed). Equation
numbers are those of :mod:`register.app.train` (loss (1), schedule (2)) and
:mod:`register.app.finetune` (OT loss (3)).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from register.errors import InputError
from register.models.normalise import Normalisation
from register.models.pointpwc import FlowNetConfig


@dataclass(frozen=True)
class TrainPreset:
    """What a training preset fixes: the synthetic data, the normalisation, the input feature.

    Attributes:
        kind: synthetic pair kind (:data:`register.synth.pairs.KINDS`).
        normalisation: how pairs are brought to model units.
        feature: point attribute fed to the network ("" = none).
    """

    kind: str
    normalisation: Normalisation
    feature: str = ""


PRESETS = {
    "lung": TrainPreset("lung", Normalisation("rms"), "radius"),
    # LiDAR scenes: fixed 10 m per model unit, so that the network sees metric motion.
    "sceneflow": TrainPreset("sceneflow", Normalisation("fixed", length=10.0)),
    "shapes": TrainPreset("shapes", Normalisation("rms")),
}


@dataclass(frozen=True)
class TrainSettings:
    """Everything that determines a training run (stored in its checkpoints).

    Attributes:
        preset: ``lung``, ``sceneflow`` or ``shapes`` (see :data:`PRESETS`).
        steps: total optimisation steps.
        batch_size: pairs per step.
        points: points per cloud of each training pair.
        seed: seed of the initialisation, the training pairs and the shape pool.
        lr, lr_final: learning-rate schedule (2).
        level_weights: ``w_l`` of (1), finest level first (``None``: ``2^-l``).
        clip: gradients are clipped to this global norm.
        feature_drop: probability that a pair is shown without its feature (zeros), so that the
            network also works on clouds without one.
        shape_pool: distinct training shapes, built once each and reused (building a lung tree
            takes ~0.35 s, longer than the rest of a pair).
        checkpoint_every: steps between training-state checkpoints (and validations).
        validation_pairs: held-out pairs of each validation.
        net: network hyper-parameters (``None``: the default :class:`FlowNetConfig`, with one
            input feature when the preset has one).
        real: real, unlabelled pairs for the OT loss (3) (a manifest or a folder, see
            :mod:`register.app.finetune`; "" = synthetic supervision only).
        ot_weight: weight of (3) against (1); ot_blur, ot_reach: its blur and reach, model
            units (the preset's normalisation: ~RMS radius 1 for lung / shapes, 10 m for
            sceneflow; ``inf`` reach = balanced).
        init: checkpoint whose weights start the run (fine-tuning; "" = random initialisation).
        keypoint_fraction: share of the ``lung`` shape pool drawn as keypoint-like clouds of the
            same lungs (:class:`~register.synth.shapes.KeypointShape`, no feature) instead of
            vessel trees; 0 for the other presets.
    """

    preset: str = "lung"
    steps: int = 1000
    batch_size: int = 4
    points: int = 4096
    seed: int = 0
    lr: float = 1e-3
    lr_final: float = 1e-4
    level_weights: tuple[float, ...] | None = None
    clip: float = 10.0
    feature_drop: float = 0.2
    shape_pool: int = 128
    checkpoint_every: int = 100
    validation_pairs: int = 8
    net: FlowNetConfig | None = None
    real: str = ""
    ot_weight: float = 1.0
    ot_blur: float = 0.02
    ot_reach: float = math.inf
    init: str = ""
    keypoint_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise InputError(
                f"--preset {self.preset}: unknown training preset; choose one of {', '.join(PRESETS)}"
            )
        for name in ("steps", "batch_size", "shape_pool", "checkpoint_every", "validation_pairs"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        if not (self.lr > 0 and self.lr_final > 0 and self.clip > 0 and 0 <= self.feature_drop <= 1):
            raise InputError(f"invalid training settings: {self}")
        if not 0 <= self.keypoint_fraction <= 1 or (self.keypoint_fraction and self.preset != "lung"):
            raise InputError(
                f"--keypoint-fraction {self.keypoint_fraction}: a share in [0, 1], for --preset lung only"
            )
        if not (self.ot_weight >= 0 and self.ot_blur > 0 and self.ot_reach > 0):
            raise InputError(
                f"--ot-weight {self.ot_weight}, --ot-blur {self.ot_blur}, --ot-reach {self.ot_reach}: "
                "the weight must be >= 0, blur and reach > 0"
            )
        need = self.network().min_points()
        if self.points < need:
            raise InputError(f"--points {self.points}: the network needs at least {need} points per cloud")

    @property
    def spec(self) -> TrainPreset:
        return PRESETS[self.preset]

    def network(self) -> FlowNetConfig:
        """The network configuration of this run."""
        if self.net is not None:
            return self.net
        return FlowNetConfig(in_features=1 if self.spec.feature else 0)

    def weights(self) -> list[float]:
        """``w_l`` of (1), finest level first."""
        levels = self.network().levels
        return list(self.level_weights) if self.level_weights else [2.0**-level for level in range(levels)]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["net"] = self.network().to_dict()
        d["level_weights"] = self.weights()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainSettings:
        d = dict(d)
        d["net"] = FlowNetConfig(**d["net"])
        d["level_weights"] = tuple(d["level_weights"])
        return cls(**d)


# Settings a resumed run may change. ``checkpoint_every`` does not alter the weights; ``steps``
# changes the learning-rate schedule (2) from the step of the change on, which the model's
# metadata records (``schedule``) so that its card can say how to reproduce it.
RESUMABLE_CHANGES = ("steps", "checkpoint_every")


def state_path(out: Path) -> Path:
    """Where the training state of a run writing ``out`` lives: ``model.pt`` -> ``model.state.pt``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.state{out.suffix or '.pt'}")


def learning_rate(settings: TrainSettings, step: int) -> float:
    """Learning rate of step ``step`` (0-based), eq. (2)."""
    return settings.lr_final + 0.5 * (settings.lr - settings.lr_final) * (
        1 + math.cos(math.pi * step / settings.steps)
    )
