"""Gaussian kernel matrices truncated at a few widths, as ``scipy.sparse`` matrices (CPU).

For a narrow kernel (width small against the cloud) almost every entry of the ``(N, C)``
matrix ``K_ic = sum_s exp(-|x_i - c_c|^2 / (2 sigma_s^2))`` is negligible: storing only the
pairs closer than ``TRUNCATE_SIGMAS * max(sigma)`` turns kernel products and the normal
equations of kernel regression from ``O(N C)`` / ``O(N C^2)`` into ``O(nnz)``. Each dropped
entry is below ``exp(-TRUNCATE_SIGMAS^2 / 2)`` (4e-6) of the kernel's peak.
"""

from __future__ import annotations

import numpy as np

TRUNCATE_SIGMAS = 5.0
# Sparse products pay off below this fraction of non-zero entries (dense BLAS above it).
SPARSE_MAX_DENSITY = 0.05


def truncated_gaussian(x: np.ndarray, centres: np.ndarray, sigmas: tuple[float, ...]):
    """``K (N, C)`` as a CSR matrix truncated at ``TRUNCATE_SIGMAS * max(sigmas)``, or ``None``
    when more than ``SPARSE_MAX_DENSITY`` of it would be non-zero (use the dense kernel then).

    Args:
        x: ``(N, D)`` evaluation points; centres: ``(C, D)`` kernel centres (same units).
        sigmas: kernel widths, same units.
    """
    from scipy.spatial import cKDTree

    radius = TRUNCATE_SIGMAS * max(sigmas)
    tree_c = cKDTree(centres)
    # Density estimate from ~200 of the points before building the whole matrix.
    probe = x[:: max(1, len(x) // 200)]
    if tree_c.query_ball_point(probe, radius, return_length=True).mean() > SPARSE_MAX_DENSITY * len(centres):
        return None
    k = cKDTree(x).sparse_distance_matrix(tree_c, radius, output_type="coo_matrix").tocsr()
    d2 = k.data**2
    k.data = sum(np.exp(-d2 / (2 * s**2)) for s in sigmas)
    return k
