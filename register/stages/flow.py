"""Stage 2 slot: deep point-flow prediction.

The network, its training and its shipped weights are not part of this release. Asking for
the stage is an error that says so, rather than a silent no-op.
"""

from __future__ import annotations

from register.config import FlowConfig
from register.errors import InputError


def flow_predict(cfg: FlowConfig) -> None:
    """Raise: no flow model is shipped yet (see the module docstring)."""
    raise InputError(
        f"--stages: the 'flow' stage (model '{cfg.model}') is not available in this version of "
        "register: no trained model is shipped. Use --stages affine,spline"
    )
