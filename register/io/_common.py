"""Helpers shared by the format modules: error messages, header bounds, attribute columns, cells,
atomic writes.

Nothing here knows about a particular file format. The bounds checks (:func:`header_count`,
:func:`check_bytes`, :func:`check_tokens`, :func:`check_end`, :func:`check_memory`) are what
keeps a reader from trusting a header: every count a header declares is checked against what is
left of the file before anything is allocated or looped over.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from register.errors import InputError

TRUNCATED_FIX = "Re-export or re-download the file; it was probably cut short while copying or writing"
CORRUPT_FIX = "The header does not match the data (a corrupt file or a wrong header); fix or re-export it"

_COUNT = re.compile(r"[0-9]{1,30}")  # a count has ASCII digits only (no sign, '_' or '1e3')

_COMPONENT = re.compile(r"(.+)_0")


def fail(path: str | os.PathLike[str], problem: str, fix: str) -> InputError:
    """Build (not raise) an :class:`InputError` reading ``"<path>: <problem>. <fix>."``."""
    fix = fix.rstrip(".")
    return InputError(f"{path}: {problem}. {fix}.")


def truncated(path: str | os.PathLike[str], what: str) -> InputError:
    """The error for a binary (or ASCII) body shorter than its header declares."""
    return fail(path, f"the file is truncated or corrupt: {what}", TRUNCATED_FIX)


def header_count(path: str | os.PathLike[str], word: str | bytes | None, what: str) -> int:
    """A non-negative whole number declared by a header (a count, a size or a length).

    Raises:
        InputError: ``word`` is missing, negative or not a plain decimal integer.
    """
    text = word.decode("latin-1") if isinstance(word, bytes) else word
    if text is None or _COUNT.fullmatch(text) is None:
        raise fail(path, f"{what} is {text!r}, not a count (a whole number >= 0)", CORRUPT_FIX)
    return int(text)


def check_bytes(path: str | os.PathLike[str], needed: int, available: int, what: str) -> None:
    """Refuse a section declaring more bytes than are left of the file.

    Args:
        needed: bytes the header implies (e.g. records x record size), an exact Python int.
        available: bytes left in the file after the section start.
        what: the section, e.g. ``"the header declares 12 'vertex' records"``.
    """
    if needed > available:
        raise truncated(path, f"{what} ({needed} bytes) but only {max(available, 0)} bytes follow")


def check_tokens(path: str | os.PathLike[str], count: int, available: int, what: str) -> None:
    """Refuse ``count`` text values where only ``available`` bytes remain.

    Each value needs at least one character and one separator, so ``count`` values take at least
    ``2 * count - 1`` bytes: a header claiming more is refused before any line is read.
    """
    if count > 0 and 2 * count - 1 > available:
        raise truncated(path, f"{what} {count} values but only {max(available, 0)} bytes follow")


def check_end(path: str | os.PathLike[str], data: bytes, end: int, what: str) -> None:
    """Refuse data after the end of what the header declares (trailing whitespace is allowed)."""
    rest = len(data) - end
    if rest > 0 and data[end:].strip():
        raise fail(
            path,
            f"{rest} more bytes follow the {what} that the header declares (its counts are too small)",
            CORRUPT_FIX,
        )


def available_memory() -> int | None:
    """Bytes this process can still allocate: ``MemAvailable``, capped by ``RLIMIT_AS`` (Linux).

    ``None`` where neither is known.
    """
    limits = []
    try:
        with open("/proc/meminfo") as f:
            limits += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status") as f:
                used = [int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:")]
            limits.append(soft - (used[0] if used else 0))
    except (OSError, ValueError, ImportError):
        pass
    return min(limits) if limits else None


def check_memory(path: str | os.PathLike[str], nbytes: int, what: str) -> None:
    """Refuse to expand compressed data to ``nbytes`` when that much memory is not available.

    For compressed sections only (PCD ``binary_compressed``, ``.npz`` members): their size on
    disk does not bound what they expand to, so the declared size is checked up front.
    """
    free = available_memory()
    if free is not None and nbytes > free:
        raise fail(
            path,
            f"{what} expands to {nbytes / 2**30:.2f} GiB, more than the {max(free, 0) / 2**30:.2f} GiB "
            "of memory available",
            "Free memory (or raise the memory limit), or split the cloud into smaller files",
        )


def split_components(
    point_data: dict[str, np.ndarray], path: str | os.PathLike[str], reserved: Iterable[str] = ()
) -> list[tuple[str, np.ndarray]]:
    """Flatten attributes into named ``(N,)`` columns for column-based formats (PLY, text).

    An ``(N,)`` or ``(N, 1)`` attribute ``name`` gives one column ``name``; an ``(N, k)`` attribute
    gives ``name_0 .. name_{k-1}`` (see :func:`merge_components` for the inverse).

    Raises:
        InputError: an attribute has more than 2 dimensions, or two columns would share a name.
    """
    columns: list[tuple[str, np.ndarray]] = []
    for name, arr in point_data.items():
        arr = np.asarray(arr)
        if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
            columns.append((name, arr.reshape(-1)))
        elif arr.ndim == 2:
            columns.extend((f"{name}_{i}", arr[:, i]) for i in range(arr.shape[1]))
        else:
            raise fail(
                path,
                f"point attribute '{name}' has shape {arr.shape}, which cannot be written",
                "Reshape it to (N,) or (N, k) before writing",
            )
    check_unique_names([name for name, _ in columns], path, reserved)
    return columns


def check_unique_names(
    names: Sequence[str], path: str | os.PathLike[str], reserved: Iterable[str] = ()
) -> None:
    """Refuse duplicate column names, or names clashing with ``reserved`` (e.g. ``x``, ``y``, ``z``)."""
    seen = set(reserved)
    for name in names:
        if name in seen:
            raise fail(
                path,
                f"two columns would both be named '{name}' (attribute names clash with each other "
                "or with the coordinate names)",
                "Rename the point attribute before writing",
            )
        seen.add(name)


def check_plain_names(names: Iterable[str], path: str | os.PathLike[str], forbidden: str = "") -> None:
    """Refuse empty names and names containing whitespace (or any character of ``forbidden``)."""
    for name in names:
        if not name or any(ch.isspace() or ch in forbidden for ch in name):
            raise fail(
                path,
                f"point attribute name {name!r} cannot be stored in this format "
                f"(it is empty or contains whitespace{' or one of ' + repr(forbidden) if forbidden else ''})",
                "Rename the attribute (e.g. use underscores)",
            )


def merge_components(columns: Sequence[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Group consecutive ``(N,)`` columns ``name_0 .. name_{k-1}`` (k >= 2) into one ``(N, k)`` array.

    Other columns are kept as they are, in order. A group is not merged if ``name`` itself is
    also a column, so no data is ever lost.
    """
    taken = {name for name, _ in columns}
    result: dict[str, np.ndarray] = {}
    i = 0
    while i < len(columns):
        name, arr = columns[i]
        end = _component_run_end(columns, i)
        base = name[:-2]
        if end - i >= 2 and base not in taken:
            result[base] = np.column_stack([col for _, col in columns[i:end]])
            i = end
            continue
        result[name] = arr
        i += 1
    return result


def _component_run_end(columns: Sequence[tuple[str, np.ndarray]], start: int) -> int:
    """Index after the run ``base_0, base_1, ...`` of 1-D columns starting at ``start``."""
    match = _COMPONENT.fullmatch(columns[start][0])
    if match is None or columns[start][1].ndim != 1:
        return start
    base = match.group(1)
    end = start + 1
    while end < len(columns) and columns[end][0] == f"{base}_{end - start}" and columns[end][1].ndim == 1:
        end += 1
    return end


def uniform_cells(
    offsets: np.ndarray, connectivity: np.ndarray, path: str | os.PathLike[str], what: str = "faces"
) -> np.ndarray | None:
    """Turn cells in offsets/connectivity form into an ``(F, k)`` int64 array.

    Args:
        offsets: ``(F + 1,)`` start of each cell in ``connectivity`` (last entry = its length).
        connectivity: ``(M,)`` vertex indices of all cells, concatenated.
        path: the file, for messages.
        what: how to call the cells in messages.

    Returns:
        ``(F, k)`` int64 vertex indices, or ``None`` if there are no cells.

    Raises:
        InputError: the cells do not all have the same number of vertices, or have none.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    connectivity = np.asarray(connectivity, dtype=np.int64)
    if len(offsets) < 2:
        return None
    sizes = np.diff(offsets)
    if sizes.min() != sizes.max():
        raise mixed_faces(path, int(sizes.min()), int(sizes.max()), what)
    k = int(sizes[0])
    if k == 0:
        raise fail(path, f"its {what} have no vertices", CORRUPT_FIX)
    return connectivity[offsets[0] : offsets[-1]].reshape(-1, k).copy()


def mixed_faces(path: str | os.PathLike[str], smallest: int, largest: int, what: str = "faces") -> InputError:
    """The error for polygons of different sizes in one file."""
    return fail(
        path,
        f"its {what} have mixed sizes ({smallest} to {largest} vertices); register supports uniform "
        "faces only (all triangles, or all quads, ...)",
        "Triangulate the mesh first (e.g. MeshLab 'Triangulate', or pyvista's mesh.triangulate()), "
        "or save the points without faces",
    )


def segments(offsets: np.ndarray, connectivity: np.ndarray) -> np.ndarray | None:
    """Split polylines (offsets/connectivity form) into ``(L, 2)`` int64 segments, or ``None``."""
    offsets = np.asarray(offsets, dtype=np.int64)
    connectivity = np.asarray(connectivity, dtype=np.int64)
    if len(offsets) < 2 or offsets[-1] - offsets[0] < 2:
        return None
    starts = np.arange(offsets[0], offsets[-1] - 1)
    last_of_cell = np.zeros(int(offsets[-1]) + 1, dtype=bool)
    last_of_cell[offsets[1:] - 1] = True
    keep = ~last_of_cell[starts]
    pairs = np.column_stack([connectivity[starts[keep]], connectivity[starts[keep] + 1]])
    return pairs if len(pairs) else None


def strips_to_triangles(offsets: np.ndarray, connectivity: np.ndarray) -> np.ndarray:
    """Split triangle strips (offsets/connectivity form) into ``(T, 3)`` int64 triangles.

    Triangle ``j`` of a strip ``v0 v1 v2 ...`` is ``(v_j, v_j+1, v_j+2)``, with the first two
    vertices swapped for odd ``j`` so all triangles keep the same orientation.
    """
    triangles = []
    for start, stop in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        strip = np.asarray(connectivity[start:stop], dtype=np.int64)
        if len(strip) < 3:
            continue
        tri = np.column_stack([strip[:-2], strip[1:-1], strip[2:]])
        tri[1::2, :2] = tri[1::2, 1::-1]
        triangles.append(tri)
    return np.concatenate(triangles) if triangles else np.empty((0, 3), dtype=np.int64)


def format_rows(columns: Sequence[np.ndarray], sep: str) -> str:
    """Format 1-D columns as text rows joined by ``sep``, one row per line, exactly.

    Floats are written with Python's shortest round-trip repr (17 significant digits at most),
    integers as integers, booleans as 0/1.
    """
    if not columns:
        return ""
    texts = [_column_strings(col) for col in columns]
    return "".join(sep.join(row) + "\n" for row in zip(*texts, strict=True))


def _column_strings(col: np.ndarray) -> list[str]:
    col = np.asarray(col)
    if col.dtype == np.bool_:
        col = col.astype(np.uint8)
    if col.dtype.kind == "f":
        return [repr(v) for v in col.astype(np.float64).tolist()]
    return [str(v) for v in col.tolist()]


def cast_values(values: np.ndarray, dtype: np.dtype, path: str | os.PathLike[str], what: str) -> np.ndarray:
    """Cast numbers parsed from text to a declared dtype, refusing integers that do not fit.

    Raises:
        InputError: an integer type receives a non-integer, NaN/Inf or out-of-range value.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "iu" and values.size:
        info = np.iinfo(dtype)
        exact = values.dtype.kind != "f" or bool((np.isfinite(values) & (values == np.round(values))).all())
        if not exact or values.min() < info.min or values.max() > info.max:
            raise fail(
                path,
                f"{what} holds values that are not integers in the range of its type {dtype.name}",
                "The file is corrupt or its header declares the wrong type; fix or re-export it",
            )
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(dtype)


def first_bad_token(rows: Sequence[Sequence[str]], parse: Callable[[str], object]) -> tuple[int, int, str]:
    """Return ``(row index, column index, token)`` of the first token ``parse`` rejects.

    Returns ``(-1, -1, "")`` if all tokens parse.
    """
    for i, row in enumerate(rows):
        for j, token in enumerate(row):
            try:
                parse(token)
            except ValueError:
                return i, j, token
    return -1, -1, ""
