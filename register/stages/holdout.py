"""Held-out check of a spline round: does the field fitted to some matches predict the others?

A round's data are the matched displacements ``d_i`` of the source points ``z_i`` with
weights ``w_i`` (:mod:`register.stages.spline`, equation (4)). Where they carry a coherent
motion at the level's kernel width, a field fitted to half of them predicts the other half
better than no motion at all; where they are sampling noise (two clouds sampled
independently, matches finer than the sampling spacing) or one-off pulls (outliers), it does
not. So the points are split at random into two folds ``A``, ``B``; ``v_A`` is fitted to ``A``
and scored on ``B`` (and the other way round) by the paired change

    Delta_i = w_i ( |v(z_i) - d_i|^2 - |d_i|^2 ) / mean(w)          (i held out)        (5)

(squared data units): negative where the field moves ``z_i`` towards its match. The round
passes when ``mean(Delta) + Z * se(Delta) < 0`` (``se``: the standard error of the mean over
the held-out points). A round that fails at its smoothness ``lambda`` is tried again smoother,
``lambda * k`` for ``k`` in ``LAMBDA_STEPS``; the first ``k`` that passes is the one the round
uses on all its points (:mod:`register.stages.spline` solves it from the two folds' normal
equations, summed), and a round that no ``k`` rescues is dropped (no field this round).

The check is skipped while the two clouds *share samples* (:func:`shares_samples`: most
source points lie much closer to a target point than target points lie to one another, as
with keypoint pairs or a damaged copy of one cloud). Their matches are then exact partners,
each worth fitting even where its neighbours do not predict it; the check is for clouds sampled
independently, whose fine matches are sampling noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from register.core.sampling import sampling_spacing

# Significance of the improvement a round must show on the held-out matches (standard errors).
Z = 2.0
# Smoothness multipliers tried in turn on a round that does not pass at its own lambda.
LAMBDA_STEPS = (1.0, 10.0, 100.0)
# Clouds share samples when the median source-to-target nearest-neighbour distance is below this
# fraction of the target's sampling spacing (independent samplings of one shape give ~1).
SHARED_RATIO = 0.5


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`check_round`.

    Attributes:
        factor: the smoothness multiplier that passed (one of ``LAMBDA_STEPS``), or None when
            the round is dropped.
        gain: ``-mean(Delta)`` of (5) for the factor kept (the last one tried when none passed),
            squared data units: how much closer to their matches the held-out points come.
        se: standard error of ``mean(Delta)``.
    """

    factor: float | None
    gain: float
    se: float


class SharedSamples:
    """Tells whether moving points lie on samples of one fixed ``target (M, D)`` (module
    docstring); the target's k-d tree and spacing are built once, each call costs one query."""

    def __init__(self, target: np.ndarray):
        self.tree = cKDTree(target) if len(target) >= 2 else None
        self.spacing = sampling_spacing(target)

    def __call__(self, z: np.ndarray) -> bool:
        """Median distance of ``z (N, D)`` to its nearest target point ``< SHARED_RATIO *``
        the target's spacing."""
        if self.tree is None:
            return False
        return float(np.median(self.tree.query(z)[0])) < SHARED_RATIO * self.spacing


def shares_samples(z: np.ndarray, target: np.ndarray) -> bool:
    """:class:`SharedSamples` of ``target`` asked once about ``z``."""
    return SharedSamples(target)(z)


def folds(n: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded random two-fold split: ``(n,)`` booleans, True for fold ``A`` (half of them)."""
    in_a = np.zeros(n, dtype=bool)
    in_a[rng.permutation(n)[: n // 2]] = True
    return in_a


def check_round(
    z: np.ndarray,
    d: np.ndarray,
    w: np.ndarray,
    in_a: np.ndarray,
    fit: Callable[[np.ndarray, float], Callable[[np.ndarray], np.ndarray]],
) -> Verdict:
    """Two-fold test of a round's fit (module docstring).

    Args:
        z: ``(V, D)`` matched points (or clusters), data units; d: ``(V, D)`` their
            displacements; w: ``(V,)`` their non-negative weights.
        in_a: ``(V,)`` fold of each point (:func:`folds`).
        fit: ``(subset mask (V,), factor) -> v``: the round's field fitted to the points of
            the mask with smoothness ``factor * lambda``, as the displacement map
            ``(K, D) -> (K, D)``.

    Returns:
        :class:`Verdict`.
    """
    scale = w.mean() if w.mean() > 0 else 1.0
    gain, se = 0.0, 0.0
    for factor in LAMBDA_STEPS:
        delta = np.empty(len(z))
        for train in (in_a, ~in_a):
            test = ~train
            v = fit(train, factor)(z[test])
            delta[test] = w[test] * (((v - d[test]) ** 2).sum(1) - (d[test] ** 2).sum(1)) / scale
        gain, se = -float(delta.mean()), float(delta.std() / np.sqrt(len(delta)))
        if -gain + Z * se < 0:
            return Verdict(factor, gain, se)
    return Verdict(None, gain, se)
