"""Read a result folder back for viewing (``register show``): the files written by
:func:`register.app.outputs.write_result`, checked, with the inputs it names found again.

:func:`read_result` returns the source ``(N, D)``, target ``(M, D)`` and warped ``(N, D)``
points (data units) and the landmark pairs; a damaged or incomplete folder is an
:class:`~register.errors.InputError` naming the file and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from register.errors import InputError


def _locate(folder: Path, key: str, recorded, relative=None) -> Path | None:
    """Where an input recorded in ``metrics.json`` is now, or ``None``.

    Tried in order: the recorded path (absolute since this version; an older register's is
    relative to the folder the run was started in), the path relative to the result folder
    (``metrics["relative"]``), and an older relative path from the result folder's parent.
    """
    if recorded is None:
        raise InputError(f"{folder / 'metrics.json'}: no '{key}' entry; pass it with --{key.split('.')[0]}")
    if not isinstance(recorded, str) or not recorded or "\x00" in recorded:
        raise InputError(
            f"{folder / 'metrics.json'}: '{key}' is not a file path ({type(recorded).__name__}); "
            f"the result folder is damaged: pass --{key.split('.')[0]} or register the pair again"
        )
    candidates = [Path(recorded)]
    if isinstance(relative, str) and relative and "\x00" not in relative:
        candidates.append(folder / relative)
    if not Path(recorded).is_absolute():
        candidates.append(folder.parent / recorded)
    return next((p for p in candidates if p.is_file()), None)


def _read_json(path: Path) -> dict:
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: not readable JSON ({exc}); the result folder is damaged: register the pair again"
        ) from None
    if not isinstance(metrics, dict):
        raise InputError(
            f"{path}: expected a JSON object, got a {type(metrics).__name__}; the result folder is "
            "damaged: register the pair again"
        )
    return metrics


def _read_field(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``points`` and ``displacement`` ``(N, D)`` of a ``field.npz``, checked."""
    import zipfile
    import zlib

    damaged = "the result folder is damaged: register the pair again"
    try:
        with np.load(path, allow_pickle=False) as field:
            if not isinstance(field, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            source, displacement = field["points"], field["displacement"]
    except KeyError as exc:
        raise InputError(f"{path}: no {exc} array; {damaged}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({exc}); {damaged}") from None
    for name, arr in (("points", source), ("displacement", displacement)):
        if arr.dtype.kind not in "fiu" or arr.ndim != 2 or arr.shape[1] not in (2, 3) or not len(arr):
            raise InputError(
                f"{path}: '{name}' is not an (N, 3) array of numbers ({arr.dtype}, {arr.shape}); {damaged}"
            )
    if source.shape != displacement.shape:
        raise InputError(
            f"{path}: 'points' {source.shape} and 'displacement' {displacement.shape} differ; {damaged}"
        )
    if not (np.isfinite(source).all() and np.isfinite(displacement).all()):
        raise InputError(f"{path}: non-finite values; {damaged}")
    return source.astype(np.float64), displacement.astype(np.float64)


def read_result(
    folder: Path, *, target: Path | None = None, landmarks: tuple[Path, Path] | None = None
) -> dict:
    """Read a result folder back for viewing (``register show``), from any working folder.

    Args:
        folder: written by :func:`~register.app.outputs.write_result`.
        target: the target points file, when the one named in ``metrics.json`` has moved.
        landmarks: ``(source, target)`` landmark files, when not named in ``metrics.json``.

    Returns:
        ``source`` ``(N, D)``, ``target`` ``(M, D)``, ``warped`` ``(N, D)`` (data units),
        ``landmarks`` (``(T(source landmarks), target landmarks)``, each ``(L, D)``, or ``None``)
        and ``title``.

    Raises:
        InputError: not a result folder, a damaged file in it (the message names it), or a file
            it names cannot be found (the message says which option gives it).
    """
    from register.app.landmarks import read_landmarks
    from register.core.transforms import Transform
    from register.io import read_points

    folder = Path(folder)
    for name in ("field.npz", "metrics.json", "transform.npz"):
        if not (folder / name).is_file():
            raise InputError(
                f"{folder}: no {name}; give a result folder of 'register run' or 'register batch'"
            )
    metrics = _read_json(folder / "metrics.json")
    source, displacement = _read_field(folder / "field.npz")
    relative = metrics.get("relative") if isinstance(metrics.get("relative"), dict) else {}
    target_path = (
        Path(target)
        if target is not None
        else _locate(folder, "target", metrics.get("target"), relative.get("target"))
    )
    if target_path is None:
        raise InputError(
            f"{folder}: target file {metrics['target']} (from metrics.json) not found; pass --target PATH"
        )
    pairs = None
    recorded = metrics["landmarks"].get("files") if isinstance(metrics.get("landmarks"), dict) else None
    if landmarks is not None:
        paths = tuple(Path(p) for p in landmarks)
    elif recorded:
        if not (isinstance(recorded, list) and len(recorded) == 2):
            raise InputError(
                f"{folder / 'metrics.json'}: 'landmarks.files' is not a pair of paths; pass --landmarks SRC_LM TGT_LM"
            )
        rel = relative.get("landmarks") if isinstance(relative.get("landmarks"), list) else [None, None]
        paths = tuple(
            _locate(folder, "landmarks.files", p, r)
            for p, r in zip(recorded, [*rel, None, None], strict=False)
        )
        missing = [p for p, found in zip(recorded, paths, strict=True) if found is None]
        if missing:
            raise InputError(
                f"{folder}: landmarks {missing[0]} (from metrics.json) not found; pass --landmarks SRC_LM TGT_LM"
            )
    if landmarks is not None or recorded:
        src_lm, tgt_lm = read_landmarks(paths, source.shape[1])
        pairs = (Transform.load(folder / "transform.npz").apply(src_lm), tgt_lm)
    source_name = metrics.get("source")
    return {
        "source": source,
        "target": read_points(target_path).points,
        "warped": source + displacement,
        "landmarks": pairs,
        "title": f"{Path(source_name).name if isinstance(source_name, str) else folder.name} -> {target_path.name}",
    }
