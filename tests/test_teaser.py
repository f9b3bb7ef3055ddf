"""The TEASER++ similarity fixtures (10-100 points, 0-90 % outliers) through the affine stage."""

import numpy as np
import pytest

from benchmarks.suites import TEASER_CONFIG as CONFIG  # the benchmark's settings, shared
from register.config import from_dict
from register.core.fitting import rotation_angle_deg
from register.io import read_points
from register.pipeline import register


def _fit(folder) -> np.ndarray:
    src = read_points(folder / "src.ply").points
    dst = read_points(folder / "dst.ply").points
    return register(src, dst, from_dict(CONFIG)).transform.steps[0].matrix


def _rotation_error(folder) -> float:
    matrix = _fit(folder)
    r_ref = np.loadtxt(folder / "R_ref.csv", delimiter=",").reshape(3, 3)
    rotation = matrix / np.cbrt(np.linalg.det(matrix))
    return rotation_angle_deg(rotation @ r_ref.T)


@pytest.mark.parametrize("case", [1, 2, 3])
def test_up_to_30_percent_outliers_recovered(shared_data, case):
    assert _rotation_error(shared_data / f"rigid/teaser/benchmark_{case}") < 1.0


@pytest.mark.parametrize("case", [4, 5, 6])
def test_50_and_90_percent_outliers_give_a_valid_similarity(shared_data, case):
    """Known failure (the rotation is not recovered, see the README); the result is still a similarity."""
    matrix = _fit(shared_data / f"rigid/teaser/benchmark_{case}")
    scale = np.cbrt(np.linalg.det(matrix))
    assert np.isfinite(matrix).all() and scale > 0
    np.testing.assert_allclose(matrix @ matrix.T, scale**2 * np.eye(3), atol=1e-8 * scale**2)
