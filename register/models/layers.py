"""Building blocks of the point-flow network: k-NN point convolution, cost volume, upsampling.

Shapes: ``B`` clouds per batch, ``N`` query points, ``M`` neighbour-candidate points, ``k``
neighbours, ``C`` channels, ``D = 3``. Positions are in model units (see
:mod:`register.models.normalise`); relative positions are divided by the level's radius ``r``
so that the layers see O(1) inputs at every level.

The first linear layer of each edge MLP acts on a concatenation ``[f_j, (p_j - q_i) / r]``;
it is split as ``W_f f_j + W_p p_j / r - W_p q_i / r`` so that the products are taken once per
point (``M x C`` and ``N x C``) and only a gather and an addition are done per edge
(``N x k x C``): the costly per-edge work is the one hidden layer.
"""

from __future__ import annotations

import torch
from torch import nn

from register.models.knn import gather

NEGATIVE_SLOPE = 0.1  # LeakyReLU slope, as in PointPWC


def act(x: torch.Tensor) -> torch.Tensor:
    """The activation of every hidden layer (LeakyReLU).

    Out of place: the output of a linear layer on a 3-D or 4-D tensor is a view, and an in-place
    op on a view makes autograd copy its whole base in the backward pass (CopySlices).
    """
    return nn.functional.leaky_relu(x, NEGATIVE_SLOPE)


class _MaxOverNeighbours(torch.autograd.Function):
    """``amax`` over dim 2 with a lean backward: the gradient goes to the maximal entries.

    ``torch.amax``'s backward shares the gradient among ties (``eq``, a bool -> float copy, a
    count and a division over the whole ``(B, N, k, C)`` tensor); here a ``where`` routes it to
    every maximal entry (ties, e.g. duplicate points, each get it whole). Forward and backward
    together: 2x faster on CPU.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        out = h.amax(2)
        ctx.save_for_backward(h, out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        h, out = ctx.saved_tensors
        return torch.where(h == out.unsqueeze(2), grad.unsqueeze(2), 0.0)


def max_over_neighbours(h: torch.Tensor) -> torch.Tensor:
    """``(B, N, k, C) -> (B, N, C)``: max pooling over the ``k`` neighbours."""
    return _MaxOverNeighbours.apply(h)


class PointConv(nn.Module):
    """``out_i = act(LN(W_o max_{j in nbr(i)} act(W_h act(W_f f_j + W_p (p_j - q_i) / r + b))))``.

    A PointNet++-style set convolution over the ``k`` nearest neighbours ``nbr(i)`` of each
    query point ``q_i`` among the points ``p``: max pooling over the edges, then a point-wise
    linear layer and a layer normalisation ``LN`` (without it, max pooling inflates the
    features level after level: x2 per level at initialisation).

    Args:
        c_in: channels of ``f`` (0: positions only); c_out: output channels.
    """

    def __init__(self, c_in: int, c_out: int, dim: int = 3) -> None:
        super().__init__()
        self.lin_f = nn.Linear(c_in, c_out, bias=False) if c_in else None
        self.lin_p = nn.Linear(dim, c_out)
        self.hidden = nn.Linear(c_out, c_out)
        self.out = nn.Linear(c_out, c_out)
        self.norm = nn.LayerNorm(c_out)

    def forward(
        self, q: torch.Tensor, p: torch.Tensor, f: torch.Tensor | None, nbr: torch.Tensor, r: float
    ) -> torch.Tensor:
        """Args: q ``(B, N, D)``; p ``(B, M, D)``; f ``(B, M, C_in)`` or None; nbr ``(B, N, k)``
        indices into ``M``; r: radius (model units). Returns ``(B, N, C_out)``."""
        per_point = nn.functional.linear(p / r, self.lin_p.weight)  # W_p p_j / r, (B, M, C)
        if self.lin_f is not None:
            per_point = per_point + self.lin_f(f)
        per_query = nn.functional.linear(q / r, self.lin_p.weight, -self.lin_p.bias)  # W_p q_i / r - b
        # Out of place: an in-place op on the gathered view would make autograd copy it whole (CopySlices).
        h = gather(per_point, nbr) - per_query[:, :, None, :]  # (B, N, k, C)
        h = act(self.hidden(act(h)))
        return act(self.norm(self.out(max_over_neighbours(h))))


class CostVolume(nn.Module):
    """Matching costs of each warped source point against its ``k`` nearest target points.

    With ``h_ij = act(W_h act(W_1 f1_i + W_2 f2_j + W_p (p2_j - p1w_i) / r + b))`` over the ``k``
    points ``nbr(i)`` of the target ``p2`` nearest the warped source point ``p1w_i``:

        c_i = LN(max_j h_ij)                                     (PointPWC's point-to-patch cost)
        o_i = sum_j a_ij (p2_j - p1w_i),  a_ij = softmax_j(w_s . h_ij)      (soft-match offset)

    ``o_i`` is where the learned match scores ``a_ij`` place the partner of ``p1w_i``: a
    displacement the flow estimator can use directly (a pure translation is one). The
    patch-to-patch aggregation is done by the estimator's point convolutions over source
    neighbourhoods.
    """

    def __init__(self, channels: int, dim: int = 3) -> None:
        super().__init__()
        self.lin_1 = nn.Linear(channels, channels)
        self.lin_2 = nn.Linear(channels, channels, bias=False)
        self.lin_p = nn.Linear(dim, channels, bias=False)
        self.hidden = nn.Linear(channels, channels)
        self.score = nn.Linear(channels, 1)
        self.norm = nn.LayerNorm(channels)

    def forward(
        self,
        p1w: torch.Tensor,
        f1: torch.Tensor,
        p2: torch.Tensor,
        f2: torch.Tensor,
        nbr: torch.Tensor,
        r: float,
    ) -> torch.Tensor:
        """Args: p1w ``(B, N, D)`` warped source; f1 ``(B, N, C)``; p2 ``(B, M, D)``; f2
        ``(B, M, C)``; nbr ``(B, N, k)`` into ``M``; r: radius.

        Returns:
            ``c (B, N, C)`` and ``o (B, N, D)`` (model units).
        """
        per_source = self.lin_1(f1) - self.lin_p(p1w / r)  # (B, N, C)
        per_target = self.lin_2(f2) + self.lin_p(p2 / r)  # (B, M, C)
        h = act(self.hidden(act(gather(per_target, nbr) + per_source[:, :, None, :])))  # (B, N, k, C)
        a = torch.softmax(self.score(h)[..., 0], dim=-1)  # (B, N, k)
        offset = (a[..., None] * (gather(p2, nbr) - p1w[:, :, None, :])).sum(2)
        return self.norm(max_over_neighbours(h)), offset


def interpolate(
    values: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, nbr: torch.Tensor
) -> torch.Tensor:
    """Inverse-distance interpolation of ``values`` at ``src`` onto the points ``dst``.

    ``v(dst_i) = sum_j w_ij values_j / sum_j w_ij``, ``w_ij = 1 / (|dst_i - src_j| + 1e-8)``,
    ``j`` over the neighbours ``nbr(i)`` (PointPWC's flow upsampling, with ``k = 3``).

    Args:
        values: ``(B, M, C)`` at ``src (B, M, D)``; dst: ``(B, N, D)``; nbr: ``(B, N, k)`` into ``M``.

    Returns:
        ``(B, N, C)``.
    """
    dist = (gather(src, nbr) - dst[:, :, None, :]).norm(dim=-1)  # (B, N, k)
    w = 1.0 / (dist + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    return (gather(values, nbr) * w[..., None]).sum(2)
