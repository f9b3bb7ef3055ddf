"""Affine transforms ``T(x) = A x + t`` (rigid, similarity and general linear parts)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from register.core.transform_base import Entries, Transform, transform_kind
from register.errors import InputError


@transform_kind
@dataclass
class Affine(Transform):
    """``T(x) = A x + t``.

    Attributes:
        matrix: ``(D, D)`` linear part ``A`` (a rotation times a scale for rigid/similarity).
        translation: ``(D,)`` translation ``t``, data units.
    """

    matrix: np.ndarray
    translation: np.ndarray
    kind = "affine"

    def __post_init__(self) -> None:
        self.matrix = np.asarray(self.matrix, dtype=np.float64)
        self.translation = np.asarray(self.translation, dtype=np.float64)

    @classmethod
    def identity(cls, dim: int = 3) -> Affine:
        return cls(np.eye(dim), np.zeros(dim))

    @property
    def dim(self) -> int:
        return len(self.translation)

    def apply(self, points: np.ndarray) -> np.ndarray:
        points = self.check_points(points)
        return points @ self.matrix.T + self.translation

    def jacobian(self, points: np.ndarray) -> np.ndarray:
        points = self.check_points(points)
        return np.broadcast_to(self.matrix, (len(points), self.dim, self.dim)).copy()

    def inverse(self) -> Affine:
        """``T^-1(y) = A^-1 (y - t)``; raises if ``A`` is singular."""
        if abs(np.linalg.det(self.matrix)) < 1e-12:
            raise InputError("this affine transform is singular and has no inverse")
        inv = np.linalg.inv(self.matrix)
        return Affine(inv, -inv @ self.translation)

    def compose(self, first: Affine) -> Affine:
        """``self o first`` as one affine map."""
        return Affine(self.matrix @ first.matrix, self.matrix @ first.translation + self.translation)

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {
            prefix + "kind": np.array(self.kind),
            prefix + "matrix": self.matrix,
            prefix + "translation": self.translation,
        }

    @classmethod
    def _from_entries(cls, entries: Entries, prefix: str, depth: int) -> Affine:
        matrix = entries.numbers(prefix + "matrix", ndim=2)
        if matrix.shape[0] != matrix.shape[1]:
            raise entries.error(
                prefix + "matrix", f"must be a square (D, D) matrix, got shape {matrix.shape}"
            )
        return cls(matrix, entries.numbers(prefix + "translation", shape=(matrix.shape[0],)))
