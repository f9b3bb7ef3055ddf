"""Unbalanced Sinkhorn with epsilon-scaling, in the log domain (GeomLoss's scheme).

Problem (entropic unbalanced OT, cost ``C_ij = |x_i - y_j|^2 / 2``):

    OT_eps(a, b) = min_{pi >= 0}  <pi, C> + eps KL(pi | a x b)
                                  + rho_x KL(pi 1 | a) + rho_y KL(pi^T 1 | b)

with ``eps = blur^2``, ``rho_x = reach^2`` and ``rho_y = target_reach^2`` (``inf``: that
marginal is a hard constraint; both ``inf``: balanced). ``reach`` bounds how far a *source*
point may be sent before dropping its mass is cheaper; ``target_reach`` the same for a target
point left unmatched (missing or extra target parts). Its dual potentials ``f (N,)``, ``g (M,)``
satisfy the fixed point

    f_i = damping_x * softmin_eps( C_i:, log b + g / eps )        (1)
    g_j = damping_y * softmin_eps( C_:j, log a + f / eps )        (2)

where ``softmin_eps(C, h) = -eps log sum exp(h - C / eps)`` and
``damping_x = 1 / (1 + eps / rho_x)`` (``damping_y`` with ``rho_y``). The optimal plan is

    pi_ij = a_i b_j exp((f_i + g_j - C_ij) / eps).                (3)

We anneal ``eps`` from the squared diameter down to ``blur^2`` (epsilon-scaling), with
symmetric averaged updates, then iterate (1)-(2) at the final ``eps`` until the
potentials move by less than ``tol * eps`` (a convergence test, not a fixed count).
Inputs are expected centred (see :mod:`register.ot.matching`), which keeps float32 exact
enough for the cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch

from register.kernels.dense import softmin_dense
from register.kernels.keops import softmin_keops

SOFTMIN = {"dense": softmin_dense, "keops": softmin_keops}


@dataclass
class SinkhornResult:
    """Dual potentials of the (non-debiased) unbalanced problem at temperature ``eps``.

    Attributes:
        f: ``(N,)`` source potential, squared length units.
        g: ``(M,)`` target potential, squared length units.
        eps: final temperature ``blur^2``.
        iterations: number of (1)-(2) updates done.
        converged: whether the final-eps iterations met the tolerance.
    """

    f: torch.Tensor
    g: torch.Tensor
    eps: float
    iterations: int
    converged: bool


def damping_factor(eps: float, reach: float) -> float:
    """``1 / (1 + eps / rho)`` with ``rho = reach^2`` of (1)-(2); 1 for balanced OT (``reach = inf``)."""
    return 1.0 / (1.0 + eps / reach**2) if math.isfinite(reach) else 1.0


def epsilon_schedule(diameter: float, blur: float, scaling: float) -> list[float]:
    """Temperatures ``diameter^2 ... blur^2``, geometric with ratio ``scaling^2`` (GeomLoss)."""
    if blur >= diameter:
        return [blur**2]
    steps = int(math.ceil(math.log(blur / diameter) / math.log(scaling)))
    return [(diameter * scaling**k) ** 2 for k in range(steps)] + [blur**2]


def sinkhorn(
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
    backend: str = "dense",
    init_g: torch.Tensor | None = None,
    start_blur: float | None = None,
    target_reach: float | None = None,
) -> SinkhornResult:
    """Solve the unbalanced entropic OT problem between two weighted clouds.

    Args:
        x: ``(N, D)`` source points (centred, length units L).
        y: ``(M, D)`` target points (same frame and units).
        a: ``(N,)`` source masses (positive); b: ``(M,)`` target masses.
        blur: finest detail, in L; ``eps = blur^2``.
        reach: largest displacement treated as a match, in L; ``inf`` is balanced OT.
        target_reach: the target marginal's reach (``rho_y = target_reach^2``), in L; None:
            ``reach`` (the symmetric problem).
        diameter: largest distance in the problem, in L (start of the eps schedule).
        scaling: ratio between successive blurs of the schedule, in (0, 1).
        tol: stop when potentials change by less than ``tol * eps`` (sup norm).
        max_iter: cap on the iterations at the final temperature.
        backend: ``"dense"`` or ``"keops"`` reductions.
        init_g: ``(M,)`` warm start: a target potential from a nearby problem (same target,
            source moved a little); the schedule then starts at ``start_blur`` (default
            ``blur``) instead of ``diameter``, and ``f`` starts as the c-transform (1) of it.
        start_blur: first blur of the schedule of a warm start, in L.

    Returns:
        :class:`SinkhornResult` with potentials for the plan (3).
    """
    softmin = SOFTMIN[backend]
    log_a, log_b = a.log(), b.log()
    # The damping factors of (1) and (2), functions of eps.
    damping_x = partial(damping_factor, reach=reach)
    damping_y = partial(damping_factor, reach=reach if target_reach is None else target_reach)

    if init_g is None:
        schedule = epsilon_schedule(diameter, blur, scaling)
        eps = schedule[0]
        # Initialisation at the largest temperature: potentials of the trivial plan.
        f = damping_x(eps) * softmin(eps, x, y, log_b)
        g = damping_y(eps) * softmin(eps, y, x, log_a)
    else:
        schedule = epsilon_schedule(max(start_blur or blur, blur), blur, scaling)
        eps = schedule[0]
        g = init_g
        f = damping_x(eps) * softmin(eps, x, y, log_b + g / eps)
    iterations = 0
    # Annealing: symmetric (averaged) updates of (1)-(2), one per temperature.
    for eps in schedule:
        ft = damping_x(eps) * softmin(eps, x, y, log_b + g / eps)
        gt = damping_y(eps) * softmin(eps, y, x, log_a + f / eps)
        f, g = (f + ft) / 2, (g + gt) / 2
        iterations += 1
    # Final temperature: alternate (1)-(2) until the fixed point is reached.
    eps = schedule[-1]
    converged = False
    for _ in range(max_iter):
        f_new = damping_x(eps) * softmin(eps, x, y, log_b + g / eps)
        g_new = damping_y(eps) * softmin(eps, y, x, log_a + f_new / eps)
        change = max((f_new - f).abs().max().item(), (g_new - g).abs().max().item())
        f, g = f_new, g_new
        iterations += 1
        if change < tol * eps:
            converged = True
            break
    return SinkhornResult(f=f, g=g, eps=eps, iterations=iterations, converged=converged)
