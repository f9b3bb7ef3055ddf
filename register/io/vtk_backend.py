"""What the VTK writers share, through VTK itself: meshes built from clouds, VTK messages caught.

A cloud becomes a ``pyvista`` mesh (:func:`polydata` for legacy ``.vtk`` and ``.vtp`` files,
:func:`unstructured_grid` for ``.vtu``): points (2-D clouds get z = 0), one vertex cell per point
(so ParaView shows them), faces as polygons, lines as line cells, and every point attribute. An
``(N, 3)`` ``displacement`` attribute is marked as the active vectors and an ``(N, 3)``
``normals`` one as the active normals (legacy ``VECTORS`` / ``NORMALS`` lines, XML
``<PointData Vectors= Normals=>``), so ParaView / pyvista ``warp_by_vector()`` and glyphs use them
without being told. :func:`run_writer` runs a VTK writer on it and :func:`vtk_errors` turns VTK's
printed errors and warnings into a list (also for the LZ4 decompressor of the XML reader).

``vtk``/``pyvista`` are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from register.core.pointcloud import PointCloud
from register.io._common import fail


@contextlib.contextmanager
def vtk_errors(obj) -> Iterator[list[str]]:
    """Collect the errors and warnings of a VTK object (a writer, a compressor), and keep VTK quiet."""
    from vtkmodules.util.misc import calldata_type
    from vtkmodules.util.vtkConstants import VTK_STRING
    from vtkmodules.vtkCommonCore import vtkCommand, vtkObject

    messages: list[str] = []

    @calldata_type(VTK_STRING)
    def record(_obj, event: str, text: str | None = None) -> None:
        messages.append(text or event)

    observers = [obj.AddObserver(e, record) for e in (vtkCommand.ErrorEvent, vtkCommand.WarningEvent)]
    display = vtkObject.GetGlobalWarningDisplay()
    vtkObject.GlobalWarningDisplayOff()
    try:
        yield messages
    finally:
        vtkObject.SetGlobalWarningDisplay(display)
        for tag in observers:
            obj.RemoveObserver(tag)


def run_writer(writer, mesh, path: Path) -> None:
    """Write ``mesh`` to ``path``; a VTK failure becomes an :class:`OSError`."""
    writer.SetFileName(str(path))
    writer.SetInputData(mesh)
    with vtk_errors(writer) as messages:
        ok = writer.Write()
    if ok != 1 or messages:
        raise OSError(f"VTK could not write {path}: {messages[0].strip() if messages else 'unknown error'}")


def _points3(cloud: PointCloud) -> np.ndarray:
    """``(N, 3)`` float64 points; 2-D clouds get z = 0 (VTK points are always 3-D)."""
    points = cloud.points
    if points.shape[1] == 2:
        points = np.column_stack([points, np.zeros(len(points))])
    return np.ascontiguousarray(points, dtype=np.float64)


def _padded(cells: np.ndarray) -> np.ndarray:
    """``(F, k)`` cells -> VTK's flat ``[k, i0, .., ik-1, k, ...]`` layout."""
    cells = np.asarray(cells, dtype=np.int64)
    return np.column_stack([np.full(len(cells), cells.shape[1]), cells]).ravel()


def polydata(cloud: PointCloud, path: Path):
    """A ``pyvista.PolyData`` of the cloud: points, one vertex cell per point, faces, lines, point data."""
    import pyvista as pv

    n = len(cloud)
    verts = _padded(np.arange(n).reshape(-1, 1))
    faces = _padded(cloud.faces) if cloud.faces is not None and len(cloud.faces) else None
    lines = _padded(cloud.lines) if cloud.lines is not None and len(cloud.lines) else None
    mesh = pv.PolyData(_points3(cloud), verts=verts, faces=faces, lines=lines)
    _add_point_data(mesh, cloud, path)
    return mesh


def unstructured_grid(cloud: PointCloud, path: Path):
    """A ``pyvista.UnstructuredGrid`` of the cloud: VERTEX cells, face and LINE cells, point data."""
    import pyvista as pv

    n = len(cloud)
    blocks = [(_padded(np.arange(n).reshape(-1, 1)), np.full(n, pv.CellType.VERTEX, np.uint8))]
    if cloud.faces is not None and len(cloud.faces):
        k = cloud.faces.shape[1]
        kind = {3: pv.CellType.TRIANGLE, 4: pv.CellType.QUAD}.get(k, pv.CellType.POLYGON)
        blocks.append((_padded(cloud.faces), np.full(len(cloud.faces), kind, np.uint8)))
    if cloud.lines is not None and len(cloud.lines):
        blocks.append((_padded(cloud.lines), np.full(len(cloud.lines), pv.CellType.LINE, np.uint8)))
    cells = np.concatenate([b[0] for b in blocks])
    types = np.concatenate([b[1] for b in blocks])
    mesh = pv.UnstructuredGrid(cells, types, _points3(cloud))
    _add_point_data(mesh, cloud, path)
    return mesh


def _add_point_data(mesh, cloud: PointCloud, path: Path) -> None:
    """Copy the attributes (bool -> uint8, float16 -> float32); refuse non-numeric ones."""
    for name, arr in cloud.point_data.items():
        arr = np.asarray(arr)
        if arr.dtype.kind == "b":
            arr = arr.astype(np.uint8)
        elif arr.dtype.kind == "f" and arr.dtype.itemsize < 4:
            arr = arr.astype(np.float32)
        elif arr.dtype.kind not in "iuf" or arr.ndim > 2:
            raise fail(
                path,
                f"point attribute '{name}' ({arr.dtype}, shape {arr.shape}) cannot be stored",
                "Convert it to numbers",
            )
        mesh.point_data[name] = np.ascontiguousarray(arr)
    _mark_active(mesh, cloud)


# point attributes VTK marks as active: name -> vtkDataSetAttributes setter (each (N, 3))
_ACTIVE = {"displacement": "SetActiveVectors", "normals": "SetActiveNormals"}


def _mark_active(mesh, cloud: PointCloud) -> None:
    """Mark an ``(N, 3)`` ``displacement`` as the active vectors, ``normals`` as the active normals.

    pyvista makes the first array added the active scalars; if that is one of these two it is
    unset, or the legacy writer would write the array twice (as ``SCALARS`` and ``VECTORS``).
    Other arrays are left as they are (``FIELD`` arrays in legacy files).
    """
    point_data = mesh.GetPointData()
    for name, setter in _ACTIVE.items():
        arr = cloud.point_data.get(name)
        if arr is None or np.ndim(arr) != 2 or np.shape(arr)[1] != 3:
            continue
        if point_data.GetScalars() is not None and point_data.GetScalars().GetName() == name:
            point_data.SetActiveScalars(None)
        getattr(point_data, setter)(name)
