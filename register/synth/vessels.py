"""Procedural lung-like vessel trees.

The tree lives in a box ``[0, size_mm[0]] x [0, size_mm[1]] x [0, size_mm[2]]`` (mm) with
``x`` left-right (the "right" lung at low ``x``, the "left" lung at high ``x``), ``y``
antero-posterior and ``z`` cranio-caudal (apex at high ``z``, base at low ``z``).

Each lung is a half-ellipsoid envelope with a domed (diaphragm) base. A trunk of radius
about 7 mm enters at the hilum (medial, mid-height) and bifurcates recursively: each branch
owns a set of random points of the envelope, splits them in two by a plane through its axis,
and each child heads for the centroid of its half (deviating 20-60 deg from the parent,
0.7-0.85 of the parent's length, 0.7-0.8 of its radius) until the radius would drop below
0.5 mm (leaves at generation 8-10, at most 12). Splitting the owned points keeps the envelope evenly filled.

The tree is stored as straight segments (:class:`VesselTree`), so it can be resampled any
number of times (:meth:`VesselTree.sample`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_SIZE_MM = (300.0, 220.0, 280.0)
TRUNK_RADIUS_MM = 7.0
MIN_RADIUS_MM = 0.5
MAX_GENERATIONS = 12
_ENVELOPE_SAMPLES = 3000  # attractor points per lung that the branches share out
_MIN_ANGLE, _MAX_ANGLE = math.radians(20.0), math.radians(60.0)  # child vs parent direction
_ANGLE_JITTER = math.radians(5.0)


@dataclass(frozen=True)
class LungEnvelope:
    """A half-ellipsoid lung with a domed base.

    A point ``p`` is inside when ``((p - c) / a)`` has norm <= 1, ``p_z >= c_z`` and ``p_z``
    is above the dome ``c_z + dome_mm * (1 - rho^2)`` (``rho`` the normalised distance to
    the vertical axis).

    Attributes:
        center: ``(3,)`` mm, ``x, y`` of the vertical axis and ``z`` of the base plane.
        semi_axes: ``(3,)`` mm, the half-widths in ``x, y`` and the height in ``z``.
        dome_mm: height of the diaphragm dome above the base plane (mm).
        medial_sign: ``+1`` if the medial side (mediastinum) is at higher ``x``, else ``-1``.
    """

    center: np.ndarray
    semi_axes: np.ndarray
    dome_mm: float
    medial_sign: int

    def contains(self, points: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: which of the ``(N, 3)`` points (mm) are inside the envelope."""
        u = (np.atleast_2d(points) - self.center) / self.semi_axes
        rho2 = u[:, 0] ** 2 + u[:, 1] ** 2
        dome = self.dome_mm / self.semi_axes[2] * (1.0 - np.minimum(rho2, 1.0))
        return (rho2 + u[:, 2] ** 2 <= 1.0) & (u[:, 2] >= dome)

    def sample_interior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, 3)`` points (mm) uniform inside the envelope (rejection sampling)."""
        lo = self.center - self.semi_axes * np.array([1.0, 1.0, 0.0])
        hi = self.center + self.semi_axes
        out: list[np.ndarray] = []
        count = 0
        while count < n:
            cand = rng.uniform(lo, hi, size=(2 * n, 3))
            cand = cand[self.contains(cand)]
            out.append(cand)
            count += len(cand)
        return np.concatenate(out)[:n]

    @property
    def hilum(self) -> np.ndarray:
        """``(3,)`` mm: where the trunk enters, on the medial side at mid-height."""
        a = self.semi_axes
        return self.center + np.array([self.medial_sign * 0.6 * a[0], 0.05 * a[1], 0.45 * a[2]])


def lung_envelopes(size_mm: tuple[float, float, float] = DEFAULT_SIZE_MM) -> tuple[LungEnvelope, ...]:
    """The two lung envelopes (right at low ``x``, then left) filling a box of ``size_mm``."""
    sx, sy, sz = (float(s) for s in size_mm)
    out = []
    for side, width in ((-1, 1.0), (1, 0.9)):  # the left lung is a bit narrower (heart)
        ax = 0.2 * sx * width
        cx = 0.5 * sx + side * (0.06 * sx + ax)
        center = np.array([cx, 0.5 * sy, 0.08 * sz])
        semi = np.array([ax, 0.42 * sy, 0.84 * sz])
        out.append(LungEnvelope(center, semi, dome_mm=0.12 * sz, medial_sign=-side))
    return tuple(out)


@dataclass(frozen=True)
class VesselTree:
    """A vessel tree as straight segments.

    Attributes:
        segments: ``(S, 2, 3)`` float64 mm, start and end point of each segment; a child
            starts where its parent ends.
        radii: ``(S,)`` float64 mm, the vessel radius of each segment (7 mm trunks down to
            0.5 mm).
        parent: ``(S,)`` int64 index of the parent segment, ``-1`` for the trunks.
        generation: ``(S,)`` int64, 0 for the trunks.
        lung: ``(S,)`` int64, 0 for the right lung (low ``x``), 1 for the left.
    """

    segments: np.ndarray
    radii: np.ndarray
    parent: np.ndarray
    generation: np.ndarray
    lung: np.ndarray

    def __len__(self) -> int:
        return len(self.segments)

    @property
    def lengths(self) -> np.ndarray:
        """``(S,)`` segment lengths (mm)."""
        return np.linalg.norm(self.segments[:, 1] - self.segments[:, 0], axis=1)

    def branch_points(self) -> np.ndarray:
        """``(B, 3)`` mm: the bifurcations (ends of the segments that have children)."""
        has_child = np.zeros(len(self), dtype=bool)
        has_child[self.parent[self.parent >= 0]] = True
        return self.segments[has_child, 1].copy()

    def sample(
        self, n: int, rng: np.random.Generator | int | None = None, *, jitter: float = 0.5
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``n`` points along the tree.

        Segments are picked with probability proportional to their length (uniform density
        along the centre lines), the position along the segment is uniform, and each point is
        moved off the centre line by a random offset in the cross-section, uniform in a disc
        of radius ``jitter * radius``.

        Args:
            n: number of points.
            rng: a generator or a seed for :func:`numpy.random.default_rng`.
            jitter: the off-centre offset as a fraction of the vessel radius.

        Returns:
            ``(n, 3)`` float64 points (mm) and ``(n,)`` float64 radii (mm) of their segments.
        """
        rng = np.random.default_rng(rng)
        lengths = self.lengths
        idx = rng.choice(len(self), size=n, p=lengths / lengths.sum())
        t = rng.uniform(0.0, 1.0, size=n)
        a, b = self.segments[idx, 0], self.segments[idx, 1]
        axis = (b - a) / lengths[idx, None]
        # An orthonormal cross-section basis (e1, e2) per point.
        helper = np.where(np.abs(axis[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
        e1 = np.cross(axis, helper)
        e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
        e2 = np.cross(axis, e1)
        phi = rng.uniform(0.0, 2.0 * np.pi, size=n)
        rad = jitter * self.radii[idx] * np.sqrt(rng.uniform(0.0, 1.0, size=n))
        offset = rad[:, None] * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
        points = a + t[:, None] * (b - a) + offset
        return points, self.radii[idx].copy()


def _grow_lung(env: LungEnvelope, rng: np.random.Generator) -> list[tuple]:
    """Grow one lung's tree; returns ``(start, end, radius, parent, generation)`` rows."""
    region = env.sample_interior(_ENVELOPE_SAMPLES, rng)
    start = env.hilum
    d = region.mean(axis=0) - start
    d = d / np.linalg.norm(d) + rng.normal(0.0, 0.1, size=3)
    d /= np.linalg.norm(d)
    trunk_len = 0.5 * env.semi_axes[0] * rng.uniform(0.9, 1.1)
    rows: list[tuple] = []
    # Depth-first with an explicit stack: (start, direction, length, radius, gen, parent, owned).
    stack = [(start, d, trunk_len, TRUNK_RADIUS_MM, 0, -1, np.arange(len(region)))]
    while stack:
        start, d, length, radius, gen, parent, owned = stack.pop()
        end = start + length * d
        me = len(rows)
        rows.append((start, end, radius, parent, gen))
        if gen + 1 > MAX_GENERATIONS or len(owned) < 2:
            continue
        # Per node: two radius factors, the split fraction, two length factors, two angle jitters.
        u = rng.random(5)
        jitter = rng.normal(0.0, _ANGLE_JITTER, size=2)
        child_r = radius * (0.7 + 0.1 * u[:2])
        # Split the owned attractors by a plane through the axis, across their widest spread.
        rel = region[owned] - end
        perp = rel - np.outer(rel @ d, d)
        normal = np.linalg.eigh(perp.T @ perp)[1][:, -1]
        order = np.argsort(perp @ normal, kind="stable")
        cut = min(max(round((0.4 + 0.2 * u[2]) * len(owned)), 1), len(owned) - 1)
        halves = (owned[order[:cut]], owned[order[cut:]])
        children = []
        for k, sign in enumerate((-1.0, 1.0)):
            if child_r[k] < MIN_RADIUS_MM:
                continue
            want = region[halves[k]].mean(axis=0) - end
            dist = math.sqrt(want @ want)
            g = want / dist if dist > 1e-9 else sign * normal
            cos_gd = float(g @ d)
            side = g - cos_gd * d
            side_len = math.sqrt(side @ side)
            side = side / side_len if side_len > 1e-6 else sign * normal
            ang = math.acos(min(max(cos_gd, -1.0), 1.0)) + jitter[k]
            ang = min(max(ang, _MIN_ANGLE), _MAX_ANGLE)
            new_d = math.cos(ang) * d + math.sin(ang) * side
            # ~0.7-0.85 of the parent, bent towards reaching 60-100 % of the way to the centroid.
            new_len = min(max(length * (0.7 + 0.15 * u[3 + k]), 0.6 * dist), dist)
            new_len = min(max(new_len, 0.5 * length), 1.2 * length)
            for _ in range(4):  # steer: shorten until the end is inside the lung
                if env.contains(end + new_len * new_d)[0]:
                    break
                new_len *= 0.6
            else:
                continue
            children.append((end, new_d, new_len, float(child_r[k]), gen + 1, me, halves[k]))
        stack.extend(reversed(children))
    return rows


def build_vessel_tree(
    seed: np.random.Generator | int | None, *, size_mm: tuple[float, float, float] = DEFAULT_SIZE_MM
) -> VesselTree:
    """Grow a two-lung vessel tree in the box ``[0, size_mm]`` (mm).

    Args:
        seed: a seed or generator for :func:`numpy.random.default_rng`; the same seed gives
            the same tree.
        size_mm: ``(3,)`` extent of the box in ``x, y, z`` (mm).

    Returns:
        The :class:`VesselTree` (about 1500 segments for the default size).
    """
    rng = np.random.default_rng(seed)
    starts, ends, radii, parents, gens, lungs = [], [], [], [], [], []
    for lung_id, env in enumerate(lung_envelopes(size_mm)):
        offset = len(starts)
        for start, end, radius, parent, gen in _grow_lung(env, rng):
            starts.append(start)
            ends.append(end)
            radii.append(radius)
            parents.append(parent + offset if parent >= 0 else -1)
            gens.append(gen)
            lungs.append(lung_id)
    return VesselTree(
        segments=np.stack([np.array(starts), np.array(ends)], axis=1),
        radii=np.array(radii, dtype=np.float64),
        parent=np.array(parents, dtype=np.int64),
        generation=np.array(gens, dtype=np.int64),
        lung=np.array(lungs, dtype=np.int64),
    )


def vessel_tree(
    n_points: int, seed: int, *, size_mm: tuple[float, float, float] = DEFAULT_SIZE_MM
) -> tuple[np.ndarray, np.ndarray]:
    """Points sampled along a procedural two-lung vessel tree.

    Args:
        n_points: number of points ``N`` to return.
        seed: seed for :func:`numpy.random.default_rng` (tree shape and sampling).
        size_mm: ``(3,)`` extent (mm) of the box ``[0, size_mm]`` holding the lungs.

    Returns:
        ``(N, 3)`` float64 points in mm and ``(N,)`` float64 vessel radius in mm (0.5-7).
    """
    rng = np.random.default_rng(seed)
    tree = build_vessel_tree(rng, size_mm=size_mm)
    return tree.sample(n_points, rng)
