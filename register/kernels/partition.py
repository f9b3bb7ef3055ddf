"""A cloud cut into blocks of nearby points: the leaves of a balanced k-d partition, padded to
one size, with their bounding boxes (:class:`Blocks`). The block-sparse reductions of
:mod:`register.kernels.blocks` bound whole pairs of such blocks at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

BLOCK = 64  # most points per column block (k-d leaves hold BLOCK / 2 to BLOCK)


@dataclass
class Blocks:
    """One cloud cut into ``B`` blocks of ``P`` points (padded), with their bounding boxes.

    Attributes:
        order: ``(n,)`` points grouped by block; slots: ``(n,)`` the flat ``(B * P)`` slot of
            point ``order[k]`` (blocks hold up to ``P`` points and are padded to ``P``).
        points: ``(B, P, D)`` coordinates (padding slots repeat a real point of the block).
        half_sq: ``(B, P)`` ``|p|^2 / 2``.
        valid: ``(B, P)`` bool, false on padding.
        lo, hi: ``(B, D)`` corners of each block's bounding box.
    """

    order: torch.Tensor
    slots: torch.Tensor
    points: torch.Tensor
    half_sq: torch.Tensor
    valid: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor

    @property
    def n(self) -> int:
        return len(self.order)

    def gather(self, values: torch.Tensor, pad: float) -> torch.Tensor:
        """Per-point ``values (n, ...)`` in block layout ``(B, P, ...)``, ``pad`` on padding."""
        b, p = self.valid.shape
        out = values.new_full((b * p, *values.shape[1:]), pad)
        out[self.slots] = values[self.order]
        return out.view(b, p, *values.shape[1:])

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """Block-layout ``values (B, P, ...)`` back to per-point order ``(n, ...)``."""
        flat = values.reshape(-1, *values.shape[2:])[self.slots]
        out = torch.empty_like(flat)
        out[self.order] = flat
        return out


def kd_leaves(x: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A balanced k-d partition of ``x (N, D)`` into leaves of at most ``size`` points.

    Each node is split at its median along its widest axis, ``L = ceil(log2(N / size))`` times
    (all nodes of a depth at once). Returns ``order (N,)`` (points grouped by leaf, leaves
    consecutive) and ``leaf (N,)``, the leaf of each slot of ``order`` (non-decreasing).
    """
    order, (leaf,) = kd_nested_leaves(x, (size,))
    return order, leaf


def kd_nested_leaves(x: torch.Tensor, sizes: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """:func:`kd_leaves` for several leaf sizes of one partition: ``order (N,)`` and, per size,
    ``leaf (N,)`` (non-decreasing along ``order``). The leaves of a smaller size are the nodes
    of the same tree a few splits deeper, so they nest in the larger ones, and one ``order``
    groups the points by leaf for every size.

    On the CPU the tree is SciPy's ``cKDTree`` with median splits along the axis of widest
    spread (the same partition rule; 8x faster than the torch ops for 10k points: 2.4 against
    19 ms), the leaves of each size being its first nodes of at most that many points; where
    repeated coordinates leave a larger leaf, the torch version (splits by rank).
    """
    if x.device.type != "cpu" or len(x) == 0:
        return _kd_nested_leaves_torch(x, sizes)
    from scipy.spatial import cKDTree

    tree = cKDTree(x.detach().double().numpy(), leafsize=min(sizes), balanced_tree=True, copy_data=False)
    starts: dict[int, list[int]] = {size: [] for size in sizes}
    stack = [(tree.tree, tuple(sizes))]
    while stack:  # depth first, lesser child first: the order of ``tree.indices``
        node, open_sizes = stack.pop()
        done = tuple(size for size in open_sizes if node.children <= size)
        for size in done:
            starts[size].append(node.start_idx)
        if node.split_dim >= 0:
            left = tuple(size for size in open_sizes if size not in done)
            stack.append((node.greater, left))
            stack.append((node.lesser, left))
    order = torch.from_numpy(tree.indices.astype(np.int64))
    position = torch.arange(len(x))
    leaves = [
        torch.searchsorted(torch.tensor(starts[size], dtype=torch.int64), position, right=True) - 1
        for size in sizes
    ]
    # SciPy splits at the median value: repeated coordinates (duplicate LiDAR returns) can leave
    # a node unsplittable and a leaf far above its size (277 points for 16 on a 3000-point
    # LiDAR subsample); the torch version splits by rank and never does.
    if any(int(leaf.bincount().max()) > size for leaf, size in zip(leaves, sizes, strict=True)):
        return _kd_nested_leaves_torch(x, sizes)
    return order, leaves


def _kd_nested_leaves_torch(
    x: torch.Tensor, sizes: tuple[int, ...]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """:func:`kd_nested_leaves` in torch ops, on any device (all nodes of a depth at once)."""
    n = len(x)
    depths = [max(0, math.ceil(math.log2(max(n, 1) / size))) for size in sizes]
    order = torch.arange(n, device=x.device)
    node = torch.zeros(n, dtype=torch.int64, device=x.device)
    leaves: dict[int, torch.Tensor] = {}  # depth -> node of each slot of ``order`` at that depth
    for depth in range(max(depths, default=0)):
        if depth in depths:
            leaves[depth] = node
        pts = x[order]
        n_nodes = int(node[-1]) + 1
        big = torch.finfo(x.dtype).max
        lo = torch.full((n_nodes, x.shape[1]), big, dtype=x.dtype, device=x.device)
        hi = torch.full_like(lo, -big)
        index = node[:, None].expand_as(pts)
        lo.scatter_reduce_(0, index, pts, "amin")
        hi.scatter_reduce_(0, index, pts, "amax")
        span = hi - lo
        axis = span.argmax(1)  # widest axis of each node
        key = pts.gather(1, axis[node][:, None])[:, 0]
        # Sort by (node, key) in one pass: the key scaled into [0, 1/2] within its node, added to
        # the node id (float64: exact node order, 1e-13 resolution within a node). Points move
        # only within their node, so shallower nodes stay contiguous.
        lo_key = lo.gather(1, axis[:, None])[:, 0][node]
        width = span.gather(1, axis[:, None])[:, 0][node].clamp_min(torch.finfo(x.dtype).tiny)
        composite = node.to(torch.float64) + ((key - lo_key) / width).to(torch.float64) / 2
        perm = torch.argsort(composite, stable=True)
        order, node = order[perm], node[perm]
        leaves = {d: labels[perm] for d, labels in leaves.items()}
        counts = torch.bincount(node, minlength=n_nodes)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(n, device=x.device) - starts[node]
        node = node * 2 + (pos >= counts[node] // 2).to(torch.int64)
        # Renumber to consecutive ids (a node of one point has a single child).
        node = torch.unique_consecutive(node, return_inverse=True)[1]
    leaves[max(depths, default=0)] = node
    return order, [leaves[d] for d in depths]


def make_blocks(x: torch.Tensor, size: int = BLOCK) -> Blocks:
    """Cut ``x (N, D)`` into k-d leaves of at most ``size`` points, padded (see :class:`Blocks`)."""
    order, leaf = kd_leaves(x, size)
    return _padded_blocks(x, order, leaf)


def make_nested_blocks(x: torch.Tensor, sizes: tuple[int, ...]) -> list[Blocks]:
    """:func:`make_blocks` for each of ``sizes``, from one k-d partition (:func:`kd_nested_leaves`)."""
    order, leaves = kd_nested_leaves(x, sizes)
    return [_padded_blocks(x, order, leaf) for leaf in leaves]


def _padded_blocks(x: torch.Tensor, order: torch.Tensor, leaf: torch.Tensor) -> Blocks:
    """:class:`Blocks` of ``x (N, D)`` with the points ``order (N,)`` in the leaves ``leaf (N,)``."""
    n, d = x.shape
    n_blocks = int(leaf[-1]) + 1 if n else 1
    counts = torch.bincount(leaf, minlength=n_blocks)
    width = int(counts.max()) if n else 1
    starts = torch.cumsum(counts, 0) - counts
    slot_in_leaf = torch.arange(n, device=x.device) - starts[leaf]
    flat = leaf * width + slot_in_leaf  # (n,) slot of each ordered point in (B * width)
    valid = torch.zeros(n_blocks * width, dtype=torch.bool, device=x.device)
    valid[flat] = True
    # Padding repeats the leaf's first point (boxes stay tight), flagged invalid.
    src = torch.zeros(n_blocks * width, dtype=torch.int64, device=x.device)
    src.copy_(starts.repeat_interleave(width))
    src[flat] = torch.arange(n, device=x.device)
    points = x[order][src].view(n_blocks, width, d)
    return Blocks(
        order=order,
        slots=flat,
        points=points,
        half_sq=(points * points).sum(-1) / 2,
        valid=valid.view(n_blocks, width),
        lo=points.amin(1),
        hi=points.amax(1),
    )
