"""Landmark pairs of a run: read from two files, scored before and after a transform.

Rows of the two files correspond one to one; errors are in data units (mm for lung CT).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from register.errors import InputError


def read_landmarks(paths: tuple[Path, Path], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Source and target landmark arrays ``(L, D)``, rows in correspondence."""
    from register.io import read_points

    src_lm, tgt_lm = (read_points(p).points for p in paths)
    if src_lm.shape != tgt_lm.shape:
        raise InputError(
            f"--landmarks {paths[0]} {paths[1]}: {len(src_lm)} and {len(tgt_lm)} rows "
            f"({src_lm.shape[1]}-D and {tgt_lm.shape[1]}-D); rows must correspond one to one"
        )
    if src_lm.shape[1] != dim:
        raise InputError(f"--landmarks {paths[0]}: {src_lm.shape[1]}-D landmarks for {dim}-D clouds")
    return src_lm, tgt_lm


def landmark_errors(transform, src_lm: np.ndarray, tgt_lm: np.ndarray) -> dict:
    """TRE before and after ``transform`` (data units, lower is better) and per landmark."""
    from register.metrics import tre

    warped = transform.apply(src_lm)
    return {
        "count": len(src_lm),
        "before": tre(src_lm, tgt_lm),
        "after": tre(warped, tgt_lm),
        "per_landmark_after": np.linalg.norm(warped - tgt_lm, axis=1).tolist(),
    }
