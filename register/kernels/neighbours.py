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

import math
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


# exp() of a float32 below this is subnormal or zero, where torch's vectorised exp takes a slow
# path (as in :mod:`register.kernels.dense`): shifted log-terms are clamped here first.
_EXP_FLOOR = -80.0


def _shifted_weights(eps: float, nb: Neighbours, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(exp(s_ik - m_i), m_i)`` for the log-terms ``s_ik = h_nbr[i,k] - C_ik / eps`` and their row
    maxima ``m_i`` (log-sum-exp trick); padding slots (``C = inf``) get ``exp(_EXP_FLOOR)``, nil."""
    s = h[nb.index].sub_(nb.cost / eps)
    m = s.amax(dim=1, keepdim=True)
    return s.sub_(m).clamp_(min=_EXP_FLOOR).exp_(), m[:, 0]


def softmin_neighbours(eps: float, nb: Neighbours, h: torch.Tensor) -> torch.Tensor:
    """``f_i = -eps log sum_k exp(h_nbr[i,k] - C_ik / eps)``: ``(N,)``, as ``softmin_dense``."""
    w, m = _shifted_weights(eps, nb, h)
    return -eps * (w.sum(1).log_() + m)


def barycentre_neighbours(
    eps: float, nb: Neighbours, h: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-min weighted averages of ``values (M, V)`` and the log total weight, as ``barycentre_dense``.

    Returns:
        ``(N, V)`` averages and ``(N,)`` log-sums.
    """
    w, m = _shifted_weights(eps, nb, h)
    total = w.sum(1)
    avg = torch.bmm(w[:, None, :], values[nb.index])[:, 0] / total[:, None]
    return avg, total.log() + m


def guided_neighbours(
    x: torch.Tensor,
    y: torch.Tensor,
    h: torch.Tensor,
    eps: float,
    truncate: float,
    centres: torch.Tensor,
    tree,
    *,
    k_start: int = 32,
    k_max: int = 256,
    slack: float = 4.0,
    workers: int = 1,
    first: torch.Tensor | None = None,
) -> Neighbours:
    """Lists of the terms within ``truncate`` of each row's largest log-term, found around a guess.

        The log-term ``s_ij = h_j - |x_i - y_j|^2 / (2 eps)`` of row ``i`` is, where ``h`` is
        locally affine, a quadratic in ``y_j`` that peaks at ``x_i + eps grad h``: the row's
        barycentric target. So each row looks at the ``k`` nearest points of ``y`` around
        ``centres[i]`` (its current barycentric target) and keeps those within ``truncate`` of its
        best. A row is complete once the outer half of its candidates (the farthest from the
        centre) are all below the cut by ``slack`` (the terms are only roughly radial around the
    centre); other rows double ``k``, up to ``k_max``.

        Args:
            x: ``(N, D)`` rows; y: ``(M, D)`` columns; h: ``(M,)`` log-weights; eps: temperature.
            truncate: terms more than this below the row's largest are dropped.
            centres: ``(N, D)`` where each row's terms peak (its current barycentric target).
            tree: a ``scipy.spatial.cKDTree`` over ``y`` (built once per level by the caller).
            k_start, k_max: first and largest number of candidates per row.
            slack: how far below the cut the outer candidates must be to end a row's search.
            workers: threads for the tree queries.

        Returns:
            :class:`Neighbours` (exact half squared distances, on ``x``'s device).
    """
    m = len(y)
    k_max = min(k_max, m)
    centres_np = centres.detach().to("cpu", torch.float64).numpy()
    rows = torch.arange(len(x), device=x.device)
    k = min(k_start, k_max) if first is None else first.shape[1]
    found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    while len(rows):
        if first is not None:
            i, first = first, None
        else:
            _, i = tree.query(centres_np[rows.cpu().numpy()], k=k, workers=workers)
            i = torch.from_numpy(i.reshape(len(rows), k)).to(x.device)
        diff = x[rows][:, None, :] - y[i]
        cost = (diff * diff).sum(-1) / 2  # (rows, k)
        s = h[i] - cost / eps
        cut = s.max(1, keepdim=True).values - truncate
        # Complete: the outer half of the candidates (farthest from the centre) is below the cut.
        outer = s[:, k // 2 :].max(1).values
        done = outer < cut[:, 0] - slack if k < k_max else torch.ones_like(rows, dtype=torch.bool)
        keep = s[done] >= cut[done]
        found.append((rows[done], i[done], cost[done], keep))
        rows, k = rows[~done], min(2 * k, k_max)
    # Pack the kept terms of every row to the left of one (N, width) block.
    width = max(max(int(keep.sum(1).max()) if len(keep) else 0 for *_, keep in found), 1)
    index = torch.zeros(len(x), width, dtype=torch.int64, device=x.device)
    cost_out = torch.full((len(x), width), math.inf, dtype=x.dtype, device=x.device)
    for r, i, cost, keep in found:
        if len(r) == 0:
            continue
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :width]
        kept = torch.gather(keep, 1, order)
        w = order.shape[1]
        index[r, :w] = torch.where(kept, torch.gather(i, 1, order), 0)
        cost_out[r, :w] = torch.where(kept, torch.gather(cost, 1, order), math.inf)
    return Neighbours(index, cost_out)
