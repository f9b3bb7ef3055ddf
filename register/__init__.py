"""register: robust optimal-transport registration of 3-D point clouds.

Public API (imported lazily, so that ``import register`` and the CLI's ``--help`` stay fast)::

    from register import register, read_points, write_points, load_transform, load_config

    result = register(read_points("src.ply"), read_points("tgt.ply"), "lung")
    result.transform.save("transform.npz")
    load_transform("transform.npz").apply(points)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Affine": "register.core.transforms",
    "Composite": "register.core.transforms",
    "ConfigError": "register.errors",
    "InputError": "register.errors",
    "KernelField": "register.core.transforms",
    "PipelineConfig": "register.config",
    "PointCloud": "register.core.pointcloud",
    "Result": "register.pipeline",
    "Transform": "register.core.transforms",
    "load_config": "register.config",
    "load_transform": "register.core.transforms",
    "read_points": "register.io",
    "register": "register.pipeline",
    "write_points": "register.io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'register' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
