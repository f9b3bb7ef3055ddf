"""Unbalanced optimal transport: Sinkhorn solver and robust matching."""

from register.ot.matching import Matches, robust_match
from register.ot.unbalanced import SinkhornResult, sinkhorn

__all__ = ["Matches", "SinkhornResult", "robust_match", "sinkhorn"]
