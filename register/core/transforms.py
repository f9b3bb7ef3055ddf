"""Transforms: first-class objects that move points of the source space into the target space.

Every transform has ``apply(points)``, ``save(path)`` and ``Transform.load(path)``. Files are
``.npz`` archives (never pickled) holding a ``kind`` and a ``format_version`` next to the
arrays, so that a transform saved today is loadable and checkable later. :func:`load_transform`
(``Transform.load``) is the one loader: it checks the archive, the version, every entry's
dtype, shape and finiteness, the kernel widths and the composites' nesting, and names the file
and the entry in every error.

Kinds:
    * :class:`Affine`     ``T(x) = A x + t``
    * :class:`KernelField` ``T(x) = x + sum_c K(x, c) w_c`` with a multi-scale Gaussian kernel
    * :class:`InverseKernelField` ``T^-1`` of a kernel field, solved by Newton's method
    * :class:`Composite`  ``T = T_n o ... o T_1`` (applied first to last)
"""

from __future__ import annotations

import io
import math
import os
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from register.errors import InputError

FORMAT_VERSION = 1
# Composites register writes are one level deep (a composite of affine maps and kernel fields);
# deeper nesting is a damaged or hostile file, refused before it can exhaust the stack.
MAX_NESTING = 32
# A kind worth quoting in a message (anything else is described, never printed raw).
_KIND_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,39}")
_ZIP_MAGIC, _NPY_MAGIC = b"PK\x03\x04", b"\x93NUMPY"


class Transform:
    """Base class: a map ``R^D -> R^D`` in the data's units."""

    kind = "transform"

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, D)`` points (data units, source frame) to ``(N, D)`` points (target frame)."""
        raise NotImplementedError

    def jacobian(self, points: np.ndarray) -> np.ndarray:
        """``(N, D, D)`` Jacobian matrices ``J_ab = d T_a / d x_b`` at ``(N, D)`` points (exact)."""
        raise NotImplementedError

    def apply_with_jacobian(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(apply(points), jacobian(points))``; a transform that gets both from one
        evaluation (a kernel field) overrides it."""
        return self.apply(points), self.jacobian(points)

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The arrays that describe this transform, keys prefixed by ``prefix``."""
        raise NotImplementedError

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], prefix: str = "", *, source: str = "transform"
    ) -> Transform:
        """Inverse of :meth:`to_arrays`: dispatch on the stored ``kind``, every entry checked.

        Args:
            arrays: the archive's entries; prefix: of this transform's keys.
            source: names the arrays in messages (the file).

        Raises:
            InputError: a missing or malformed entry (the message names ``source`` and the key).
        """
        return _Entries(source, arrays).transform(prefix, depth=0)

    @classmethod
    def _from_entries(cls, entries: _Entries, prefix: str, depth: int) -> Transform:
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
        """Read a transform saved by :meth:`save` (same as :func:`load_transform`)."""
        return load_transform(path)

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
    def _from_entries(cls, entries: _Entries, prefix: str, depth: int) -> Affine:
        matrix = entries.numbers(prefix + "matrix", ndim=2)
        if matrix.shape[0] != matrix.shape[1]:
            raise entries.error(
                prefix + "matrix", f"must be a square (D, D) matrix, got shape {matrix.shape}"
            )
        return cls(matrix, entries.numbers(prefix + "translation", shape=(matrix.shape[0],)))


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
    def _from_entries(cls, entries: _Entries, prefix: str, depth: int) -> KernelField:
        controls = entries.numbers(prefix + "controls", ndim=2)
        weights = entries.numbers(prefix + "weights", shape=controls.shape)
        sigmas = entries.numbers(prefix + "sigmas", ndim=1)
        if not len(sigmas) or not (sigmas > 0).all():
            raise entries.error(prefix + "sigmas", f"kernel widths must be > 0, got {sigmas[:8].tolist()}")
        return cls(controls, weights, tuple(sigmas))

    def inverse(self) -> InverseKernelField:
        """``T^-1``, evaluated pointwise by Newton's method (:class:`InverseKernelField`)."""
        return InverseKernelField(self)


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
    def _from_entries(cls, entries: _Entries, prefix: str, depth: int) -> InverseKernelField:
        forward = entries.transform(prefix + "forward/", depth + 1)
        if not isinstance(forward, KernelField):
            raise entries.error(prefix + "forward/kind", f"must be a kernel field, got {forward.kind!r}")
        tolerance = float(entries.numbers(prefix + "tolerance", shape=()))
        iterations = entries.integer(prefix + "max_iterations")
        if tolerance <= 0 or not 1 <= iterations <= 10_000:
            raise entries.error(prefix + "tolerance", "and max_iterations must be > 0")
        return cls(forward, tolerance, iterations)


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
    def _from_entries(cls, entries: _Entries, prefix: str, depth: int) -> Composite:
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


KINDS: dict[str, type[Transform]] = {
    "affine": Affine,
    "kernel_field": KernelField,
    "inverse_kernel_field": InverseKernelField,
    "composite": Composite,
}


def _describe(arr: np.ndarray) -> str:
    """An entry as a message may show it: a short number or name, else its dtype and shape."""
    if arr.shape == () and arr.dtype.kind in "iuf":
        return repr(arr.item())
    if arr.shape == () and arr.dtype.kind == "U" and _KIND_NAME.fullmatch(str(arr)):
        return repr(str(arr))
    return f"a {arr.dtype} array of shape {arr.shape}"


class _Entries:
    """The arrays of a transform archive, read with checks whose errors name the file and entry."""

    def __init__(self, source: str, arrays: dict[str, np.ndarray]) -> None:
        self.source = source
        self.arrays = arrays

    def error(self, key: str, problem: str) -> InputError:
        shown = key if len(key) <= 60 else f"...{key[-40:]}"
        return InputError(
            f"{self.source}: entry '{shown}' {problem}; the transform file is damaged or not register's"
        )

    def get(self, key: str) -> np.ndarray:
        if key not in self.arrays:
            raise InputError(
                f"{self.source}: transform archive is incomplete (no '{key if len(key) <= 60 else '...' + key[-40:]}' "
                "entry); pass the transform.npz written by a run"
            )
        return self.arrays[key]

    def integer(self, key: str) -> int:
        arr = self.get(key)
        if arr.shape != () or arr.dtype.kind not in "iu":
            raise self.error(key, f"must be an integer, got {_describe(arr)}")
        return int(arr)

    def numbers(
        self, key: str, *, ndim: int | None = None, shape: tuple[int, ...] | None = None
    ) -> np.ndarray:
        """A finite float64 array of ``shape`` (or any shape of ``ndim`` dimensions, none empty)."""
        arr = self.get(key)
        if arr.dtype.kind not in "iuf":
            raise self.error(key, f"must hold numbers, got {_describe(arr)}")
        if shape is not None and arr.shape != shape:
            raise self.error(key, f"has shape {arr.shape}, expected {shape}")
        if ndim is not None and (arr.ndim != ndim or 0 in arr.shape):
            raise self.error(key, f"has shape {arr.shape}, expected a non-empty {ndim}-D array")
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise self.error(key, "holds NaN or Inf values")
        return arr

    def transform(self, prefix: str, depth: int) -> Transform:
        key = prefix + "kind"
        arr = self.get(key)
        if arr.shape != () or arr.dtype.kind != "U":
            raise self.error(key, f"must be a transform kind (text), got {_describe(arr)}")
        kind = str(arr)
        if kind not in KINDS:
            shown = repr(kind) if _KIND_NAME.fullmatch(kind) else f"(a {len(kind)}-character text)"
            raise InputError(
                f"{self.source}: unknown transform kind {shown} (known: {', '.join(sorted(KINDS))}); "
                "the file is damaged, not register's, or from a newer register"
            )
        return KINDS[kind]._from_entries(self, prefix, depth)


def _read_archive(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, read without pickles, each member's header
    checked against its size before anything is allocated."""
    damaged = "the file is damaged (truncated or corrupt); pass the transform.npz written by a run"
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic.startswith(_NPY_MAGIC):
        raise InputError(
            f"{path}: is a single .npy array, not a transform archive (.npz); pass the transform.npz written by a run"
        )
    if not magic.startswith(_ZIP_MAGIC):
        raise InputError(f"{path}: not a transform archive (.npz); pass the transform.npz written by a run")
    arrays: dict[str, np.ndarray] = {}
    fmt = np.lib.format
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                key = info.filename.removesuffix(".npy")
                with zf.open(info) as member:
                    version = fmt.read_magic(member)
                    read_header = (
                        fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(member)
                    if dtype.hasobject:
                        raise InputError(
                            f"{path}: entry '{key}' holds Python objects (a pickle), never loaded; "
                            "register transforms hold numbers and text only"
                        )
                    if math.prod(shape) * dtype.itemsize > info.file_size:
                        raise InputError(
                            f"{path}: entry '{key}' is larger than its archive member; {damaged}"
                        )
                with zf.open(info) as member:
                    arrays[key] = fmt.read_array(member, allow_pickle=False)
    except InputError:
        raise
    except (
        OSError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        raise InputError(
            f"{path}: not a readable transform archive ({type(exc).__name__}: {exc}); {damaged}"
        ) from None
    return arrays


def load_transform(path: str | os.PathLike) -> Transform:
    """Read a transform saved by :meth:`Transform.save`.

    Raises:
        InputError: the file is missing, not a zip archive (a ``.npy`` given instead), truncated
            or corrupt, holds pickled objects, lacks ``kind`` / ``format_version``, has a
            ``format_version`` that is not an integer or is newer than this register, an
            unknown kind, an entry of the wrong dtype or shape, NaN / Inf values, kernel
            widths that are not > 0, an empty composite, steps of different dimensions or
            composites nested more than :data:`MAX_NESTING` deep. The message names the file
            (and the entry).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "transform file not found"
        raise InputError(f"{path}: {what}; pass the transform.npz written by a run")
    arrays = _read_archive(path)
    if "kind" not in arrays or "format_version" not in arrays:
        raise InputError(f"{path}: not a register transform (no 'kind' / 'format_version' entries)")
    entries = _Entries(str(path), arrays)
    version = entries.integer("format_version")
    if version > FORMAT_VERSION:
        raise InputError(
            f"{path}: transform format version {version} is newer than this register "
            f"(reads up to {FORMAT_VERSION}); upgrade register"
        )
    if version < 1:
        raise entries.error("format_version", f"is {version}; versions start at 1")
    return entries.transform("", depth=0)
