"""Axis conventions: which data axes play a model's ``x``, ``y`` and ``z``.

A spec such as ``"z,-x,-y"`` names, for each model axis in turn, the data axis (with an
optional sign) it is: model ``x`` = data ``z``, model ``y`` = ``-`` data ``x``, model ``z`` =
``-`` data ``y``. As a matrix ``R (3, 3)`` whose row ``k`` is model axis ``k`` in data
coordinates, points map as ``p_model = R p_data`` and flows back as ``F_data = R^T F_model``
(``R`` is a signed permutation, so ``R^-1 = R^T``).
"""

from __future__ import annotations

import numpy as np

_AXES = {"x": 0, "y": 1, "z": 2}


def axes_matrix(spec: str) -> np.ndarray:
    """``(3, 3)`` signed permutation of ``spec`` (see the module docstring).

    Raises:
        ValueError: unless ``spec`` names each of x, y, z exactly once, each optionally
            preceded by ``-`` or ``+``, separated by commas.
    """
    parts = [p.strip().lower() for p in spec.split(",")]
    names = [p.lstrip("+-") for p in parts]
    if (
        len(parts) != 3
        or sorted(names) != ["x", "y", "z"]
        or any(len(p) - len(n) > 1 for p, n in zip(parts, names, strict=True))
    ):
        raise ValueError(
            f"{spec!r}: give the data axis of each model axis, e.g. 'x,y,z' or 'z,-x,-y' "
            "(each of x, y, z once, optionally signed)"
        )
    r = np.zeros((3, 3))
    for row, (part, name) in enumerate(zip(parts, names, strict=True)):
        r[row, _AXES[name]] = -1.0 if part.startswith("-") else 1.0
    return r
