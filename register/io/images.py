"""Medical images (NIfTI ``.nii`` / ``.nii.gz``, NRRD ``.nrrd`` / ``.nhdr``, MetaImage ``.mha`` / ``.mhd``).

Read and written through SimpleITK: one maintained library for the three formats, which puts
every image in **world coordinates in millimetres, LPS** (x grows to the patient's Left, y to
Posterior, z to Superior), the convention of ITK, elastix and 3D Slicer's files. A NIfTI file
stores RAS; SimpleITK converts its affine on reading (the first two world axes change sign),
so a voxel has the same LPS position whichever format holds it.

Index order is ITK's ``(i, j, k)`` = ``(x, y, z)`` index, the order nibabel's arrays use too:
an image of :attr:`Grid.shape` ``(nx, ny, nz)`` is an array ``a[i, j, k]``. (SimpleITK's own
numpy view is ``(nz, ny, nx)``: the transposes live here only.)

A voxel of index ``v = (i, j, k)`` sits at the world point

    p(v) = origin + D diag(spacing) v                                   (1)

with ``D`` the ``(3, 3)`` direction cosines (columns: the index axes in world space).

Masks become point clouds (:func:`read_mask`): the centres (1) of the voxels with a non-zero
value, with a ``radius`` attribute (mm: the Euclidean distance transform, the distance from the
voxel centre to the nearest background voxel centre, in world units through the spacing) and,
for label maps with several values, a ``label`` attribute (the voxel value, e.g. 1 = artery,
2 = vein). ``skeleton=True`` keeps the voxels of the mask's 3-D skeleton (scikit-image, an
optional dependency), the centre lines of a vessel tree, with the radius of the vessel there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from register.core.pointcloud import PointCloud
from register.errors import InputError

# Compound extensions first: the registry matches ".nii.gz" before ".gz".
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def image_extension(path: str | os.PathLike[str]) -> str | None:
    """The image extension of ``path`` (``".nii.gz"``, ``".mha"``, ...), or ``None``."""
    name = Path(path).name.lower()
    return next((ext for ext in IMAGE_EXTENSIONS if name.endswith(ext)), None)


@dataclass(frozen=True, eq=False)
class Grid:
    """The voxel grid of an image: where each voxel centre is in the world (LPS mm).

    Attributes:
        shape: ``(nx, ny, nz)`` voxels along the index axes ``i, j, k``.
        origin: ``(3,)`` world position of voxel ``(0, 0, 0)``, mm.
        spacing: ``(3,)`` voxel size along ``i, j, k``, mm (> 0).
        direction: ``(3, 3)`` direction cosines, ``direction[:, a]`` = index axis ``a`` in world.
    """

    shape: tuple[int, int, int]
    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        for name in ("origin", "spacing", "direction"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise InputError(f"an image grid needs 3 axes of >= 1 voxel, got shape {self.shape}")
        if self.direction.shape != (3, 3) or self.origin.shape != (3,) or self.spacing.shape != (3,):
            raise InputError("an image grid needs a (3,) origin, a (3,) spacing and a (3, 3) direction")
        if not (self.spacing > 0).all():
            raise InputError(f"voxel spacings must be > 0, got {self.spacing.tolist()}")

    def matches(self, other: Grid, atol: float = 1e-4) -> bool:
        """Same shape, and origin / spacing / direction within ``atol`` (mm; files store float32)."""
        return self.shape == other.shape and all(
            np.allclose(getattr(self, a), getattr(other, a), atol=atol)
            for a in ("origin", "spacing", "direction")
        )

    @property
    def matrix(self) -> np.ndarray:
        """``(3, 3)`` linear part ``M = D diag(spacing)`` of (1): index steps -> world mm."""
        return self.direction * self.spacing[None, :]

    @property
    def voxels(self) -> int:
        return int(np.prod(self.shape))

    def world(self, index: np.ndarray) -> np.ndarray:
        """World points (1), ``(N, 3)`` mm, of ``(N, 3)`` (possibly fractional) voxel indices."""
        return self.origin + np.asarray(index, dtype=np.float64) @ self.matrix.T

    def index(self, world: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`world`: ``(N, 3)`` fractional voxel indices of ``(N, 3)`` world points."""
        return np.linalg.solve(self.matrix, (np.asarray(world, dtype=np.float64) - self.origin).T).T

    def describe(self) -> str:
        return f"{'x'.join(map(str, self.shape))} voxels of {'x'.join(f'{s:g}' for s in self.spacing)} mm"


def _sitk():
    import SimpleITK

    return SimpleITK


def grid_of(image) -> Grid:
    """The :class:`Grid` of a SimpleITK image (3-D)."""
    return Grid(
        image.GetSize(),
        image.GetOrigin(),
        image.GetSpacing(),
        np.array(image.GetDirection()).reshape(3, 3),
    )


def _check_path(path: Path) -> None:
    if image_extension(path) is None:
        raise InputError(f"{path}: not an image file name; use one of {', '.join(IMAGE_EXTENSIONS)}")


def read_sitk(path: str | os.PathLike[str]):
    """Read ``path`` as a 3-D SimpleITK image.

    Raises:
        InputError: missing file, unreadable or not 3-D (the message names the file).
    """
    path = Path(path)
    _check_path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "file not found"
        raise InputError(f"{path}: {what}; pass an image file (e.g. a .nii.gz segmentation)")
    sitk = _sitk()
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise InputError(
            f"{path}: could not be read as an image ({detail[:160]}); check that the file is a valid "
            f"{image_extension(path)} image"
        ) from None
    if image.GetDimension() != 3:
        raise InputError(f"{path}: a {image.GetDimension()}-D image; register reads 3-D images")
    return image


def read_image(path: str | os.PathLike[str]) -> tuple[np.ndarray, Grid]:
    """An image's voxels and grid.

    Returns:
        ``(values, grid)``: ``values`` ``(nx, ny, nz)`` (or ``(nx, ny, nz, c)`` for a vector
        image) in index order ``[i, j, k]``, the file's data type; ``grid`` its :class:`Grid`.
    """
    image = read_sitk(path)
    array = _sitk().GetArrayViewFromImage(image)  # (nz, ny, nx[, c])
    axes = (2, 1, 0, 3) if array.ndim == 4 else (2, 1, 0)
    return np.ascontiguousarray(array.transpose(axes)), grid_of(image)


def to_sitk(values: np.ndarray, grid: Grid):
    """A SimpleITK image of ``values`` ``(nx, ny, nz)`` or ``(nx, ny, nz, c)`` on ``grid``."""
    sitk = _sitk()
    values = np.asarray(values)
    if values.shape[:3] != grid.shape:
        raise InputError(f"an image of shape {values.shape[:3]} does not fit a grid of {grid.shape}")
    vector = values.ndim == 4
    axes = (2, 1, 0, 3) if vector else (2, 1, 0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose(axes)), isVector=vector)
    image.SetOrigin(tuple(grid.origin))
    image.SetSpacing(tuple(grid.spacing))
    image.SetDirection(tuple(grid.direction.ravel()))
    return image


def write_sitk(path: str | os.PathLike[str], image) -> None:
    """Write a SimpleITK image atomically (a temporary name in the same folder, then a rename).

    Vector images keep their components as they are: a displacement field in LPS mm is stored in
    LPS in every format (NIfTI with the generic vector intent, which ITK, SimpleITK and ANTs read
    back unchanged; NIfTI's own displacement intent, RAS vectors, cannot be written by
    SimpleITK's variable-length vector images).

    Raises:
        InputError: not an image extension, missing folder, or the write failed.
    """
    from register.core.files import atomic_write

    path = Path(path)
    _check_path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {path.parent} does not exist; create it first")
    ext = image_extension(path)
    sitk = _sitk()

    def write(tmp: Path) -> None:
        # The temporary name keeps the extension: SimpleITK picks the writer by it. A .nhdr /
        # .mhd header names its data file, so those two are written in place (not atomically).
        sitk.WriteImage(image, str(tmp), useCompression=ext in (".nii.gz", ".nrrd", ".mha"))

    try:
        if ext in (".nhdr", ".mhd"):
            sitk.WriteImage(image, str(path))
        else:
            atomic_write(path, write, suffix=ext)
    except RuntimeError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise InputError(f"{path}: could not be written ({detail[:160]})") from None


def read_mask(
    path: str | os.PathLike[str],
    *,
    labels: tuple[int, ...] | None = None,
    skeleton: bool = False,
) -> PointCloud:
    """A segmentation mask or label map as a point cloud (voxel centres, world LPS mm).

    Args:
        path: a 3-D scalar image; voxels with a non-zero value are the object.
        labels: keep only voxels with these values (``None``: every non-zero value).
        skeleton: keep only the voxels of the object's 3-D skeleton (centre lines; needs
            scikit-image). Computed on the voxel lattice (the spacing is not used for thinning).

    Returns:
        ``points`` ``(N, 3)`` mm; ``point_data``: ``radius`` ``(N,)`` mm (distance transform, at
        least half the smallest spacing so that a one-voxel-thin structure keeps a size) and,
        when the kept voxels hold more than one value, ``label`` ``(N,)`` int.

    Raises:
        InputError: unreadable image, vector image, no voxel kept, scikit-image missing.
    """
    from scipy import ndimage

    values, grid = read_image(path)
    if values.ndim != 3:
        raise InputError(f"{path}: a {values.shape[3]}-component image; a mask has one value per voxel")
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise InputError(
            f"{path}: holds fractional values (an intensity image?); a mask or label map holds whole numbers"
        )
    values = values.astype(np.int64, copy=False)
    mask = values != 0 if labels is None else np.isin(values, np.asarray(labels, dtype=np.int64))
    if not mask.any():
        which = "non-zero" if labels is None else f"label {', '.join(map(str, labels))}"
        raise InputError(f"{path}: no voxel with a {which} value; check the mask (and labels=)")
    # Distance (mm) from each object voxel to the nearest background voxel centre.
    radius = ndimage.distance_transform_edt(mask, sampling=grid.spacing)
    keep = mask
    if skeleton:
        try:
            from skimage.morphology import skeletonize
        except ImportError:
            raise InputError(
                f'{path}: skeletonisation needs scikit-image: pip install "register[skeleton]" (or scikit-image)'
            ) from None
        keep = skeletonize(mask).astype(bool) & mask
        if not keep.any():
            raise InputError(f"{path}: the skeleton of the mask is empty; read it without skeleton")
    index = np.argwhere(keep)  # (N, 3) in [i, j, k] order (C order: k fastest)
    data: dict[str, np.ndarray] = {
        "radius": np.maximum(radius[keep], 0.5 * grid.spacing.min()),
    }
    kept = values[keep]
    if len(np.unique(kept)) > 1:
        data["label"] = kept
    return PointCloud(grid.world(index), data, path=str(path))


def read_mask_points(path: Path) -> PointCloud:
    """Format-registry reader: every non-zero voxel of a mask (see :func:`read_mask`)."""
    return read_mask(path)
