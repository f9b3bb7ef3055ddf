"""KeOps (online, symbolic) kernel reductions: O(N + M) memory, CPU or CUDA.

KeOps compiles one binary per formula, cached on disk. To keep one formula for every
temperature, the points are pre-scaled by ``1 / sqrt(eps)`` so that ``eps`` never appears
in the formula: ``C_ij / eps = |x_i / sqrt(eps) - y_j / sqrt(eps)|^2 / 2``.
"""

from __future__ import annotations

import math

import torch


def _lazy(x: torch.Tensor, y: torch.Tensor, h: torch.Tensor, eps: float):
    from pykeops.torch import LazyTensor

    scale = 1.0 / math.sqrt(eps)
    x_i = LazyTensor((x * scale).contiguous()[:, None, :])
    y_j = LazyTensor((y * scale).contiguous()[None, :, :])
    h_j = LazyTensor(h.contiguous().view(1, -1, 1))
    return h_j - ((x_i - y_j) ** 2).sum(-1) / 2


def softmin_keops(eps: float, x: torch.Tensor, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Same contract as :func:`register.kernels.dense.softmin_dense`, evaluated by KeOps."""
    return -eps * _lazy(x, y, h, eps).logsumexp(dim=1).view(-1)


def barycentre_keops(
    eps: float, x: torch.Tensor, y: torch.Tensor, h: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`register.kernels.dense.barycentre_dense`, evaluated by KeOps."""
    from pykeops.torch import LazyTensor

    s_ij = _lazy(x, y, h, eps)
    v_j = LazyTensor(values.contiguous()[None, :, :])
    avg = s_ij.sumsoftmaxweight(v_j, dim=1)
    lse = s_ij.logsumexp(dim=1).view(-1)
    return avg, lse
