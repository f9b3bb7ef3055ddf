"""Backend choice for the kernel reductions, with the reason recorded for the user."""

from __future__ import annotations

from dataclasses import dataclass

from register.errors import InputError

BACKENDS = ("auto", "dense", "sparse", "keops", "geomloss")

# Above this many kernel entries per reduction, a dense pass on the CPU costs more
# than ~0.5 s; on CUDA the online KeOps reduction is the better choice beyond it.
DENSE_MAX_ENTRIES_GPU = 25_000_000
# On the CPU, problems above this many entries use the multiscale block-sparse solver
# (synthetic 30k-point vessel pair, lung preset, 1 thread: affine stage 22.6 s dense -> 9.2 s).
SPARSE_MIN_ENTRIES_CPU = 1_000_000


@dataclass(frozen=True)
class BackendChoice:
    """Which reduction backend runs, and why (written to ``metrics.json``)."""

    name: str
    reason: str


def choose_backend(n: int, m: int, device: str, requested: str = "auto") -> BackendChoice:
    """Pick the reduction backend for an ``n x m`` problem on ``device``.

    ``auto``: on the CPU, the multiscale block-sparse solver (:mod:`register.ot.multiscale`:
    certified truncation, vectorised torch blocks) above ``SPARSE_MIN_ENTRIES_CPU`` entries and
    dense tensorised reductions below; on CUDA, dense up to ``DENSE_MAX_ENTRIES_GPU`` entries and
    KeOps beyond (no ``N x M`` memory).
    """
    if requested not in BACKENDS:
        raise InputError(
            f"pipeline.backend = {requested!r}: unknown backend; choose one of {', '.join(BACKENDS)}"
        )
    if requested != "auto":
        return BackendChoice(requested, "selected explicitly")
    if device.startswith("cuda"):
        if n * m > DENSE_MAX_ENTRIES_GPU:
            return BackendChoice("keops", f"CUDA and {n}x{m} > {DENSE_MAX_ENTRIES_GPU:,} kernel entries")
        return BackendChoice("dense", f"CUDA, {n}x{m} kernel entries, chunked dense reductions")
    if n * m > SPARSE_MIN_ENTRIES_CPU:
        return BackendChoice(
            "sparse", f"CPU, {n}x{m} > {SPARSE_MIN_ENTRIES_CPU:,} kernel entries: multiscale block-sparse"
        )
    return BackendChoice("dense", f"CPU, {n}x{m} kernel entries, chunked dense reductions")
