"""Transforms: first-class objects that move points of the source space into the target space.

Kinds:
    * :class:`Affine`     ``T(x) = A x + t``
    * :class:`KernelField` ``T(x) = x + sum_c K(x, c) w_c`` with a multi-scale Gaussian kernel
    * :class:`InverseKernelField` ``T^-1`` of a kernel field, solved by Newton's method
    * :class:`Composite`  ``T = T_n o ... o T_1`` (applied first to last)

Every transform has ``apply(points)``, ``save(path)`` and ``Transform.load(path)``
(:func:`load_transform`), to and from a checked ``.npz`` file (never pickled).

This module gathers the public names (importing it makes every kind loadable); the code is in
:mod:`register.core.transform_base` (the :class:`Transform` interface, the file format and
:func:`load_transform`), :mod:`register.core.transform_affine`,
:mod:`register.core.transform_kernel` (kernel fields and their inverse) and
:mod:`register.core.transform_composite`.
"""

from register.core.transform_affine import Affine
from register.core.transform_base import FORMAT_VERSION, KINDS, MAX_NESTING, Transform, load_transform
from register.core.transform_composite import Composite
from register.core.transform_kernel import InverseKernelField, KernelField

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "MAX_NESTING",
    "Affine",
    "Composite",
    "InverseKernelField",
    "KernelField",
    "Transform",
    "load_transform",
]
