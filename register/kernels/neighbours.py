"""Truncated kernel reductions over padded neighbour lists (the sparse CPU path).

Instead of all ``M`` points of ``y``, each ``x_i`` sums over ``K`` candidate neighbours
``nbr[i, :]`` (indices into ``y``; padding slots have cost ``+inf``). The half squared
distances ``C_ik = |x_i - y_nbr[i,k]|^2 / 2`` do not depend on the temperature, so they are
computed once per neighbour list and every reduction is a gather, a scale and a
log-sum-exp over a dense ``(N, K)`` block: ``O(N K)`` time and memory instead of ``O(N M)``.

Dropping a term ``exp(h_j - C_ij / eps)`` that lies ``T`` below its row's largest term
changes the soft-min by at most ``eps * log(1 + M exp(-T))``; the lists are chosen so that
the dropped terms are of that kind (see :mod:`register.ot.multiscale`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Neighbours:
    """Padded neighbour lists of the points ``x`` among the points ``y``.

    Attributes:
        index: ``(N, K)`` int64 indices into ``y`` (padding slots hold 0).
        cost: ``(N, K)`` half squared distances ``|x_i - y_index|^2 / 2``, ``+inf`` on padding.
    """

    index: torch.Tensor
    cost: torch.Tensor

    @property
    def k(self) -> int:
        return self.index.shape[1]


def neighbour_cost(x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> Neighbours:
    """:class:`Neighbours` for ``index (N, K)`` with ``valid (N, K)`` marking real slots."""
    diff = x[:, None, :] - y[index]  # (N, K, D)
    cost = (diff * diff).sum(-1) / 2
    cost = torch.where(valid, cost, torch.full_like(cost, float("inf")))
    return Neighbours(torch.where(valid, index, torch.zeros_like(index)), cost)


def _log_terms(eps: float, nb: Neighbours, h: torch.Tensor) -> torch.Tensor:
    """``h_j - C_ij / eps`` on the lists, ``-inf`` on padding: ``(N, K)``."""
    return h[nb.index] - nb.cost / eps


def softmin_neighbours(eps: float, nb: Neighbours, h: torch.Tensor) -> torch.Tensor:
    """``f_i = -eps log sum_k exp(h_nbr[i,k] - C_ik / eps)``: ``(N,)``, as ``softmin_dense``."""
    return -eps * torch.logsumexp(_log_terms(eps, nb, h), dim=1)


def barycentre_neighbours(
    eps: float, nb: Neighbours, h: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-min weighted averages of ``values (M, V)`` and the log total weight, as ``barycentre_dense``.

    Returns:
        ``(N, V)`` averages and ``(N,)`` log-sums.
    """
    s = _log_terms(eps, nb, h)
    lse = torch.logsumexp(s, dim=1)
    w = torch.exp(s - lse[:, None])  # (N, K), rows sum to 1
    avg = (w[:, :, None] * values[nb.index]).sum(1)
    return avg, lse
