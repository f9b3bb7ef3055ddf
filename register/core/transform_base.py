"""The :class:`Transform` interface and the ``.npz`` file every transform is saved to and loaded from.

Every transform has ``apply(points)``, ``save(path)`` and ``Transform.load(path)``. Files are
``.npz`` archives (never pickled) holding a ``kind`` and a ``format_version`` next to the
arrays, so that a transform saved today is loadable and checkable later. :func:`load_transform`
(``Transform.load``) is the one loader: it checks the archive, the version, every entry's
dtype, shape and finiteness, the kernel widths and the composites' nesting, and names the file
and the entry in every error.

A kind's class is found by its stored ``kind`` in :data:`KINDS`, which each kind's module fills
(:func:`transform_kind`) when it is imported: :mod:`register.core.transforms` imports them all
(:mod:`register.core.transform_affine`, :mod:`register.core.transform_kernel`,
:mod:`register.core.transform_composite`).
"""

from __future__ import annotations

import io
import math
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import TypeVar

import numpy as np

from register.core.files import atomic_write
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
        return Entries(source, arrays).transform(prefix, depth=0)

    @classmethod
    def _from_entries(cls, entries: Entries, prefix: str, depth: int) -> Transform:
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
        atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))

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


# Every kind load_transform reads: the stored ``kind`` -> its class, added by transform_kind.
KINDS: dict[str, type[Transform]] = {}
_Kind = TypeVar("_Kind", bound=type[Transform])


def transform_kind(cls: _Kind) -> _Kind:
    """Class decorator: make ``cls`` loadable as its ``kind`` (read by its ``_from_entries``)."""
    KINDS[cls.kind] = cls
    return cls


def _describe(arr: np.ndarray) -> str:
    """An entry as a message may show it: a short number or name, else its dtype and shape."""
    if arr.shape == () and arr.dtype.kind in "iuf":
        return repr(arr.item())
    if arr.shape == () and arr.dtype.kind == "U" and _KIND_NAME.fullmatch(str(arr)):
        return repr(str(arr))
    return f"a {arr.dtype} array of shape {arr.shape}"


class Entries:
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
    entries = Entries(str(path), arrays)
    version = entries.integer("format_version")
    if version > FORMAT_VERSION:
        raise InputError(
            f"{path}: transform format version {version} is newer than this register "
            f"(reads up to {FORMAT_VERSION}); upgrade register"
        )
    if version < 1:
        raise entries.error("format_version", f"is {version}; versions start at 1")
    return entries.transform("", depth=0)
