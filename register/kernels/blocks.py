"""Block-sparse log-sum-exp reductions with a certificate: exact to a set tolerance, vectorised.

The reductions of Sinkhorn (soft-min and barycentres) sum, for each ``x_i``, the terms

    s_ij = h_j - C_ij / eps,        C_ij = |x_i - y_j|^2 / 2

over all ``j``. At a fine temperature almost all of them are negligible against the row's
largest. Here both clouds are cut into blocks of at most ``P`` points that are close in
space (the leaves of a balanced k-d partition, each with its bounding box), and for every
pair of blocks ``(I, J)``

    upper   U(I, J) = max_{j in J} h_j - dist(box_I, box_J)^2 / (2 eps)  >= s_ij   (i in I, j in J)
    lower   L(I)    = min_{i in I} max_{j in probes(I)} s_ij             <= max_j s_ij  (i in I)

where ``probes(I)`` are the two column blocks of largest ``U(I, .)`` (computed exactly: a few
per cent of the work). The terms of pair ``(I, J)`` sum to at most ``|J| exp(U(I, J))`` in each
row of ``I``; a pair is skipped when that bound is below ``exp(L(I) - TRUNCATE) / B_cols``, so
the skipped pairs of a row, at most ``B_cols`` of them, sum to less than ``exp(-TRUNCATE)`` of
its largest term, hence of its sum: the soft-min moves by at most ``eps * exp(-TRUNCATE)``
(3.4e-4 eps, under Sinkhorn's stopping tolerance of 1e-3 eps). Nothing is guessed: whatever the
potentials, the bound holds. (Budgeting the skipped pairs of a row together, smallest bounds
first, keeps ~10 % fewer pairs at coarse blurs and as many at fine ones, but its per-row sort
cost more than it saved: 30k-point copd1 pair, the matchings of a registration 10-20 % faster
without it.)

The blocks (:mod:`register.kernels.partition`). Rows and columns are cut differently: row blocks of ``ROW_BLOCK`` points, column blocks of
``BLOCK``. At fine blurs a 64-point block of a vessel tree is much wider than the blur, and its
box keeps every column block near any of its points; 16-point row blocks keep 2.3x fewer
entries at a blur of 1 mm (10k-point copd1 pair) while the products stay wide enough
(``(16, D + 2) x (D + 2, 64)``) for the batched kernels: that matching 25 % faster, one thread.
(16-point blocks on both sides cost 2.6x more per entry than they saved.)

The kept pairs are computed as batched dense ``(P_rows, P_cols)`` blocks (one ``bmm`` of augmented
coordinates, vectorised ``exp``), ``CHUNK_ENTRIES`` entries at a time (more on several threads), each row shifted by
one value (log-sum-exp trick, see :func:`_reduce_pairs`). Cost ``O(kept pairs * P^2)``
instead of ``O(N M)``; at coarse temperatures every pair is kept and the cost is that of
:mod:`register.kernels.dense`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from register.kernels.partition import BLOCK, Blocks, make_nested_blocks

# Most points per row block. Copd1 pair (30k points, the lung preset's matchings): rows / columns
# of 16 / 64 points fastest; 8 / 64, 16 / 32 and 64 / 64 10-30 % slower, 16 / 128 and 32 / 128
# within noise of 16 / 64.
ROW_BLOCK = 16
# The skipped terms of a row sum to less than exp(-TRUNCATE) of its largest. 8 and 16 gave
# identical matches (float32) on a 10k-point vessel pair at blurs of 1-8 mm, 8 in 20 % less
# time at 8 mm.
TRUNCATE = 8.0
# Kernel entries per batched pass: 2 MB of float32 (cache-resident) on one thread; on two, 8 MB
# (each of the ~5 passes over a chunk wakes the thread pool: the 30k copd1 pair's matchings 8 %
# faster than with 2 MB, 4 % than with 16 MB).
CHUNK_ENTRIES = 1 << 19
CHUNK_ENTRIES_THREADED = 1 << 21
_EXP_FLOOR = -80.0  # exp() below this is subnormal in float32 (slow path): clamp first
_PAD = -1e30  # log-weight of padding slots (exp -> 0)


@dataclass
class Plan:
    """Which block pairs a reduction computes, and the shift of each row's log-terms.

    Attributes:
        i, j: ``(K,)`` row and column block of each kept pair, sorted by ``i``.
        shift: ``(B_rows, P)`` a lower bound of each row's largest term (a real term, from the
            probes).
    """

    i: torch.Tensor
    j: torch.Tensor
    shift: torch.Tensor


def plan_pairs(
    eps: float,
    rows: Blocks,
    cols: Blocks,
    h: torch.Tensor,
    coords: tuple[torch.Tensor, torch.Tensor],
    truncate: float,
    probes: int = 2,
) -> Plan:
    """The block pairs whose terms may matter (module docstring). ``h``: ``(B_cols, P)``
    log-weights in block layout; ``coords``: the :func:`_augmented` coordinates of both;
    ``truncate``: the skipped terms of a row sum to less than ``exp(-truncate)`` of its largest.

    The lower bound ``L(I)`` is exact work on a few pairs: every row of ``I`` takes its largest
    term ``b_i`` over the ``probes`` column blocks of highest upper bound, and ``L(I)`` is the
    least of these over the rows of ``I`` (each is a real term, so a valid lower bound).
    """
    h_max = h.amax(1)  # (Bc,)
    log_count = cols.valid.sum(1).clamp_min(1).to(h.dtype).log()  # (Bc,) log |J|
    p_rows = rows.points.shape[1]
    step = max(1, (1 << 22) // max(1, len(h) * rows.lo.shape[1]))
    keep_parts, shift_parts = [], []
    for start in range(0, len(rows.lo), step):
        block = slice(start, start + step)
        lo, hi = rows.lo[block, None, :], rows.hi[block, None, :]
        gap = torch.maximum(cols.lo[None] - hi, lo - cols.hi[None]).clamp_min(0)  # (bI, Bc, D)
        upper = h_max[None] - (gap * gap).sum(-1) / (2 * eps)  # (bI, Bc): U(I, J)
        best = upper.topk(min(probes, len(h)), dim=1).indices  # (bI, probes)
        ii = torch.arange(start, start + len(best), device=h.device)[:, None].expand_as(best)
        row_max = _pair_row_max(coords, ii.reshape(-1), best.reshape(-1))
        row_best = row_max.view(len(best), -1, p_rows).amax(1)  # (bI, P): b_i, max over probes
        lower = row_best.masked_fill(~rows.valid[block], math.inf).amin(1, keepdim=True)  # (bI, 1)
        # Keep unless |J| exp(U(I, J)) < exp(L(I) - truncate) / B_cols (module docstring).
        keep_parts.append(upper + log_count[None] >= lower - truncate - math.log(len(h)))
        shift_parts.append(row_best)
    i, j = torch.cat(keep_parts).nonzero(as_tuple=True)
    return Plan(i, j, torch.cat(shift_parts))


def _augmented(eps: float, rows: Blocks, cols: Blocks, h: torch.Tensor):
    """Coordinates with ``<X_i, Y_j> = h_j - C_ij / eps`` (one batched product per block pair):
    ``X_i = [x_i / eps, -|x_i|^2 / (2 eps), 1]``, ``Y_j = [y_j, 1, h_j - |y_j|^2 / (2 eps)]``;
    shapes ``(B_rows, P, D + 2)`` and ``(B_cols, P, D + 2)``."""
    row_const = -rows.half_sq / eps
    xa = torch.cat([rows.points / eps, row_const[..., None], torch.ones_like(row_const)[..., None]], -1)
    ya = torch.cat([cols.points, torch.ones_like(h)[..., None], (h - cols.half_sq / eps)[..., None]], -1)
    return xa, ya


def _pair_row_max(coords: tuple[torch.Tensor, torch.Tensor], i: torch.Tensor, j: torch.Tensor):
    """``(K, P)`` largest log-term ``h_j - C_ij / eps`` of each row over block pair ``(i, j)``,
    from the :func:`_augmented` coordinates ``coords``."""
    xa, ya = coords
    return torch.bmm(xa[i], ya[j].transpose(1, 2)).amax(2)


class BlockReducer:
    """The reductions of Sinkhorn between two fixed clouds, both cut into blocks once.

    ``x (N, D)`` and ``y (M, D)`` are partitioned when the reducer is made (a k-d partition,
    ~40 ms for 10k points); every call then only computes the bounds (``O(B_x B_y)``) and the
    kept block pairs. Both directions are served (rows ``x`` among ``y`` and the reverse).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        truncate: float = TRUNCATE,
        size: int = BLOCK,
        row_size: int = ROW_BLOCK,
    ):
        # Each cloud twice, from one k-d partition: column blocks of ``size`` points, row blocks
        # of ``row_size``.
        self.bx, self.rx = make_nested_blocks(x, (size, row_size))
        self.by, self.ry = make_nested_blocks(y, (size, row_size))
        self.truncate = truncate
        self.pairs_kept = 0  # block pairs computed by the last call
        self.pairs_total = 0  # of all the block pairs
        self.entries_per_row = 0.0  # kernel entries per row computed by the last call
        self._maxima: dict[bool, tuple[float, torch.Tensor]] = {}  # per direction: eps, row maxima

    def _blocks(self, rows_are_x: bool) -> tuple[Blocks, Blocks]:
        """(row blocks, column blocks) of one direction."""
        return (self.rx, self.by) if rows_are_x else (self.ry, self.bx)

    def softmin(self, eps: float, h: torch.Tensor, rows_are_x: bool = True) -> torch.Tensor:
        """``-eps log sum_j exp(h_j - C_ij / eps)`` for the rows of one cloud over the other
        (``h``: log-weights of the other cloud); as :func:`register.kernels.dense.softmin_dense`."""
        lse, _ = self._reduce(eps, *self._blocks(rows_are_x), h, None)
        return -eps * lse

    def barycentre(
        self, eps: float, h: torch.Tensor, values: torch.Tensor, rows_are_x: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, K)`` weighted means of ``values (M, K)`` and ``(N,)`` log-sums, as
        :func:`register.kernels.dense.barycentre_dense`."""
        lse, avg = self._reduce(eps, *self._blocks(rows_are_x), h, values)
        return avg, lse

    def large_terms(
        self, eps: float, h: torch.Tensor, rows_are_x: bool, slack: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Terms that include, in each row, all those within ``truncate + slack + log M`` of its
        largest: ``rows (E,)`` and ``cols (E,)`` point indices, rows non-decreasing (``h (M,)``:
        log-weights of the other cloud, ``M`` its size; terms ``h_j - C_ij / eps``).

        Every term left out is below ``exp(-truncate - slack - log M)`` of its row's largest or
        in a block pair skipped at truncation ``truncate + slack``: the terms left out of a row
        sum to less than ``2 exp(-truncate - slack)`` of its largest (see
        :class:`register.kernels.lists.ListReducer`). One pass over the kept pairs: the floor
        of each row is taken from the plan's probe maximum (a real term, at most the largest),
        so a few more terms than needed may be listed.
        """
        rows, cols = self._blocks(rows_are_x)
        hb = cols.gather(h, _PAD)
        coords = _augmented(eps, rows, cols, hb)
        plan = plan_pairs(eps, rows, cols, hb, coords, self.truncate + slack)
        i, j = plan.i, plan.j
        xa, ya = coords
        floor = plan.shift - self.truncate - slack - math.log(cols.n)  # (B_rows, P)
        floor.masked_fill_(~rows.valid, math.inf)
        row_point, col_point = _slot_points(rows), _slot_points(cols)
        p_rows, p_cols = xa.shape[1], ya.shape[1]
        step = _chunk(xa, ya)
        found_rows, found_cols = [], []
        for start in range(0, len(i), step):
            ic, jc = i[start : start + step], j[start : start + step]
            s = torch.bmm(xa[ic], ya[jc].transpose(1, 2))  # (k, P_rows, P_cols)
            k, r, c = (s >= floor[ic][:, :, None]).nonzero(as_tuple=True)
            found_rows.append(row_point[ic[k] * p_rows + r])
            found_cols.append(col_point[jc[k] * p_cols + c])
        r_idx, c_idx = torch.cat(found_rows), torch.cat(found_cols)
        order = torch.argsort(r_idx, stable=True)
        return r_idx[order], c_idx[order]

    def _reduce(self, eps, rows: Blocks, cols: Blocks, h, values):
        hb = cols.gather(h, _PAD)  # (Bc, P)
        coords = _augmented(eps, rows, cols, hb)
        plan = plan_pairs(eps, rows, cols, hb, coords, self.truncate)
        self.pairs_kept, self.pairs_total = len(plan.i), len(rows.lo) * len(cols.lo)
        self.entries_per_row = self.pairs_kept * rows.points.shape[1] * cols.points.shape[1] / rows.n
        vb = None if values is None else cols.gather(values, 0.0)
        # The row maxima of the previous call in this direction at the same eps (Sinkhorn's
        # fixed-point iterations: the potentials, hence the maxima, move little between calls).
        key = rows is self.rx
        last = self._maxima.get(key)
        hint = last[1] if last is not None and last[0] == eps else None
        lse, avg, maxima = _reduce_pairs(rows, coords, vb, plan, hint)
        self._maxima[key] = (eps, maxima)
        return lse, avg


# With a hint, a row is recomputed unless its shifted sum lies in [exp(-HINT_LOW), finite]:
# then its largest term is at least hint - HINT_LOW - log M, so the terms that matter (within
# ``truncate`` of it) stay above _EXP_FLOOR for M up to 1e6 and truncate up to 30.
HINT_LOW = 30.0


def _reduce_pairs(rows: Blocks, coords: tuple[torch.Tensor, torch.Tensor], vb, plan: Plan, hint=None):
    """Log-sum-exp over the kept block pairs, per row: ``(lse (N,), mean (N, K) | None, maxima)``
    with ``coords`` the :func:`_augmented` coordinates and ``vb (Bc, P, K)`` the values in block
    layout; ``maxima (B_rows, P)`` the shifts used (row maxima, or the hint where it was kept).

    Each row's terms are exponentiated against one shift ``m_i`` (log-sum-exp trick): its
    largest term (a first pass over the kept pairs), or, given ``hint (B_rows, P)`` (the maxima
    of a nearby call), the hint itself where the shifted sum shows it was close enough (no
    overflow, no loss of the terms that matter; other rows are redone with their maxima).
    Shifts from the bounds alone would be too loose at fine temperatures (blocks much wider
    than the blur). Per-pair partial results go to buffers and are combined per row once
    (few large operations: each one wakes the thread pool).
    """
    i, j = plan.i, plan.j
    xa, ya = coords
    xi, yj = xa[i], ya[j].transpose(1, 2)  # (K, P, D + 2), (K, D + 2, P): gathered once
    vj = None if vb is None else vb[j]
    work = xa.new_empty(min(_chunk(xa, ya), len(i)), xa.shape[1], ya.shape[1])
    if hint is None:
        shift = _row_maxima(xi, yj, i, plan.shift.clone(), work)
        sums, acc = _shifted_sums(xi, yj, vj, i, shift, work)
    else:
        shift = hint.clone()
        sums, acc = _shifted_sums(xi, yj, vj, i, shift, work)
        bad = ~torch.isfinite(sums) | (sums < math.exp(-HINT_LOW))  # (B_rows, P)
        if acc is not None:
            bad |= ~torch.isfinite(acc).all(-1)
        bad_blocks = bad.any(1)
        if bool(bad_blocks.any()):
            redo = bad_blocks[i]
            ri, rxi, ryj = i[redo], xi[redo], yj[redo]
            rvj = None if vj is None else vj[redo]
            fresh = _row_maxima(rxi, ryj, ri, plan.shift.clone(), work)
            sums2, acc2 = _shifted_sums(rxi, ryj, rvj, ri, fresh, work)
            shift[bad_blocks], sums[bad_blocks] = fresh[bad_blocks], sums2[bad_blocks]
            if acc is not None:
                acc[bad_blocks] = acc2[bad_blocks]
    lse = rows.scatter(sums.log() + shift)
    avg = None if acc is None else rows.scatter(acc / sums[:, :, None])
    return lse, avg, shift


def _slot_points(blocks: Blocks) -> torch.Tensor:
    """``(B * P,)`` the point in each slot of the block layout, -1 on padding."""
    out = torch.full((blocks.valid.numel(),), -1, dtype=torch.int64, device=blocks.order.device)
    out[blocks.slots] = blocks.order
    return out


def _chunk(xa: torch.Tensor, ya: torch.Tensor) -> int:
    """Block pairs per batched pass: ``CHUNK_ENTRIES`` kernel entries (``CHUNK_ENTRIES_THREADED``
    when torch runs several threads)."""
    entries = CHUNK_ENTRIES if torch.get_num_threads() == 1 else CHUNK_ENTRIES_THREADED
    return max(1, entries // (xa.shape[1] * ya.shape[1]))


def _row_maxima(xi, yj, i: torch.Tensor, shift: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
    """Largest log-term of each row over the pairs ``i`` (``xi (K, P, D + 2)``, ``yj (K, D + 2, P)``
    gathered per pair), at least ``shift (B_rows, P)`` (updated in place and returned)."""
    step = len(work)
    part = xi.new_empty(len(i), xi.shape[1])
    for start in range(0, len(i), step):
        chunk = slice(start, start + step)
        s = torch.bmm(xi[chunk], yj[chunk], out=work[: len(xi[chunk])])
        torch.amax(s, 2, out=part[chunk])
    return shift.scatter_reduce_(0, i[:, None].expand_as(part), part, "amax")


def _shifted_sums(xi, yj, vj, i: torch.Tensor, shift: torch.Tensor, work: torch.Tensor):
    """``sum_j exp(s_ij - shift_i)`` ``(B_rows, P)`` over the pairs ``i`` and, with the values
    ``vj (K, P, V)`` of each pair's columns, ``sum_j exp(s_ij - shift_i) v_j`` ``(B_rows, P, V)``."""
    step = len(work)
    xs = xi.clone()
    xs[..., -2] -= shift[i]  # <X_i, Y_j> = s_ij - shift_i (the row constant of _augmented)
    part = xi.new_empty(len(i), xi.shape[1])
    vals = None if vj is None else xi.new_empty(len(i), xi.shape[1], vj.shape[-1])
    for start in range(0, len(i), step):
        chunk = slice(start, start + step)
        k = torch.bmm(xs[chunk], yj[chunk], out=work[: len(xs[chunk])]).clamp_(min=_EXP_FLOOR).exp_()
        torch.sum(k, 2, out=part[chunk])
        if vals is not None:
            torch.bmm(k, vj[chunk], out=vals[chunk])
    sums = torch.zeros_like(shift).index_add_(0, i, part)
    acc = None if vals is None else xi.new_zeros(*shift.shape, vj.shape[-1]).index_add_(0, i, vals)
    return sums, acc
