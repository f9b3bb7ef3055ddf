"""What the OT stages share: the matching settings and the torch conversion."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from register.core.sampling import sampling_spacing
from register.ot import Matches, robust_match
from register.ot.multiscale import WarmStart


@dataclass(frozen=True)
class MatchSettings:
    """Sinkhorn settings shared by every matching call of a run.

    Attributes:
        backend: ``dense``, ``sparse`` or ``keops`` (already resolved from ``auto``).
        device: torch device string (``cpu``, ``cuda``, ``cuda:1``).
        scaling: epsilon-scaling ratio; tol: convergence tolerance (x eps); max_iter: cap.
        mass: mass normalisation, ``total`` or ``point`` (see :func:`register.ot.robust_match`).
        warm_start: whether :meth:`match` uses the ``warm`` state it is given.
    """

    backend: str = "dense"
    device: str = "cpu"
    scaling: float = 0.5
    tol: float = 1e-3
    max_iter: int = 10
    mass: str = "total"
    warm_start: bool = False

    def capped(self, max_iter: int) -> MatchSettings:
        """These settings with a stage's own ``max_iter`` (``affine.max_iter``,
        ``spline.max_iter``); 0 keeps the run's."""
        return replace(self, max_iter=max_iter) if max_iter else self

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """``array`` as a float32 tensor on the run's device."""
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=self.device)

    def match(
        self,
        x: np.ndarray,
        y: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        blur: float,
        reach: float,
        warm: Matches | None = None,
        target_reach: float | None = None,
        classes: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Matches:
        """:func:`register.ot.robust_match` on numpy inputs (data units); ``warm``: an earlier
        matching of the same clouds to start from (ignored unless ``warm_start``);
        ``target_reach``: the target marginal's reach (None: ``reach``); ``classes``: ``(N,)``
        and ``(M,)`` integer classes, points match their own class only."""
        return robust_match(
            *(self.tensor(v) for v in (x, y, a, b)),
            **self._solver(blur, reach),
            warm=warm.warm if (warm is not None and self.warm_start) else None,
            target_reach=target_reach,
            classes=self.classes(*classes) if classes is not None else None,
        )

    def _solver(self, blur: float, reach: float) -> dict:
        """The keyword arguments of :func:`register.ot.robust_match` these settings fix."""
        return {
            "blur": blur,
            "reach": reach,
            "scaling": self.scaling,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "backend": self.backend,
            "mass": self.mass,
        }

    def classes(self, cx: np.ndarray, cy: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer class arrays as int64 tensors on the run's device."""
        return tuple(torch.as_tensor(np.asarray(c), dtype=torch.int64, device=self.device) for c in (cx, cy))

    def self_match(
        self, x: np.ndarray, a: np.ndarray, blur: float, reach: float, classes: np.ndarray | None = None
    ) -> Matches:
        """The self-transport ``OT_eps(a, a)`` of ``x (N, D)`` with masses ``a (N,)`` (data
        units): every point already lies on its own partner, so the epsilon schedule has nothing
        to anneal and starts at ``blur`` itself, from zero potentials (the first update is then
        ``f = -eps log sum_j a_j exp(-|x_i - x_j|^2 / eps)``, already close to the fixed point)."""
        zero = torch.zeros(len(x), dtype=torch.float32, device=self.device)
        return robust_match(
            *(self.tensor(v) for v in (x, x, a, a)),
            **self._solver(blur, reach),
            warm=WarmStart(zero, zero, blur),
            classes=self.classes(classes, classes) if classes is not None else None,
        )


def floored(reaches: list[float], target: np.ndarray, spacings: float) -> list[float]:
    """``reaches`` (data units) raised to ``spacings`` sampling spacings of ``target (M, D)``
    (the stages' ``reach_floor``; 0 leaves them and reads nothing)."""
    if not spacings:
        return list(reaches)
    floor = spacings * sampling_spacing(target)
    return [max(r, floor) for r in reaches]


def per_level(values: list[float], n_levels: int) -> list[float]:
    """Broadcast a one-value list to ``n_levels`` values (config lists are 1 or n long)."""
    return list(values) * n_levels if len(values) == 1 else list(values)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A float64 numpy copy of a tensor on any device."""
    return t.detach().to("cpu", torch.float64).numpy()
