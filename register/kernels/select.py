"""Backend choice for the kernel reductions, with the reason recorded for the user."""

from __future__ import annotations

from dataclasses import dataclass

from register.errors import InputError

BACKENDS = ("auto", "dense", "sparse", "keops", "geomloss")

# Above this many kernel entries per reduction, a dense pass on the CPU costs more
# than ~0.5 s; on CUDA the online KeOps reduction is the better choice beyond it.
DENSE_MAX_ENTRIES_GPU = 25_000_000


@dataclass(frozen=True)
class BackendChoice:
    """Which reduction backend runs, and why (written to ``metrics.json``)."""

    name: str
    reason: str


def choose_backend(n: int, m: int, device: str, requested: str = "auto") -> BackendChoice:
    """Pick the reduction backend for an ``n x m`` problem on ``device``.

    ``auto``: dense tensorised reductions on the CPU (vectorised exp beats KeOps's scalar
    CPU code) and for small problems on CUDA; KeOps on CUDA beyond
    ``DENSE_MAX_ENTRIES_GPU`` entries (no ``N x M`` memory). ``sparse`` (the multiscale
    truncated solver of :mod:`register.ot.multiscale`) is only used when asked for: it gives
    the same Lung250M-4B TRE as dense at 2-3x the speed, but the completeness of its
    neighbour lists rests on a heuristic (terms roughly radial around each row's barycentric
    target) that still misses terms on large unaligned problems (raw 30k-point copd1 vessel
    pair at blur 1 mm: 516 rows off by up to 110 eps), so it is not yet the CPU default.
    """
    if requested not in BACKENDS:
        raise InputError(f"--backend: unknown backend '{requested}'; choose one of {', '.join(BACKENDS)}")
    if requested != "auto":
        return BackendChoice(requested, "selected explicitly")
    if device.startswith("cuda") and n * m > DENSE_MAX_ENTRIES_GPU:
        return BackendChoice("keops", f"CUDA and {n}x{m} > {DENSE_MAX_ENTRIES_GPU:,} kernel entries")
    where = "CUDA" if device.startswith("cuda") else "CPU"
    return BackendChoice("dense", f"{where}, {n}x{m} kernel entries, chunked dense reductions")
