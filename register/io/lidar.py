"""LiDAR files: ASPRS LAS / LAZ (through laspy; LAZ with the lazrs backend) and KITTI ``.bin``.

LAS stores each coordinate as an int32 ``X`` with a per-axis ``scale`` and ``offset``
(``x = X * scale + offset``); laspy returns the scaled float64 values. Point attributes kept on
reading: ``intensity``, ``classification``, ``gps_time`` when the point format has it, and every
extra-bytes dimension (LAS 1.4 "extra bytes", e.g. a ``confidence`` a previous run wrote).

KITTI Velodyne scans (``velodyne/*.bin``) are raw little-endian float32 rows
``x y z reflectance``, metres, no header: the file size must be a multiple of 16 bytes.

The optional dependencies are installed with ``pip install "register[lidar]"``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from register.core.pointcloud import PointCloud
from register.io._common import check_memory, fail

LAS_EXTENSIONS = (".las", ".laz")
_INSTALL = 'Install the LiDAR extra: pip install "register[lidar]" (laspy and lazrs)'
_STANDARD = ("intensity", "classification", "gps_time")
_KITTI_ROW = np.dtype(("<f4", (4,)))


def _laspy(path: Path):
    try:
        import laspy
    except ImportError:
        raise fail(
            path, "reading LAS/LAZ needs the laspy package, which is not installed", _INSTALL
        ) from None
    return laspy


def read_las(path: Path) -> PointCloud:
    """Read a ``.las`` or ``.laz`` file: ``(N, 3)`` coordinates in the file's units (scaled).

    Raises:
        InputError: laspy missing, no LAZ backend, a corrupt file.
    """
    laspy = _laspy(path)
    try:
        las = laspy.read(path)
    except laspy.errors.LaspyException as exc:
        fix = _INSTALL if "backend" in str(exc).lower() else "Check that the file is a valid LAS/LAZ file"
        raise fail(path, f"could not be read as LAS/LAZ ({str(exc)[:160]})", fix) from None
    points = np.column_stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)]).astype(np.float64)
    names = set(las.point_format.dimension_names)
    point_data = {name: np.asarray(las[name], dtype=np.float64) for name in _STANDARD if name in names}
    for name in las.point_format.extra_dimension_names:
        point_data[name] = np.asarray(las[name], dtype=np.float64)
    return PointCloud(points, point_data, None, None, str(path))


def las_scale(extent: float) -> float:
    """The coordinate resolution a LAS file of bounding-box side ``extent`` is written with: the
    smallest power of ten with which ``extent / scale`` fits an int32 (below 2^31 - 1), at least
    1e-9 (a 300 m scan: 1e-6 m)."""
    if extent <= 0:
        return 1e-3
    return float(10.0 ** max(math.ceil(math.log10(extent / 2.0e9)), -9))


def write_las(path: Path, cloud: PointCloud, *, compress: bool, binary: bool = True) -> None:
    """Write LAS (``compress=False``) or LAZ: point format 6 (LAS 1.4), per-axis offset at the
    minimum, scale from :func:`las_scale` (quantisation at most half of it). ``intensity`` and
    ``classification`` go to the standard fields (rounded, clipped to their integer ranges),
    ``gps_time`` too; every other attribute becomes float64 extra bytes (an ``(N, k)`` one as
    ``name_0 .. name_{k-1}``).

    Raises:
        InputError: ``binary=False``, a 2-D cloud, laspy or lazrs missing.
    """
    if not binary:
        raise fail(path, "LAS files are always binary", "Use .xyz, .csv or .txt for a text file")
    if cloud.points.shape[1] != 3:
        raise fail(path, "LAS stores 3-D points only", "Write .npz, .vtk or .csv instead")
    laspy = _laspy(path)
    header = laspy.LasHeader(point_format=6, version="1.4")
    lo, hi = cloud.points.min(axis=0), cloud.points.max(axis=0)
    header.offsets = lo
    header.scales = np.full(3, las_scale(float((hi - lo).max())))
    extras = {}
    for name, values in cloud.point_data.items():
        values = np.asarray(values, dtype=np.float64)
        if name in _STANDARD:
            continue
        columns = values.reshape(len(values), -1)
        for j in range(columns.shape[1]):
            extras[name if columns.shape[1] == 1 else f"{name}_{j}"] = columns[:, j]
    header.add_extra_dims([laspy.ExtraBytesParams(name=name, type=np.float64) for name in extras])
    las = laspy.LasData(header)
    las.x, las.y, las.z = cloud.points[:, 0], cloud.points[:, 1], cloud.points[:, 2]
    limits = {"intensity": (0, 65535), "classification": (0, 255)}
    for name in _STANDARD:
        if name in cloud.point_data:
            values = np.asarray(cloud.point_data[name], dtype=np.float64).reshape(-1)
            if name in limits:
                values = np.clip(np.rint(values), *limits[name])
            las[name] = values
    for name, values in extras.items():
        las[name] = values
    try:
        las.write(str(path), do_compress=compress)
    except laspy.errors.LaspyException as exc:
        raise fail(path, f"could not be written as LAZ ({str(exc)[:160]})", _INSTALL) from None


def read_kitti_bin(path: Path) -> PointCloud:
    """Read a KITTI Velodyne ``.bin`` scan: float32 ``x y z reflectance`` rows (metres).

    Raises:
        InputError: a size that is not a multiple of 16 bytes.
    """
    size = path.stat().st_size
    if size % _KITTI_ROW.itemsize:
        raise fail(
            path,
            f"is {size} bytes, not a multiple of 16 (KITTI .bin rows are 4 float32: x y z reflectance)",
            "Check that this is a KITTI Velodyne scan",
        )
    check_memory(path, size * 2, "the scan")
    rows = np.fromfile(path, dtype="<f4").reshape(-1, 4)
    return PointCloud(
        rows[:, :3].astype(np.float64), {"reflectance": rows[:, 3].astype(np.float64)}, None, None, str(path)
    )


def write_kitti_bin(path: Path, cloud: PointCloud, *, binary: bool = True) -> None:
    """Write KITTI ``.bin`` rows (float32: coordinates rounded to ~7 significant digits), with the
    ``reflectance`` (or ``intensity``) attribute as the 4th column, else 0.

    Raises:
        InputError: ``binary=False`` or a 2-D cloud.
    """
    if not binary:
        raise fail(path, "KITTI .bin files are always binary", "Use .xyz, .csv or .txt for a text file")
    if cloud.points.shape[1] != 3:
        raise fail(path, "KITTI .bin stores 3-D points only", "Write .npz, .vtk or .csv instead")
    rows = np.zeros((len(cloud), 4), dtype="<f4")
    rows[:, :3] = cloud.points
    for name in ("reflectance", "intensity"):
        if name in cloud.point_data and np.asarray(cloud.point_data[name]).ndim == 1:
            rows[:, 3] = cloud.point_data[name]
            break
    rows.tofile(path)
