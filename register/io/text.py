"""Delimited text point files: ``.xyz``, ``.txt``, ``.csv``.

Reading: ``#`` starts a comment (whole line or end of line); blank lines are skipped; a trailing
separator at the end of a line is ignored. The
separator is found on the first content line: ``;`` if present, else ``,`` if present, else
whitespace. That first line is a header of column names if none of its fields is a number.
Coordinates are the columns named ``x, y[, z]`` if the header has them, else the first 3 columns
(the first 2 if the file has exactly 2 columns: planar data, D = 2). Every other column becomes
an ``(N,)`` float64 attribute named from the header (else ``col3``, ``col4``, ...), and columns
``name_0 .. name_{k-1}`` are reassembled into one ``(N, k)`` attribute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from register.core.pointcloud import PointCloud
from register.io._common import (
    check_plain_names,
    fail,
    first_bad_token,
    format_rows,
    merge_components,
    split_components,
)

_CHUNK = 1 << 16  # lines split and converted at a time
_COLUMNS_FIX = "Give every row the same columns: x y z (or x y for planar data), then any attributes"


def read_text(path: Path) -> PointCloud:
    """Read a delimited text file into a :class:`PointCloud` (not yet validated).

    Raises:
        InputError: not text, rows of different lengths, non-numeric values (naming the line),
            fewer than 2 columns.
    """
    lines = _content_lines(path)
    if not lines:
        return PointCloud(np.empty((0, 3)), {}, None, None, str(path))
    sep = _separator(lines[0][1])
    names = _header_names(lines[0][1], sep)
    header = names if not any(_is_number(t) for t in names) else None
    rows = lines[1:] if header is not None else lines
    width = len(header) if header is not None else len(names)
    if width < 2:
        raise fail(path, f"wrong number of columns: line {lines[0][0]} has only {width} column", _COLUMNS_FIX)
    values = _parse_rows(rows, sep, width, path, header_line=lines[0][0] if header else None)
    return _build_cloud(values, header, path)


def _content_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with comments removed, numbered from 1."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(
            path, "not a text file (it is not valid UTF-8)", "Check the file type and its extension"
        ) from exc
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if "#" in line:
            line = line.split("#", 1)[0]
        if line and not line.isspace():
            lines.append((number, line))
    return lines


def _separator(line: str) -> str | None:
    """``";"``, ``","`` or ``None`` (whitespace) for a content line."""
    if ";" in line:
        return ";"
    if "," in line:
        return ","
    return None


def _split(line: str, sep: str | None) -> list[str]:
    """Fields of one line; one trailing separator (``1,2,3,``) is ignored.

    Surrounding whitespace is left on the fields: ``float()`` ignores it.
    """
    if sep is None:
        return line.split()
    line = line.rstrip()
    return line[:-1].split(sep) if line.endswith(sep) else line.split(sep)


def _header_names(line: str, sep: str | None) -> list[str]:
    """Column names of a header line, stripped of whitespace and quotes."""
    return [t.strip().strip("\"'") for t in _split(line, sep)]


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _parse_rows(
    rows: list[tuple[int, str]], sep: str | None, width: int, path: Path, header_line: int | None
) -> np.ndarray:
    """``(N, width)`` float64 values; every row must have ``width`` fields.

    Rows are split and converted :data:`_CHUNK` lines at a time, so the Python lists of tokens
    never hold more than one chunk (they take ~10 times the text they come from).
    """
    values = np.empty((len(rows), width))
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        values[start : start + len(chunk)] = _parse_chunk(
            chunk, sep, width, path, header_line or rows[0][0], header_line
        )
    return values


def _parse_chunk(
    rows: list[tuple[int, str]], sep: str | None, width: int, path: Path, first: int, header_line: int | None
) -> np.ndarray:
    tokens = [_split(line, sep) for _, line in rows]
    for (number, _), fields in zip(rows, tokens, strict=True):
        if len(fields) != width:
            source = f"the header (line {header_line})" if header_line else f"line {first}"
            raise fail(
                path,
                f"wrong number of columns: line {number} has {len(fields)} values but {source} has {width}",
                _COLUMNS_FIX,
            )
    try:
        return np.array(tokens, dtype=np.float64)
    except ValueError:
        i, j, token = first_bad_token(tokens, float)
        shown = repr(token.strip()) if token.strip() else "an empty value"
        raise fail(
            path, f"line {rows[i][0]}, column {j + 1}: {shown} is not a number", "Fix that value"
        ) from None


def _build_cloud(values: np.ndarray, header: list[str] | None, path: Path) -> PointCloud:
    """Split the value table into coordinates and named attributes."""
    width = values.shape[1]
    names = (
        header
        if header is not None
        else ["x", "y", "z"][: min(width, 3)] + [f"col{j}" for j in range(3, width)]
    )
    if len(set(names)) != len(names):
        raise fail(path, "the header repeats a column name", "Give every column its own name")
    lowered = [n.lower() for n in names]
    if "x" in lowered and "y" in lowered:
        axes = [lowered.index("x"), lowered.index("y")] + ([lowered.index("z")] if "z" in lowered else [])
    else:
        axes = [0, 1, 2][: 2 if width == 2 else 3]
    points = values[:, axes]
    extra = [(names[j], values[:, j]) for j in range(width) if j not in axes]
    return PointCloud(points, merge_components(extra), None, None, str(path))


def write_text(
    path: Path, cloud: PointCloud, *, sep: str = " ", header: bool | None = None, binary: bool = False
) -> None:
    """Write ``cloud`` as delimited text, one point per line, floats in shortest exact repr.

    Args:
        path: destination.
        cloud: the cloud; ``(N, k)`` attributes become columns ``name_0 .. name_{k-1}``; faces and
            lines are not stored.
        sep: column separator (``","`` for CSV, ``" "`` for XYZ/TXT).
        header: write a header line of column names; default: only when there are attributes
            (plain ``x y z`` files stay headerless for other tools).
        binary: must be false (text formats have no binary variant).

    Raises:
        InputError: ``binary=True``, or an attribute name that would not read back as a header.
    """
    if binary:
        raise fail(
            path, "text point files cannot be written in binary", "Use .ply, .pcd, .npy or .vtk for binary"
        )
    axes = ["x", "y", "z"][: cloud.points.shape[1]]
    columns = [(a, cloud.points[:, i]) for i, a in enumerate(axes)]
    columns += split_components(cloud.point_data, path, reserved=axes)
    for name, arr in columns:
        if np.asarray(arr).dtype.kind not in "biuf":
            raise fail(
                path, f"point attribute '{name}' has dtype {arr.dtype}, which text cannot store", "Convert it"
            )
    names = [name for name, _ in columns]
    check_plain_names(names, path, forbidden=",;#\"'")
    for name in names:
        if _is_number(name):
            raise fail(
                path, f"point attribute name {name!r} looks like a number", "Rename it to start with a letter"
            )
    with_header = (bool(cloud.point_data) or sep != " ") if header is None else header
    text = (sep.join(names) + "\n" if with_header else "") + format_rows([arr for _, arr in columns], sep)
    path.write_text(text, encoding="utf-8")
