"""The table of file formats, keyed by lower-case file extension (with its dot, e.g. ``".ply"``).

A reader is ``reader(path: Path) -> PointCloud`` (no validation: :func:`register.io.read_points`
validates). A writer is ``writer(path: Path, cloud: PointCloud, **options) -> None``; it writes
to exactly ``path`` (a temporary name: it must not rely on the extension) and may accept the
keyword option ``binary``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from register.core.pointcloud import PointCloud
from register.io._common import fail

Reader = Callable[[Path], PointCloud]
Writer = Callable[..., None]


@dataclass(frozen=True)
class Format:
    """One registered file format: its extension, reader and (optional) writer."""

    extension: str
    reader: Reader
    writer: Writer | None


def normalize_extension(ext: str) -> str:
    """``"PLY"`` or ``".ply"`` -> ``".ply"``; a compound extension such as ``".nii.gz"`` is one.

    Raises:
        ValueError: ``ext`` is empty, contains a path separator, an empty part or more than
            two parts.
    """
    ext = ext.strip().lower()
    ext = ext if ext.startswith(".") else "." + ext
    parts = ext[1:].split(".")
    if len(parts) > 2 or not all(parts) or "/" in ext or os.sep in ext:
        raise ValueError(f"invalid file extension {ext!r}: expected something like '.ply'")
    return ext


class FormatRegistry:
    """Maps extensions to :class:`Format` entries."""

    def __init__(self) -> None:
        self._formats: dict[str, Format] = {}

    def register(self, ext: str, reader: Reader, writer: Writer | None, *, replace: bool = False) -> None:
        """Add a format; ``writer=None`` makes it read-only.

        Raises:
            ValueError: bad extension, or already registered and ``replace`` is false.
        """
        ext = normalize_extension(ext)
        if ext in self._formats and not replace:
            raise ValueError(f"the extension {ext!r} is already registered (pass replace=True to override)")
        self._formats[ext] = Format(ext, reader, writer)

    def unregister(self, ext: str) -> None:
        """Remove a format (no error if it is not registered)."""
        self._formats.pop(normalize_extension(ext), None)

    def extensions(self) -> tuple[str, ...]:
        """The registered extensions, sorted."""
        return tuple(sorted(self._formats))

    def lookup(self, path: Path, action: str = "read") -> Format:
        """The format of ``path`` by its extension (case-insensitive).

        Raises:
            InputError: the extension is unknown (the message lists the supported ones).
        """
        # A compound extension (".nii.gz") is matched before the last one (".gz").
        compound = "".join(path.suffixes[-2:]).lower()
        ext = compound if compound in self._formats else path.suffix.lower()
        fmt = self._formats.get(ext)
        if fmt is None:
            shown = f"'{ext}'" if ext else "no extension"
            raise fail(
                path,
                f"cannot {action} a file with {shown}: unknown point-cloud format",
                f"Use one of the supported extensions: {', '.join(self.extensions())}",
            )
        return fmt
