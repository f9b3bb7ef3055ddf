"""The checkpoint format of the flow network, and :class:`FlowModel` (a network ready to predict).

A checkpoint is a ``torch.save`` of a plain dict (loaded with ``weights_only=True``: tensors,
numbers, strings, lists and dicts only, never arbitrary pickled objects):

    kind            "register-flow-model"
    format_version  1
    architecture    FlowNetConfig fields (lists of ints, numbers)
    state_dict      the network's tensors
    normalisation   Normalisation fields
    feature         name of the point attribute fed to the network ("" = none), e.g. "radius"
    points          points per cloud the network was trained on (the stage feeds it as many)
    metadata        how it was made: preset, seed, steps, seconds, validation errors, command
    training        (training checkpoints only) step, optimizer state, training settings

Files are written atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from register.core.files import atomic_write
from register.errors import InputError
from register.models.normalise import Frame, Normalisation
from register.models.pointpwc import FlowNet, FlowNetConfig

log = logging.getLogger(__name__)

KIND = "register-flow-model"
FORMAT_VERSION = 1


def make_checkpoint(
    net: FlowNet, normalisation: Normalisation, feature: str, points: int, metadata: dict, **extra: Any
) -> dict:
    """The checkpoint dict of ``net`` (tensors copied to the CPU); ``extra`` adds top-level keys."""
    return {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "architecture": net.cfg.to_dict(),
        "state_dict": {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()},
        "normalisation": normalisation.to_dict(),
        "feature": feature,
        "points": int(points),
        "metadata": metadata,
        **extra,
    }


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """``torch.save(payload)`` to ``path`` atomically (a crash leaves the previous file intact)."""
    atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: str | os.PathLike, option: str = "flow.model") -> dict:
    """Load and check a checkpoint; :class:`InputError` naming ``option`` and the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{option}: checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; all mean "not a checkpoint"
        first = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(
            f"{option}: {path} is not a readable flow-model checkpoint ({type(exc).__name__}: {first}); "
            "pass a file written by `register train`"
        ) from None
    if not isinstance(payload, dict) or payload.get("kind") != KIND:
        raise InputError(
            f"{option}: {path} is not a register flow-model checkpoint; pass one written by `register train`"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(
            f"{option}: {path} has checkpoint format version {version}; this register reads up to "
            f"{FORMAT_VERSION}: upgrade register"
        )
    missing = [
        k for k in ("architecture", "state_dict", "normalisation", "feature", "points") if k not in payload
    ]
    if missing:
        raise InputError(f"{option}: {path} is an incomplete checkpoint (missing {', '.join(missing)})")
    return payload


@dataclass
class FlowModel:
    """A trained network with its normalisation: predicts flows in data units.

    Attributes:
        net: the network (on its device, in eval mode).
        normalisation: how clouds are brought to model units.
        feature: point attribute fed to the network ("" = none).
        points: points per cloud the network was trained on.
        metadata: how the model was made (see the module docstring).
        name: shipped name or path it was loaded from.
    """

    net: FlowNet
    normalisation: Normalisation
    feature: str = ""
    points: int = 8192
    metadata: dict = field(default_factory=dict)
    name: str = ""

    @classmethod
    def from_checkpoint(cls, payload: dict, device: str = "cpu", name: str = "") -> FlowModel:
        """Build from a dict returned by :func:`read_checkpoint`."""
        try:
            net = FlowNet(FlowNetConfig(**payload["architecture"]))
            net.load_state_dict(payload["state_dict"])
            normalisation = Normalisation(**payload["normalisation"])
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(
                f"flow.model: {name or 'checkpoint'} does not match this register's network: {exc}"
            ) from None
        net.to(device).eval()
        return cls(
            net,
            normalisation,
            str(payload["feature"]),
            int(payload["points"]),
            payload.get("metadata", {}),
            name,
        )

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def predict(
        self,
        source: np.ndarray,
        target: np.ndarray,
        source_feature: np.ndarray | None = None,
        target_feature: np.ndarray | None = None,
    ) -> np.ndarray:
        """Flow of every source point towards the target, in data units.

        Args:
            source: ``(N, 3)``; target: ``(M, 3)`` (data units, same frame).
            source_feature: ``(N,)``, target_feature: ``(M,)`` values of :attr:`feature` (data
                units); ``None`` when the clouds lack it (the network then sees zeros, as for
                the feature-less training pairs).

        Returns:
            ``(N, 3)`` float64 flow, data units.
        """
        frame = self.normalisation.frame(source)
        with torch.inference_mode():
            out = self.net(*self.inputs(frame, source, target, source_feature, target_feature))
        return frame.flow_to_data(out.flows[0][0].to("cpu", torch.float64).numpy())

    def inputs(
        self,
        frame: Frame,
        source: np.ndarray,
        target: np.ndarray,
        source_feature: np.ndarray | None,
        target_feature: np.ndarray | None,
    ) -> tuple[torch.Tensor, ...]:
        """Batch-of-one network inputs ``(1, N, 3), (1, M, 3)[, (1, N, F), (1, M, F)]`` on the device."""

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a[None], dtype=torch.float32, device=self.device)

        out = [tensor(frame.points(source)), tensor(frame.points(target))]
        if self.net.cfg.in_features:
            if source_feature is None or target_feature is None:
                log.warning("clouds without '%s': the flow network sees zeros for it", self.feature)
            for pts, f in ((source, source_feature), (target, target_feature)):
                out.append(tensor(frame.feature(f) if f is not None else np.zeros((len(pts), 1))))
        return tuple(out)
