"""Synthetic data with known ground truth: procedural lung vessel trees and deformations.

All arrays are numpy float64 in mm; every random function takes a seed (or a
:class:`numpy.random.Generator`) and uses no global random state.
"""

from register.synth.deform import (
    GaussianField,
    affine_displacement,
    breathing,
    make_smooth_random_field,
    random_affine,
    random_rotation,
    smooth_random_field,
)
from register.synth.samples import LungDeformation, make_lung_pair
from register.synth.vessels import LungEnvelope, VesselTree, build_vessel_tree, lung_envelopes, vessel_tree

__all__ = [
    "GaussianField",
    "LungDeformation",
    "LungEnvelope",
    "VesselTree",
    "affine_displacement",
    "breathing",
    "build_vessel_tree",
    "lung_envelopes",
    "make_lung_pair",
    "make_smooth_random_field",
    "random_affine",
    "random_rotation",
    "smooth_random_field",
    "vessel_tree",
]
