"""Multiscale truncated unbalanced Sinkhorn: the sparse path for large clouds (CPU or GPU).

Same problem, updates and epsilon schedule as :func:`register.ot.unbalanced.sinkhorn`
(equations (1)-(3) there); what changes is where the soft-min sums run.

Hierarchy. Both clouds are clustered on nested voxel grids of cells ``s_0 > s_1 = s_0 / 2 >
...`` (a cluster carries the summed mass and the mass-weighted centroid of its points); the
finest level is the points themselves. Level 0 is the coarsest grid with at most
``coarse_clusters`` clusters per cloud.

Schedule. The temperature ``eps_k = blur_k^2`` of step ``k`` runs on the coarsest level whose
cell is at most ``blur_k`` (a measure blurred at ``blur_k`` barely changes when its points
move by less than a cell), or on the points when no grid is that fine.

Truncation. Level 0 is solved densely. On the way to a finer level the potentials are
carried over (a child starts with its parent's value) and each row keeps only the
candidates -- children of the columns its parent kept -- whose log-term
``h_j - C_ij / eps`` lies within ``truncate`` of the row's largest (GeomLoss's kernel
truncation). A dropped term is below ``exp(-truncate)`` times the largest, so each soft-min
moves by at most ``eps log(1 + K_dropped exp(-truncate))``. Rows keep at most ``max_neighbours``
candidates (the largest terms). Both directions (x rows among y, y rows among x) get their own
lists. Within a level the lists stay fixed while ``eps`` decreases: terms only become more
negligible relative to the largest one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from register.kernels.dense import softmin_dense
from register.kernels.neighbours import Neighbours, neighbour_cost, softmin_neighbours
from register.ot.unbalanced import SinkhornResult, damping_factor, epsilon_schedule


@dataclass
class Level:
    """One cloud at one level: ``points (n, D)``, ``log_mass (n,)`` and, for a grid level,
    ``parent (n_finer,)`` mapping each element of the next finer level to its cluster here.
    ``cell`` is the voxel size (0 for the points themselves)."""

    points: torch.Tensor
    log_mass: torch.Tensor
    cell: float
    parent: torch.Tensor | None = None


def voxel_keys(x: torch.Tensor, origin: torch.Tensor, cell: float) -> torch.Tensor:
    """Integer voxel coordinates ``(N, D)`` of ``x`` on a grid of size ``cell`` anchored at ``origin``."""
    return torch.floor((x - origin) / cell).to(torch.int64)


def cluster(x: torch.Tensor, mass: torch.Tensor, origin: torch.Tensor, cell: float):
    """Voxel clusters of ``x``: ``(labels (N,), centroids (C, D), masses (C,))``."""
    keys = voxel_keys(x, origin, cell)
    _, labels = torch.unique(keys, dim=0, return_inverse=True)
    n = int(labels.max()) + 1
    m = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, labels, mass)
    c = torch.zeros(n, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, mass[:, None] * x)
    return labels, c / m.clamp_min(torch.finfo(x.dtype).tiny)[:, None], m


def hierarchy(x: torch.Tensor, mass: torch.Tensor, cells: list[float], origin: torch.Tensor) -> list[Level]:
    """Levels of one cloud, coarse to fine: one per cell of ``cells`` (decreasing), then the points.

    Grids share ``origin`` and halve their cell, so they are nested: the cluster of a point at
    level ``l`` is the parent of its cluster at level ``l + 1``.
    """
    levels: list[Level] = []
    labels_prev = None
    for cell in cells:
        labels, centroids, m = cluster(x, mass, origin, cell)
        if labels_prev is not None:
            # parent of each fine cluster: the coarse label of any of its points.
            parent = torch.empty(len(centroids), dtype=torch.int64, device=x.device)
            parent[labels] = labels_prev
            levels[-1].parent = parent
        levels.append(Level(centroids, m.log(), cell))
        labels_prev = labels
    if labels_prev is not None:
        levels[-1].parent = labels_prev
    levels.append(Level(x, mass.log(), 0.0))
    return levels


def grid_cells(
    x: torch.Tensor, y: torch.Tensor, origin: torch.Tensor, diameter: float, blur: float, coarse_clusters: int
) -> list[float]:
    """Decreasing voxel sizes ``s_0, s_0/2, ...``: ``s_0`` the largest power-of-two fraction of the
    diameter giving at most ``coarse_clusters`` clusters per cloud... down to ``blur``.

    A grid finer than ``blur`` is never needed (the finest steps run on the points), nor one with
    more than about half as many clusters as points (no saving over the points). ``origin`` anchors
    the grids (the one :func:`hierarchy` uses).
    """
    n_points = max(len(x), len(y))

    def count(cell: float) -> int:
        return max(len(torch.unique(voxel_keys(p, origin, cell), dim=0)) for p in (x, y))

    cell = diameter
    while cell / 2 >= blur and count(cell / 2) <= coarse_clusters:
        cell /= 2
    cells = [cell]
    while cells[-1] / 2 >= blur and count(cells[-1] / 2) <= n_points / 2:
        cells.append(cells[-1] / 2)
    return cells


def _pack(
    rows: torch.Tensor, cols: torch.Tensor, score: torch.Tensor, n_rows: int, truncate: float, k_max: int
):
    """Keep, per row, the columns whose score is within ``truncate`` of the row max (at most
    ``k_max``, the largest); return padded ``(index (n_rows, K), valid (n_rows, K))``."""
    row_max = torch.full((n_rows,), -math.inf, dtype=score.dtype, device=score.device)
    row_max.scatter_reduce_(0, rows, score, "amax")
    keep = score >= row_max[rows] - truncate
    rows, cols, score = rows[keep], cols[keep], score[keep]
    # Sort by row, then by decreasing score; rank within the row.
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]
    rows, cols = rows[order], cols[order]
    counts = torch.bincount(rows, minlength=n_rows)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(rows), device=rows.device) - start[rows]
    keep = rank < k_max
    rows, cols, rank = rows[keep], cols[keep], rank[keep]
    k = max(int(counts.clamp(max=k_max).max()), 1)
    index = torch.zeros(n_rows, k, dtype=torch.int64, device=rows.device)
    valid = torch.zeros(n_rows, k, dtype=torch.bool, device=rows.device)
    index[rows, rank] = cols
    valid[rows, rank] = True
    return index, valid


def dense_neighbours(
    src: torch.Tensor, tgt: torch.Tensor, h: torch.Tensor, eps: float, truncate: float, k_max: int
) -> Neighbours:
    """Truncated lists of every ``src`` row among all of ``tgt`` (a small, dense level)."""
    n, m = len(src), len(tgt)
    index = torch.arange(m, device=h.device).expand(n, m)
    full = neighbour_cost(src, tgt, index, torch.ones(n, m, dtype=torch.bool, device=h.device))
    score = h[full.index] - full.cost / eps
    rows = torch.arange(n, device=h.device)[:, None].expand(n, m).reshape(-1)
    idx, ok = _pack(rows, full.index.reshape(-1), score.reshape(-1), n, truncate, k_max)
    return neighbour_cost(src, tgt, idx, ok)


def prune_neighbours(
    nb: Neighbours, src: torch.Tensor, tgt: torch.Tensor, h: torch.Tensor, eps: float, truncate: float
) -> Neighbours:
    """Drop the terms of existing lists that fell more than ``truncate`` below their row's
    largest at the (smaller) temperature ``eps``; shrinks ``K``."""
    score = h[nb.index] - nb.cost / eps  # -inf on padding
    n, k = score.shape
    rows = torch.arange(n, device=h.device)[:, None].expand(n, k).reshape(-1)
    ok = torch.isfinite(nb.cost).reshape(-1)
    idx, valid = _pack(rows[ok], nb.index.reshape(-1)[ok], score.reshape(-1)[ok], n, truncate, k)
    return neighbour_cost(src, tgt, idx, valid)


def children_table(parent: torch.Tensor, n_coarse: int) -> torch.Tensor:
    """``(n_coarse, W)`` indices of the fine elements of each coarse cluster, ``-1``-padded
    (``W`` = the largest number of children)."""
    order = torch.argsort(parent, stable=True)
    counts = torch.bincount(parent, minlength=n_coarse)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(parent), device=parent.device) - start[parent[order]]
    table = torch.full((n_coarse, max(int(counts.max()), 1)), -1, dtype=torch.int64, device=parent.device)
    table[parent[order], rank] = order
    return table


def refine_neighbours(
    nb: Neighbours,
    src: torch.Tensor,
    src_parent: torch.Tensor,
    tgt: torch.Tensor,
    tgt_parent: torch.Tensor,
    n_coarse_tgt: int,
    h: torch.Tensor,
    eps: float,
    truncate: float,
    k_max: int,
    chunk_entries: int = 4_000_000,
) -> Neighbours:
    """Lists of the finer-level rows ``src (n, D)`` among the finer-level columns ``tgt (m, D)``.

    Args:
        nb: coarse lists (coarse rows among the ``n_coarse_tgt`` coarse columns).
        src_parent: ``(n,)`` coarse row of each fine row; tgt_parent: ``(m,)`` likewise.
        h: ``(m,)`` fine log-weights ``log b_j + g_j / eps``.

    Candidates of a row are the children of the columns its parent kept (a padded
    ``(rows, K_coarse * W)`` block); kept are the log-terms ``h_j - C_ij / eps`` within
    ``truncate`` of the row's largest, at most ``k_max`` (the largest). Rows are processed in
    chunks of about ``chunk_entries`` candidates (bounded memory).
    """
    n = len(src)
    table = children_table(tgt_parent, n_coarse_tgt)  # (M_coarse, W)
    width = nb.k * table.shape[1]
    step = max(1, chunk_entries // width)
    idx_out, ok_out = [], []
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        parent_rows = src_parent[rows]
        cand = table[nb.index[parent_rows]]  # (r, K_coarse, W)
        cand = torch.where(torch.isfinite(nb.cost[parent_rows])[:, :, None], cand, -1).reshape(len(cand), -1)
        ok = cand >= 0
        cand = cand.clamp(min=0)
        diff = src[rows][:, None, :] - tgt[cand]
        score = h[cand] - (diff * diff).sum(-1) / (2 * eps)
        score = torch.where(ok, score, -math.inf)
        row_max = score.max(1, keepdim=True).values
        keep = score >= row_max - truncate
        k = max(1, min(k_max, int(keep.sum(1).max())))
        top, where = torch.topk(score, k, dim=1)
        idx_out.append(torch.gather(cand, 1, where))
        ok_out.append(top >= row_max - truncate)
    k = max(i.shape[1] for i in idx_out)
    index = torch.cat([torch.nn.functional.pad(i, (0, k - i.shape[1])) for i in idx_out])
    valid = torch.cat([torch.nn.functional.pad(o, (0, k - o.shape[1])) for o in ok_out])
    return neighbour_cost(src, tgt, index, valid)


def sinkhorn_multiscale(
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    blur: float,
    reach: float = math.inf,
    diameter: float,
    scaling: float = 0.5,
    tol: float = 1e-3,
    max_iter: int = 200,
    coarse_clusters: int = 2000,
    truncate: float = 12.0,
    max_neighbours: int = 256,
) -> tuple[SinkhornResult, Neighbours]:
    """Unbalanced Sinkhorn on the hierarchy (module docstring); same contract as ``sinkhorn``.

    Args: as :func:`register.ot.unbalanced.sinkhorn`, plus
        coarse_clusters: most clusters per cloud on the coarsest (dense) level.
        truncate: log-terms more than this below their row's largest are dropped.
        max_neighbours: cap on the kept terms per row.

    Returns:
        The potentials on the points and the final lists of ``x`` among ``y`` (for the
        barycentres of :func:`register.kernels.neighbours.barycentre_neighbours`).
    """

    def damping(eps: float) -> float:
        return damping_factor(eps, reach)

    schedule = epsilon_schedule(diameter, blur, scaling)
    origin = torch.minimum(x.min(0).values, y.min(0).values)
    cells = grid_cells(x, y, origin, diameter, blur, coarse_clusters)
    xs, ys = hierarchy(x, a, cells, origin), hierarchy(y, b, cells, origin)
    points_level = len(cells)

    def level_of(eps: float) -> int:
        """Coarsest level whose cell is at most the blur (level 0 for the largest blurs)."""
        blur_k = math.sqrt(eps)
        fine_enough = [i for i, c in enumerate(cells) if c <= blur_k]
        return fine_enough[0] if fine_enough else points_level

    cur = 0
    nbx = nby = None  # None: the dense level 0

    def softmin_x(eps: float, h: torch.Tensor) -> torch.Tensor:
        if nbx is None:
            return softmin_dense(eps, xs[0].points, ys[0].points, h)
        return softmin_neighbours(eps, nbx, h)

    def softmin_y(eps: float, h: torch.Tensor) -> torch.Tensor:
        if nby is None:
            return softmin_dense(eps, ys[0].points, xs[0].points, h)
        return softmin_neighbours(eps, nby, h)

    def descend(to: int, eps: float) -> None:
        """Move potentials and lists from level ``cur`` down to level ``to``."""
        nonlocal cur, f, g, nbx, nby, pruned_at
        while cur < to:
            if nbx is None:  # leaving the dense level: truncate it first
                nbx = dense_neighbours(
                    xs[0].points, ys[0].points, ys[0].log_mass + g / eps, eps, truncate, max_neighbours
                )
                nby = dense_neighbours(
                    ys[0].points, xs[0].points, xs[0].log_mass + f / eps, eps, truncate, max_neighbours
                )
            px, py = xs[cur].parent, ys[cur].parent
            f, g = f[px], g[py]  # a child starts from its parent's potential
            nxt = cur + 1

            # Lists of the level-nxt rows among the level-nxt columns, in both directions.
            nbx, nby = (
                refine_neighbours(
                    nb,
                    rows[nxt].points,
                    row_parent,
                    cols[nxt].points,
                    col_parent,
                    len(cols[cur].points),
                    cols[nxt].log_mass + col_potential / eps,
                    eps,
                    truncate,
                    max_neighbours,
                )  # fmt: skip
                for nb, rows, row_parent, cols, col_parent, col_potential in (
                    (nbx, xs, px, ys, py, g),
                    (nby, ys, py, xs, px, f),
                )
            )
            cur = nxt
            pruned_at = eps  # the new lists were truncated at this temperature

    pruned_at = math.inf  # temperature of the last truncation of the current lists

    def prune(eps: float) -> None:
        """Re-truncate the lists once ``eps`` has dropped 4x since they were last truncated."""
        nonlocal nbx, nby, pruned_at
        if nbx is None or eps > pruned_at / 4:
            return
        nbx = prune_neighbours(nbx, xs[cur].points, ys[cur].points, ys[cur].log_mass + g / eps, eps, truncate)
        nby = prune_neighbours(nby, ys[cur].points, xs[cur].points, xs[cur].log_mass + f / eps, eps, truncate)
        pruned_at = eps

    eps = schedule[0]
    f = damping(eps) * softmin_x(eps, ys[0].log_mass)
    g = damping(eps) * softmin_y(eps, xs[0].log_mass)
    iterations = 0
    # Annealing: symmetric (averaged) updates of (1)-(2), each on its level.
    for eps in schedule:
        descend(level_of(eps), eps)
        prune(eps)
        ft = damping(eps) * softmin_x(eps, ys[cur].log_mass + g / eps)
        gt = damping(eps) * softmin_y(eps, xs[cur].log_mass + f / eps)
        f, g = (f + ft) / 2, (g + gt) / 2
        iterations += 1
    eps = schedule[-1]
    descend(points_level, eps)
    prune(eps)
    converged = False
    for _ in range(max_iter):
        f_new = damping(eps) * softmin_x(eps, ys[cur].log_mass + g / eps)
        g_new = damping(eps) * softmin_y(eps, xs[cur].log_mass + f_new / eps)
        change = max((f_new - f).abs().max().item(), (g_new - g).abs().max().item())
        f, g = f_new, g_new
        iterations += 1
        if change < tol * eps:
            converged = True
            break
    return SinkhornResult(f=f, g=g, eps=eps, iterations=iterations, converged=converged), nbx
