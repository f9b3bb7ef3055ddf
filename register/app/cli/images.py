"""Commands between transforms and medical images: ``field`` (the displacement on an image grid),
``warp-image`` (resample an image through a transform) and ``mask-points`` (a mask to points)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from register.app.cli.common import (
    ADVANCED,
    JsonOut,
    Overwrite,
    Verbose,
    guarded,
    refuse_existing,
    stderr_console,
)
from register.errors import InputError


def _grid_field(transform: Path, reference: Path, tolerance: float | None, inverse: bool = False):
    """The transform at ``transform`` (or its inverse) evaluated on the grid of the image
    ``reference``."""
    from register.core.transforms import Transform
    from register.fields import displacement_on_grid
    from register.io.images import grid_of, read_sitk

    tf = Transform.load(transform)
    if tf.dim != 3:
        raise InputError(f"{transform}: a {tf.dim}-D transform; an image grid needs a 3-D one")
    if tolerance is not None and not tolerance > 0:
        raise InputError(f"--tolerance {tolerance}: must be > 0 (mm)")
    grid = grid_of(read_sitk(reference))
    return displacement_on_grid(tf.inverse() if inverse else tf, grid, tolerance=tolerance)


Inverse = Annotated[
    bool,
    typer.Option(
        "--inverse",
        help="Use the inverse transform: for a MOVING -> FIXED registration (refused where the field folds).",
    ),
]

Tolerance = Annotated[
    float | None,
    typer.Option(
        help="Largest interpolation error accepted, mm (measured at sampled voxels; default: "
        "1/20 of the smallest voxel spacing).",
        rich_help_panel=ADVANCED,
    ),
]


@guarded
def field_command(
    transform: Annotated[Path, typer.Argument(help="transform.npz of a FIXED -> MOVING registration.")],
    reference: Annotated[
        Path, typer.Option("--reference", help="The fixed image (.nii.gz .nii .mha .nrrd): the field's grid.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Field image: .nii.gz .nii .mha .nrrd.")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="itk: LPS mm vectors (SimpleITK DisplacementFieldTransform, ANTs, Slicer); "
            "learn2reg: voxel units, channels last (X, Y, Z, 3).",
        ),
    ] = "itk",
    inverse: Inverse = False,
    tolerance: Tolerance = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
    verbose: Verbose = False,
) -> None:
    """Write the displacement d(x) = T(x) - x on every voxel of the reference (fixed) image.

    Register FIXED -> MOVING points: the field then maps each fixed voxel to where its content
    is in the moving image, the pull-back that warps the moving image onto the fixed one.
    """
    from register.fields import FIELD_FORMATS, write_field
    from register.io.images import image_extension

    if fmt not in FIELD_FORMATS:
        raise InputError(f"--format {fmt}: unknown; use one of {', '.join(FIELD_FORMATS)}")
    if image_extension(output) is None:
        raise InputError(f"-o {output}: a field is an image; use .nii.gz, .nii, .mha or .nrrd")
    refuse_existing(output, overwrite, (transform, "TRANSFORM"), (reference, "--reference"))
    field = _grid_field(transform, reference, tolerance, inverse)
    write_field(output, field, fmt)
    out = {
        "status": "ok",
        "output": str(output),
        "format": fmt,
        "inverse": inverse,
        "grid": list(field.grid.shape),
        "stride": field.stride,
        "max_error_mm": field.max_error,
        "checked_voxels": field.checked,
        "seconds": round(field.seconds, 3),
    }
    if json_out:
        typer.echo(json.dumps(out))
    else:
        stderr_console().print(
            f"wrote {output} ({fmt}, {field.grid.describe()}; exact every {field.stride} voxels, "
            f"interpolation error <= {field.max_error:.2g} mm at {field.checked:,} checked voxels, "
            f"{field.seconds:.1f} s)"
        )


@guarded
def warp_image_command(
    transform: Annotated[Path, typer.Argument(help="transform.npz of a FIXED -> MOVING registration.")],
    moving: Annotated[
        Path, typer.Argument(help="The moving image (CT or label map): .nii.gz .nii .mha .nrrd.")
    ],
    reference: Annotated[Path, typer.Option("--reference", help="The fixed image: the output's grid.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Warped image: .nii.gz .nii .mha .nrrd.")],
    interpolation: Annotated[
        str, typer.Option(help="linear (intensities) or nearest (label maps).")
    ] = "linear",
    inverse: Inverse = False,
    tolerance: Tolerance = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
    verbose: Verbose = False,
) -> None:
    """Resample MOVING onto the reference grid through the transform: out(x) = MOVING(T(x))."""
    from register.fields import warp_image
    from register.io.images import image_extension, read_sitk, write_sitk

    if interpolation not in ("linear", "nearest"):
        raise InputError(f"--interpolation {interpolation}: use linear or nearest")
    if image_extension(output) is None:
        raise InputError(f"-o {output}: use an image extension (.nii.gz, .nii, .mha or .nrrd)")
    refuse_existing(
        output, overwrite, (transform, "TRANSFORM"), (moving, "MOVING"), (reference, "--reference")
    )
    image = read_sitk(moving)
    field = _grid_field(transform, reference, tolerance, inverse)
    write_sitk(output, warp_image(image, field, interpolation=interpolation))
    if json_out:
        typer.echo(json.dumps({"status": "ok", "output": str(output), "max_error_mm": field.max_error}))
    else:
        stderr_console().print(f"wrote {output} ({field.grid.describe()}, {interpolation})")


@guarded
def mask_points_command(
    mask: Annotated[Path, typer.Argument(help="Segmentation mask or label map: .nii.gz .nii .mha .nrrd.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Point cloud to write (e.g. .vtk, .ply).")],
    skeleton: Annotated[
        bool,
        typer.Option(help="Keep the mask's 3-D skeleton only (vessel centre lines; needs scikit-image)."),
    ] = False,
    labels: Annotated[
        str | None,
        typer.Option(help="Comma-separated label values to keep, e.g. 1,2 (default: all non-zero)."),
    ] = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
    verbose: Verbose = False,
) -> None:
    """Turn a mask into points: voxel centres in world LPS mm, with radius (mm) and label attributes."""
    from register.io import write_points
    from register.io.images import read_mask

    keep = None
    if labels is not None:
        try:
            keep = tuple(int(v) for v in labels.split(",") if v.strip())
        except ValueError:
            raise InputError(
                f"--labels {labels}: expected whole numbers separated by commas, e.g. 1,2"
            ) from None
        if not keep:
            raise InputError(f"--labels {labels!r}: give at least one label value")
    refuse_existing(output, overwrite, (mask, "MASK"))
    cloud = read_mask(mask, labels=keep, skeleton=skeleton)
    write_points(output, cloud)
    if json_out:
        typer.echo(json.dumps({"status": "ok", "output": str(output), "points": len(cloud)}))
    else:
        stderr_console().print(f"wrote {output} ({len(cloud):,} points, world LPS mm)")
