"""What the network is trained and validated on: batches of synthetic pairs and their loss.

:class:`PairSource` gives the deterministic batch of each step (pairs on shapes from a lazily
built pool), :func:`make_batch` brings pairs to model units (``(B, N, 3)`` tensors, each pair
in its own frame), :func:`multiscale_loss` is loss (1) of :mod:`register.app.train`, and
:func:`validate` scores the network on the held-out pairs of :func:`validation_pairs` (mean
end-point error of the finest level, data units).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from register.app.train_settings import TrainPreset, TrainSettings
from register.models.pointpwc import FlowNet
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

VALIDATION_SEED = 0  # held-out pairs are pair_seed(VALIDATION_SEED, HELD_OUT_STREAM, i) for every run


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
