"""Unbalanced Sinkhorn potentials from GeomLoss (the reference backend ``geomloss``).

GeomLoss solves the same problem as :func:`register.ot.unbalanced.sinkhorn` (cost
``C_ij = |x_i - y_j|^2 / 2``, ``eps = blur^2``, ``rho = reach^2``, the same epsilon-scaling
schedule with ratio ``scaling``), with its own implementations: ``tensorized`` (dense
``N x M``), ``online`` (KeOps) and ``multiscale`` (KeOps on clustered, truncated kernels,
for 3-D clouds). GeomLoss picks one by size (``backend="auto"``: tensorized up to ``5000^2``
entries, multiscale for 3-D clouds beyond ``10000^2``, online otherwise).

Two differences from our solver: GeomLoss does one symmetric update per temperature and
one final extrapolation (no convergence test, so ``converged`` is reported ``False``), and
balanced potentials may differ from ours by a constant (``f + c``, ``g - c``), which changes
neither the plan (3) nor the matches.
"""

from __future__ import annotations

import math

import torch

from register.ot.unbalanced import SinkhornResult, epsilon_schedule


def sinkhorn_geomloss(
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    blur: float,
    reach: float = math.inf,
    diameter: float,
    scaling: float = 0.5,
    method: str = "auto",
) -> SinkhornResult:
    """Potentials of the unbalanced problem between ``(a, x)`` and ``(b, y)`` by GeomLoss.

    Args:
        x: ``(N, D)`` and y: ``(M, D)`` points (length unit L, centred, diameter ~1 for float32).
        a: ``(N,)`` and b: ``(M,)`` positive masses.
        blur: finest detail, L (``eps = blur^2``); reach: largest matched distance, L
            (``inf``: balanced, then ``a`` and ``b`` must have the same total mass).
        diameter: largest distance in the problem, L (start of the epsilon schedule).
        scaling: ratio of successive blurs of the schedule, in (0, 1).
        method: GeomLoss backend: ``auto``, ``tensorized``, ``online`` or ``multiscale``.

    Returns:
        :class:`SinkhornResult` with ``f (N,)``, ``g (M,)`` in L^2.
    """
    from geomloss import SamplesLoss

    solver = SamplesLoss(
        "sinkhorn",
        p=2,
        blur=blur,
        reach=reach if math.isfinite(reach) else None,
        diameter=diameter,
        scaling=scaling,
        debias=False,  # the potentials of OT_eps(a, b) itself, as (1)-(2) of our solver
        potentials=True,
        backend=method,
    )
    f, g = solver(a.contiguous(), x.contiguous(), b.contiguous(), y.contiguous())
    steps = len(epsilon_schedule(diameter, blur, scaling))
    return SinkhornResult(f.reshape(-1).detach(), g.reshape(-1).detach(), blur**2, steps, converged=False)
