"""Reading and writing point clouds, chosen by file extension.

Public API:

* :func:`read_points` - read any supported file, then validate it (never returns an empty,
  partial or non-finite cloud).
* :func:`write_points` - write atomically (temporary file + ``os.replace``).
* :func:`read_weights` - a point attribute as per-point mass.
* :func:`register_format` / :func:`supported_extensions` - the format table.
* :data:`SUPPORTED_EXTENSIONS` - the built-in extensions, sorted.

Importing this package does not import pyvista, vtk or torch (VTK writers and LZ4-compressed
XML files import vtk lazily).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from register.core.files import atomic_write
from register.core.pointcloud import PointCloud
from register.errors import InputError
from register.io import images, lidar, meshes, numpy_io, pcd, ply, ply_write, text, vtk_legacy, vtk_xml
from register.io._common import fail
from register.io.registry import Format, FormatRegistry, Reader, Writer
from register.io.validate import check_cloud, drop_nonfinite
from register.io.weights import read_weights

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Format",
    "FormatRegistry",
    "check_cloud",
    "file_part",
    "output_extension",
    "read_points",
    "read_weights",
    "register_format",
    "split_member",
    "supported_extensions",
    "unregister_format",
    "write_points",
]


def builtin_registry() -> FormatRegistry:
    """A new registry holding every built-in format."""
    registry = FormatRegistry()
    registry.register(".ply", ply.read_ply, ply_write.write_ply)
    registry.register(".pcd", pcd.read_pcd, pcd.write_pcd)
    registry.register(".xyz", text.read_text, functools.partial(text.write_text, sep=" "))
    registry.register(".txt", text.read_text, functools.partial(text.write_text, sep=" "))
    registry.register(".csv", text.read_text, functools.partial(text.write_text, sep=","))
    registry.register(".npy", numpy_io.read_npy, numpy_io.write_npy)
    registry.register(".npz", numpy_io.read_npz, numpy_io.write_npz)
    registry.register(".vtk", vtk_legacy.read_legacy_vtk, vtk_legacy.write_legacy_vtk)
    registry.register(".vtp", vtk_xml.read_vtp, vtk_xml.write_vtp)
    registry.register(".vtu", vtk_xml.read_vtu, vtk_xml.write_vtu)
    registry.register(
        ".obj",
        functools.partial(meshes.read_meshio, file_format="obj"),
        functools.partial(meshes.write_meshio, file_format="obj"),
    )
    registry.register(
        ".stl",
        functools.partial(meshes.read_meshio, file_format="stl"),
        functools.partial(meshes.write_meshio, file_format="stl"),
    )
    registry.register(".off", meshes.read_off, meshes.write_off)
    registry.register(".las", lidar.read_las, functools.partial(lidar.write_las, compress=False))
    registry.register(".laz", lidar.read_las, functools.partial(lidar.write_las, compress=True))
    registry.register(".bin", lidar.read_kitti_bin, lidar.write_kitti_bin)  # KITTI Velodyne scans
    for ext in images.IMAGE_EXTENSIONS:  # segmentation masks: voxel centres (read only)
        registry.register(ext, images.read_mask_points, None)
    return registry


# The one registry read_points/write_points use; register_format() adds to it.
_REGISTRY = builtin_registry()

SUPPORTED_EXTENSIONS: tuple[str, ...] = _REGISTRY.extensions()

_READ_ERRORS = (ValueError, EOFError, IndexError, KeyError)


def register_format(ext: str, reader: Reader, writer: Writer | None, *, replace: bool = False) -> None:
    """Register (or with ``replace=True`` override) the reader/writer of an extension.

    Args:
        ext: the extension, e.g. ``".las"`` (case-insensitive, dot optional).
        reader: ``reader(path: Path) -> PointCloud``; :func:`read_points` validates its result.
        writer: ``writer(path: Path, cloud: PointCloud, **options) -> None`` writing exactly to
            ``path`` (a temporary name), or ``None`` for a read-only format.
        replace: allow overriding an existing entry.

    Raises:
        ValueError: bad extension, or already registered without ``replace``.
    """
    _REGISTRY.register(ext, reader, writer, replace=replace)


def unregister_format(ext: str) -> None:
    """Remove the reader/writer of an extension (e.g. a test's temporary format)."""
    _REGISTRY.unregister(ext)


def supported_extensions() -> tuple[str, ...]:
    """Every extension currently registered (built-in and added), sorted."""
    return _REGISTRY.extensions()


def output_extension(path: str | os.PathLike[str] | None, default: str = ".vtk") -> str:
    """The extension to write results derived from the file ``path`` with: its own when the
    format can be written (``".ply"`` stays ``".ply"``), else ``default`` (a mask read from
    ``.nii.gz`` gives points, written as ``.vtk``)."""
    if not path:
        return default
    path = file_part(path)
    compound = "".join(path.suffixes[-2:]).lower()
    for ext in (compound, path.suffix.lower()):
        fmt = _REGISTRY._formats.get(ext)
        if fmt is not None:
            return ext if fmt.writer is not None else default
    return default


def split_member(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """``"scan.npz:pc1"`` -> ``(Path("scan.npz"), "pc1")``: an ``.npz`` archive and the array
    that holds the points. Any other path (or an existing file whose name contains ``:``) is
    returned whole with ``None``."""
    text = os.fspath(path)
    head, sep, key = text.rpartition(":")
    if sep and key and head.lower().endswith(".npz") and not Path(text).exists() and "/" not in key:
        return Path(head), key
    return Path(text), None


def file_part(path: str | os.PathLike[str]) -> Path:
    """The file a point-cloud argument reads (``"scan.npz:pc1"`` -> ``scan.npz``)."""
    return split_member(path)[0]


def read_points(path: str | os.PathLike[str], *, min_points: int = 1, drop_nan: bool = False) -> PointCloud:
    """Read a point cloud file and validate it.

    Args:
        path: the file; its extension (case-insensitive) picks the format. ``archive.npz:KEY``
            reads the points from the array ``KEY`` of an ``.npz`` archive (e.g. ``pc1`` of a
            scene-flow pair; the archive's other arrays of the same length become attributes).
        min_points: fewest points the caller accepts (at least 1).
        drop_nan: remove the points with a NaN/Inf coordinate (with their attributes; faces and
            lines that use them are dropped) instead of refusing the file. The count removed is
            ``cloud.dropped``.

    Returns:
        The cloud: ``points`` ``(N, D)`` float64 in the file's units (D = 3, or 2 for planar data),
        ``point_data`` per-point attributes, ``faces``/``lines`` when the file has them, ``path``.

    Raises:
        InputError: unknown extension, missing file, unreadable/truncated/corrupt data, empty
            cloud, NaN/Inf coordinates (unless ``drop_nan``), wrong number of columns, fewer than
            ``min_points`` points, a ``:KEY`` on a file that is not ``.npz`` or a key the archive
            lacks. The message names the file and says how to fix it.
    """
    label = os.fspath(path)
    path, key = split_member(path)
    fmt = _REGISTRY.lookup(path, "read")
    if not path.exists():
        raise fail(path, "file not found", f"Check the path (relative paths start at {Path.cwd()})")
    if not path.is_file():
        raise fail(path, "is not a regular file", "Pass the point-cloud file itself, not a folder")
    reader = fmt.reader if key is None else functools.partial(numpy_io.read_npz, points_key=key)
    try:
        cloud = reader(path)
    except InputError:
        raise
    except OSError as exc:
        raise fail(
            path, f"could not be opened ({exc.strerror or exc})", "Check that the file is readable"
        ) from exc
    except _READ_ERRORS as exc:
        raise fail(
            path,
            f"could not be read as {fmt.extension} ({type(exc).__name__}: {exc})",
            "Check that the file is valid",
        ) from exc
    cloud.path = label
    if drop_nan:
        cloud = drop_nonfinite(cloud)
    return check_cloud(cloud, min_points)


def write_points(path: str | os.PathLike[str], cloud: PointCloud, *, binary: bool | None = None) -> None:
    """Write a point cloud atomically, in the format of the path's extension.

    The data go to a temporary file in the same folder, which then replaces ``path``; on any
    error the temporary file is removed and ``path`` is left untouched.

    Args:
        path: destination; its extension picks the format.
        cloud: the cloud to write (faces are kept by PLY, VTK and NPZ).
        binary: ``None`` for the format's default (binary where the format has a choice);
            ``False`` for ASCII PLY/PCD/VTK, ``True`` is refused by text formats.

    Raises:
        InputError: unknown or read-only extension, missing folder, empty cloud, data the format
            cannot store, or an OS error while writing.
    """
    path = Path(path)
    fmt = _REGISTRY.lookup(path, "write")
    if fmt.writer is None:
        raise fail(path, f"{fmt.extension} files can be read but not written", "Write another format")
    if not path.parent.is_dir():
        raise fail(path, f"the folder {path.parent} does not exist", "Create the folder first")
    if len(cloud) == 0:
        raise fail(path, "refusing to write an empty cloud (0 points)", "Check the step that produced it")
    options = {} if binary is None else {"binary": binary}
    writer = fmt.writer
    try:
        atomic_write(path, lambda tmp: writer(tmp, cloud, **options))
    except InputError:
        raise
    except OSError as exc:
        raise fail(
            path,
            f"could not be written ({exc.strerror or exc})",
            "Check that the folder is writable and the disk not full",
        ) from exc
