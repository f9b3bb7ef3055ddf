"""Surface meshes: Wavefront ``.obj``, ``.stl`` (ASCII or binary) and Object File Format ``.off``.

The vertices are the points; polygons become ``faces`` ``(F, k)``. Faces of mixed sizes (a
mesh of triangles and quads) are split into triangles by fans from each polygon's first
vertex, so that ``faces`` stays one rectangular array. OBJ vertex normals (``vn``, one per
vertex) become the point attribute ``normals``.

* OBJ and STL go through meshio (``meshio.read(path, file_format=...)``): OBJ keeps every
  vertex in file order (the correspondence a shape analyst relies on); STL stores each triangle
  with its own three corners, and meshio merges repeated corners into shared vertices.
* OFF is parsed here: meshio's OFF reader refuses any face that is not a triangle ("Can only
  read triangular faces"), and the Princeton / ModelNet OFF files are mostly quads and
  polygons. The ModelNet header defect ``OFF490 518 0`` (counts on the ``OFF`` line) is read too.

Writers take the format explicitly (they write to a temporary name without the extension).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from register.core.pointcloud import PointCloud
from register.io._common import fail, truncated

MESH_EXTENSIONS = (".obj", ".stl", ".off")
_OFF_KEYWORDS = ("CNOFF", "NOFF", "COFF", "OFF")  # longest first: "COFF" is not "OFF"
_MESHIO_ERRORS = (ValueError, KeyError, IndexError, TypeError, AssertionError, UnicodeDecodeError)


def _meshio():
    import meshio  # lazy: importing register.io stays light

    return meshio


def triangulate(polygons: list[np.ndarray]) -> np.ndarray:
    """One ``(F, k)`` face array from blocks of polygons ``(F_i, k_i)``.

    A single polygon size is kept as is; mixed sizes are fanned into triangles:
    ``(v0, v1, ..., v_{k-1})`` -> ``(v0, v_j, v_{j+1})`` for ``j = 1 .. k-2``.
    """
    polygons = [p for p in polygons if len(p)]
    if not polygons:
        return np.zeros((0, 3), dtype=np.int64)
    if len({p.shape[1] for p in polygons}) == 1:
        return np.concatenate(polygons).astype(np.int64)
    fans = [
        np.stack([block[:, 0], block[:, j], block[:, j + 1]], axis=1)
        for block in polygons
        for j in range(1, block.shape[1] - 1)
    ]
    return np.concatenate(fans).astype(np.int64)


def _from_meshio(mesh, path: Path) -> PointCloud:
    """A :class:`PointCloud` from a ``meshio.Mesh`` (polygons -> faces, lines, OBJ normals)."""
    points = np.asarray(mesh.points, dtype=np.float64)
    polygons, lines = [], []
    for block in mesh.cells:
        data = np.asarray(block.data)
        if block.type == "line":
            lines.append(data)
        elif block.type == "vertex":
            continue
        elif block.type in ("triangle", "quad") or block.type.startswith("polygon"):
            polygons.append(data)  # meshio names k-gons "polygon" (or "polygonK" in some readers)
        else:
            raise fail(path, f"holds '{block.type}' cells, not surface polygons", "Export a surface mesh")
    faces = triangulate(polygons)
    point_data = {}
    normals = mesh.point_data.get("obj:vn")
    if normals is not None and len(normals) == len(points):
        point_data["normals"] = np.asarray(normals, dtype=np.float64)
    return PointCloud(
        points,
        point_data,
        faces if len(faces) else None,
        np.concatenate(lines).astype(np.int64) if lines else None,
        str(path),
    )


def read_meshio(path: Path, *, file_format: str) -> PointCloud:
    """Read an OBJ or STL file with meshio.

    Raises:
        InputError: meshio cannot parse the file (named, with meshio's reason).
    """
    meshio = _meshio()
    try:
        with warnings.catch_warnings():
            # meshio first tests whether an STL is binary by its triangle count: an ASCII file's
            # header words overflow that product (harmless; it then reads the file as ASCII).
            warnings.simplefilter("ignore", RuntimeWarning)
            mesh = meshio.read(path, file_format=file_format)
    except (meshio.ReadError, *_MESHIO_ERRORS) as exc:
        raise fail(
            path,
            f"could not be read as .{file_format} ({type(exc).__name__}: {str(exc)[:120]})",
            "Check that the file is a valid mesh (re-export it)",
        ) from None
    return _from_meshio(mesh, path)


def write_meshio(path: Path, cloud: PointCloud, *, file_format: str, binary: bool = True) -> None:
    """Write vertices and faces as OBJ or STL (STL: binary unless ``binary=False``).

    Raises:
        InputError: STL without faces (STL has no vertices outside triangles), a 2-D cloud.
    """
    meshio = _meshio()
    if cloud.points.shape[1] != 3:
        raise fail(path, f".{file_format} stores 3-D points only", "Write .npz, .vtk or .csv instead")
    faces = cloud.faces
    cells = []
    if faces is not None and len(faces):
        if file_format == "stl" and faces.shape[1] != 3:
            faces = triangulate([faces[:, [0, j, j + 1]] for j in range(1, faces.shape[1] - 1)])
        kind = {3: "triangle", 4: "quad"}.get(faces.shape[1], "polygon")
        cells.append((kind, np.asarray(faces, dtype=np.int64)))
    elif file_format == "stl":
        raise fail(
            path, "the cloud has no faces; STL stores triangles only", "Write .obj, .ply or .vtk instead"
        )
    point_data = {}
    if file_format == "obj" and "normals" in cloud.point_data:
        point_data["obj:vn"] = np.asarray(cloud.point_data["normals"], dtype=np.float64)
    mesh = meshio.Mesh(cloud.points, cells, point_data=point_data)
    options = {"binary": binary} if file_format == "stl" else {}
    meshio.write(path, mesh, file_format=file_format, **options)


def read_off(path: Path) -> PointCloud:
    """Read an ASCII Object File Format mesh: ``OFF``, then ``V F E``, V vertex rows, F face rows
    ``k i_1 .. i_k`` (optional colour values after the indices are ignored); ``#`` comments.

    Raises:
        InputError: not an OFF file, binary OFF, counts that do not match the rows.
    """
    text = path.read_bytes().decode("utf-8", errors="replace")
    rows = [line.split("#", 1)[0].split() for line in text.splitlines()]
    rows = [r for r in rows if r]
    if not rows or not rows[0][0].upper().startswith(_OFF_KEYWORDS):
        raise fail(path, "does not start with 'OFF'", "Check that this is an Object File Format file")
    head, rows = rows[0], rows[1:]
    keyword = next(k for k in _OFF_KEYWORDS if head[0].upper().startswith(k))
    if keyword != "OFF":
        raise fail(path, f"unsupported OFF variant '{keyword}'", "Convert it to plain ASCII OFF")
    if len(head) > 1 and head[1].upper() == "BINARY":
        raise fail(path, "binary OFF is not supported", "Convert it to ASCII OFF (e.g. with meshlab)")
    glued = head[0][len(keyword) :]  # "OFF490 518 0": the ModelNet header defect
    counts = [glued, *head[1:]] if glued else head[1:]
    if len(counts) < 2:
        if not rows:
            raise truncated(path, "the vertex and face counts")
        counts, rows = rows[0], rows[1:]
    try:
        n_vertices, n_faces = int(counts[0]), int(counts[1])
    except ValueError:
        raise fail(path, f"bad counts line {' '.join(counts)!r}", "Expected 'V F E' integers") from None
    if n_vertices < 0 or n_faces < 0 or len(rows) < n_vertices + n_faces:
        raise truncated(path, f"the {n_vertices} vertices and {n_faces} faces its header announces")
    try:
        points = np.array([[float(v) for v in r[:3]] for r in rows[:n_vertices]], dtype=np.float64)
        blocks: dict[int, list[list[int]]] = {}
        for r in rows[n_vertices : n_vertices + n_faces]:
            k = int(r[0])
            if k < 1 or len(r) < k + 1:
                raise ValueError(f"face row {' '.join(r)!r} has fewer than its {k} indices")
            blocks.setdefault(k, []).append([int(i) for i in r[1 : k + 1]])
    except ValueError as exc:
        raise fail(path, f"could not be read as .off ({exc})", "Check that the file is valid") from None
    if points.ndim != 2 or points.shape[1] != 3:
        raise fail(path, "vertex rows must hold 3 coordinates", "Check that the file is valid")
    polygons = [np.array(v, dtype=np.int64) for k, v in sorted(blocks.items()) if k >= 3]
    faces = triangulate(polygons)
    return PointCloud(points, {}, faces if len(faces) else None, None, str(path))


def write_off(path: Path, cloud: PointCloud, *, binary: bool = False) -> None:
    """Write an ASCII OFF mesh (vertices at 17 significant digits, then faces).

    Raises:
        InputError: ``binary=True`` or a 2-D cloud.
    """
    if binary:
        raise fail(path, "OFF files are written as text", "Drop the binary option or write .ply")
    if cloud.points.shape[1] != 3:
        raise fail(path, ".off stores 3-D points only", "Write .npz, .vtk or .csv instead")
    faces = np.zeros((0, 3), dtype=np.int64) if cloud.faces is None else np.asarray(cloud.faces)
    with open(path, "w", encoding="ascii") as f:
        f.write(f"OFF\n{len(cloud)} {len(faces)} 0\n")
        np.savetxt(f, cloud.points, fmt="%.17g")
        if len(faces):
            sizes = np.full((len(faces), 1), faces.shape[1], dtype=np.int64)
            np.savetxt(f, np.hstack([sizes, faces]), fmt="%d")
