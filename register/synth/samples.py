"""Ready-made synthetic registration problems with known ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from register.synth.deform import GaussianField, breathing, make_smooth_random_field
from register.synth.vessels import VesselTree, build_vessel_tree

BREATHING_AMPLITUDE_MM = 10.0
BREATHING_LATERAL = 0.15
FIELD_MAGNITUDE_MM = 2.0
N_LANDMARKS = 50


@dataclass(frozen=True)
class LungDeformation:
    """The ground-truth displacement of :func:`make_lung_pair`: breathing plus a random field.

    ``d(x) = breathing(x, amplitude_mm, lateral=lateral, center=center, extent=extent)
    + field(x)``; a source position ``x`` (mm) moves to ``x + d(x)`` in the target.
    """

    amplitude_mm: float
    lateral: float
    center: np.ndarray
    extent: np.ndarray
    field: GaussianField

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` float64 displacement (mm) at the ``(N, 3)`` points (mm)."""
        moved = breathing(
            points, self.amplitude_mm, lateral=self.lateral, center=self.center, extent=self.extent
        )
        return moved + self.field(points)


def make_lung_pair(seed: int = 0, n_points: int = 8000) -> dict:
    """A lung vessel registration problem with known ground truth (units mm).

    One vessel tree (:func:`~register.synth.vessels.build_vessel_tree`) is sampled twice,
    independently, so source and target share no points. The target sampling is then
    deformed by :class:`LungDeformation`: :func:`~register.synth.deform.breathing` (10 mm
    base rise, 15 % lateral expansion, about the tree's bounding box) plus a smooth random
    field of 2 mm mean magnitude. 50 bifurcations of the tree serve as landmarks.

    Args:
        seed: seed for :func:`numpy.random.default_rng`; the same seed gives the same pair.
        n_points: points per cloud ``N``.

    Returns:
        A dict with
        ``source`` ``(N, 3)`` and ``target`` ``(N, 3)`` float64 points (mm);
        ``source_radius`` and ``target_radius`` ``(N,)`` vessel radii (mm);
        ``target_undeformed`` ``(N, 3)``, the target sampling before deformation;
        ``source_landmarks`` ``(50, 3)`` bifurcations of the undeformed tree and
        ``target_landmarks`` ``(50, 3)`` their deformed positions (mm);
        ``displacement``, the :class:`LungDeformation` (callable ``(M, 3) -> (M, 3)``): the
        true position in the target of a source point ``x`` is ``x + displacement(x)``;
        ``params``, a dict describing the deformation; ``tree``, the :class:`VesselTree`.
    """
    rng = np.random.default_rng(seed)
    tree: VesselTree = build_vessel_tree(rng)
    source, source_radius = tree.sample(n_points, rng)
    target0, target_radius = tree.sample(n_points, rng)

    nodes = tree.segments.reshape(-1, 3)
    lo, hi = nodes.min(axis=0), nodes.max(axis=0)
    field = make_smooth_random_field(nodes, rng, magnitude=FIELD_MAGNITUDE_MM)
    deformation = LungDeformation(
        amplitude_mm=BREATHING_AMPLITUDE_MM,
        lateral=BREATHING_LATERAL,
        center=0.5 * (lo + hi),
        extent=0.5 * (hi - lo),
        field=field,
    )
    target = target0 + deformation(target0)

    branch_points = tree.branch_points()
    pick = rng.choice(len(branch_points), size=min(N_LANDMARKS, len(branch_points)), replace=False)
    source_landmarks = branch_points[np.sort(pick)]
    target_landmarks = source_landmarks + deformation(source_landmarks)

    params = {
        "seed": seed,
        "n_points": n_points,
        "breathing_amplitude_mm": BREATHING_AMPLITUDE_MM,
        "breathing_lateral": BREATHING_LATERAL,
        "breathing_center_mm": deformation.center.tolist(),
        "breathing_extent_mm": deformation.extent.tolist(),
        "field_mean_magnitude_mm": FIELD_MAGNITUDE_MM,
        "field_sigma_mm": field.sigma,
        "field_n_controls": len(field.centers),
    }
    return {
        "source": source,
        "target": target,
        "source_radius": source_radius,
        "target_radius": target_radius,
        "target_undeformed": target0,
        "source_landmarks": source_landmarks,
        "target_landmarks": target_landmarks,
        "displacement": deformation,
        "params": params,
        "tree": tree,
    }
