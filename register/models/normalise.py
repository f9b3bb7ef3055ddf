"""From data units to the network's model units and back.

The network sees ``x_model = (x - c) / s`` for both clouds, with ``c`` the centroid of the
source and ``s`` a length (data units per model unit), and predicts flows in model units;
a flow ``F`` maps back to data units as ``s F`` (the centre cancels in a displacement).
Per-point features that are lengths (a vessel radius) are scaled the same way, times a gain
that brings them to O(1): ``f_model = gain * f / s``.

Modes:
    * ``rms``: ``s`` = RMS distance of the source points to their centroid. Scale-free: a lung
      in mm and the same lung in m give the same network input (lungs, shapes).
    * ``fixed``: ``s`` = ``length`` data units, whatever the cloud. For data where absolute
      motion matters and extents vary (LiDAR scenes: cars move ~1 m whatever the crop).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MODES = ("rms", "fixed")


@dataclass(frozen=True)
class Normalisation:
    """How a pair of clouds is normalised (stored in checkpoints).

    Attributes:
        mode: ``rms`` or ``fixed`` (see the module docstring).
        length: data units per model unit in ``fixed`` mode (unused in ``rms`` mode).
        feature_gain: multiplies per-point length features after scaling (dimensionless).
    """

    mode: str = "rms"
    length: float = 1.0
    feature_gain: float = 20.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"normalisation mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if not (self.length > 0 and self.feature_gain > 0):
            raise ValueError(f"normalisation length and feature_gain must be > 0, got {self}")

    def frame(self, source: np.ndarray) -> Frame:
        """The :class:`Frame` of a pair whose source points are ``source (N, 3)`` (data units)."""
        centre = source.mean(0)
        if self.mode == "fixed":
            return Frame(centre, float(self.length), self.feature_gain)
        rms = float(np.sqrt(((source - centre) ** 2).sum(1).mean()))
        return Frame(centre, rms if rms > 0 else 1.0, self.feature_gain)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Frame:
    """The normalisation of one pair: ``x_model = (x - centre) / scale``.

    Attributes:
        centre: ``(3,)`` data units; scale: data units per model unit; feature_gain: see
            :class:`Normalisation`.
    """

    centre: np.ndarray
    scale: float
    feature_gain: float

    def points(self, x: np.ndarray) -> np.ndarray:
        """``(N, 3)`` data units -> model units."""
        return (x - self.centre) / self.scale

    def flow(self, flow: np.ndarray) -> np.ndarray:
        """``(N, 3)`` flow in data units -> model units."""
        return flow / self.scale

    def flow_to_data(self, flow: np.ndarray) -> np.ndarray:
        """``(N, 3)`` flow in model units -> data units."""
        return flow * self.scale

    def feature(self, f: np.ndarray) -> np.ndarray:
        """``(N,)`` length feature (data units, e.g. radius) -> ``(N, 1)`` network input."""
        return (self.feature_gain * f / self.scale)[:, None]
