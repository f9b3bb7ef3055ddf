"""Kernel fields ``T(x) = x + sum_c K(x, c) w_c`` (multi-scale Gaussian kernel) and their inverse.

:class:`KernelField` is a smooth displacement field evaluated anywhere (with its exact
Jacobian); :class:`InverseKernelField` is ``T^-1``, solved pointwise by Newton's method.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from register.core.transform_base import Entries, Transform, transform_kind
from register.errors import InputError


@transform_kind
@dataclass
class KernelField(Transform):
    """``T(x) = x + v(x)``, ``v(x) = sum_c K(x, c) w_c``, ``K = sum_s exp(-|x - c|^2 / (2 sigma_s^2))``.

    A smooth displacement field that can be evaluated anywhere; it decays to zero far
    from the control points.

    Attributes:
        controls: ``(C, D)`` control points, data units (in the frame the field acts on).
        weights: ``(C, D)`` kernel weights, data units (displacement per unit kernel).
        sigmas: kernel widths, data units.
    """

    controls: np.ndarray
    weights: np.ndarray
    sigmas: tuple[float, ...] = field(default=(1.0,))
    kind = "kernel_field"

    def __post_init__(self) -> None:
        self.controls = np.asarray(self.controls, dtype=np.float64)
        self.weights = np.asarray(self.weights, dtype=np.float64)
        self.sigmas = tuple(float(s) for s in np.atleast_1d(self.sigmas))

    @property
    def dim(self) -> int:
        return self.controls.shape[1]

    def displacement(self, points: np.ndarray) -> np.ndarray:
        """``v(points)``: ``(N, D)`` displacements, data units."""
        import torch

        from register.kernels.truncated import local_kernel_product, truncated_gaussian

        points = self.check_points(points)
        # Centre on the controls so that the float64 cost stays well conditioned.
        centre = self.controls.mean(0)
        k = truncated_gaussian(points - centre, self.controls - centre, self.sigmas)
        if k is not None:  # narrow kernel: only the pairs within a few widths
            return np.asarray(k @ self.weights)
        v = local_kernel_product(
            torch.from_numpy(points - centre),
            torch.from_numpy(self.controls - centre),
            torch.from_numpy(self.weights),
            self.sigmas,
        )
        return v.numpy()

    def apply(self, points: np.ndarray) -> np.ndarray:
        points = self.check_points(points)
        return points + self.displacement(points)

    def jacobian(self, points: np.ndarray) -> np.ndarray:
        return self.apply_with_jacobian(points)[1]

    def apply_with_jacobian(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(T(points) (N, D), J(points) (N, D, D))`` from one kernel matrix per width.

        With ``K_s(x, c) = exp(-|x - c|^2 / (2 s^2))``, ``grad_x K_s = -K_s (x - c) / s^2``, so

            dv_a/dx_b = -sum_s (1 / s^2) [ (K_s w)_a x_b - (K_s (w_a c_b))_ab ]

        i.e. the kernel products of ``[w | w_a c_b]`` (``(C, D + D^2)``) give the value and the
        Jacobian at once (on centred coordinates, as :meth:`displacement`).
        """
        import torch

        from register.kernels.truncated import local_kernel_product, truncated_gaussian

        points = self.check_points(points)
        n, dim = points.shape
        centre = self.controls.mean(0)
        x, c = points - centre, self.controls - centre
        outer = (self.weights[:, :, None] * c[:, None, :]).reshape(len(c), dim * dim)
        columns = np.concatenate([self.weights, outer], 1)  # (C, D + D^2)
        value = np.zeros((n, dim))
        jac = np.broadcast_to(np.eye(dim), (n, dim, dim)).copy()
        for s in self.sigmas:
            k = truncated_gaussian(x, c, (s,))
            if k is not None:
                prod = np.asarray(k @ columns)
            else:
                prod = local_kernel_product(
                    torch.from_numpy(x), torch.from_numpy(c), torch.from_numpy(columns), (s,)
                ).numpy()
            kw, kwc = prod[:, :dim], prod[:, dim:].reshape(n, dim, dim)
            value += kw
            jac -= (kw[:, :, None] * x[:, None, :] - kwc) / s**2
        return points + value, jac

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {
            prefix + "kind": np.array(self.kind),
            prefix + "controls": self.controls,
            prefix + "weights": self.weights,
            prefix + "sigmas": np.array(self.sigmas),
        }

    @classmethod
    def _from_entries(cls, entries: Entries, prefix: str, depth: int) -> KernelField:
        controls = entries.numbers(prefix + "controls", ndim=2)
        weights = entries.numbers(prefix + "weights", shape=controls.shape)
        sigmas = entries.numbers(prefix + "sigmas", ndim=1)
        if not len(sigmas) or not (sigmas > 0).all():
            raise entries.error(prefix + "sigmas", f"kernel widths must be > 0, got {sigmas[:8].tolist()}")
        return cls(controls, weights, tuple(sigmas))

    def inverse(self) -> InverseKernelField:
        """``T^-1``, evaluated pointwise by Newton's method (:class:`InverseKernelField`)."""
        return InverseKernelField(self)


@transform_kind
@dataclass
class InverseKernelField(Transform):
    """``T^-1`` of a kernel field ``T(x) = x + v(x)``: ``apply(y)`` solves ``x + v(x) = y``.

    Newton's method on the residual ``r(x) = x + v(x) - y``:

        x_0 = y - v(y),    x_{k+1} = x_k - J(x_k)^-1 r(x_k),    J = I + dv/dx           (1)

    with step halving (up to 8 times) wherever a full step does not reduce ``|r|``. ``x_0`` is
    exact to first order (``v(y - v(y)) = v(y) + O(|v| |dv/dx|)``), so a smooth field takes 2-4
    steps to ``|r| <= tolerance``. A point is refused (``InputError``) when it does not converge
    within ``max_iterations`` or its solution has ``det J <= 0``: there the field folds and
    ``T`` has no unique inverse.

    Attributes:
        forward: the field ``T``.
        tolerance: largest accepted ``|T(x) - y|``, data units; ``None`` for ``1e-6`` times the
            smallest kernel width (5e-6 mm for lung fields of width >= 5 mm).
        max_iterations: Newton steps per point before it is refused.
    """

    forward: KernelField
    tolerance: float | None = None
    max_iterations: int = 50
    kind = "inverse_kernel_field"

    @property
    def dim(self) -> int:
        return self.forward.dim

    def _tolerance(self) -> float:
        return self.tolerance if self.tolerance is not None else 1e-6 * min(self.forward.sigmas)

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.apply_with_jacobian(points)[0]

    def jacobian(self, points: np.ndarray) -> np.ndarray:
        return self.apply_with_jacobian(points)[1]

    def apply_with_jacobian(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(T^-1(y) (N, D), J_{T^-1}(y) = J_T(T^-1(y))^-1 (N, D, D))`` by (1).

        Raises:
            InputError: points where the iteration does not converge or the field folds.
        """
        y = self.check_points(points)
        tol = self._tolerance()
        x = y - self.forward.displacement(y)  # x_0 of (1)
        active = np.arange(len(y))  # points still iterating
        jac = np.empty((len(y), self.dim, self.dim))
        for _ in range(self.max_iterations + 1):
            tx, j = self.forward.apply_with_jacobian(x[active])
            r = tx - y[active]
            norm = np.linalg.norm(r, axis=1)
            done = norm <= tol
            jac[active[done]] = j[done]
            active, r, j, norm = active[~done], r[~done], j[~done], norm[~done]
            if not len(active):
                break
            folded = np.linalg.det(j) <= 0
            if folded.any():
                self._refuse(y, active[folded], "folds (Jacobian determinant <= 0 on the way)")
            step = np.linalg.solve(j, r[:, :, None])[:, :, 0]
            x[active] = self._damped(x[active], y[active], step, norm)
        else:
            self._refuse(y, active, f"did not converge in {self.max_iterations} Newton steps")
        folded = np.linalg.det(jac) <= 0
        if folded.any():
            self._refuse(y, np.flatnonzero(folded), "folds (Jacobian determinant <= 0)")
        return x, np.linalg.inv(jac)

    def _damped(self, x: np.ndarray, y: np.ndarray, step: np.ndarray, norm: np.ndarray) -> np.ndarray:
        """``x - h step`` with ``h = 1, 1/2, ..., 1/256``: the first ``h`` that lowers ``|r|``
        (each point on its own; ``h = 1/256`` is kept where none does)."""
        out = x - step
        worse = np.linalg.norm(self.forward.apply(out) - y, axis=1) >= norm
        h = 1.0
        for _ in range(8):
            if not worse.any():
                break
            h /= 2
            idx = np.flatnonzero(worse)
            out[idx] = x[idx] - h * step[idx]
            worse[idx] = np.linalg.norm(self.forward.apply(out[idx]) - y[idx], axis=1) >= norm[idx]
        return out

    def _refuse(self, y: np.ndarray, bad: np.ndarray, why: str) -> None:
        first = ", ".join(f"{c:.4g}" for c in y[bad[0]])
        raise InputError(
            f"the inverse of this transform is not defined at {len(bad):,} of {len(y):,} points "
            f"(first: ({first})): the kernel field {why}; the transform has no unique inverse there"
        )

    def inverse(self) -> KernelField:
        return self.forward

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {
            prefix + "kind": np.array(self.kind),
            prefix + "tolerance": np.array(self._tolerance()),
            prefix + "max_iterations": np.array(self.max_iterations),
            **self.forward.to_arrays(prefix + "forward/"),
        }

    @classmethod
    def _from_entries(cls, entries: Entries, prefix: str, depth: int) -> InverseKernelField:
        forward = entries.transform(prefix + "forward/", depth + 1)
        if not isinstance(forward, KernelField):
            raise entries.error(prefix + "forward/kind", f"must be a kernel field, got {forward.kind!r}")
        tolerance = float(entries.numbers(prefix + "tolerance", shape=()))
        iterations = entries.integer(prefix + "max_iterations")
        if tolerance <= 0 or not 1 <= iterations <= 10_000:
            raise entries.error(prefix + "tolerance", "and max_iterations must be > 0")
        return cls(forward, tolerance, iterations)
