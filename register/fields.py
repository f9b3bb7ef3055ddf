"""Dense displacement fields: a transform evaluated on every voxel of an image grid, fast.

A transform ``T`` (world mm, LPS; see :mod:`register.io.images`) gives at each voxel centre
``x`` of a reference grid the displacement

    d(x) = T(x) - x                                                      (1)

Evaluating ``T`` exactly at every voxel of a CT grid (256^3 = 16.8M points) costs minutes:
the kernel fields are smooth on the scale of their smallest width ``sigma``, far larger than a
voxel. So :func:`displacement_on_grid` evaluates (1) exactly on a coarse lattice of the grid's
*index* space (every ``s``-th voxel along each axis, the last voxel always included), then
interpolates it to every voxel with a tensor-product cubic spline:

    d[i, j, k] = sum_{a, b, c} Bx[i, a] By[j, b] Bz[k, c] D[a, b, c]     (2)

where ``B`` are the ``(n, m)`` matrices of 1-D not-a-knot cubic-spline interpolation from the
``m`` coarse nodes to the ``n`` voxels (a spline is linear in its data: ``B = spline(I_m)``),
applied one axis at a time (three matrix products, ``O(n^3 m)``). The spline reproduces any
cubic exactly, so the affine part of ``T`` is exact and the error is the kernel field's
fourth-derivative term, ``O((s h / sigma)^4)`` of its magnitude.

**Error control.** The error is *measured*, not assumed: ``T`` is evaluated exactly at a check
set (random voxels plus the centres of coarse cells, where a spline's error peaks) and compared
with (2). While the largest error exceeds ``tolerance`` the stride is halved (down to 1, where
(2) is exact). The result reports the stride and the measured maximum error.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from register.core.transforms import Affine, Composite, KernelField, Transform
from register.errors import InputError
from register.io.images import Grid

# Coarse points evaluated per call of the transform: bounds the memory of one kernel product.
_CHUNK = 200_000


@dataclass(frozen=True)
class GridField:
    """A displacement field on an image grid.

    Attributes:
        displacement: ``(nx, ny, nz, 3)`` float32, world mm (LPS), ``d = T(x) - x`` at each voxel.
        grid: the reference grid (voxel centres ``x``).
        stride: the coarse lattice's step, voxels (1: every voxel evaluated exactly).
        max_error: the largest ``|d_interpolated - d_exact|`` at the ``checked`` voxels, mm.
        checked: how many voxels were evaluated exactly for the error check.
        seconds: wall time of the evaluation.
    """

    displacement: np.ndarray
    grid: Grid
    stride: int
    max_error: float
    checked: int
    seconds: float

    def voxel_units(self) -> np.ndarray:
        """``(nx, ny, nz, 3)`` float32: ``u = M^-1 d``, the displacement in voxel steps of the grid
        (``M = D diag(spacing)``, :attr:`Grid.matrix`): the Learn2Reg convention, where the
        moving image is sampled at index ``v + u(v)`` (fixed and moving grids alike)."""
        inv = np.linalg.inv(self.grid.matrix).astype(np.float32)
        return np.einsum("...b,ab->...a", self.displacement, inv, optimize=True).astype(np.float32)


def smallest_width(transform: Transform) -> float:
    """The smallest kernel width (data units) of the kernel fields in ``transform``; ``inf`` for
    a purely affine one."""
    if isinstance(transform, KernelField):
        return min(transform.sigmas)
    if isinstance(transform, Composite):
        return min((smallest_width(s) for s in transform.steps), default=math.inf)
    widths = getattr(transform, "forward", None)  # an inverse wraps its forward field
    return smallest_width(widths) if isinstance(widths, Transform) else math.inf


def _nodes(n: int, stride: int) -> np.ndarray:
    """Coarse node indices along an axis of ``n`` voxels: ``0, s, 2s, ...`` and ``n - 1``."""
    nodes = np.arange(0, n, stride)
    return nodes if nodes[-1] == n - 1 else np.append(nodes, n - 1)


def _spline_matrix(nodes: np.ndarray, n: int) -> np.ndarray:
    """``(n, m)`` matrix ``B`` of (2): not-a-knot cubic interpolation from ``nodes`` to ``0..n-1``
    (linear for 2-3 nodes, constant for 1)."""
    from scipy.interpolate import CubicSpline, interp1d

    m = len(nodes)
    if m == 1:
        return np.ones((n, 1))
    if m < 4:  # too few nodes for a cubic: linear interpolation, exact for the affine part
        return interp1d(nodes, np.eye(m), axis=0)(np.arange(n))
    return CubicSpline(nodes, np.eye(m), axis=0, bc_type="not-a-knot")(np.arange(n))


def _evaluate(transform: Transform, grid: Grid, index: np.ndarray) -> np.ndarray:
    """Exact (1) at ``(N, 3)`` voxel indices: ``(N, 3)`` mm, in chunks."""
    out = np.empty((len(index), 3))
    for start in range(0, len(index), _CHUNK):
        x = grid.world(index[start : start + _CHUNK])
        out[start : start + _CHUNK] = transform.apply(x) - x
    return out


def _interpolate(coarse: np.ndarray, matrices: list[np.ndarray]) -> np.ndarray:
    """(2): ``(mx, my, mz, 3)`` coarse values -> ``(nx, ny, nz, 3)`` float32, one axis at a time."""
    bx, by, bz = (b.astype(np.float32) for b in matrices)
    d = coarse.astype(np.float32)
    d = np.tensordot(bz, d, axes=([1], [2])).transpose(1, 2, 0, 3)  # (mx, my, nz, 3)
    d = np.tensordot(by, d, axes=([1], [1])).transpose(1, 0, 2, 3)  # (mx, ny, nz, 3)
    return np.tensordot(bx, d, axes=([1], [0]))  # (nx, ny, nz, 3)


def _check_set(grid: Grid, stride: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``(N, 3)`` voxel indices where the interpolation is checked: ``count`` random voxels plus
    as many centres of coarse cells (the midpoints between nodes)."""
    shape = np.array(grid.shape)
    random = rng.integers(0, shape, size=(count, 3))
    mids = np.minimum(
        (rng.integers(0, np.maximum(shape // stride, 1), size=(count, 3)) * stride + stride // 2),
        shape - 1,
    )
    return np.unique(np.concatenate([random, mids]), axis=0)


def displacement_on_grid(
    transform: Transform,
    grid: Grid,
    *,
    tolerance: float | None = None,
    stride: int | None = None,
    check: int = 2000,
    seed: int = 0,
) -> GridField:
    """The displacement (1) of ``transform`` at every voxel of ``grid``, within ``tolerance``.

    Args:
        transform: a 3-D transform in the grid's world frame (LPS mm).
        grid: the reference grid.
        tolerance: largest interpolation error accepted at the check voxels, mm; default a
            twentieth of the smallest voxel spacing.
        stride: first coarse step, voxels; default the smallest kernel width in voxels, at
            most 16. Halved until the measured error is within ``tolerance`` (a coarser try costs
            an eighth of the next, so starting coarse is cheap).
        check: random voxels (and as many coarse-cell centres) evaluated exactly per attempt.
        seed: of the check voxels.

    Returns:
        A :class:`GridField` (float32 displacement, stride, measured error).

    Raises:
        InputError: a 2-D transform, a non-positive tolerance, or non-finite displacements.
    """
    if transform.dim != 3:
        raise InputError(f"a {transform.dim}-D transform cannot be evaluated on a 3-D image grid")
    spacing = float(grid.spacing.min())
    tolerance = spacing / 20 if tolerance is None else float(tolerance)
    if not tolerance > 0:
        raise InputError(f"tolerance must be > 0 mm, got {tolerance}")
    start = time.perf_counter()
    if stride is None:
        if isinstance(transform, Affine) or smallest_width(transform) == math.inf:
            stride = 16  # affine: the spline is exact, the check confirms it
        else:
            stride = int(np.clip(smallest_width(transform) / float(grid.spacing.max()), 1, 16))
    stride = max(1, int(stride))
    rng = np.random.default_rng(seed)
    while True:
        nodes = [_nodes(n, stride) for n in grid.shape]
        matrices = [_spline_matrix(nd, n) for nd, n in zip(nodes, grid.shape, strict=True)]
        lattice = np.stack(np.meshgrid(*nodes, indexing="ij"), -1).reshape(-1, 3)
        coarse = _evaluate(transform, grid, lattice).reshape(*(len(nd) for nd in nodes), 3)
        if not np.isfinite(coarse).all():
            raise InputError("the transform gives non-finite displacements on this grid")
        if stride == 1:  # every voxel evaluated exactly
            return GridField(coarse.astype(np.float32), grid, 1, 0.0, 0, time.perf_counter() - start)
        field = _interpolate(coarse, matrices)
        probe = _check_set(grid, stride, check, rng)
        exact = _evaluate(transform, grid, probe)
        error = np.linalg.norm(field[tuple(probe.T)] - exact, axis=1)  # float32 storage included
        if error.max() <= tolerance:
            return GridField(field, grid, stride, float(error.max()), len(probe), time.perf_counter() - start)
        del field
        stride //= 2


FIELD_FORMATS = ("itk", "learn2reg")


def field_image(field: GridField, fmt: str = "itk"):
    """The SimpleITK image of ``field`` in one of :data:`FIELD_FORMATS`.

    * ``"itk"``: a 3-component float64 vector image on the reference grid, ``d = T(x) - x`` in
      LPS mm: what ``SimpleITK.DisplacementFieldTransform`` (and ITK, ANTs, 3D Slicer) load. As
      a resampling transform it maps a fixed-image point ``x`` to ``x + d(x)`` in the moving
      image, i.e. it warps the moving image onto the fixed grid.
    * ``"learn2reg"``: a 4-D float32 image of shape ``(nx, ny, nz, 3)`` (channels last, as
      nibabel loads it), the displacement in voxel steps of the fixed grid
      (:meth:`GridField.voxel_units`): the Learn2Reg convention, the moving image sampled at
      index ``v + u(v)``, which assumes the fixed and moving images share one grid.
    """
    from register.io.images import to_sitk

    if fmt == "itk":
        return to_sitk(field.displacement.astype(np.float64), field.grid)
    if fmt != "learn2reg":
        raise InputError(f"unknown field format {fmt!r}; use one of {', '.join(FIELD_FORMATS)}")
    import SimpleITK as sitk

    grid = field.grid
    u = field.voxel_units()  # (nx, ny, nz, 3) -> SimpleITK's (3, nz, ny, nx) of a 4-D image
    image = sitk.GetImageFromArray(np.ascontiguousarray(u.transpose(3, 2, 1, 0)), isVector=False)
    direction = np.eye(4)
    direction[:3, :3] = grid.direction
    image.SetDirection(tuple(direction.ravel()))
    image.SetSpacing((*grid.spacing, 1.0))
    image.SetOrigin((*grid.origin, 0.0))
    return image


def write_field(path, field: GridField, fmt: str = "itk") -> None:
    """Write ``field`` to ``path`` (``.nii.gz`` / ``.nii`` / ``.mha`` / ``.nrrd``) in ``fmt``."""
    from register.io.images import write_sitk

    write_sitk(path, field_image(field, fmt))


def warp_image(moving, field: GridField, *, interpolation: str = "linear", default: float | None = None):
    """``moving(x + d(x))`` on the field's grid: the moving image resampled onto the fixed one.

    Args:
        moving: a SimpleITK image (the moving image, any grid: sampled in world coordinates).
        field: the displacement ``d`` on the fixed grid (from a fixed -> moving registration).
        interpolation: ``"linear"`` for intensities (CT), ``"nearest"`` for label maps.
        default: value outside the moving image (default: its minimum, e.g. air for CT, 0
            for a label map).

    Returns:
        A SimpleITK image on the fixed grid, the moving image's pixel type.
    """
    import SimpleITK as sitk

    modes = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    if interpolation not in modes:
        raise InputError(f"unknown interpolation {interpolation!r}; use linear or nearest")
    if moving.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("the moving image has vector pixels; warp a scalar image (CT or label map)")
    if default is None:
        default = float(sitk.GetArrayViewFromImage(moving).min())
    reference = field_image(field, "itk")
    transform = sitk.DisplacementFieldTransform(sitk.Image(reference))  # takes the image over
    return sitk.Resample(moving, reference, transform, modes[interpolation], default, moving.GetPixelID())
