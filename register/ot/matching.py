"""Robust OT matching: for each source point, a matched position and a confidence.

Given the potentials of :func:`register.ot.unbalanced.sinkhorn`, the plan (3) gives

    row mass     m_i = sum_j pi_ij = a_i exp(f_i / eps) sum_j b_j exp((g_j - C_ij) / eps)
    confidence   c_i = m_i / a_i                                   (transported / own mass)
    target       y^_i = sum_j pi_ij y_j / m_i                      (barycentric projection)

Points whose mass is not transported (outliers, missing parts, matches farther than
``reach``) get ``c_i ~ 0``; downstream fits weight each point by ``a_i c_i``.

Both clouds are centred and scaled by the problem's diameter before solving, so that
float32 is accurate; lengths (``blur``, ``reach``) are given in the data's units and
results are mapped back to them.

Label-aware matching (``classes``): with a class per point (artery / vein, lobes), the cost
between points of different classes is infinite, ``C_ij = |x_i - y_j|^2 / 2 + inf [k_i != k_j]``.
The plan then has one block per class and the problem splits exactly into one unbalanced OT
problem per class, solved in turn: each class is matched as its own pair of clouds (masses
normalised per class as ``mass`` says). A finite penalty ``lambda`` between classes would
only differ where ``lambda`` is below the cost of leaving mass unmatched, ``~reach^2``: the
infinite one is the limit that needs no second length to choose.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from register.core.threads import torch_threads
from register.errors import InputError
from register.kernels.dense import barycentre_dense
from register.kernels.keops import barycentre_keops
from register.ot.geomloss_solver import sinkhorn_geomloss
from register.ot.multiscale import WarmStart, sinkhorn_multiscale
from register.ot.unbalanced import sinkhorn

BARYCENTRE = {"dense": barycentre_dense, "keops": barycentre_keops}

# The sparse backend solves problems up to this many kernel entries densely (below it, cutting
# the clouds into blocks costs more than it saves). 3000 x 3000 affine matchings of the lung
# preset (synthetic 30k-point vessel pair, 1 thread): dense 22.6 s, sparse 9.2 s per stage.
SPARSE_MIN_ENTRIES = 1_000_000

# CPU problems below this many kernel entries run on one thread: their reductions are too short
# to pay for waking the other threads (which sleep between operations: OMP_WAIT_POLICY=PASSIVE,
# set by the CLI because spinning threads are 10x slower when other jobs share the cores).
# BCPD male pair, shapes preset, 2 cores: affine stage (28-rotation multistart, 1000-3000-point
# matchings) 106 s with two threads, 38 s with one.
SINGLE_THREAD_ENTRIES = 16_000_000


@contextmanager
def _threads_for(n_entries: int, device: torch.device) -> Iterator[None]:
    """Run the block inside on one torch thread when the problem is small and on the CPU
    (:func:`register.core.threads.torch_threads`: the count is restored after)."""
    small_on_cpu = device.type == "cpu" and n_entries < SINGLE_THREAD_ENTRIES
    with torch_threads(1 if small_on_cpu else None):
        yield


@dataclass
class Matches:
    """Result of :func:`robust_match`.

    Attributes:
        targets: ``(N, D)`` matched positions of the source points, data units.
        confidence: ``(N,)`` transported mass over own mass, ~1 for matched points,
            ~0 for outliers (can slightly exceed 1 in unbalanced OT).
        cost: robust matching cost ``sum_i a_i (c_i |x_i - y^_i|^2 + (1 - c_i)_+ reach^2)``
            over ``sum_i a_i``, squared data units; lower is better.
        iterations: Sinkhorn updates done; converged: whether the tolerance was met.
        warm: potentials and displacements in data units (squared / plain), to start a next,
            nearby matching of the same clouds from (``robust_match(..., warm=...)``).
    """

    targets: torch.Tensor
    confidence: torch.Tensor
    cost: float
    iterations: int
    converged: bool
    warm: WarmStart | None = None


def normalise_masses(
    x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None, mass: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masses ``a (N,)`` and ``b (M,)`` scaled as ``mass`` says (see :func:`robust_match`)."""
    a = torch.ones(len(x), dtype=x.dtype, device=x.device) if a is None else a
    b = torch.ones(len(y), dtype=y.dtype, device=y.device) if b is None else b
    if mass == "total":
        return a / a.sum(), b / b.sum()
    if mass == "point":
        return a / a.sum(), b / a.sum()
    raise ValueError(f"mass must be 'total' or 'point', got {mass!r}")


def robust_match(
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    blur: float,
    reach: float = math.inf,
    scaling: float = 0.5,
    tol: float = 1e-3,
    max_iter: int = 200,
    backend: str = "dense",
    mass: str = "total",
    warm: WarmStart | None = None,
    target_reach: float | None = None,
    classes: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Matches:
    """Match ``x`` onto ``y`` by unbalanced OT.

    Args:
        x: ``(N, D)`` source points, data units L.
        y: ``(M, D)`` target points, L.
        a: ``(N,)`` source masses (default uniform); b: ``(M,)`` target masses.
        mass: ``"total"``: each cloud has total mass 1; ``"point"``: masses are in the same
            unit in both clouds (both divided by the source's total), so extra target points
            (outliers) add mass instead of diluting the inliers.
        blur: finest detail resolved by the matching, L.
        reach: largest displacement treated as a match, L (``inf``: balanced).
        target_reach: reach of the target marginal, L (None: ``reach``). Larger than
            ``reach``, target points must be matched more than source points: a target that
            holds parts the source lacks (extra field of view, outliers) still lets source
            points drop out at ``reach``, while the source cannot all collapse onto the
            nearest part of the target.
        scaling, tol, max_iter: see :func:`register.ot.unbalanced.sinkhorn`.
        backend: ``dense`` or ``keops`` (:func:`register.ot.unbalanced.sinkhorn`),
            ``sparse`` (:func:`register.ot.multiscale.sinkhorn_multiscale`, for problems of more
            than ``SPARSE_MIN_ENTRIES`` kernel entries; dense below), or ``geomloss``
            (:func:`register.ot.geomloss_solver.sinkhorn_geomloss`: the reference solver;
            ignores ``tol``, ``max_iter`` and ``warm``).
        warm: ``Matches.warm`` of an earlier call on the same clouds and masses (the source
            moved a little since): the epsilon schedule then starts at that call's blur
            instead of the diameter (``min(its blur, blur)``: a single temperature when the
            blur did not change), from its potentials.
        classes: ``(N,)`` and ``(M,)`` integer classes: points match only points of their own
            class (see the module docstring). A source class the target lacks gets confidence 0
            (its targets: the points themselves).

    Returns:
        :class:`Matches` in data units.
    """
    args = (blur, reach, scaling, tol, max_iter, backend, mass, warm, target_reach)
    if classes is not None:
        return _match_per_class(x, y, a, b, classes, args)
    with _threads_for(len(x) * len(y), x.device):
        return _robust_match(x, y, a, b, *args)


def _match_per_class(x, y, a, b, classes, args) -> Matches:
    """:func:`robust_match` with ``classes``: one problem per source class, results put back
    in place. ``cost`` is the classes' costs weighted by their share of the source mass."""
    blur, warm = args[0], args[7]
    cx, cy = classes
    if cx.shape != (len(x),) or cy.shape != (len(y),):
        raise ValueError(
            f"classes must have shapes ({len(x)},) and ({len(y)},), got {tuple(cx.shape)}, {tuple(cy.shape)}"
        )
    a = torch.ones(len(x), dtype=x.dtype, device=x.device) if a is None else a
    b = torch.ones(len(y), dtype=y.dtype, device=y.device) if b is None else b
    targets, confidence = x.clone(), torch.zeros(len(x), dtype=x.dtype, device=x.device)
    f, g = torch.zeros_like(confidence), torch.zeros(len(y), dtype=y.dtype, device=y.device)
    cost, iterations, converged = 0.0, 0, True
    for k in torch.unique(cx).tolist():
        ix, iy = torch.nonzero(cx == k).reshape(-1), torch.nonzero(cy == k).reshape(-1)
        if len(iy) == 0:
            continue  # nothing of this class in the target: unmatched
        sub_warm = None if warm is None else WarmStart(warm.f[ix], warm.g[iy], warm.blur)
        sub_args = (*args[:7], sub_warm, args[8])
        with _threads_for(len(ix) * len(iy), x.device):
            m = _robust_match(x[ix], y[iy], a[ix], b[iy], *sub_args)
        targets[ix], confidence[ix] = m.targets, m.confidence
        f[ix], g[iy] = m.warm.f, m.warm.g
        cost += m.cost * float(a[ix].sum() / a.sum())
        iterations = max(iterations, m.iterations)
        converged &= m.converged
    return Matches(targets, confidence, cost, iterations, converged, WarmStart(f, g, blur))


def _robust_match(
    x, y, a, b, blur, reach, scaling, tol, max_iter, backend, mass, warm, target_reach
) -> Matches:
    """:func:`robust_match` without classes (same arguments, positional)."""
    a, b = normalise_masses(x, y, a, b, mass)
    target_reach = reach if target_reach is None else target_reach
    if backend == "geomloss" and target_reach != reach:
        raise InputError("the geomloss backend solves symmetric problems only: target_reach must equal reach")
    # Normalise: centre on the joint bounding box, divide by its diagonal.
    both = torch.cat([x, y])
    lo, hi = both.min(0).values, both.max(0).values
    centre = (lo + hi) / 2
    scale = float((hi - lo).norm()) or 1.0
    xn, yn = (x - centre) / scale, (y - centre) / scale
    blur_n, reach_n = blur / scale, reach / scale

    settings = {"blur": blur_n, "reach": reach_n, "diameter": 1.0, "scaling": scaling, "tol": tol}
    if target_reach != reach:
        settings["target_reach"] = target_reach / scale
    s2 = scale**2  # potentials are squared lengths
    if backend == "sparse" and len(x) * len(y) <= SPARSE_MIN_ENTRIES:
        backend = "dense"
    if backend == "sparse":
        warm_n = None if warm is None else WarmStart(warm.f / s2, warm.g / s2, warm.blur / scale)
        res, reducer, _ = sinkhorn_multiscale(xn, yn, a, b, max_iter=max_iter, warm=warm_n, **settings)
        eps = res.eps
        targets_n, lse = reducer.barycentre(eps, b.log() + res.g / eps, yn)
    elif backend == "geomloss":
        # GeomLoss's own solver for the potentials; the matches by our reductions (dense chunks
        # on the CPU, where they are faster than KeOps; KeOps on CUDA: no N x M memory).
        res = sinkhorn_geomloss(xn, yn, a, b, blur=blur_n, reach=reach_n, diameter=1.0, scaling=scaling)
        eps = res.eps
        reduce = BARYCENTRE["keops" if xn.is_cuda else "dense"]
        targets_n, lse = reduce(eps, xn, yn, b.log() + res.g / eps, yn)
    else:
        start = {} if warm is None else {"init_g": warm.g / s2, "start_blur": warm.blur / scale}
        res = sinkhorn(xn, yn, a, b, max_iter=max_iter, backend=backend, **settings, **start)
        eps = res.eps
        # log sum_j b_j exp((g_j - C_ij)/eps) and the barycentres, in one pass.
        targets_n, lse = BARYCENTRE[backend](eps, xn, yn, b.log() + res.g / eps, yn)
    confidence = torch.exp(res.f / eps + lse)
    targets = targets_n * scale + centre
    residual = ((targets - x) ** 2).sum(-1)
    unmatched = (1 - confidence).clamp(min=0) * (reach**2 if math.isfinite(reach) else 0.0)
    cost = float((a * (confidence * residual + unmatched)).sum())
    warm_out = WarmStart(res.f * s2, res.g * s2, blur)
    return Matches(targets, confidence, cost, res.iterations, res.converged, warm_out)
