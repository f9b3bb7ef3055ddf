"""Supervised training of the flow network on synthetic pairs (:mod:`register.synth.pairs`).

Loss (PointPWC's multi-scale supervised loss, per point averaged): for a batch of pairs,

    L = sum_l  w_l  mean_{i valid} |F_l,i - G_l,i|                                       (1)

with ``F_l`` the flow predicted at pyramid level ``l`` (model units), ``G_l`` the ground-truth
flow of the same points and ``w_l = 2^-l`` (finest level first; PointPWC's
``alpha = (0.02, 0.04, 0.08, 0.16)`` on sums over ``N / 4^l`` points, up to a constant factor).

Optimiser: Adam; learning rate cosine-annealed from ``lr`` to ``lr_final`` over ``steps``:

    lr(s) = lr_final + (lr - lr_final) (1 + cos(pi s / steps)) / 2                       (2)

Determinism: the network is initialised from ``seed``; the pairs of step ``s`` are
``pair_seed(seed, TRAIN_STREAM, s * batch_size + b)`` built on shapes from a pool seeded by
``seed``; every random draw depends only on those seeds. So a run interrupted and resumed
from its training state gives the same weights as an uninterrupted one (bit for bit on the
CPU; on CUDA the scatter-adds of the backward pass are not bitwise reproducible). Validation uses
pairs of the held-out stream with seed 0 on fresh shapes, the same for every run.

Files: the training state (network, optimiser, step, settings, metadata) is written to
``state_path(out)`` every ``checkpoint_every`` steps and on interruption; the final model
(no optimiser) to ``out`` and its model card (:mod:`register.models.card`) next to it. Every
write is atomic.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from register.errors import InputError
from register.io._common import atomic_write
from register.models.card import card_path, model_card
from register.models.checkpoint import make_checkpoint, read_checkpoint, save_checkpoint
from register.models.normalise import Normalisation
from register.models.pointpwc import FlowNet, FlowNetConfig, count_parameters, init_parameters
from register.synth.pairs import (
    HELD_OUT_STREAM,
    SHAPE_STREAM,
    TRAIN_STREAM,
    TrainingPair,
    make_shape,
    make_training_pair,
    pair_seed,
)
from register.synth.shapes import KeypointShape

log = logging.getLogger(__name__)

VALIDATION_SEED = 0  # held-out pairs are pair_seed(VALIDATION_SEED, HELD_OUT_STREAM, i) for every run


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
_RESUMABLE_CHANGES = ("steps", "checkpoint_every")


def state_path(out: Path) -> Path:
    """Where the training state of a run writing ``out`` lives: ``model.pt`` -> ``model.state.pt``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.state{out.suffix or '.pt'}")


def learning_rate(settings: TrainSettings, step: int) -> float:
    """Learning rate of step ``step`` (0-based), eq. (2)."""
    return settings.lr_final + 0.5 * (settings.lr - settings.lr_final) * (
        1 + math.cos(math.pi * step / settings.steps)
    )


@dataclass
class Batch:
    """Network inputs and targets of a batch of pairs (model units, on the training device).

    Attributes:
        source ``(B, N, 3)``, target ``(B, M, 3)``, features ``[(B, N, F), (B, M, F)]`` or ``[]``,
        flow ``(B, N, 3)``, valid ``(B, N)`` bool, scale ``(B,)`` data units per model unit.
    """

    source: torch.Tensor
    target: torch.Tensor
    features: list[torch.Tensor]
    flow: torch.Tensor
    valid: torch.Tensor
    scale: torch.Tensor


def make_batch(
    pairs: list[TrainingPair], spec: TrainPreset, drop: list[bool], device: str | torch.device
) -> Batch:
    """Normalise ``pairs`` (each with its own frame) and stack them; ``drop[b]``: hide the feature."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("source", "target", "fs", "ft", "flow", "valid")}
    scales = []
    for pair, hide in zip(pairs, drop, strict=True):
        frame = spec.normalisation.frame(pair.source)
        cols["source"].append(frame.points(pair.source))
        cols["target"].append(frame.points(pair.target))
        cols["flow"].append(frame.flow(pair.flow))
        cols["valid"].append(pair.valid)
        scales.append(frame.scale)
        if spec.feature:
            for key, pts, f in (
                ("fs", pair.source, pair.source_feature),
                ("ft", pair.target, pair.target_feature),
            ):
                cols[key].append(np.zeros((len(pts), 1)) if hide or f is None else frame.feature(f))

    def t(key: str, dtype=torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.stack(cols[key]), dtype=dtype, device=device)

    features = [t("fs"), t("ft")] if spec.feature else []
    scale = torch.tensor(scales, dtype=torch.float32, device=device)
    return Batch(t("source"), t("target"), features, t("flow"), t("valid", torch.bool), scale)


def multiscale_loss(net: FlowNet, batch: Batch, weights: list[float]) -> tuple[torch.Tensor, list[float]]:
    """Loss (1) of ``net`` on ``batch`` and the mean end-point error of each level (model units)."""
    out = net(batch.source, batch.target, *batch.features)
    total = batch.source.new_zeros(())
    per_level = []
    for w, flow, index in zip(weights, out.flows, out.index, strict=True):
        gt = torch.gather(batch.flow, 1, index[..., None].expand(-1, -1, 3))
        valid = torch.gather(batch.valid, 1, index).to(flow.dtype)
        epe = (flow - gt).norm(dim=-1)
        level = (epe * valid).sum() / valid.sum().clamp(min=1.0)
        total = total + w * level
        per_level.append(float(level.detach()))
    return total, per_level


class PairSource:
    """The training pairs of a run, deterministic per index; shapes come from a lazily built pool."""

    def __init__(self, settings: TrainSettings) -> None:
        self.settings = settings
        self._shapes: dict[int, object] = {}

    def shape(self, slot: int):
        if slot not in self._shapes:
            seed = pair_seed(self.settings.seed, SHAPE_STREAM, slot)
            shape = make_shape(self.settings.spec.kind, seed)
            if np.random.default_rng([seed, 2]).uniform() < self.settings.keypoint_fraction:
                shape = KeypointShape(shape)
            self._shapes[slot] = shape
        return self._shapes[slot]

    def batch(self, step: int, device) -> Batch:
        """The batch of step ``step`` (0-based)."""
        s = self.settings
        pairs, drop = [], []
        for b in range(s.batch_size):
            index = step * s.batch_size + b
            seed = pair_seed(s.seed, TRAIN_STREAM, index)
            pairs.append(
                make_training_pair(s.spec.kind, seed, s.points, shape=self.shape(index % s.shape_pool))
            )
            drop.append(bool(np.random.default_rng([seed, 1]).uniform() < s.feature_drop))
        return make_batch(pairs, s.spec, drop, device)


def validation_pairs(kind: str, count: int, points: int) -> list[TrainingPair]:
    """The held-out validation pairs: seeds of :data:`HELD_OUT_STREAM`, each on its own new shape."""
    return [
        make_training_pair(kind, pair_seed(VALIDATION_SEED, HELD_OUT_STREAM, i), points) for i in range(count)
    ]


def validate(net: FlowNet, spec: TrainPreset, pairs: list[TrainingPair], device) -> dict:
    """Mean end-point error of the finest level over ``pairs``, data units, against the zero flow.

    Returns:
        ``{"epe": ..., "epe_zero": ..., "pairs": n}`` (data units, lower is better; ``epe_zero``
        is the mean ground-truth flow magnitude, the error of predicting no motion).
    """
    was_training = net.training
    net.eval()
    epe, zero = [], []
    with torch.inference_mode():
        for pair in pairs:
            batch = make_batch([pair], spec, [False], device)
            flow = net(batch.source, batch.target, *batch.features).flows[0]
            valid = batch.valid[0]
            err = (flow[0] - batch.flow[0]).norm(dim=-1)[valid] * batch.scale[0]
            epe.append(float(err.mean()))
            zero.append(float(batch.flow[0].norm(dim=-1)[valid].mean() * batch.scale[0]))
    net.train(was_training)
    return {"epe": float(np.mean(epe)), "epe_zero": float(np.mean(zero)), "pairs": len(pairs)}


@dataclass
class Progress:
    """What the progress callback receives after each step.

    Attributes:
        step: steps done; steps: total; loss: loss (1) of the step; levels: per-level EPE
        (model units); lr: learning rate used; seconds: training time so far (all sessions);
        validation: the latest validation (or ``None``).
    """

    step: int
    steps: int
    loss: float
    levels: list[float]
    lr: float
    seconds: float
    validation: dict | None = None


@dataclass
class TrainResult:
    """Outcome of :func:`train`: the model path, steps, seconds, validation history."""

    out: Path
    steps: int
    seconds: float
    validation: list[dict] = field(default_factory=list)
    parameters: int = 0


def _check_paths(settings: TrainSettings, out: Path, resume: bool, overwrite: bool) -> dict | None:
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
    changed = [k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k, defaults[k]) != current[k]]
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise InputError(f"--resume: {state} was trained with other settings ({diffs}); use the same ones")
    return payload


def _load_init(net: FlowNet, settings: TrainSettings) -> None:
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


def train(
    settings: TrainSettings,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "cpu",
    command: str = "",
    on_progress: Callable[[Progress], None] | None = None,
) -> TrainResult:
    """Train a flow network and write it to ``out`` (see the module docstring).

    Args:
        settings: the run's settings.
        out: path of the final model (``.pt``); its card goes to ``out`` with ``.md``, the
            training state to :func:`state_path`.
        resume: continue from the training state of an earlier run with the same settings
            (``steps`` may grow).
        overwrite: replace an existing ``out`` / training state.
        device: torch device of the network and batches.
        command: the command line that started the run (recorded in the model's metadata).
        on_progress: called after every step with a :class:`Progress`.

    Returns:
        :class:`TrainResult`.
    """
    out = Path(out)
    payload = _check_paths(settings, out, resume, overwrite)
    spec, cfg = settings.spec, settings.network()
    net = FlowNet(cfg)
    init_parameters(net, settings.seed)
    if settings.init:
        _load_init(net, settings)
    net.to(device).train()
    # foreach: one multi-tensor update instead of ~150 small ones (the for-loop default on CPU).
    optimiser = torch.optim.Adam(net.parameters(), lr=settings.lr, foreach=True)
    step, seconds, history = 0, 0.0, []
    schedule = [[0, settings.steps]]  # [first step, scheduled steps] of each learning-rate schedule
    if payload is not None:
        net.load_state_dict(payload["state_dict"])
        optimiser.load_state_dict(payload["training"]["optimizer"])
        step, seconds = int(payload["training"]["step"]), float(payload["training"]["seconds"])
        history = list(payload["metadata"].get("validation_history", []))
        saved_steps = int(payload["training"]["settings"]["steps"])
        schedule = [list(s) for s in payload["metadata"].get("schedule", [[0, saved_steps]])]
        if settings.steps != schedule[-1][1]:
            schedule.append([step, settings.steps])
    source = PairSource(settings)
    real = None
    if settings.real:
        from register.app.finetune import RealPairs, ot_loss, real_pair_files

        real = RealPairs(real_pair_files(settings.real), spec.feature)
    held_out = validation_pairs(spec.kind, settings.validation_pairs, settings.points)
    weights = settings.weights()

    def metadata() -> dict:
        return {
            "preset": settings.preset,
            "data": f"synthetic '{spec.kind}' pairs (register.synth.pairs.RECIPES['{spec.kind}']), "
            f"pair seeds pair_seed({settings.seed}, {TRAIN_STREAM}, i), {settings.shape_pool} shapes"
            + (
                f"; OT loss (weight {settings.ot_weight}, blur {settings.ot_blur}, reach "
                f"{settings.ot_reach}) on {len(real)} real pairs from {settings.real}"
                if real is not None
                else ""
            )
            + (
                f"; {settings.keypoint_fraction:.0%} of the shapes as keypoint-like clouds"
                if settings.keypoint_fraction
                else ""
            )
            + (f"; started from {settings.init}" if settings.init else ""),
            "seed": settings.seed,
            "steps": step,
            "schedule": schedule,
            "batch_size": settings.batch_size,
            "points": settings.points,
            "seconds": round(seconds, 1),
            "parameters": count_parameters(net),
            "command": command,
            "torch": str(torch.__version__),  # a TorchVersion object would not load with weights_only
            "validation": history[-1] if history else {},
            "validation_history": history,
        }

    def save_state() -> None:
        training = {
            "settings": settings.to_dict(),
            "optimizer": optimiser.state_dict(),
            "step": step,
            "seconds": seconds,
        }
        ckpt = make_checkpoint(
            net, spec.normalisation, spec.feature, settings.points, metadata(), training=training
        )
        save_checkpoint(state_path(out), ckpt)

    consistent = True  # False while the weights and the step counter disagree (inside an update)
    try:
        while step < settings.steps:
            t0 = time.perf_counter()
            batch = source.batch(step, device)
            lr = learning_rate(settings, step)
            for group in optimiser.param_groups:
                group["lr"] = lr
            loss, levels = multiscale_loss(net, batch, weights)
            if real is not None and settings.ot_weight > 0:
                pair = real.draw(settings.seed, step, settings.points, spec, device)
                loss = loss + settings.ot_weight * ot_loss(net, *pair, settings.ot_blur, settings.ot_reach)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), settings.clip)
            consistent = False
            optimiser.step()
            step += 1
            consistent = True
            seconds += time.perf_counter() - t0
            validation = None
            if step % settings.checkpoint_every == 0 or step == settings.steps:
                validation = {"step": step, **validate(net, spec, held_out, device)}
                history.append(validation)
                log.info(
                    "step %d: validation EPE %.4g (zero flow %.4g)",
                    step,
                    validation["epe"],
                    validation["epe_zero"],
                )
                save_state()
            if on_progress is not None:
                on_progress(
                    Progress(step, settings.steps, float(loss.detach()), levels, lr, seconds, validation)
                )
    except KeyboardInterrupt:
        if consistent:  # resumable from the last finished step (else from the last checkpoint)
            save_state()
        raise
    final = make_checkpoint(net, spec.normalisation, spec.feature, settings.points, metadata())
    save_checkpoint(out, final)
    atomic_write(card_path(out), lambda tmp: tmp.write_text(model_card(final, out.stem), encoding="utf-8"))
    return TrainResult(out, step, seconds, history, count_parameters(net))
