"""Smooth kernel fields fitted to displacements: confidence-weighted kernel ridge regression.

Given points ``z_i`` with displacements ``d_i`` and weights ``w_i >= 0``, and control points
``p_c``, find the field ``v(z) = sum_c K(z, p_c) alpha_c`` (``K`` Gaussian of width ``sigma``):

    min_alpha  sum_i w_i |sum_c K(z_i, p_c) alpha_c - d_i|^2 + lambda alpha^T K_pp alpha

The second term is the squared RKHS norm of the field (its smoothness). Normal equations:

    (K_zp^T W K_zp + lambda K_pp) alpha = K_zp^T W d                      (4)

Used by the spline stage (:mod:`register.stages.spline`, one fit per round) and the flow stage
(:mod:`register.stages.flow`, the network's flow projected onto a smooth field). Numbers (4)
refer to this equation in both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from register.core.clusters import cluster, voxel_labels, voxel_means
from register.core.transforms import KernelField
from register.kernels.dense import gaussian_kernel
from register.kernels.truncated import truncated_gaussian, weighted_normal_equations

log = logging.getLogger(__name__)

# Wide-kernel fits of (4) run on the data aggregated in voxels of this fraction of the kernel
# width (see :func:`aggregate`).
DATA_CELL = 0.25
# ... when that leaves at most this fraction of the points (cost O(N C^2): 10k vessel points,
# sigma 10 mm, 2000 controls: 5096 voxels, 1.2 s -> 0.77 s per fit).
MIN_AGGREGATION = 0.75


def solve_spd(lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``lhs^-1 rhs`` for the symmetric positive (semi-)definite ``lhs (C, C)`` of (4), ``rhs (C, K)``.

    Cholesky (``C^3 / 3`` flops, half of LU); where rounding leaves a nearly singular ``lhs``
    without a Cholesky factor, LU with partial pivoting, which solves it all the same.
    """
    factor, info = torch.linalg.cholesky_ex(lhs)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, factor)
    log.debug("normal equations (%d controls) not numerically positive definite: LU solve", len(lhs))
    return torch.linalg.solve(lhs, rhs)


def fit_kernel_field(
    z: np.ndarray, d: np.ndarray, w: np.ndarray, controls: np.ndarray, sigma: float, regularization: float
) -> KernelField:
    """Solve (4): a smooth field ``v`` with ``v(z_i) ~ d_i`` weighted by ``w_i``.

    Args:
        z: ``(N, D)`` points, data units; d: ``(N, D)`` displacements, data units.
        w: ``(N,)`` non-negative weights; controls: ``(C, D)`` kernel centres.
        sigma: kernel width, data units; regularization: ``lambda`` (dimensionless).

    Returns:
        The fitted :class:`KernelField`.
    """
    return normal_equations(z, d, w, controls, sigma).solve(regularization)


@dataclass(frozen=True)
class NormalEquations:
    """The data terms of (4) for one set of points, controls and width: ``gram (C, C)`` =
    ``K_zp^T W K_zp``, ``rhs (C, D)`` = ``K_zp^T W d``, the controls' kernel ``k_pp (C, C)``
    (float64), kept so that several smoothness levels ``lambda`` cost one solve each."""

    controls: np.ndarray
    sigma: float
    gram: torch.Tensor
    rhs: torch.Tensor
    k_pp: torch.Tensor

    def solve(self, regularization: float) -> KernelField:
        """(4) at ``lambda = regularization``: ``(gram + lambda k_pp) alpha = rhs``."""
        lhs = self.gram + regularization * self.k_pp
        # A relative jitter keeps (4) solvable when controls nearly coincide.
        lhs.diagonal().add_(1e-10 * float(lhs.diagonal().mean()))
        alpha = solve_spd(lhs, self.rhs)
        return KernelField(self.controls, alpha.numpy(), (self.sigma,))


def normal_equations(
    z: np.ndarray, d: np.ndarray, w: np.ndarray, controls: np.ndarray, sigma: float
) -> NormalEquations:
    """:class:`NormalEquations` of (4) for ``z (N, D)``, ``d (N, D)``, weights ``w (N,)``
    (normalised to sum 1), ``controls (C, D)`` and kernel width ``sigma`` (data units)."""
    w = w / w.sum()
    centre = controls.mean(0)
    zc, pc = z - centre, controls - centre
    k_pp = gaussian_kernel(torch.from_numpy(pc), torch.from_numpy(pc), (sigma,))  # (C, C) float64
    k_zp = truncated_gaussian(zc, pc, (sigma,))  # (N, C) CSR, or None for a wide kernel
    if k_zp is None:  # wide kernel: dense blocks of K_zp, on the data aggregated per voxel
        zc, d, w = aggregate(zc, d, w, DATA_CELL * sigma)
        gram, rhs = weighted_normal_equations(zc, pc, w, d, sigma)
        gram, rhs = torch.from_numpy(gram), torch.from_numpy(rhs)
    else:  # narrow kernel: sparse products, O(nnz) instead of O(N C^2)
        weighted = k_zp.multiply(w[:, None]).tocsr()
        gram = torch.from_numpy((k_zp.T @ weighted).toarray())
        rhs = torch.from_numpy(np.asarray(weighted.T @ d))
    return NormalEquations(controls, sigma, gram, rhs, k_pp)


def aggregate(
    z: np.ndarray, d: np.ndarray, w: np.ndarray, cell: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weighted data of (4) summarised per voxel of side ``cell``: weighted centroids
    ``(V, D)``, weighted mean displacements ``(V, D)`` and summed weights ``(V,)``.

    Within a voxel ``c`` (weight ``W_c``, centroid ``z_c``, mean ``d_c``),
    ``sum_i w_i |v(z_i) - d_i|^2 = W_c |v(z_c) - d_c|^2 + const + O(|grad^2 v| cell^2)``: the
    first-order terms cancel because ``z_c`` is the weighted centroid. For a Gaussian field of
    width ``sigma`` and ``cell = sigma / 4`` the neglected part is ~``(cell / sigma)^2 / 12``
    (0.5 %) of the field's curvature. Voxels with no weight are dropped; returns the data
    unchanged when aggregation would not remove a quarter of it (``MIN_AGGREGATION``).
    """
    keep = w > 0
    z, d, w = z[keep], d[keep], w[keep]
    merged = cluster(z, w, cell)
    if len(merged.points) > MIN_AGGREGATION * len(z):
        return z, d, w
    return merged.points, voxel_means(merged.labels, len(merged.points), w, d), merged.masses


def grid_controls(z: np.ndarray, cell: float, max_controls: int) -> np.ndarray | None:
    """Control points for a wide kernel: centroids ``(C, D)`` of the points ``z (N, D)`` in
    each voxel of side ``cell`` (data units), or None when there are more than ``max_controls``.

    A Gaussian field of width ``sigma`` varies little over ``sigma / 2``, so controls that
    far apart carry it as well as many more would, at a fraction of the ``O(N C^2 + C^3)``
    cost of (4) (Lung250M-4B case 002, sigma 40 mm: 2000 random controls 3.3 s CPU, 1128 grid
    controls 1.05 s). Spacing ``sigma`` was too coarse for the shapes preset (BCPD male pair
    0.87 -> 0.96 % of the diagonal); ``sigma / 2`` gave 0.84 %.
    """
    labels, n = voxel_labels(z, cell)
    if n > max_controls:
        return None
    return voxel_means(labels, n, np.ones(len(z)), z)
