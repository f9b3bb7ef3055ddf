"""Which points of a registered pair have a counterpart in the other cloud: nearest-neighbour
measures that need no matching, for the ``pipeline.fallback`` trigger.

For the warped source ``z = T(x) (N, D)`` (masses ``a``) and the target ``y (M, D)`` (masses
``b``), data units, with ``h`` the target's median nearest-neighbour spacing and ``d_i`` the
distance of ``z_i`` to its nearest target point:

1. **copies**: the pair is a copy pair when ``median_i d_i < COPY_RATIO * h``: most source points
   lie on a target sample, far closer than target samples lie to one another (landmark pairs,
   a damaged copy of one cloud). Independent samplings of one shape give ``~h``; keypoint
   clouds detected in each scan separately (Lung250M-4B) 0.08-0.5 ``h`` after registration,
   DIR-LAB and COPD landmark pairs 0.000-0.026.
2. **partnered fraction** (copy pairs): ``z_i`` and ``y_j`` are partners when each is the
   other's nearest neighbour and ``|z_i - y_j| < PARTNER_RATIO * h``. The source's fraction is
   ``sum_{i partnered} a_i / sum_i a_i``, the target's likewise; the report keeps the smaller:

       partnered = min( a(partnered) / a(all), b(partnered) / b(all) )              (1)

   A registered complete copy pair reads ~1 (DIR-LAB 4DCT, COPD: 0.99-1.00); the part of a
   crop, of a thinned half or of added outliers has no partner, whatever the registration did
   with it (one-to-one: a source point dragged onto an outlier takes no partner from another).
3. **stray fraction**: the mass of each cloud farther from the other cloud than
   ``STRAY_SPACINGS`` times the other cloud's ``STRAY_QUANTILE``-quantile of its own
   nearest-neighbour distances (``g_y``, ``g_z``), the larger of the two:

       stray = max( a(d(z_i, y) > S g_y) / a(all), b(d(y_j, z) > S g_z) / b(all) )    (2)

   The quantile rather than the median spacing keeps (2) free of the sampling's dimension: for
   independent random samplings of a k-dimensional shape, ``P(d > S g) = 0.1^(S^k)``
   (curves 1 %, surfaces 1e-4, volumes 1e-8 at S = 2), where ``S`` median spacings would give
   ``0.5^(S^k)`` (25 % on curves). A complete pair after registration has (almost) no stray
   mass (Lung250M-4B keypoint pairs: at most 0.17 %); outliers scattered around the shape leave
   some of theirs stray whatever the registration did (DIR-LAB 4DCT with 20 % uniform
   outliers: 0.98-1.40 %).

The matching-based matched masses of :mod:`register.reliability` cannot see these on sparse
clouds: their reach (several spacings, 20-50 mm for 300 landmarks) covers most outliers and the
rim of a crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from register.core.sampling import nearest_spacings

# A copy pair: median source-to-target distance below this fraction of the target's spacing.
COPY_RATIO = 0.05
# Partners (1) lie within this fraction of the target's spacing of each other (twice the copy
# radius: room for the residual of a good registration around its median).
PARTNER_RATIO = 2 * COPY_RATIO
# Stray points (2) lie farther from the other cloud than this many times ...
STRAY_SPACINGS = 2.0
# ... this quantile of that cloud's own nearest-neighbour distances.
STRAY_QUANTILE = 0.9


@dataclass(frozen=True)
class Partners:
    """Counterparts of a registered pair (module docstring).

    Attributes:
        copies: whether the pair is a copy pair (1).
        partnered_fraction: (1), in [0, 1]; measured for every pair, meaningful for copy pairs.
        stray_fraction: (2), in [0, 1].
    """

    copies: bool
    partnered_fraction: float
    stray_fraction: float


def partners(
    warped: np.ndarray, target: np.ndarray, source_masses: np.ndarray, target_masses: np.ndarray
) -> Partners:
    """:class:`Partners` of ``warped (N, D)`` (masses ``(N,)``) against ``target (M, D)``
    (masses ``(M,)``), data units; N, M >= 2."""
    a = np.asarray(source_masses, dtype=np.float64)
    b = np.asarray(target_masses, dtype=np.float64)
    own_y, own_z = nearest_spacings(target), nearest_spacings(warped)  # (M,), (N,)
    h_y = float(np.median(own_y))
    g_y, g_z = np.quantile(own_y, STRAY_QUANTILE), np.quantile(own_z, STRAY_QUANTILE)
    to_target, nearest_target = cKDTree(target).query(warped)  # (N,), (N,)
    to_source, nearest_source = cKDTree(warped).query(target)  # (M,), (M,)
    copies = bool(np.median(to_target) < COPY_RATIO * h_y)
    mutual = nearest_source[nearest_target] == np.arange(len(warped))  # (N,)
    paired = mutual & (to_target < PARTNER_RATIO * h_y)  # (N,) source points with a partner
    paired_target = np.zeros(len(target), dtype=bool)
    paired_target[nearest_target[paired]] = True
    partnered = min(a[paired].sum() / a.sum(), b[paired_target].sum() / b.sum())
    stray = max(
        a[to_target > STRAY_SPACINGS * g_y].sum() / a.sum(),
        b[to_source > STRAY_SPACINGS * g_z].sum() / b.sum(),
    )
    return Partners(copies, float(partnered), float(stray))
