"""Export a registration's transform to files other tools load: a 4x4 matrix, an ITK transform.

A transform ``T`` (:mod:`register.core.transforms`) maps ``(N, 3)`` source points, in the
units of the files they came from, to the target space. Only an affine ``T`` has these forms:

    y = A x + t,        [y; 1] = M [x; 1],        M = [[A, t], [0, 0, 0, 1]]          (1)

with ``A`` the ``(3, 3)`` linear part and ``t`` the ``(3,)`` translation (data units). An
:class:`~register.core.transforms.Affine` is affine, and so is a
:class:`~register.core.transforms.Composite` whose steps are all affine (their product); a
transform with a kernel field is not, and is exported as a displacement field on an image grid
instead (``register field``, :mod:`register.fields`).

Formats (:func:`export_transform` picks one by the extension):
    * ``.txt``: ``M`` of (1) as 4 lines of 4 space-separated numbers, 17 significant digits
      (exact: ``np.loadtxt`` gives back the same float64 values).
    * ``.tfm`` / ``.h5``: an ITK ``AffineTransform_double_3_3`` (text / HDF5), read by ITK,
      SimpleITK, ANTs and 3D Slicer. See :func:`write_itk_tfm` for its direction.

Every file is written atomically (a temporary file beside it, then renamed), so a failed
export never leaves a partial file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from register.core.files import atomic_write
from register.core.transforms import Affine, Composite, Transform
from register.errors import InputError

MATRIX_EXTENSIONS = (".txt",)
# The ITK transform files SimpleITK writes by extension (.txt is ITK's text format as well;
# export_transform gives .txt to the plain matrix).
ITK_EXTENSIONS = (".tfm", ".txt", ".h5")
# export_transform: extension -> kind written.
EXPORT_KINDS = {".txt": "matrix", ".tfm": "itk", ".h5": "itk"}


def _leaves(transform: Transform) -> Iterator[Transform]:
    """The non-composite steps of ``transform``, in the order they are applied."""
    if isinstance(transform, Composite):
        for step in transform.steps:
            yield from _leaves(step)
    else:
        yield transform


def affine_part(transform: Transform) -> Affine | None:
    """``transform`` as one :class:`Affine`, or ``None`` when it is not affine.

    Args:
        transform: an :class:`Affine` (returned as it is), or a :class:`Composite`
            ``T_n o ... o T_1`` (nested composites included).

    Returns:
        For a composite whose steps are all affine, their product ``A_n ... A_1`` (applied first
        to last, as :meth:`Composite.apply`); ``None`` when any step is not affine (a kernel
        field, its inverse), for any other transform, and for an empty composite (no dimension).

    Raises:
        InputError: the affine steps of a composite have different dimensions.
    """
    if isinstance(transform, Affine):
        return transform
    if not isinstance(transform, Composite):
        return None
    steps = list(_leaves(transform))
    if not steps or not all(isinstance(step, Affine) for step in steps):
        return None
    result = steps[0]
    for i, step in enumerate(steps[1:], 1):
        if step.dim != result.dim:
            raise InputError(
                f"composite transform: affine step {i} is {step.dim}-D after a {result.dim}-D one; "
                "build the composite from steps of one dimension"
            )
        result = step.compose(result)
    return result


def leading_affine(transform: Transform) -> Affine | None:
    """The product of the affine steps applied before the first non-affine one: the affine
    RobOT stage of a pipeline's ``affine -> kernel fields`` composite (a global alignment to
    initialise another tool with). ``None`` when the first step is not affine.

    Raises:
        InputError: the affine steps have different dimensions.
    """
    head = []
    for step in _leaves(transform):
        if not isinstance(step, Affine):
            break
        head.append(step)
    return affine_part(Composite(head)) if head else None


def nonlinear(transform: Transform) -> bool:
    """Whether ``transform`` has a step that is not affine (a kernel field, its inverse, ...).

    ``False`` for an :class:`Affine`, a composite of affine steps and an empty composite (the
    identity): exactly the transforms :func:`affine_matrix` can represent (but the last).
    """
    return any(not isinstance(step, Affine) for step in _leaves(transform))


def _affine(transform: Transform, path: str | os.PathLike[str] | None = None) -> Affine:
    """:func:`affine_part` of ``transform``, or an :class:`InputError` naming ``path`` (if given)."""
    where = f"{path}: " if path is not None else ""
    part = affine_part(transform)
    if part is None:
        kinds = sorted({step.kind for step in _leaves(transform) if not isinstance(step, Affine)})
        if not kinds:
            raise InputError(
                f"{where}the transform is an empty composite (no steps, no dimension); "
                "export a transform with at least one step"
            )
        try:
            n = transform.dim + 1
        except (InputError, NotImplementedError, AttributeError, IndexError):
            n = 4
        raise InputError(
            f"{where}transform has a non-linear part ({', '.join(kinds)}); a {n}x{n} matrix cannot "
            "represent it; export the field with `register field` instead"
        )
    if part.matrix.shape != (part.dim, part.dim) or not (
        np.isfinite(part.matrix).all() and np.isfinite(part.translation).all()
    ):
        raise InputError(
            f"{where}the affine transform is malformed (matrix {part.matrix.shape}, translation "
            f"{part.translation.shape}, or NaN / Inf values); export the transform.npz written by a run"
        )
    return part


def affine_matrix(transform: Transform) -> np.ndarray:
    """The homogeneous matrix ``M`` of (1): ``[y; 1] = M [x; 1]`` for ``y = transform.apply(x)``.

    Args:
        transform: an affine transform (see :func:`affine_part`), ``D``-D.

    Returns:
        ``(D + 1, D + 1)`` float64 ``[[A, t], [0, ..., 0, 1]]``, ``(4, 4)`` for 3-D; ``t`` in the
        data's units.

    Raises:
        InputError: the transform has a non-linear part (a kernel field): a matrix cannot
            represent it; the message points to ``register field``.
    """
    part = _affine(transform)
    d = part.dim
    m = np.eye(d + 1)
    m[:d, :d] = part.matrix
    m[:d, d] = part.translation
    return m


def _check_output(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for the exported transform")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {path.parent} does not exist; create it first")


def write_matrix_txt(path: str | os.PathLike[str], transform: Transform) -> None:
    """Write the matrix ``M`` of (1) as text: ``D + 1`` lines of space-separated numbers.

    Numbers have 17 significant digits (``%.17g``), so ``np.loadtxt(path)`` returns exactly
    :func:`affine_matrix`. The file is written atomically.

    Args:
        path: the output file (any extension; :func:`export_transform` gives it ``.txt``).
        transform: an affine transform (see :func:`affine_part`).

    Raises:
        InputError: the transform has a non-linear part, or the folder does not exist.
    """
    path = Path(path)
    _check_output(path)
    matrix = affine_matrix(_affine(transform, path))
    atomic_write(path, lambda tmp: np.savetxt(tmp, matrix, fmt="%.17g"))


def write_itk_tfm(path: str | os.PathLike[str], transform: Transform) -> None:
    """Write an ITK affine transform file (``.tfm`` / ``.txt`` text, ``.h5`` HDF5) via SimpleITK.

    The file holds an ``AffineTransform_double_D_D`` with matrix ``A``, translation ``t`` and
    centre 0, so ITK's ``TransformPoint(x)`` is ``A x + t = transform.apply(x)``.

    Direction: the exported transform maps source points to target points; for resampling the
    target image onto the source grid with ITK/SimpleITK/ANTs/elastix-transformix, this is the
    transform to use. (ITK's resamplers take the map from the output grid's points to the image
    being sampled: register FIXED -> MOVING, i.e. source = the fixed image, and this file warps
    the moving image onto the fixed grid, as ``register field`` does. For a MOVING -> FIXED
    registration, export ``transform.inverse()`` instead.)

    Coordinates: points are written in the frame the input files gave. Points read from medical
    images (:mod:`register.io.images`) are LPS millimetres, ITK's own frame, so nothing is
    flipped; points from a RAS source (e.g. 3D Slicer markups saved as RAS) must be converted to
    LPS before registering (negate x and y) for the file to be right in ITK.

    Args:
        path: the output file, ``.tfm``, ``.txt`` or ``.h5`` (SimpleITK picks the format by it).
        transform: an affine transform (see :func:`affine_part`), 2-D or 3-D.

    Raises:
        InputError: another extension, a non-linear transform, a missing folder, or a failed
            write (the message names the file).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in ITK_EXTENSIONS:
        raise InputError(f"{path}: not an ITK transform file name; use one of {', '.join(ITK_EXTENSIONS)}")
    _check_output(path)
    part = _affine(transform, path)
    if part.dim not in (2, 3):
        raise InputError(
            f"{path}: a {part.dim}-D transform; ITK affine transform files are written for 2-D and "
            "3-D only; export it as a matrix (.txt) instead"
        )
    import SimpleITK as sitk

    itk = sitk.AffineTransform(part.dim)
    itk.SetMatrix(part.matrix.ravel().tolist())  # row-major, as ITK reads it
    itk.SetTranslation(part.translation.tolist())
    itk.SetCenter([0.0] * part.dim)

    def write(tmp: Path) -> None:
        sitk.WriteTransform(itk, str(tmp))

    try:
        # The temporary name keeps the (lower-case) extension: SimpleITK picks the writer by it.
        atomic_write(path, write, suffix=ext)
    except RuntimeError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise InputError(
            f"{path}: could not be written ({detail[:160]}); check the folder is writable"
        ) from None


def export_transform(path: str | os.PathLike[str], transform: Transform) -> str:
    """Export ``transform`` to ``path`` in the format its extension names.

    Args:
        path: ``.txt`` for the 4x4 matrix (:func:`write_matrix_txt`), ``.tfm`` or ``.h5`` for an
            ITK transform file (:func:`write_itk_tfm`); the extension's case is ignored.
        transform: an affine transform (see :func:`affine_part`).

    Returns:
        The kind written: ``"matrix"`` or ``"itk"`` (:data:`EXPORT_KINDS`).

    Raises:
        InputError: another extension (the message lists the choices), a transform with a
            non-linear part (the message points to ``register field``), a missing folder.
    """
    path = Path(path)
    kind = EXPORT_KINDS.get(path.suffix.lower())
    if kind is None:
        choices = ", ".join(f"{ext} ({k})" for ext, k in EXPORT_KINDS.items())
        shown = path.suffix or "no extension"
        raise InputError(f"{path}: cannot export a transform to {shown}; use one of {choices}")
    if kind == "matrix":
        write_matrix_txt(path, transform)
    else:
        write_itk_tfm(path, transform)
    return kind
