"""Transforms: first-class objects that move points of the source space into the target space.

Every transform has ``apply(points)``, ``save(path)`` and ``Transform.load(path)``. Files are
``.npz`` archives (never pickled) holding a ``kind`` and a ``format_version`` next to the
arrays, so that a transform saved today is loadable and checkable later.

Kinds:
    * :class:`Affine`     ``T(x) = A x + t``
    * :class:`KernelField` ``T(x) = x + sum_c K(x, c) w_c`` with a multi-scale Gaussian kernel
    * :class:`Composite`  ``T = T_n o ... o T_1`` (applied first to last)
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from register.errors import InputError

FORMAT_VERSION = 1


class Transform:
    """Base class: a map ``R^D -> R^D`` in the data's units."""

    kind = "transform"

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, D)`` points (data units, source frame) to ``(N, D)`` points (target frame)."""
        raise NotImplementedError

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The arrays that describe this transform, keys prefixed by ``prefix``."""
        raise NotImplementedError

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "") -> Transform:
        """Inverse of :meth:`to_arrays`: dispatch on the stored ``kind``."""
        kind = str(arrays[prefix + "kind"])
        if kind not in KINDS:
            raise InputError(f"unknown transform kind '{kind}' (known: {', '.join(sorted(KINDS))})")
        return KINDS[kind]._from_arrays(arrays, prefix)

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> Transform:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        """Dimension ``D`` of the space the transform acts on."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        """Write the transform to ``path`` (``.npz``), atomically (temp file + rename)."""
        path = Path(path)
        arrays = self.to_arrays()
        arrays["format_version"] = np.array(FORMAT_VERSION)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(buffer.getvalue())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; use the usual permissions
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def load(path: str | os.PathLike) -> Transform:
        """Read a transform saved by :meth:`save`; a clear :class:`InputError` otherwise."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: transform file not found; pass the transform.npz written by a run")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"{path}: not a readable transform archive (.npz): {exc}") from None
        if "kind" not in arrays or "format_version" not in arrays:
            raise InputError(f"{path}: not a register transform (no 'kind' / 'format_version' entries)")
        version = int(arrays["format_version"])
        if version > FORMAT_VERSION:
            raise InputError(
                f"{path}: transform format version {version} is newer than this register "
                f"(reads up to {FORMAT_VERSION}); upgrade register"
            )
        try:
            return Transform.from_arrays(arrays)
        except KeyError as exc:
            raise InputError(f"{path}: transform archive is incomplete (missing {exc})") from None

    def check_points(self, points: np.ndarray, what: str = "points") -> np.ndarray:
        """Validate ``points`` as an ``(N, dim)`` finite array; return it as float64."""
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != self.dim:
            raise InputError(
                f"{what}: expected an (N, {self.dim}) array for this {self.dim}-D transform, "
                f"got shape {points.shape}"
            )
        return points


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
    def _from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> Affine:
        return cls(arrays[prefix + "matrix"], arrays[prefix + "translation"])


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

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {
            prefix + "kind": np.array(self.kind),
            prefix + "controls": self.controls,
            prefix + "weights": self.weights,
            prefix + "sigmas": np.array(self.sigmas),
        }

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> KernelField:
        return cls(arrays[prefix + "controls"], arrays[prefix + "weights"], tuple(arrays[prefix + "sigmas"]))


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

    def then(self, step: Transform) -> Composite:
        """A new composite with ``step`` applied after the current steps."""
        return Composite([*self.steps, step])

    def inverse(self) -> Composite:
        """Inverse when every step is invertible (affine steps only)."""
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
    def _from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> Composite:
        count = int(arrays[prefix + "count"])
        return cls([Transform.from_arrays(arrays, f"{prefix}step{i}/") for i in range(count)])


KINDS: dict[str, type[Transform]] = {"affine": Affine, "kernel_field": KernelField, "composite": Composite}
