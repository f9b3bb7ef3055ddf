"""Damage of the ``realistic`` benchmark family: what real acquisitions do to a point-cloud pair.

Pure functions over arrays (no files, no global state): each takes a seeded
``numpy.random.Generator`` and returns new arrays, never modifying its inputs. The case
loaders of :mod:`benchmarks.suites` apply them to the shared data's pairs.

* :func:`split_halves`: a random split of ``n`` point pairs into two disjoint halves ``A``,
  ``B`` (source = first cloud of ``A``, target = second cloud of ``B``: no point has its
  partner, as with two independent samplings).
* :func:`crop`: the target loses a slab at one end of one axis (``CROP_FRACTION`` of that
  axis's extent), as a smaller field of view does.
* :func:`add_outliers`: the target gains ``OUTLIER_FRACTION`` extra points drawn uniformly in
  its bounding box (segmentation leaks, clutter).
* :func:`thin`: the target keeps one point in ``THIN_KEEP_EVERY`` in one half of its extent
  along one axis (a density change).

Every damage also returns ``keep (L,)``, a boolean mask over the evaluation points' *true*
positions (their reference, in the target's frame): ``True`` where the damaged target still
covers that region, so that a method is not scored on what the data no longer shows (the
crop's removed slab; the other damages keep the whole region). The axis and end (or half)
chosen by the generator are returned in ``info`` for the case record. Lengths are in the
data's units throughout.
"""

from __future__ import annotations

import hashlib

import numpy as np

VARIANTS = ("halves", "crop", "outliers", "density")
CROP_FRACTION = 0.15  # of the target's extent along the cropped axis
OUTLIER_FRACTION = 0.20  # extra points, as a fraction of the target's size
THIN_KEEP_EVERY = 3  # the thinned half keeps 1 point in 3


def stable_seed(name: str) -> int:
    """A seed from a case name, the same in every process and Python version (unlike ``hash``):
    the first 8 bytes of its SHA-256, as an unsigned integer."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def case_rng(name: str) -> np.random.Generator:
    """The generator of one case: ``default_rng(stable_seed(name))``."""
    return np.random.default_rng(stable_seed(name))


def split_halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint index sets ``A (n // 2,)`` and ``B (n - n // 2,)`` covering ``0 .. n-1``, each
    sorted, from a random permutation."""
    if n < 2:
        raise ValueError(f"split_halves needs at least 2 pairs, got {n}")
    perm = rng.permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def _extent(points: np.ndarray, axis: int) -> tuple[float, float]:
    return float(points[:, axis].min()), float(points[:, axis].max())


def crop(
    target: np.ndarray, reference: np.ndarray, rng: np.random.Generator, fraction: float = CROP_FRACTION
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Remove a slab at one end of one axis of ``target (M, 3)``.

    The axis (0, 1, 2) and the end (``low`` / ``high``) are drawn from ``rng``. The slab is the
    half-space beyond ``cut``: ``x[axis] < lo + fraction (hi - lo)`` at the low end,
    ``x[axis] > hi - fraction (hi - lo)`` at the high end, with ``lo, hi`` the target's extent.

    Returns:
        ``(cropped target (M', 3), keep (L,), info)``: ``keep`` marks the ``reference (L, 3)``
        points outside the slab; ``info`` has ``axis``, ``end``, ``cut`` (data units),
        ``fraction`` and ``removed`` (target points dropped).
    """
    axis = int(rng.integers(3))
    end = "low" if rng.integers(2) == 0 else "high"
    lo, hi = _extent(target, axis)
    if end == "low":
        cut = lo + fraction * (hi - lo)
        inside = target[:, axis] < cut
        keep = reference[:, axis] >= cut
    else:
        cut = hi - fraction * (hi - lo)
        inside = target[:, axis] > cut
        keep = reference[:, axis] <= cut
    info = {"axis": axis, "end": end, "cut": cut, "fraction": fraction, "removed": int(inside.sum())}
    return target[~inside].copy(), keep, info


def add_outliers(
    target: np.ndarray, n_reference: int, rng: np.random.Generator, fraction: float = OUTLIER_FRACTION
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Append ``round(fraction M)`` points drawn uniformly in the bounding box of ``target (M, 3)``.

    Returns:
        ``(target with outliers (M + K, 3), keep (n_reference,) all True, info)``; the outliers
        are the last ``K`` rows (the case shuffles the target afterwards).
    """
    k = int(round(fraction * len(target)))
    lo, hi = target.min(0), target.max(0)
    extra = lo + rng.random((k, target.shape[1])) * (hi - lo)
    info = {"fraction": fraction, "added": k}
    return np.concatenate([target, extra]), np.ones(n_reference, dtype=bool), info


def thin(
    target: np.ndarray, n_reference: int, rng: np.random.Generator, keep_every: int = THIN_KEEP_EVERY
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Keep one point in ``keep_every`` in one half of the target's extent along one axis.

    The axis and the half (``low``: ``x[axis] < mid``; ``high``: ``x[axis] >= mid``, ``mid``
    the middle of the target's extent) are drawn from ``rng``; so is which of the half's
    ``H`` points stay (``ceil(H / keep_every)``, without replacement). Points of the other half
    all stay, and the rows keep their order.

    Returns:
        ``(thinned target (M', 3), keep (n_reference,) all True, info)`` with ``axis``,
        ``half``, ``mid``, ``keep_every``, ``in_half`` (H) and ``kept_in_half``.
    """
    axis = int(rng.integers(3))
    half = "low" if rng.integers(2) == 0 else "high"
    lo, hi = _extent(target, axis)
    mid = 0.5 * (lo + hi)
    in_half = target[:, axis] < mid if half == "low" else target[:, axis] >= mid
    idx = np.flatnonzero(in_half)
    n_keep = -(-len(idx) // keep_every)  # ceil
    stay = np.ones(len(target), dtype=bool)
    stay[idx] = False
    stay[rng.choice(idx, size=n_keep, replace=False)] = True
    info = {
        "axis": axis,
        "half": half,
        "mid": mid,
        "keep_every": keep_every,
        "in_half": len(idx),
        "kept_in_half": n_keep,
    }
    return target[stay].copy(), np.ones(n_reference, dtype=bool), info


def damage_target(
    variant: str, target: np.ndarray, reference: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict]:
    """``crop`` / ``outliers`` / ``density`` of ``target (M, 3)``; ``keep`` over ``reference (L, 3)``."""
    if variant == "crop":
        return crop(target, reference, rng)
    if variant == "outliers":
        return add_outliers(target, len(reference), rng)
    if variant == "density":
        return thin(target, len(reference), rng)
    raise ValueError(f"unknown target damage {variant!r}; choose from crop, outliers, density")
