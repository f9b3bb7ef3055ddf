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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

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


@dataclass
class _Ladder:
    """Both clouds' levels (:func:`hierarchy`) on the grids of ``cells``, and the updates
    (1)-(2) of :mod:`register.ot.unbalanced` on each level, through the level's
    :class:`BlockReducer` (cut on first use, once per level)."""

    xs: list[Level]
    ys: list[Level]
    cells: list[float]
    truncate: float
    damping_x: Callable[[float], float]
    damping_y: Callable[[float], float]
    reducers: dict[int, BlockReducer] = field(default_factory=dict)

    @property
    def points_level(self) -> int:
        """Index of the points' level (the finest; after one level per grid)."""
        return len(self.cells)

    def reducer(self, level: int) -> BlockReducer:
        """The level's blocks, cut once."""
        if level not in self.reducers:
            self.reducers[level] = BlockReducer(self.xs[level].points, self.ys[level].points, self.truncate)
        return self.reducers[level]

    def level_of(self, eps: float) -> int:
        """Coarsest level whose cell is at most the blur (level 0 for the largest blurs)."""
        blur_k = math.sqrt(eps)
        fine_enough = [i for i, c in enumerate(self.cells) if c <= blur_k]
        return fine_enough[0] if fine_enough else self.points_level

    def update_f(self, level: int, eps: float, g: torch.Tensor) -> torch.Tensor:
        """(1) on ``level``: ``f = damping_x * softmin(C, log b + g / eps)``."""
        red = self.reducer(level)
        return self.damping_x(eps) * red.softmin(eps, self.ys[level].log_mass + g / eps, rows_are_x=True)

    def update_g(self, level: int, eps: float, f: torch.Tensor) -> torch.Tensor:
        """(2) on ``level``: ``g = damping_y * softmin(C^T, log a + f / eps)``."""
        red = self.reducer(level)
        return self.damping_y(eps) * red.softmin(eps, self.xs[level].log_mass + f / eps, rows_are_x=False)

    def descend(
        self, cur: int, to: int, f: torch.Tensor, g: torch.Tensor
    ) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Carry the potentials from level ``cur`` down to level ``to`` (child = parent's value):
        ``(to, f, g)`` with ``f``, ``g`` on level ``to``."""
        while cur < to:
            f, g = f[self.xs[cur].parent], g[self.ys[cur].parent]
            cur += 1
        return cur, f, g


def _ladder(
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    reach: float,
    target_reach: float | None,
    diameter: float,
    blur: float,
    coarse_clusters: int,
    truncate: float,
) -> _Ladder:
    """The :class:`_Ladder` of ``x (N, D)`` with masses ``a (N,)`` and ``y (M, D)`` with ``b (M,)``
    (arguments as :func:`sinkhorn_multiscale`'s; ``target_reach`` None is ``reach``): grids of
    :func:`grid_cells` anchored at the clouds' joint lower corner."""
    target_reach = reach if target_reach is None else target_reach
    origin = torch.minimum(x.min(0).values, y.min(0).values)
    cells = grid_cells(x, y, origin, diameter, blur, coarse_clusters)
    xs, ys = hierarchy(x, a, cells, origin), hierarchy(y, b, cells, origin)
    # The damping factors of (1) and (2), functions of eps.
    damping_x = partial(damping_factor, reach=reach)
    damping_y = partial(damping_factor, reach=target_reach)
    return _Ladder(xs, ys, cells, truncate, damping_x, damping_y)


def _start(ladder: _Ladder, eps: float, warm: WarmStart | None) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The level and the potentials ``(level, f, g)`` the annealing starts from at the first
    temperature ``eps``: level 0 and the trivial plan's potentials, or those of ``warm`` averaged
    onto the level of ``eps``."""
    xs, ys = ladder.xs, ladder.ys
    x = xs[-1].points
    cur = 0 if warm is None else ladder.level_of(eps)
    if warm is None:  # potentials of the trivial plan at the largest temperature
        f = ladder.update_f(cur, eps, torch.zeros(len(ys[cur].points), dtype=x.dtype, device=x.device))
        g = ladder.update_g(cur, eps, torch.zeros(len(xs[cur].points), dtype=x.dtype, device=x.device))
    else:  # the nearby problem's potentials, averaged onto the start level
        f = restrict(xs, cur, warm.f[:, None])[:, 0]
        g = restrict(ys, cur, warm.g[:, None])[:, 0]
    return cur, f, g


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
    start = diameter if warm is None else max(warm.blur, blur)
    schedule = epsilon_schedule(start, blur, scaling)
    ladder = _ladder(x, y, a, b, reach, target_reach, diameter, blur, coarse_clusters, truncate)
    cur, f, g = _start(ladder, schedule[0], warm)
    iterations = 0
    # Annealing: symmetric (averaged) updates of (1)-(2), each on its level.
    for eps in schedule:
        cur, f, g = ladder.descend(cur, ladder.level_of(eps), f, g)
        ft, gt = ladder.update_f(cur, eps, g), ladder.update_g(cur, eps, f)
        f, g = (f + ft) / 2, (g + gt) / 2
        iterations += 1
    eps = schedule[-1]
    points_level = ladder.points_level
    cur, f, g = ladder.descend(cur, points_level, f, g)
    converged = False
    # Fixed-point iterations at the final temperature on certified term lists (made from the
    # points' blocks; the first iteration, whose potentials jump the most, on the blocks).
    xp, yp = ladder.xs[-1], ladder.ys[-1]
    lists = ListReducer(ladder.reducer(points_level), xp.points, yp.points)
    for k in range(max_iter):
        red = ladder.reducer(points_level) if k == 0 else lists
        f_new = ladder.damping_x(eps) * red.softmin(eps, yp.log_mass + g / eps, rows_are_x=True)
        g_new = ladder.damping_y(eps) * red.softmin(eps, xp.log_mass + f_new / eps, rows_are_x=False)
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
