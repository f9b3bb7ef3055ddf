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

Truncation. Level 0 is solved densely. On finer levels each row sums only over the terms
``h_j - C_ij / eps`` within ``truncate`` of the row's largest (GeomLoss's kernel truncation):
a dropped term is below ``exp(-truncate)`` times the largest, so each soft-min moves by at
most ``eps log(1 + K_dropped exp(-truncate))``. The lists are found exactly, whatever the
potentials, by a nearest-neighbour query in one more dimension
(:func:`register.kernels.neighbours.lifted_neighbours`). Both directions (x rows among y, y
rows among x) get their own lists. When moving to a finer level, a child starts from its
parent's potential.

Rebuilds. Lists are built with a margin and kept while they stay exact: a smaller ``eps``
only widens the gaps between the terms of a row (up to twice the log-mass range, which the
margin covers), so a rebuild is due only on a new level or once a potential has moved by
more than ``margin * eps`` since the last build.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from register.kernels.dense import barycentre_dense, softmin_dense
from register.kernels.neighbours import (
    Neighbours,
    barycentre_neighbours,
    guided_neighbours,
    softmin_neighbours,
)
from register.ot.unbalanced import SinkhornResult, damping_factor, epsilon_schedule

log = logging.getLogger(__name__)

GRAPH_K = 64  # neighbours per point in the k-NN graphs that seed the list updates


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
    """One int64 key per point ``(N,)``: its voxel on a grid of size ``cell`` anchored at ``origin``
    (a 1-D key, so that ``torch.unique`` sorts scalars instead of rows)."""
    ijk = torch.floor((x - origin) / cell).to(torch.int64)  # (N, D), >= 0 for x >= origin
    key = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    for d in range(x.shape[1]):
        key = key * (int(ijk[:, d].max()) + 1) + ijk[:, d]
    return key


def cluster(x: torch.Tensor, mass: torch.Tensor, origin: torch.Tensor, cell: float):
    """Voxel clusters of ``x``: ``(labels (N,), centroids (C, D), masses (C,))``."""
    keys = voxel_keys(x, origin, cell)
    _, labels = torch.unique(keys, return_inverse=True)
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
        return max(len(torch.unique(voxel_keys(p, origin, cell))) for p in (x, y))

    cell = diameter
    while cell / 2 >= blur and count(cell / 2) <= coarse_clusters:
        cell /= 2
    cells = [cell]
    while cells[-1] / 2 >= blur and count(cells[-1] / 2) <= n_points / 2:
        cells.append(cells[-1] / 2)
    return cells


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
    truncate: float = 10.0,
    anneal_truncate: float = 5.0,
    margin: float = 2.0,
    max_neighbours: int = 256,
    anneal_neighbours: int = 64,
    warm: WarmStart | None = None,
) -> tuple[SinkhornResult, Neighbours, WarmStart]:
    """Unbalanced Sinkhorn on the hierarchy (module docstring); same contract as ``sinkhorn``.

    Args: as :func:`register.ot.unbalanced.sinkhorn`, plus
        coarse_clusters: most clusters per cloud on the coarsest (dense) level.
        truncate: log-terms more than this below their row's largest are dropped (final eps).
        anneal_truncate, anneal_neighbours: the same and the cap on the kept terms during the
            annealing, whose steps only prepare the potentials of the final one.
        margin: lists are built with ``truncate + 2 margin + 2 (log-mass range)`` and rebuilt once a
            potential has moved by more than ``margin * eps`` since.
        max_neighbours: cap on the kept terms per row.
        warm: potentials and displacements of a nearby problem (same clouds, source moved a
            little): the schedule starts at ``warm.blur`` on its level instead of ``diameter``.

    Returns:
        The potentials on the points, the final lists of ``x`` among ``y`` (for the barycentres
        of :func:`register.kernels.neighbours.barycentre_neighbours`), and the warm start of a
        next problem.
    """

    def damping(eps: float) -> float:
        return damping_factor(eps, reach)

    start = diameter if warm is None else max(warm.blur, blur)
    schedule = epsilon_schedule(start, blur, scaling)
    origin = torch.minimum(x.min(0).values, y.min(0).values)
    cells = grid_cells(x, y, origin, diameter, blur, coarse_clusters)
    xs, ys = hierarchy(x, a, cells, origin), hierarchy(y, b, cells, origin)
    points_level = len(cells)
    workers = torch.get_num_threads()

    def level_of(eps: float) -> int:
        """Coarsest level whose cell is at most the blur (level 0 for the largest blurs)."""
        blur_k = math.sqrt(eps)
        fine_enough = [i for i, c in enumerate(cells) if c <= blur_k]
        return fine_enough[0] if fine_enough else points_level

    state = _ListState()
    trees: dict[int, tuple] = {}
    graphs: dict[int, tuple] = {}

    def graphs_of(level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k-NN graphs ``(m, GRAPH_K)`` of the level's y and x points, nearest first (self included)."""
        if level not in graphs:
            out = []
            for tree in trees_of(level):  # each tree queried with its own points
                k = min(GRAPH_K, tree.n)
                _, i = tree.query(tree.data, k=k, workers=workers)
                out.append(torch.from_numpy(i.reshape(-1, k)).to(x.device))
            graphs[level] = tuple(out)
        return graphs[level]

    def trees_of(level: int) -> tuple:
        """k-d trees over the level's y and x points (built once per level)."""
        if level not in trees:
            from scipy.spatial import cKDTree

            trees[level] = tuple(
                cKDTree(c[level].points.detach().to("cpu", torch.float64).numpy()) for c in (ys, xs)
            )
        return trees[level]

    def softmin_x(eps: float, h: torch.Tensor) -> torch.Tensor:
        if state.nbx is None:
            return softmin_dense(eps, xs[0].points, ys[0].points, h)
        return softmin_neighbours(eps, state.nbx, h)

    def softmin_y(eps: float, h: torch.Tensor) -> torch.Tensor:
        if state.nby is None:
            return softmin_dense(eps, ys[0].points, xs[0].points, h)
        return softmin_neighbours(eps, state.nby, h)

    def displacements(level: int, eps: float, f: torch.Tensor, g: torch.Tensor):
        """Barycentric target minus position, for the rows of both directions at ``level``."""
        hx, hy = ys[level].log_mass + g / eps, xs[level].log_mass + f / eps
        if state.nbx is None:
            bx, _ = barycentre_dense(eps, xs[level].points, ys[level].points, hx, ys[level].points)
            by, _ = barycentre_dense(eps, ys[level].points, xs[level].points, hy, xs[level].points)
        else:
            bx, _ = barycentre_neighbours(eps, state.nbx, hx, ys[level].points)
            by, _ = barycentre_neighbours(eps, state.nby, hy, xs[level].points)
        return bx - xs[level].points, by - ys[level].points

    def refresh(level: int, eps: float, f: torch.Tensor, g: torch.Tensor, final: bool) -> None:
        """(Re)build the lists of ``level`` unless the current ones are still exact enough: on a new
        level, when the annealing ends (other truncation), or once a potential moved by more than
        ``margin * eps`` since the last build."""
        if level == 0:
            return
        fresh = state.level != level or state.final != final
        if not fresh and not state.stale(eps, f, g, margin):
            return
        graph_y, graph_x = graphs_of(level)
        if state.level == level:  # centre on the targets of the current lists ...
            state.ux, state.uy = displacements(level, eps, f, g)
            # ... and start from the graph neighbours of each row's best column (no tree query).
            anchor_x = _best_columns(state.nbx, ys[level].log_mass + g / eps, eps)
            anchor_y = _best_columns(state.nby, xs[level].log_mass + f / eps, eps)
        else:  # a new level: from the graph neighbours of the column nearest to each row's centre
            anchor_x, anchor_y = (
                _nearest(tree, points + u, workers)
                for tree, points, u in zip(
                    trees_of(level), (xs[level].points, ys[level].points), (state.ux, state.uy), strict=True
                )
            )
        first_x, first_y = graph_y[anchor_x], graph_x[anchor_y]
        rows, cols = xs[level], ys[level]
        # As eps falls a left-out term can gain up to twice the log-mass range on the row's best
        # (a closer point of smaller mass), and 2 margin from moving potentials: keep those.
        spread = max(_spread(rows.log_mass), _spread(cols.log_mass))
        keep = (truncate if final else anneal_truncate) + 2 * margin + 2 * spread
        tree_y, tree_x = trees_of(level)
        kw = {"k_max": max_neighbours if final else anneal_neighbours, "workers": workers}
        hx, hy = cols.log_mass + g / eps, rows.log_mass + f / eps
        state.nbx = guided_neighbours(
            rows.points, cols.points, hx, eps, keep, rows.points + state.ux, tree_y, first=first_x, **kw
        )
        state.nby = guided_neighbours(
            cols.points, rows.points, hy, eps, keep, cols.points + state.uy, tree_x, first=first_y, **kw
        )
        state.mark(level, f, g, final)

    cur = 0

    def descend(to: int, eps: float) -> None:
        """Carry potentials and displacements from level ``cur`` down to level ``to``."""
        nonlocal cur, f, g
        while cur < to:
            ux, uy = displacements(cur, eps, f, g) if cur == 0 or state.level == cur else (state.ux, state.uy)
            px, py = xs[cur].parent, ys[cur].parent
            f, g = f[px], g[py]  # a child starts from its parent's potential and displacement
            state.ux, state.uy = ux[px], uy[py]
            cur += 1

    eps = schedule[0]
    if warm is None:  # potentials of the trivial plan at the largest temperature
        f = damping(eps) * softmin_x(eps, ys[0].log_mass)
        g = damping(eps) * softmin_y(eps, xs[0].log_mass)
    else:  # the nearby problem's potentials and displacements, averaged onto the start level
        cur = level_of(eps)
        f, state.ux = (restrict(xs, cur, v) for v in (warm.f[:, None], warm.tx - x))
        g, state.uy = (restrict(ys, cur, v) for v in (warm.g[:, None], warm.ty - y))
        f, g = f[:, 0], g[:, 0]
    iterations = 0
    # Annealing: symmetric (averaged) updates of (1)-(2), each on its level.
    for eps in schedule:
        descend(level_of(eps), eps)
        refresh(cur, eps, f, g, final=False)
        ft = damping(eps) * softmin_x(eps, ys[cur].log_mass + g / eps)
        gt = damping(eps) * softmin_y(eps, xs[cur].log_mass + f / eps)
        f, g = (f + ft) / 2, (g + gt) / 2
        iterations += 1
    eps = schedule[-1]
    descend(points_level, eps)
    converged = False
    for _ in range(max_iter):
        refresh(cur, eps, f, g, final=True)
        f_new = damping(eps) * softmin_x(eps, ys[cur].log_mass + g / eps)
        g_new = damping(eps) * softmin_y(eps, xs[cur].log_mass + f_new / eps)
        change = max((f_new - f).abs().max().item(), (g_new - g).abs().max().item())
        f, g = f_new, g_new
        iterations += 1
        if change < tol * eps:
            converged = True
            break
    refresh(cur, eps, f, g, final=True)  # lists for the final potentials (the barycentres)
    log.debug("multiscale sinkhorn: %d levels, %d list builds", points_level + 1, state.builds)
    result = SinkhornResult(f=f, g=g, eps=eps, iterations=iterations, converged=converged)
    ux, uy = displacements(cur, eps, f, g)
    return result, state.nbx, WarmStart(f, g, x + ux, y + uy, blur)


@dataclass
class WarmStart:
    """What a next, nearby problem starts from (same clouds; the source moved a little).

    Attributes:
        f: ``(N,)`` and g: ``(M,)`` potentials on the points (squared length units).
        tx: ``(N, D)`` barycentric targets of the source points (where each one's plan row is
            centred); ty: ``(M, D)`` the same for the target points.
        blur: the blur they were computed at.
    """

    f: torch.Tensor
    g: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    blur: float


def restrict(levels: list[Level], level: int, values: torch.Tensor) -> torch.Tensor:
    """Mass-weighted means ``(n_level, V)`` of per-point ``values (n_points, V)`` over the
    clusters of ``level`` (the values themselves on the points level)."""
    labels = torch.arange(len(levels[-1].points), device=values.device)
    for lv in range(len(levels) - 2, level - 1, -1):  # points -> finest grid -> ... -> level
        labels = levels[lv].parent[labels]
    if level == len(levels) - 1:
        return values
    mass = levels[-1].log_mass.exp()[:, None]
    n = len(levels[level].points)
    total = torch.zeros(n, 1, dtype=values.dtype, device=values.device).index_add_(0, labels, mass)
    summed = torch.zeros(n, values.shape[1], dtype=values.dtype, device=values.device).index_add_(
        0, labels, mass * values
    )
    return summed / total.clamp_min(torch.finfo(values.dtype).tiny)


def _nearest(tree, points: torch.Tensor, workers: int) -> torch.Tensor:
    """``(N,)`` index of the nearest point of ``tree`` to each of ``points (N, D)``."""
    _, i = tree.query(points.detach().to("cpu", torch.float64).numpy(), k=1, workers=workers)
    return torch.from_numpy(i.reshape(-1)).to(points.device)


def _best_columns(nb: Neighbours, h: torch.Tensor, eps: float) -> torch.Tensor:
    """``(N,)`` the column of each row's largest log-term ``h_j - C_ij / eps`` in its list."""
    best = (h[nb.index] - nb.cost / eps).argmax(1, keepdim=True)
    return torch.gather(nb.index, 1, best)[:, 0]


def _spread(log_mass: torch.Tensor) -> float:
    """Range ``max - min`` of finite log-masses (0 for uniform masses)."""
    finite = log_mass[torch.isfinite(log_mass)]
    return float(finite.max() - finite.min()) if len(finite) else 0.0


class _ListState:
    """The current neighbour lists and the potentials they were built with."""

    def __init__(self) -> None:
        self.nbx: Neighbours | None = None
        self.nby: Neighbours | None = None
        self.level = -1
        self.f: torch.Tensor | None = None
        self.g: torch.Tensor | None = None
        self.ux: torch.Tensor | None = None  # (n, D) barycentric target - position, x rows
        self.uy: torch.Tensor | None = None  # (m, D) the same for y rows
        self.final = False  # whether the lists were built for the final eps
        self.builds = 0

    def stale(self, eps: float, f: torch.Tensor, g: torch.Tensor, margin: float) -> bool:
        """Whether a potential moved by more than ``margin * eps`` since the last build (then a
        term left out may now be within the truncation of its row's best; a smaller ``eps``
        alone only widens the gaps between the terms of a row, up to the log-mass range that
        the build keeps as margin)."""
        moved = max((f - self.f).abs().max().item(), (g - self.g).abs().max().item())
        return moved > margin * eps

    def mark(self, level: int, f: torch.Tensor, g: torch.Tensor, final: bool) -> None:
        self.level, self.f, self.g, self.final = level, f, g, final
        self.builds += 1
