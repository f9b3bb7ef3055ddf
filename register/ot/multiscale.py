"""Multiscale block-sparse unbalanced Sinkhorn: the fast CPU path for large clouds.

Same problem, updates and epsilon schedule as :func:`register.ot.unbalanced.sinkhorn`
(equations (1)-(3) there); what changes is where the soft-min sums run.

Hierarchy. Both clouds are clustered on nested voxel grids of cells ``s_0 > s_1 = s_0 / 2 >
...`` (a cluster carries the summed mass and the mass-weighted centroid of its points); the
finest level is the points themselves. Level 0 is the coarsest grid with at most
``coarse_clusters`` clusters per cloud.

Schedule. The temperature ``eps_k = blur_k^2`` of step ``k`` runs on the coarsest level whose
cell is at most ``blur_k`` (a measure blurred at ``blur_k`` barely changes when its points
move by less than a cell), or on the points when no grid is that fine. When moving to a finer
level, a child starts from its parent's potential.

Reductions. Every soft-min of a level runs on :class:`register.kernels.blocks.BlockReducer`:
the level's clouds are cut into blocks of nearby points once, and each call skips the block
pairs whose terms are certified negligible (box bounds; no heuristic, whatever the
potentials). At fine temperatures that is a few per cent of the pairs. The fixed-point
iterations at the final temperature (after the first) run on
:class:`register.kernels.lists.ListReducer`: certified per-row lists of the terms that matter,
where those are short enough to pay; the block reductions otherwise.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from register.kernels.blocks import TRUNCATE, BlockReducer
from register.kernels.lists import ListReducer
from register.ot.unbalanced import SinkhornResult, damping_factor, epsilon_schedule

log = logging.getLogger(__name__)


@dataclass
class Level:
    """One cloud at one level: ``points (n, D)``, ``log_mass (n,)`` and, for a grid level,
    ``parent (n_finer,)`` mapping each element of the next finer level to its cluster here."""

    points: torch.Tensor
    log_mass: torch.Tensor
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
        levels.append(Level(centroids, m.log()))
        labels_prev = labels
    if labels_prev is not None:
        levels[-1].parent = labels_prev
    levels.append(Level(x, mass.log()))
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
    truncate: float = TRUNCATE,
    warm: WarmStart | None = None,
    target_reach: float | None = None,
) -> tuple[SinkhornResult, ListReducer, WarmStart]:
    """Unbalanced Sinkhorn on the hierarchy (module docstring); same contract as ``sinkhorn``.

    Args: as :func:`register.ot.unbalanced.sinkhorn`, plus
        coarse_clusters: most clusters per cloud on the coarsest level.
        truncate: skipped terms of a row sum to less than ``exp(-truncate)`` of it.
        warm: potentials of a nearby problem (same clouds, source moved a little): the schedule
            starts at ``warm.blur`` on its level instead of ``diameter``.
        target_reach: the target marginal's reach (None: ``reach``), as in ``sinkhorn``.

    Returns:
        The potentials on the points, the points' reducer (for the barycentres of the
        matching), and the warm start of a next problem.
    """

    target_reach = reach if target_reach is None else target_reach

    def damping_x(eps: float) -> float:
        return damping_factor(eps, reach)

    def damping_y(eps: float) -> float:
        return damping_factor(eps, target_reach)

    start = diameter if warm is None else max(warm.blur, blur)
    schedule = epsilon_schedule(start, blur, scaling)
    origin = torch.minimum(x.min(0).values, y.min(0).values)
    cells = grid_cells(x, y, origin, diameter, blur, coarse_clusters)
    xs, ys = hierarchy(x, a, cells, origin), hierarchy(y, b, cells, origin)
    points_level = len(cells)
    reducers: dict[int, BlockReducer] = {}

    def reducer(level: int) -> BlockReducer:
        """The level's blocks, cut once."""
        if level not in reducers:
            reducers[level] = BlockReducer(xs[level].points, ys[level].points, truncate)
        return reducers[level]

    def level_of(eps: float) -> int:
        """Coarsest level whose cell is at most the blur (level 0 for the largest blurs)."""
        blur_k = math.sqrt(eps)
        fine_enough = [i for i, c in enumerate(cells) if c <= blur_k]
        return fine_enough[0] if fine_enough else points_level

    def update_f(level: int, eps: float, g: torch.Tensor) -> torch.Tensor:
        """(1) on ``level``: ``f = damping_x * softmin(C, log b + g / eps)``."""
        return damping_x(eps) * reducer(level).softmin(eps, ys[level].log_mass + g / eps, rows_are_x=True)

    def update_g(level: int, eps: float, f: torch.Tensor) -> torch.Tensor:
        """(2) on ``level``: ``g = damping_y * softmin(C^T, log a + f / eps)``."""
        return damping_y(eps) * reducer(level).softmin(eps, xs[level].log_mass + f / eps, rows_are_x=False)

    eps = schedule[0]
    cur = 0 if warm is None else level_of(eps)
    if warm is None:  # potentials of the trivial plan at the largest temperature
        f = update_f(cur, eps, torch.zeros(len(ys[cur].points), dtype=x.dtype, device=x.device))
        g = update_g(cur, eps, torch.zeros(len(xs[cur].points), dtype=x.dtype, device=x.device))
    else:  # the nearby problem's potentials, averaged onto the start level
        f = restrict(xs, cur, warm.f[:, None])[:, 0]
        g = restrict(ys, cur, warm.g[:, None])[:, 0]

    def descend(to: int) -> None:
        """Carry the potentials from level ``cur`` down to level ``to`` (child = parent's value)."""
        nonlocal cur, f, g
        while cur < to:
            f, g = f[xs[cur].parent], g[ys[cur].parent]
            cur += 1

    iterations = 0
    # Annealing: symmetric (averaged) updates of (1)-(2), each on its level.
    for eps in schedule:
        descend(level_of(eps))
        ft, gt = update_f(cur, eps, g), update_g(cur, eps, f)
        f, g = (f + ft) / 2, (g + gt) / 2
        iterations += 1
    eps = schedule[-1]
    descend(points_level)
    converged = False
    # Fixed-point iterations at the final temperature on certified term lists (made from the
    # points' blocks; the first iteration, whose potentials jump the most, on the blocks).
    lists = ListReducer(reducer(points_level), xs[-1].points, ys[-1].points)
    for k in range(max_iter):
        red = reducer(points_level) if k == 0 else lists
        f_new = damping_x(eps) * red.softmin(eps, ys[-1].log_mass + g / eps, rows_are_x=True)
        g_new = damping_y(eps) * red.softmin(eps, xs[-1].log_mass + f_new / eps, rows_are_x=False)
        change = max((f_new - f).abs().max().item(), (g_new - g).abs().max().item())
        f, g = f_new, g_new
        iterations += 1
        if change < tol * eps:
            converged = True
            break
    log.debug(
        "multiscale sinkhorn: %d levels, %d iterations, %d term lists made",
        points_level + 1,
        iterations,
        lists.builds,
    )
    result = SinkhornResult(f=f, g=g, eps=eps, iterations=iterations, converged=converged)
    return result, lists, WarmStart(f, g, blur)


@dataclass
class WarmStart:
    """What a next, nearby problem starts from (same clouds; the source moved a little).

    Attributes:
        f: ``(N,)`` and g: ``(M,)`` potentials on the points (squared length units).
        blur: the blur they were computed at.
    """

    f: torch.Tensor
    g: torch.Tensor
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
