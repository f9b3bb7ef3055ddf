"""The :class:`Result` of a registration."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from register.config import PipelineConfig
from register.core.transforms import Composite
from register.reliability import Reliability


@dataclass
class Result:
    """What :func:`register` returns.

    Attributes:
        transform: source frame -> target frame (apply it to any points of the source space).
        warped: ``(N, D)`` the source points moved into the target frame, data units.
        displacement: ``(N, D)`` ``warped - source``, data units.
        confidence: ``(N,)`` transported-mass ratio of each source point at the last matching
            (1 = fully matched, 0 = treated as an outlier); points outside the matched
            subsample take their nearest matched neighbour's value.
        stages: per stage run: name, seconds and the stage's level reports.
        metrics: counts, residuals before/after (chamfer, data units, lower is better),
            backend and device, and the reliability report (``reliability``, as a dict).
        config: the configuration that ran, lengths resolved to data units.
        reliability: the :class:`~register.reliability.Reliability` report: matched mass,
            held-out residual before/after, folding, and its verdict (``ok`` / ``suspect: ...``).
    """

    transform: Composite
    warped: np.ndarray
    displacement: np.ndarray
    confidence: np.ndarray
    stages: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    config: PipelineConfig | None = None
    reliability: Reliability | None = None
