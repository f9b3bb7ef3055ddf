"""Shapes that can be sampled any number of times: the raw material of training pairs.

Every shape has ``sample(m, rng) -> Sampling``: ``m`` points drawn independently from the
same underlying geometry (so two samplings share no points), with an optional per-point
feature (a length, e.g. the vessel radius) and an optional part label (which rigid part a
point belongs to, for piecewise-rigid motion). Units are the shape's own (mm for the lung
trees, m for the LiDAR-like scenes, relative for the blobs); ``diameter`` is the bounding-box
diagonal of the shape in those units.

Kinds:
    * :class:`VesselShape` - a procedural two-lung vessel tree (feature: vessel radius).
    * :class:`KeypointShape` - keypoint-like clouds of the same lungs: points near the vessels
      and spread through the lung volume (no feature), as keypoint detectors give on lung CT.
    * :class:`BlobShape` - a smooth random closed surface, or the volume it bounds.
    * :class:`SceneShape` - a LiDAR-like street scene without ground: cars (boxes), poles and
      trunks (cylinders), walls (planes); parts are the objects.
    * :class:`CloudShape` - any user-supplied cloud, resampled with a small jitter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from register.synth.vessels import DEFAULT_SIZE_MM, VesselTree, build_vessel_tree, lung_envelopes


@dataclass(frozen=True)
class Sampling:
    """One sampling of a shape.

    Attributes:
        points: ``(m, 3)`` float64; feature: ``(m,)`` float64 or ``None``; part: ``(m,)`` int64
            part label or ``None`` (one rigid part).
    """

    points: np.ndarray
    feature: np.ndarray | None = None
    part: np.ndarray | None = None

    def take(self, index: np.ndarray) -> Sampling:
        """The sampling restricted to the rows ``index``."""
        return Sampling(
            self.points[index],
            None if self.feature is None else self.feature[index],
            None if self.part is None else self.part[index],
        )


def _diameter(points: np.ndarray) -> float:
    return float(np.linalg.norm(points.max(0) - points.min(0)))


@dataclass(frozen=True)
class VesselShape:
    """A lung vessel tree (mm); feature: the vessel radius (mm) of each point."""

    tree: VesselTree
    size_mm: tuple[float, float, float] = DEFAULT_SIZE_MM  # the box the lungs fill

    @classmethod
    def random(cls, seed: np.random.Generator | int | None) -> VesselShape:
        """A tree in a box of the default size scaled by 0.85-1.15 per axis (~0.35 s)."""
        rng = np.random.default_rng(seed)
        size = tuple(float(s) for s in np.asarray(DEFAULT_SIZE_MM) * rng.uniform(0.85, 1.15, 3))
        return cls(build_vessel_tree(rng, size_mm=size), size)

    @property
    def diameter(self) -> float:
        return _diameter(self.tree.segments.reshape(-1, 3))

    def sample(self, m: int, rng: np.random.Generator) -> Sampling:
        points, radius = self.tree.sample(m, rng)
        return Sampling(points, radius)


@dataclass(frozen=True)
class KeypointShape:
    """Keypoint-like clouds of a :class:`VesselShape`'s lungs (mm), without a feature.

    Keypoint detectors on lung CT (e.g. the Foerstner keypoints of Lung250M-4B) fire at vessel
    crossings and bifurcations all through the parenchyma: a sampling here is a share
    ``near_vessels`` of tree points moved by an isotropic Gaussian offset of ``jitter_mm``
    (standard deviation), the rest uniform inside the two lung envelopes (each in proportion to
    its volume).
    """

    vessels: VesselShape
    near_vessels: float = 0.5
    jitter_mm: float = 3.0

    @property
    def diameter(self) -> float:
        return self.vessels.diameter

    def sample(self, m: int, rng: np.random.Generator) -> Sampling:
        n_near = int(round(self.near_vessels * m))
        near, _ = self.vessels.tree.sample(n_near, rng)
        near = near + rng.normal(0.0, self.jitter_mm, near.shape)
        envelopes = lung_envelopes(self.vessels.size_mm)
        volumes = np.array([np.prod(e.semi_axes) for e in envelopes])
        counts = rng.multinomial(m - n_near, volumes / volumes.sum())
        spread = [e.sample_interior(int(c), rng) for e, c in zip(envelopes, counts, strict=True) if c]
        points = np.concatenate([near, *spread])
        return Sampling(points[rng.permutation(m)])


@dataclass(frozen=True)
class BlobShape:
    """A star-shaped smooth random surface ``r(u) = 1 + sum_k a_k exp(kappa (u . c_k - 1))`` over
    unit directions ``u`` (bumps of height ``a_k`` around directions ``c_k``), stretched by
    ``axes``; or, with ``volume``, the solid it bounds. Relative units (diameter ~2-4).

    Surface points are drawn with an area correction: directions are drawn uniformly and
    kept with probability proportional to ``r(u)^2`` (the area element of a star-shaped
    surface, ignoring its tilt).
    """

    centres: np.ndarray  # (K, 3) unit bump directions c_k
    heights: np.ndarray  # (K,) a_k
    kappa: float
    axes: np.ndarray  # (3,) stretch
    volume: bool = False

    @classmethod
    def random(cls, seed: np.random.Generator | int | None, *, volume: bool = False) -> BlobShape:
        rng = np.random.default_rng(seed)
        k = int(rng.integers(3, 9))
        centres = rng.normal(size=(k, 3))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        return cls(
            centres, rng.uniform(-0.3, 0.6, k), float(rng.uniform(2.0, 8.0)), rng.uniform(0.6, 1.4, 3), volume
        )

    def radius(self, u: np.ndarray) -> np.ndarray:
        """``(m,)`` radius along the unit directions ``u (m, 3)`` (before the stretch)."""
        bumps = np.exp(self.kappa * (u @ self.centres.T - 1.0)) @ self.heights
        return np.maximum(1.0 + bumps, 0.2)

    @property
    def diameter(self) -> float:
        return _diameter(self.sample(2000, np.random.default_rng(0)).points)

    def sample(self, m: int, rng: np.random.Generator) -> Sampling:
        out: list[np.ndarray] = []
        count = 0
        while count < m:
            u = rng.normal(size=(2 * m, 3))
            u /= np.linalg.norm(u, axis=1, keepdims=True)
            r = self.radius(u)
            if self.volume:  # uniform in the solid: radius fraction t^(1/3)
                r = r * rng.uniform(0.0, 1.0, len(u)) ** (1.0 / 3.0)
            else:  # area correction
                keep = rng.uniform(0.0, 1.0, len(u)) < (r / r.max()) ** 2
                u, r = u[keep], r[keep]
            out.append(u * r[:, None] * self.axes)
            count += len(u)
        return Sampling(np.concatenate(out)[:m])


@dataclass(frozen=True)
class SceneShape:
    """A street scene seen by a LiDAR at the origin (m): ``x`` forward, ``y`` left, ``z`` up,
    ground removed (objects start 0.3 m above it), depth up to 35 m.

    Objects are boxes (cars: 3.5-5 x 1.6-2 x 1.3-1.8 m), vertical cylinders (poles and trunks)
    and walls (thin boxes). Points are drawn on the object surfaces, objects chosen with
    probability proportional to their area over their squared range (a LiDAR's density
    falls with range); the part label of a point is its object.

    Attributes:
        boxes: ``(B, 7)`` centre xyz, size xyz, heading (rad) of each box (cars then walls).
        cylinders: ``(C, 5)`` base centre xyz, radius, height.
        movable: ``(B + C,)`` bool, objects that may move on their own (cars).
    """

    boxes: np.ndarray
    cylinders: np.ndarray
    movable: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @classmethod
    def random(cls, seed: np.random.Generator | int | None) -> SceneShape:
        rng = np.random.default_rng(seed)
        n_cars, n_walls, n_cyl = int(rng.integers(3, 12)), int(rng.integers(1, 4)), int(rng.integers(4, 16))
        cars = np.column_stack(
            [
                rng.uniform(4.0, 33.0, n_cars),
                rng.uniform(-12.0, 12.0, n_cars),
                np.full(n_cars, 0.3),
                rng.uniform(3.5, 5.0, n_cars),
                rng.uniform(1.6, 2.0, n_cars),
                rng.uniform(1.3, 1.8, n_cars),
                rng.normal(0.0, 0.3, n_cars) + np.pi * (rng.uniform(size=n_cars) < 0.3),
            ]
        )
        side = np.where(rng.uniform(size=n_walls) < 0.5, -1.0, 1.0)
        walls = np.column_stack(
            [
                rng.uniform(8.0, 28.0, n_walls),
                side * rng.uniform(12.0, 18.0, n_walls),
                np.full(n_walls, 0.3),
                rng.uniform(8.0, 25.0, n_walls),
                rng.uniform(0.3, 1.0, n_walls),
                rng.uniform(2.5, 8.0, n_walls),
                rng.normal(0.0, 0.1, n_walls),
            ]
        )
        cylinders = np.column_stack(
            [
                rng.uniform(3.0, 34.0, n_cyl),
                rng.uniform(-16.0, 16.0, n_cyl),
                np.full(n_cyl, 0.3),
                rng.uniform(0.08, 0.5, n_cyl),
                rng.uniform(2.0, 7.0, n_cyl),
            ]
        )
        movable = np.zeros(n_cars + n_walls + n_cyl, dtype=bool)
        movable[:n_cars] = True
        return cls(np.vstack([cars, walls]), cylinders, movable)

    @property
    def n_parts(self) -> int:
        return len(self.boxes) + len(self.cylinders)

    def part_centres(self) -> np.ndarray:
        """``(P, 3)`` centre of each object (m)."""
        box_c = self.boxes[:, :3] + np.column_stack([np.zeros((len(self.boxes), 2)), self.boxes[:, 5] / 2])
        cyl_c = self.cylinders[:, :3] + np.column_stack(
            [np.zeros((len(self.cylinders), 2)), self.cylinders[:, 4] / 2]
        )
        return np.vstack([box_c, cyl_c])

    @property
    def diameter(self) -> float:
        return _diameter(self.sample(2000, np.random.default_rng(0)).points)

    def sample(self, m: int, rng: np.random.Generator) -> Sampling:
        b, s = self.boxes, self.cylinders
        box_area = 2 * (b[:, 3] * b[:, 4] + b[:, 3] * b[:, 5] + b[:, 4] * b[:, 5])
        cyl_area = 2 * np.pi * s[:, 3] * s[:, 4]
        rng_sq = np.maximum((self.part_centres()[:, :2] ** 2).sum(1), 4.0)
        weight = np.concatenate([box_area, cyl_area]) / rng_sq
        part = rng.choice(self.n_parts, size=m, p=weight / weight.sum())
        points = np.empty((m, 3))
        is_box = part < len(b)
        points[is_box] = self._on_boxes(b[part[is_box]], rng)
        points[~is_box] = self._on_cylinders(s[part[~is_box] - len(b)], rng)
        return Sampling(points, None, part.astype(np.int64))

    @staticmethod
    def _on_boxes(b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One point on the surface of each box ``b (n, 7)``: a face chosen by area."""
        n = len(b)
        size = b[:, 3:6]
        face_area = np.column_stack(
            [size[:, 1] * size[:, 2], size[:, 0] * size[:, 2], size[:, 0] * size[:, 1]]
        )
        cum = np.cumsum(face_area, 1) / face_area.sum(1, keepdims=True)
        axis = (rng.uniform(size=(n, 1)) > cum).sum(1)  # the face normal's axis, by area
        local = rng.uniform(-0.5, 0.5, (n, 3))
        local[np.arange(n), axis] = np.where(rng.uniform(size=n) < 0.5, -0.5, 0.5)
        local = local * size
        local[:, 2] += size[:, 2] / 2  # boxes stand on their base point
        c, sn = np.cos(b[:, 6]), np.sin(b[:, 6])
        x = c * local[:, 0] - sn * local[:, 1]
        y = sn * local[:, 0] + c * local[:, 1]
        return b[:, :3] + np.column_stack([x, y, local[:, 2]])

    @staticmethod
    def _on_cylinders(s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One point on the side of each vertical cylinder ``s (n, 5)``."""
        phi = rng.uniform(0.0, 2 * np.pi, len(s))
        h = rng.uniform(0.0, 1.0, len(s)) * s[:, 4]
        return s[:, :3] + np.column_stack([s[:, 3] * np.cos(phi), s[:, 3] * np.sin(phi), h])


@dataclass(frozen=True)
class CloudShape:
    """A user-supplied cloud, resampled: points drawn with replacement, each moved by an
    isotropic Gaussian jitter of ``jitter`` (default half the median nearest-neighbour
    spacing), so that two samplings share no points.

    Attributes:
        points: ``(K, 3)`` data units; feature: ``(K,)`` or ``None``; jitter: data units.
    """

    points: np.ndarray
    feature: np.ndarray | None = None
    jitter: float | None = None

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 2:
            raise ValueError(f"a cloud shape needs (K, 3) points with K >= 2, got shape {pts.shape}")
        object.__setattr__(self, "points", pts)
        if self.jitter is None:
            from scipy.spatial import cKDTree

            spacing = cKDTree(pts).query(pts[:: max(1, len(pts) // 2000)], k=2)[0][:, 1]
            object.__setattr__(self, "jitter", 0.5 * float(np.median(spacing)))

    @property
    def diameter(self) -> float:
        return _diameter(self.points)

    def sample(self, m: int, rng: np.random.Generator) -> Sampling:
        idx = rng.integers(0, len(self.points), m)
        pts = self.points[idx] + rng.normal(0.0, self.jitter, (m, 3))
        return Sampling(
            pts, None if self.feature is None else np.asarray(self.feature, dtype=np.float64)[idx]
        )
