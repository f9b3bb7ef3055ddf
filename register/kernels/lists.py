"""Certified per-row term lists: Sinkhorn's fixed-point iterations at a fine temperature.

At the final temperature of a matching the block reductions of
:class:`register.kernels.blocks.BlockReducer` still compute whole block pairs, while each row
needs only a handful of terms (a 10k-point vessel pair at a blur of 1 mm: ~5 columns per row
within ``exp(-8)`` of its largest term, ~1400 computed by 16 x 64 blocks). Here the terms that
matter are listed once per row, ``s_ij = h_j - C_ij / eps`` for ``(i, j)`` in a list ``E``,
and a reduction is a gather, an ``exp`` and a per-row sum over ``E`` only.

Certificate. A list is made at log-weights ``h0`` (:meth:`BlockReducer.large_terms` with a
slack ``S``): every term left out of row ``i`` is below ``exp(m_i - T - S - log M)`` or in a
block pair skipped at truncation ``T + S``, so the left-out terms sum to less than
``2 exp(m_i - T - S)``, ``m_i`` the row's largest term at ``h0``. At log-weights
``h = h0 + delta`` every term moves by its column's ``delta_j``: the left-out sum by at most a
factor ``exp(max delta)``, the row's largest (a listed term) by at least ``exp(min delta)``.
While the spread ``max delta - min delta`` stays at most ``S - log 2``, the left-out terms sum
to less than ``exp(-T)`` of the row's largest: the guarantee of the block reductions (the
soft-min moves by less than ``eps exp(-T)``). A uniform shift of ``h`` (Sinkhorn's potentials
drift together) costs nothing; when the spread grows past the slack the list is made again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from register.kernels.blocks import BlockReducer

# Slack of the lists (nats): larger keeps more terms per row and makes them less often. Sinkhorn's
# log-weights spread by ~1.5-2.5 nats per fixed-point iteration on a 10k-point vessel pair at a
# blur of 1 mm; 16 lists ~8 terms per row there (5 at no slack) and lasts ~7 iterations.
SLACK = 16.0
# Lists are made where their terms per row, times this, stay below the block entries per row (a
# listed term costs a gather, an exp and a scattered add: several times a block entry).
LIST_COST = 16.0  # 6 / 3: the 30k copd1 pair's matchings 5-15 % slower (lists made at coarser blurs)
SAMPLE_ROWS = 256  # rows on which the list size is counted before deciding


@dataclass
class TermList:
    """The listed terms of one direction at one temperature.

    Attributes:
        rows, cols: ``(E,)`` row and column point of each listed term.
        cost: ``(E,)`` ``-C_ij / eps`` of each term (exact, from the coordinates).
        maxima: ``(N,)`` each row's largest term at ``h0``.
        h0: ``(M,)`` the log-weights the list was made at.
        with_mass: ``(M,)`` bool, the columns whose ``h0`` is finite.
        eps: its temperature.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    cost: torch.Tensor
    maxima: torch.Tensor
    h0: torch.Tensor
    with_mass: torch.Tensor
    eps: float

    def drift(self, h: torch.Tensor) -> tuple[float, float]:
        """``(min delta, max delta)`` of ``delta = h - h0`` over the columns with mass."""
        delta = (h - self.h0)[self.with_mass]
        return (float(delta.min()), float(delta.max())) if len(delta) else (0.0, 0.0)


class ListReducer:
    """Soft-min and barycentres of Sinkhorn on certified term lists (module docstring), made
    from a :class:`BlockReducer` of the same clouds (``x (N, D)``, ``y (M, D)``) when needed.

    Same methods as the block reducer; serves one temperature per direction at a time (a new
    ``eps`` makes a new list), so it is meant for the fixed-point iterations at the final one.
    """

    def __init__(self, blocks: BlockReducer, x: torch.Tensor, y: torch.Tensor, slack: float = SLACK):
        self.blocks = blocks
        self.x, self.y = x, y
        self.slack = slack
        self.lists: dict[bool, TermList] = {}
        self.builds = 0  # lists made so far (both directions)
        self.worth: dict[tuple[bool, float], bool] = {}  # (direction, eps) -> lists pay there

    @property
    def pairs_kept(self) -> int:
        return self.blocks.pairs_kept

    @property
    def pairs_total(self) -> int:
        return self.blocks.pairs_total

    def softmin(self, eps: float, h: torch.Tensor, rows_are_x: bool = True) -> torch.Tensor:
        """As :meth:`BlockReducer.softmin`."""
        listed = self._list(eps, h, rows_are_x)
        if listed is None:
            return self.blocks.softmin(eps, h, rows_are_x)
        lse, _ = _reduce(*listed, h, None)
        return -eps * lse

    def barycentre(
        self, eps: float, h: torch.Tensor, values: torch.Tensor, rows_are_x: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`BlockReducer.barycentre`."""
        listed = self._list(eps, h, rows_are_x)
        if listed is None:
            return self.blocks.barycentre(eps, h, values, rows_are_x)
        lse, avg = _reduce(*listed, h, values)
        return avg, lse

    def _list(self, eps: float, h: torch.Tensor, rows_are_x: bool) -> tuple[TermList, float] | None:
        """The direction's list and the middle of the log-weights' drift since it was made (made
        again at ``h`` if its certificate no longer holds); None where lists would not pay at
        this temperature (the block reductions then serve)."""
        key = (rows_are_x, eps)
        if key not in self.worth:
            self.worth[key] = self._worth(eps, h, rows_are_x)
        if not self.worth[key]:
            return None
        current = self.lists.get(rows_are_x)
        if current is not None and current.eps == eps:
            low, high = current.drift(h)
            if high - low <= self.slack - math.log(2):
                return current, (low + high) / 2
        rows, cols = self.blocks.large_terms(eps, h, rows_are_x, self.slack)
        pr, pc = (self.x, self.y) if rows_are_x else (self.y, self.x)
        cost = -((pr[rows] - pc[cols]) ** 2).sum(-1) / (2 * eps)
        terms = h[cols] + cost
        maxima = torch.full((len(pr),), -math.inf, dtype=h.dtype, device=h.device)
        maxima.scatter_reduce_(0, rows, terms, "amax")
        self.lists[rows_are_x] = TermList(rows, cols, cost, maxima, h.clone(), torch.isfinite(h), eps)
        self.builds += 1
        return self.lists[rows_are_x], 0.0

    def _worth(self, eps: float, h: torch.Tensor, rows_are_x: bool) -> bool:
        """Whether lists pay here: the terms they would hold per row (counted exactly on up to
        ``SAMPLE_ROWS`` evenly spread rows, against all columns) times ``LIST_COST`` below
        the block entries per row of the last block call (0 before any: lists then)."""
        pr, pc = (self.x, self.y) if rows_are_x else (self.y, self.x)
        sample = pr[:: max(1, len(pr) // SAMPLE_ROWS)]
        terms = h[None] - torch.cdist(sample, pc).square_() / (2 * eps)  # (S, M)
        floor = terms.amax(1, keepdim=True) - self.blocks.truncate - self.slack - math.log(len(pc))
        per_row = float((terms >= floor).sum()) / len(sample)
        block = self.blocks.entries_per_row
        return block == 0 or per_row * LIST_COST < block


def _reduce(tl: TermList, mid: float, h: torch.Tensor, values: torch.Tensor | None):
    """``(lse (N,), mean (N, K) | None)`` over the listed terms of each row; ``mid``: the middle
    of the log-weights' drift since the list was made (:meth:`TermList.drift`)."""
    # Shift each row by its largest term at h0 plus the middle of the drift: the listed terms
    # then lie within about [-(T + 2 S + log M), S] of it (no overflow, no subnormals).
    shift = tl.maxima + mid  # (N,)
    w = torch.exp(h[tl.cols] + tl.cost - shift[tl.rows])  # (E,)
    sums = torch.zeros_like(shift).index_add_(0, tl.rows, w)
    lse = sums.log() + shift
    if values is None:
        return lse, None
    acc = values.new_zeros(len(shift), values.shape[1]).index_add_(0, tl.rows, w[:, None] * values[tl.cols])
    return lse, acc / sums[:, None]
