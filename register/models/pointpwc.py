"""A multi-scale point-flow network in the PointPWC style (Wu et al., ECCV 2020), pure PyTorch.

For a source cloud ``p1 (N, 3)`` and a target cloud ``p2 (M, 3)`` (model units), it predicts a
flow ``F (N, 3)`` such that ``p1 + F`` lies on the target:

1. **Feature pyramid** (weights shared by both clouds), levels ``l = 0 .. L-1``: level 0 is
   the input cloud, level ``l`` keeps ``N_l = N_{l-1} / ratio`` evenly spread points
   (:func:`~register.models.sampling.grid_subsample`); features come from k-NN point
   convolutions (:class:`~register.models.layers.PointConv`), first pooling the finer level
   around each kept point, then over the level's own neighbourhoods.
2. **Coarse to fine**, from ``l = L-1`` to 0: the flow ``F_{l+1}`` and the estimator features
   of the coarser level are interpolated onto the level's points (3-NN inverse distance),
   the source points are warped, ``p1w = p1_l + up(F_{l+1})``, a cost volume compares each
   warped point with its nearest target points and proposes a soft-match offset, averaged over
   source neighbourhoods into ``o_l`` (:class:`~register.models.layers.CostVolume`), and the
   level's flow estimator (two point
   convolutions over source neighbourhoods, then a point-wise head) predicts a residual:

       g_l = conv(conv([f1_l, cost_l, o_l / r_l, up(F_{l+1}) / r_l, up(g_{l+1})]))
       F_l = up(F_{l+1}) + gamma_l o_l + head(g_l)

   with ``F_L = 0`` and ``gamma_l`` a learned gain per level (0 at initialisation, like the
   heads: the untrained network predicts no motion).

Every level's flow is returned (finest first) for the multi-scale training loss.
Hyper-parameters are a :class:`FlowNetConfig`, stored in checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from register.models.knn import gather, knn
from register.models.layers import NEGATIVE_SLOPE, CostVolume, PointConv, interpolate
from register.models.sampling import grid_subsample

GAIN_RATE = 30.0  # gamma_l = GAIN_RATE * theta_l (see FlowNet.__init__)


@dataclass(frozen=True)
class FlowNetConfig:
    """Architecture hyper-parameters (stored in checkpoints).

    Attributes:
        channels: feature width per pyramid level, finest first (its length is the number of
            levels ``L``).
        estimator: width of the flow estimator per level, finest first (same length).
        ratio: points of level ``l`` = points of level ``l-1`` // ``ratio``.
        k: neighbours of the point convolutions.
        k_cost: target neighbours of each cost volume.
        k_up: coarse neighbours of the flow upsampling.
        radius: relative positions at level 0 are divided by this (model units); at level
            ``l`` by ``radius * radius_growth ** l``.
        radius_growth: growth of the radius per level.
        in_features: extra per-point input channels (e.g. 1 for the vessel radius; 0: none).
    """

    channels: tuple[int, ...] = (32, 64, 128, 256)
    estimator: tuple[int, ...] = (64, 96, 128, 128)
    ratio: int = 4
    k: int = 16
    k_cost: int = 16
    k_up: int = 3
    radius: float = 0.05
    radius_growth: float = 2.0
    in_features: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "estimator", tuple(int(c) for c in self.estimator))
        if len(self.channels) < 2 or len(self.estimator) != len(self.channels):
            raise ValueError(
                f"channels {self.channels} and estimator {self.estimator} need the same length >= 2"
            )
        if min(*self.channels, *self.estimator, self.k, self.k_cost, self.k_up) < 1 or self.ratio < 2:
            raise ValueError(f"invalid network configuration {self}")
        if not (self.radius > 0 and self.radius_growth > 0) or self.in_features < 0:
            raise ValueError(f"invalid network configuration {self}")

    @property
    def levels(self) -> int:
        return len(self.channels)

    def level_sizes(self, n: int) -> list[int]:
        """Points per level for an ``n``-point input, finest first."""
        return [n // self.ratio**level for level in range(self.levels)]

    def min_points(self) -> int:
        """Fewest input points the network accepts: its coarsest level needs ``max(k, k_cost)``."""
        return max(self.k, self.k_cost, self.k_up) * self.ratio ** (self.levels - 1)

    def level_radius(self, level: int) -> float:
        return self.radius * self.radius_growth**level

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass
class Level:
    """One pyramid level of one batch of clouds.

    Attributes:
        points: ``(B, N_l, 3)``; features: ``(B, N_l, C_l)``; nbr: ``(B, N_l, k)`` self neighbours;
        index: ``(B, N_l)`` indices of the level's points into the input cloud.
    """

    points: torch.Tensor
    features: torch.Tensor
    nbr: torch.Tensor
    index: torch.Tensor


@dataclass
class FlowOutput:
    """What :meth:`FlowNet.forward` returns (model units).

    Attributes:
        flows: per level, finest first: ``(B, N_l, 3)`` flow of the level's source points;
            ``flows[0]`` is the flow of every input source point.
        index: per level: ``(B, N_l)`` indices of those points into the input source cloud.
    """

    flows: list[torch.Tensor]
    index: list[torch.Tensor]


class FlowNet(nn.Module):
    """The network; see the module docstring. Build with a :class:`FlowNetConfig`."""

    def __init__(self, cfg: FlowNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or FlowNetConfig()
        ch, est = cfg.channels, cfg.estimator
        self.encode = nn.ModuleList(
            [PointConv(cfg.in_features, ch[0])] + [PointConv(ch[i - 1], ch[i]) for i in range(1, cfg.levels)]
        )
        self.refine = nn.ModuleList([PointConv(c, c) for c in ch])
        self.cost = nn.ModuleList([CostVolume(c) for c in ch])
        coarser = [*est[1:], 0]  # upsampled estimator features from the level above (none at the top)
        self.estimate = nn.ModuleList(
            [PointConv(2 * ch[i] + 6 + coarser[i], est[i]) for i in range(cfg.levels)]
        )
        # gamma_l = GAIN_RATE * theta_l, theta_l = 0 at first: Adam moves every parameter by about
        # its learning rate per step, so the rate lets gamma reach O(1) in tens of steps, not thousands.
        self.gain = nn.Parameter(torch.zeros(cfg.levels))
        self.estimate2 = nn.ModuleList([PointConv(e, e) for e in est])
        self.head = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(e, e // 2), nn.LeakyReLU(NEGATIVE_SLOPE), nn.Linear(e // 2, 3))
                for e in est
            ]
        )

    def pyramid(self, points: torch.Tensor, features: torch.Tensor | None) -> list[Level]:
        """Feature pyramid of ``points (B, N, 3)`` with input features ``(B, N, F)`` or None."""
        cfg = self.cfg
        levels: list[Level] = []
        index = torch.arange(points.shape[1], device=points.device).expand(points.shape[0], -1)
        p, f = points, features
        for level, size in enumerate(cfg.level_sizes(points.shape[1])):
            r = cfg.level_radius(level)
            if level == 0:  # the input points themselves
                q = p
                nbr = knn(q, q, cfg.k)
                f = self.encode[0](q, q, f, nbr, r)
            else:  # pool the finer level around each kept point
                keep = grid_subsample(p, size)  # (B, N_l) into the finer level
                q = gather(p, keep)
                index = gather(index[..., None], keep)[..., 0]
                f = self.encode[level](q, p, f, knn(q, p, cfg.k), r)
                nbr = knn(q, q, cfg.k)
            f = self.refine[level](q, q, f, nbr, r)  # then refine over the level's own neighbourhoods
            levels.append(Level(q, f, nbr, index))
            p = q
        return levels

    def forward(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        source_features: torch.Tensor | None = None,
        target_features: torch.Tensor | None = None,
    ) -> FlowOutput:
        """Predict the flow of every source point.

        Args:
            source: ``(B, N, 3)``; target: ``(B, M, 3)`` (model units).
            source_features: ``(B, N, F)`` and target_features: ``(B, M, F)`` with
                ``F = cfg.in_features`` (omit both when it is 0).

        Returns:
            :class:`FlowOutput`.
        """
        cfg = self.cfg
        for name, pts in (("source", source), ("target", target)):
            if pts.shape[1] < cfg.min_points():
                raise ValueError(
                    f"{name}: {pts.shape[1]} points; this network needs at least {cfg.min_points()}"
                )
        if (source_features is None) != (cfg.in_features == 0) or (target_features is None) != (
            cfg.in_features == 0
        ):
            raise ValueError(f"this network takes {cfg.in_features} input feature(s) per point")
        src = self.pyramid(source, source_features)
        tgt = self.pyramid(target, target_features)
        flows: list[torch.Tensor] = [source.new_zeros(0)] * cfg.levels
        flow, feat = None, None
        for level in reversed(range(cfg.levels)):
            s, t, r = src[level], tgt[level], cfg.level_radius(level)
            if flow is None:
                up_flow = torch.zeros_like(s.points)
                extra = []
            else:
                coarse = src[level + 1].points
                nbr_up = knn(s.points, coarse, cfg.k_up)
                up_flow = interpolate(flow, coarse, s.points, nbr_up)
                extra = [interpolate(feat, coarse, s.points, nbr_up)]
            warped = s.points + up_flow
            cost, offset = self.cost[level](
                warped, s.features, t.points, t.features, knn(warped, t.points, cfg.k_cost), r
            )
            # Average the per-point soft matches over source neighbourhoods: independent samplings
            # place partners only to within the point spacing; k neighbours cut that noise by sqrt(k).
            offset = gather(offset, s.nbr).mean(2)
            x = torch.cat([s.features, cost, offset / r, up_flow / r, *extra], dim=-1)
            feat = self.estimate[level](s.points, s.points, x, s.nbr, r)
            feat = self.estimate2[level](s.points, s.points, feat, s.nbr, r)
            flow = up_flow + GAIN_RATE * self.gain[level] * offset + self.head[level](feat)
            flows[level] = flow
        return FlowOutput(flows, [lv.index for lv in src])


def init_parameters(model: nn.Module, seed: int) -> None:
    """Seeded initialisation of every linear layer, without touching torch's global generator.

    Weights: He-uniform for LeakyReLU(a), ``U(-b, b)`` with ``b = sqrt(6 / ((1 + a^2) fan_in))``;
    biases 0. The last layer of each flow head starts at 0: the untrained network predicts no
    motion (its error is the zero-flow baseline) and each level starts as the identity on the
    upsampled flow.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    for module in model.modules():
        if isinstance(module, nn.Linear):
            bound = math.sqrt(6.0 / ((1 + NEGATIVE_SLOPE**2) * module.in_features))
            w = torch.empty(module.weight.shape).uniform_(-bound, bound, generator=gen)
            with torch.no_grad():
                module.weight.copy_(w)
                if module.bias is not None:
                    module.bias.zero_()
    for head in getattr(model, "head", []):
        with torch.no_grad():
            head[-1].weight.zero_()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
