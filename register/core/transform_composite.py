"""Composite transforms ``T = T_n o ... o T_1``: steps applied in order, first to last."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from register.core.transform_base import MAX_NESTING, Entries, Transform, transform_kind
from register.errors import InputError


@transform_kind
@dataclass
class Composite(Transform):
    """``T = T_n o ... o T_1``: ``steps`` are applied in order, first to last."""

    steps: list[Transform]
    kind = "composite"

    @property
    def dim(self) -> int:
        if not self.steps:
            raise InputError("an empty composite transform has no dimension")
        return self.steps[0].dim

    def apply(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        for step in self.steps:
            points = step.apply(points)
        return points

    def jacobian(self, points: np.ndarray) -> np.ndarray:
        """Chain rule: ``J = J_n(z_{n-1}) ... J_1(x)``, ``z_k`` the points after step ``k``."""
        z = self.check_points(points) if self.steps else np.asarray(points, dtype=np.float64)
        n, dim = z.shape  # an empty composite is the identity of any dimension
        jac = np.broadcast_to(np.eye(dim), (n, dim, dim)).copy()
        for step in self.steps:
            z, j = step.apply_with_jacobian(z)
            jac = j @ jac
        return jac

    def then(self, step: Transform) -> Composite:
        """A new composite with ``step`` applied after the current steps."""
        return Composite([*self.steps, step])

    def inverse(self) -> Composite:
        """``T^-1 = T_1^-1 o ... o T_n^-1``: affine steps inverted exactly, kernel fields by
        Newton's method (:class:`InverseKernelField`; raises where a field folds)."""
        missing = [s.kind for s in self.steps if not hasattr(s, "inverse")]
        if missing:
            raise InputError(f"this transform has non-invertible steps ({', '.join(missing)})")
        return Composite([s.inverse() for s in reversed(self.steps)])

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        arrays = {prefix + "kind": np.array(self.kind), prefix + "count": np.array(len(self.steps))}
        for i, step in enumerate(self.steps):
            arrays.update(step.to_arrays(f"{prefix}step{i}/"))
        return arrays

    @classmethod
    def _from_entries(cls, entries: Entries, prefix: str, depth: int) -> Composite:
        if depth >= MAX_NESTING:
            raise InputError(
                f"{entries.source}: composite transforms nested more than {MAX_NESTING} deep "
                "(register writes one level); the file is damaged or not register's"
            )
        count = entries.integer(prefix + "count")
        if count <= 0 or count > len(entries.arrays):
            empty = ": an empty composite" if count == 0 else ""
            raise entries.error(prefix + "count", f"is {count}{empty} (a composite holds 1 or more steps)")
        steps = [entries.transform(f"{prefix}step{i}/", depth + 1) for i in range(count)]
        for i, step in enumerate(steps[1:], 1):
            if step.dim != steps[0].dim:
                raise entries.error(
                    f"{prefix}step{i}/kind", f"is a {step.dim}-D step after a {steps[0].dim}-D one"
                )
        return cls(steps)
