"""Synthetic data with known ground truth: shapes, deformations, registration and training pairs.

Arrays are numpy float64 in the shape's units (mm for the lung trees, m for the LiDAR-like
scenes, relative for the blobs); every random function takes a seed (or a
:class:`numpy.random.Generator`) and uses no global random state.

* :mod:`~register.synth.vessels`, :mod:`~register.synth.shapes` - shapes that can be sampled
  any number of times;
* :mod:`~register.synth.deform` - deformations (breathing, smooth random fields, affine maps);
* :mod:`~register.synth.samples` - the ready-made lung pair of the demo and tests;
* :mod:`~register.synth.acquisition`, :mod:`~register.synth.pairs` - training pairs for the flow
  network (random motion, independent resampling, noise, outliers, crops, density changes).
"""

from register.synth.deform import (
    GaussianField,
    affine_displacement,
    breathing,
    gaussian_weights,
    make_smooth_random_field,
    random_affine,
    random_rotation,
    smooth_random_field,
)
from register.synth.pairs import (
    HELD_OUT_STREAM,
    KINDS,
    RECIPES,
    TRAIN_STREAM,
    Motion,
    Recipe,
    TrainingPair,
    make_shape,
    make_training_pair,
    pair_seed,
)
from register.synth.samples import LungDeformation, make_lung_pair
from register.synth.shapes import BlobShape, CloudShape, Sampling, SceneShape, VesselShape
from register.synth.vessels import LungEnvelope, VesselTree, build_vessel_tree, lung_envelopes, vessel_tree

__all__ = [
    "HELD_OUT_STREAM",
    "KINDS",
    "RECIPES",
    "TRAIN_STREAM",
    "BlobShape",
    "CloudShape",
    "GaussianField",
    "LungDeformation",
    "LungEnvelope",
    "Motion",
    "Recipe",
    "Sampling",
    "SceneShape",
    "TrainingPair",
    "VesselShape",
    "VesselTree",
    "affine_displacement",
    "breathing",
    "build_vessel_tree",
    "gaussian_weights",
    "lung_envelopes",
    "make_lung_pair",
    "make_shape",
    "make_smooth_random_field",
    "make_training_pair",
    "pair_seed",
    "random_affine",
    "random_rotation",
    "smooth_random_field",
    "vessel_tree",
]
