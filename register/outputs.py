"""Write a registration result folder, all or nothing.

Layout of ``OUTDIR``:
    transform.npz        the composite transform (``register warp`` reuses it)
    warped.<ext>         the source moved into the target frame, in the source's format,
                         with point attributes ``displacement`` (N, D) and ``confidence`` (N,)
    field.npz            arrays ``points``, ``displacement``, ``confidence`` (source points)
    field.vtk            the same as legacy VTK, for ParaView
    metrics.json         times, counts, residuals, versions, device, seed
    config.toml          the resolved configuration (lengths in data units)

Everything is written into a hidden temporary sibling folder which is renamed to
``OUTDIR`` only when complete; a failure removes it, so ``OUTDIR`` either holds a whole
result or does not exist. :func:`read_result` reads a folder back for viewing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from register.config import to_toml
from register.core.pointcloud import PointCloud
from register.errors import InputError

RESULT_FILES = ("transform.npz", "field.npz", "field.vtk", "metrics.json", "config.toml")


def json_safe(value):
    """``value`` with non-finite floats as strings (``"inf"``), so the JSON is standard."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def check_output_dir(outdir: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty ``outdir`` unless ``overwrite`` (nothing is overwritten unasked)."""
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"-o {outdir}: exists and is not a folder; choose another output folder")
    if outdir.is_dir() and any(outdir.iterdir()) and not overwrite:
        raise InputError(
            f"-o {outdir}: folder exists and is not empty; choose another one or pass --overwrite"
        )
    if not outdir.parent.exists():
        raise InputError(f"-o {outdir}: parent folder {outdir.parent} does not exist")


@contextmanager
def atomic_folder(outdir: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``outdir``; on success it becomes ``outdir``.

    Whatever the ``with`` block writes into the yielded folder appears under ``outdir`` at once
    (one rename), replacing an existing ``outdir`` only when ``overwrite``; if the block raises,
    the temporary folder is removed and ``outdir`` is left as it was. Temporary names are
    ``.<name>.<hex>.partial`` (and ``.<name>.<hex>.old`` for a replaced folder), so a process
    killed half-way leaves only hidden folders that :func:`stale_temporaries` finds.
    """
    check_output_dir(outdir, overwrite)
    # Not tempfile.mkdtemp: its folders are private (0700); this one gets the usual 0777 - umask.
    tmp = outdir.parent / f".{outdir.name}.{uuid.uuid4().hex[:12]}.partial"
    tmp.mkdir()
    try:
        yield tmp
        if outdir.exists():
            trash = outdir.with_name(f".{outdir.name}.{uuid.uuid4().hex}.old")
            os.replace(outdir, trash)
            os.replace(tmp, outdir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def stale_temporaries(folder: Path, name: str = "*") -> list[Path]:
    """Temporary folders :func:`atomic_folder` left in ``folder`` for ``name`` after a crash."""
    return sorted([*folder.glob(f".{name}.*.partial"), *folder.glob(f".{name}.*.old")])


def write_result(
    outdir: Path,
    source: PointCloud,
    result,
    metrics: dict,
    *,
    overwrite: bool = False,
    before_commit: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``result`` (a :class:`register.pipeline.Result`) for ``source`` into ``outdir``.

    Args:
        before_commit: called with the temporary folder once the result files are in it;
            what it adds there is committed with them (``register batch`` adds its log, QA
            picture and ``status.json``).

    Returns:
        The path of the warped source file inside ``outdir``.
    """
    from register.io import write_points

    ext = "".join(Path(source.path).suffixes[-1:]) if source.path else ".ply"
    warped_name = f"warped{ext}"
    with atomic_folder(outdir, overwrite=overwrite) as tmp:
        result.transform.save(tmp / "transform.npz")
        extra = {"displacement": result.displacement, "confidence": result.confidence}
        write_points(tmp / warped_name, source.with_points(result.warped, **extra))
        np.savez(
            tmp / "field.npz",
            points=source.points,
            displacement=result.displacement,
            confidence=result.confidence,
        )
        write_points(tmp / "field.vtk", PointCloud(source.points, extra))
        (tmp / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
        (tmp / "config.toml").write_text(to_toml(result.config))
        if before_commit is not None:
            before_commit(tmp)
    return outdir / warped_name


def read_result(
    folder: Path, *, target: Path | None = None, landmarks: tuple[Path, Path] | None = None
) -> dict:
    """Read a result folder back for viewing (``register show``).

    Args:
        folder: written by :func:`write_result`.
        target: the target points file, when the one named in ``metrics.json`` has moved.
        landmarks: ``(source, target)`` landmark files, when not named in ``metrics.json``.

    Returns:
        ``source`` ``(N, D)``, ``target`` ``(M, D)``, ``warped`` ``(N, D)`` (data units),
        ``landmarks`` (``(T(source landmarks), target landmarks)``, each ``(L, D)``, or ``None``)
        and ``title``.

    Raises:
        InputError: not a result folder, or a file it names cannot be found (the message says
            which option gives it).
    """
    from register.core.transforms import Transform
    from register.io import read_points
    from register.run import read_landmarks

    folder = Path(folder)
    for name in ("field.npz", "metrics.json", "transform.npz"):
        if not (folder / name).is_file():
            raise InputError(
                f"{folder}: no {name}; give a result folder of 'register run' or 'register batch'"
            )
    metrics = json.loads((folder / "metrics.json").read_text())
    with np.load(folder / "field.npz") as field:
        source, displacement = field["points"], field["displacement"]
    target_path = Path(target or metrics["target"])
    if not target_path.is_file():
        raise InputError(
            f"{folder}: target file {target_path} (from metrics.json) not found; pass --target PATH"
        )
    pairs = None
    recorded = (metrics.get("landmarks") or {}).get("files")
    if landmarks is not None or recorded:
        paths = tuple(Path(p) for p in (landmarks or recorded))
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise InputError(
                f"{folder}: landmarks {missing[0]} (from metrics.json) not found; pass --landmarks SRC_LM TGT_LM"
            )
        src_lm, tgt_lm = read_landmarks(paths, source.shape[1])
        pairs = (Transform.load(folder / "transform.npz").apply(src_lm), tgt_lm)
    return {
        "source": source,
        "target": read_points(target_path).points,
        "warped": source + displacement,
        "landmarks": pairs,
        "title": f"{Path(metrics['source']).name} -> {target_path.name}",
    }
