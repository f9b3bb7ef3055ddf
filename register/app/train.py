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

Modules: the settings and presets (:mod:`register.app.train_settings`), the batches, loss (1)
and validation (:mod:`register.app.train_data`), the checks, checkpoints and model files
(:mod:`register.app.train_state`), the OT loss (3) on real pairs (:mod:`register.app.finetune`);
this one runs the training loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from register.app.train_data import PairSource, multiscale_loss, validate, validation_pairs
from register.app.train_settings import TrainSettings, learning_rate  # TrainSettings: re-exported for the CLI
from register.app.train_state import TrainingRun, check_paths
from register.models.pointpwc import count_parameters

log = logging.getLogger(__name__)


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
            training state to :func:`~register.app.train_settings.state_path`.
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
    payload = check_paths(settings, out, resume, overwrite)
    run = TrainingRun.start(settings, out, payload, device, command)
    source = PairSource(settings)
    held_out = validation_pairs(settings.spec.kind, settings.validation_pairs, settings.points)
    weights = settings.weights()
    try:
        while run.step < settings.steps:
            t0 = time.perf_counter()
            loss, levels, lr = _step(run, source, weights, device)
            run.seconds += time.perf_counter() - t0
            validation = None
            if run.step % settings.checkpoint_every == 0 or run.step == settings.steps:
                validation = _validate(run, held_out, device)
                run.save_state()
            if on_progress is not None:
                on_progress(
                    Progress(
                        run.step, settings.steps, float(loss.detach()), levels, lr, run.seconds, validation
                    )
                )
    except KeyboardInterrupt:
        if run.consistent:  # resumable from the last finished step (else from the last checkpoint)
            run.save_state()
        raise
    run.save_model()
    return TrainResult(out, run.step, run.seconds, run.history, count_parameters(run.net))


def _step(
    run: TrainingRun, source: PairSource, weights: list[float], device
) -> tuple[torch.Tensor, list[float], float]:
    """One optimisation step on the batch of step ``run.step`` (then ``run.step`` is one more).

    Returns:
        The step's loss (1) (plus ``ot_weight`` times (3) with real pairs), the per-level
        end-point errors (model units) and the learning rate (2) used.
    """
    s, net, optimiser = run.settings, run.net, run.optimiser
    batch = source.batch(run.step, device)
    lr = learning_rate(s, run.step)
    for group in optimiser.param_groups:
        group["lr"] = lr
    loss, levels = multiscale_loss(net, batch, weights)
    if run.real is not None and s.ot_weight > 0:
        from register.app.finetune import ot_loss

        pair = run.real.draw(s.seed, run.step, s.points, s.spec, device)
        loss = loss + s.ot_weight * ot_loss(net, *pair, s.ot_blur, s.ot_reach)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), s.clip)
    run.consistent = False
    optimiser.step()
    run.step += 1
    run.consistent = True
    return loss, levels, lr


def _validate(run: TrainingRun, held_out: list, device) -> dict:
    """Validate on the held-out pairs after step ``run.step``, add it to the history and log it.

    Returns:
        ``{"step", "epe", "epe_zero", "pairs"}`` (:func:`~register.app.train_data.validate`, data units).
    """
    validation = {"step": run.step, **validate(run.net, run.settings.spec, held_out, device)}
    run.history.append(validation)
    log.info(
        "step %d: validation EPE %.4g (zero flow %.4g)", run.step, validation["epe"], validation["epe_zero"]
    )
    return validation


__all__ = ["Progress", "TrainResult", "TrainSettings", "train"]
