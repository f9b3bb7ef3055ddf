"""Peer registration tools behind one interface, each run in its own child process.

::

    from benchmarks.peers import run_peer

    result = run_peer("probreg_cpd_nonrigid", source, target, time_limit_s=600, seed=0)
    if result.ok:
        warped_landmarks = result.apply(landmarks)   # any (L, 3) points in the source frame
    print(result.status, result.wall_s, result.cpu_s, result.peak_rss_delta_mb)

Methods (``PEER_METHODS``) and their defaults (``DEFAULTS``; override with ``params=``):

* ``open3d_icp``: Open3D point-to-point ICP (rigid), identity start, maximum correspondence
  distance 5 % of the target's bounding-box diagonal, 100 iterations. Raw coordinates.
* ``probreg_cpd_rigid`` / ``probreg_cpd_affine`` / ``probreg_cpd_nonrigid``: probreg's
  ``registration_cpd`` with probreg's own defaults (``w=0``, ``maxiter=50``, ``tol=1e-3``;
  rigid estimates a scale too, as probreg's default ``update_scale=True`` does; non-rigid
  ``beta=2``, ``lmd=2``). CPD's parameters assume normalised inputs, so each cloud is centred
  on its centroid and divided by its RMS radius before the call and the result is mapped back
  (``normalise=False`` turns that off). This reproduces the PEERS.md figures on DIR-LAB case 1
  (in mm, non-rigid CPD gives 3.3 mm instead of 0.82).
* ``pycpd_deformable``: pycpd's ``DeformableRegistration`` with its defaults (``alpha=2``,
  ``beta=2``, ``max_iterations=100``, ``tolerance=1e-3``, ``w=0``), same normalisation.
* ``bcpd`` / ``bcpd_tuned`` / ``bcpd_shapes``: the BCPD binary (``PEERS_BIN/bcpd``, built from
  ``../shared/peers/bcpd`` by ``bash benchmarks/setup_peers.sh``, else ``bcpd`` on PATH) with
  its default settings, ``BCPD_TUNED_ARGS`` (``-ux -g0.1 -b0.5 -l200``, tuned on DIR-LAB) and
  ``BCPD_SHAPES_ARGS`` (its shape demos' settings), the PEERS.md settings; ``params={"args":
  [...]}`` replaces them. Source and target are written to text files in a temporary folder
  (``%.10g``, the same files for every setting). Its deformed source is exact; other points are
  mapped by interpolating the source displacements (see :class:`PeerTransform`). Without the
  binary the status is ``unavailable: ...``.

Non-rigid CPD maps the source by ``y = y0 + G(y0, Y) W`` where ``Y`` are the (normalised) source
points and ``G`` a Gaussian kernel. Both libraries only apply it to their own source points, so
:class:`PeerTransform` evaluates the kernel at any points itself, with each library's kernel
convention (probreg: ``exp(-d^2 / (2 beta))``; pycpd: ``exp(-d^2 / (2 beta^2))``).
``run_peer`` checks, for every method, that the returned map reproduces the tool's own output
at the source points (``info["self_check_max_abs"]``, data units; ~1e-12) and, for probreg,
the child compares the kernel with probreg's own ``G`` (``info["kernel_check_max_abs"]``).

Statuses: ``ok``, ``timeout``, ``oom``, ``error: <Type>: <message>``,
``unavailable: <reason>`` (package or binary missing: nothing was run).

Test hooks (not peers; used by ``tests/test_peers.py``): ``_test_sleep`` (sleeps
``params["seconds"]``), ``_test_error`` (raises), ``_test_alloc`` (holds ``params["mb"]`` MiB).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.limits import ChildOutcome, run_limited

PEER_METHODS = (
    "open3d_icp",
    "probreg_cpd_rigid",
    "probreg_cpd_affine",
    "probreg_cpd_nonrigid",
    "pycpd_deformable",
    "bcpd",
    "bcpd_tuned",
    "bcpd_shapes",
)
BCPD_METHODS = ("bcpd", "bcpd_tuned", "bcpd_shapes")
TEST_METHODS = ("_test_sleep", "_test_error", "_test_alloc")

# BCPD settings quoted in PEERS.md ("tuned" was chosen on the DIR-LAB cases themselves).
BCPD_TUNED_ARGS = ["-ux", "-g0.1", "-b0.5", "-l200"]
BCPD_SHAPES_ARGS = ["-w0.1", "-b2.0", "-l200", "-g3", "-J300", "-K70", "-p", "-c1e-6", "-n500", "-r1"]
# Where benchmarks/setup_peers.sh builds BCPD (git-ignored); searched before PATH.
PEERS_BIN = Path(__file__).resolve().parents[1] / ".peers" / "bin"

# Defaults: the libraries' own unless PEERS.md / the benchmark brief says otherwise.
DEFAULTS: dict[str, dict[str, Any]] = {
    "open3d_icp": {"max_correspondence_fraction": 0.05, "max_iteration": 100},
    "probreg_cpd_rigid": {"w": 0.0, "maxiter": 50, "tol": 1e-3, "update_scale": True, "normalise": True},
    "probreg_cpd_affine": {"w": 0.0, "maxiter": 50, "tol": 1e-3, "normalise": True},
    "probreg_cpd_nonrigid": {
        "w": 0.0,
        "maxiter": 50,
        "tol": 1e-3,
        "beta": 2.0,
        "lmd": 2.0,
        "normalise": True,
    },
    "pycpd_deformable": {
        "alpha": 2.0,
        "beta": 2.0,
        "max_iterations": 100,
        "tolerance": 1e-3,
        "w": 0.0,
        "normalise": True,
    },
    # binary None: bcpd_binary(), resolved in the parent (the child runs exactly that file)
    "bcpd": {"args": [], "binary": None},
    "bcpd_tuned": {"args": BCPD_TUNED_ARGS, "binary": None},
    "bcpd_shapes": {"args": BCPD_SHAPES_ARGS, "binary": None},
    "_test_sleep": {"seconds": 60.0},
    "_test_error": {},
    "_test_alloc": {"mb": 512, "seconds": 30.0},
}
_PACKAGES = {
    "open3d_icp": "open3d",
    "probreg_cpd_rigid": "probreg",
    "probreg_cpd_affine": "probreg",
    "probreg_cpd_nonrigid": "probreg",
    "pycpd_deformable": "pycpd",
}
_KERNEL_CHUNK_BYTES = 64 * 1024 * 1024


class PeerUnavailable(RuntimeError):
    """The peer's package cannot be imported in the child (reported as ``unavailable: ...``)."""


# ----------------------------------------------------------------------------- transforms


@dataclass
class PeerTransform:
    """A peer's estimated map from the source frame to the target frame, for any points.

    ``kind``:

    * ``affine``: ``x -> x @ matrix.T + translation`` (rigid, similarity or affine).
    * ``cpd_kernel``: ``u = (x - src_centre) / src_scale``,
      ``x -> tgt_scale * (u + G(u, ctrl) @ weights) + tgt_centre`` with
      ``G(a, b) = exp(-|a - b|^2 / kernel_den)`` (CPD's displacement field ``G W``).
    * ``displacement``: known displacements ``disp`` at ``nodes`` (the source points), e.g.
      BCPD's output: exact at the nodes; elsewhere a Gaussian-weighted average of the
      ``k`` nearest nodes' displacements (width = the median nearest-node spacing), an
      approximation of BCPD's own smooth field.
    """

    kind: str
    matrix: np.ndarray | None = None
    translation: np.ndarray | None = None
    ctrl: np.ndarray | None = None
    weights: np.ndarray | None = None
    kernel_den: float = math.nan
    src_centre: np.ndarray | None = None
    src_scale: float = 1.0
    tgt_centre: np.ndarray | None = None
    tgt_scale: float = 1.0
    nodes: np.ndarray | None = None
    disp: np.ndarray | None = None
    k: int = 8

    @classmethod
    def identity(cls, dim: int = 3) -> PeerTransform:
        return cls("affine", matrix=np.eye(dim), translation=np.zeros(dim))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """``(L, D)`` points of the source frame -> ``(L, D)`` points in the target frame."""
        x = np.asarray(points, dtype=np.float64)
        if self.kind == "affine":
            return x @ self.matrix.T + self.translation
        if self.kind == "cpd_kernel":
            u = (x - self.src_centre) / self.src_scale
            moved = u + kernel_displacement(u, self.ctrl, self.weights, self.kernel_den)
            return self.tgt_scale * moved + self.tgt_centre
        if self.kind == "displacement":
            return x + interpolate_displacement(x, self.nodes, self.disp, self.k)
        raise ValueError(f"unknown transform kind {self.kind!r}")


def kernel_displacement(
    u: np.ndarray, ctrl: np.ndarray, weights: np.ndarray, kernel_den: float
) -> np.ndarray:
    """``G(u, ctrl) @ weights`` with ``G = exp(-|u_i - ctrl_j|^2 / kernel_den)``, in chunks of ``u``."""
    out = np.empty((len(u), weights.shape[1]))
    ctrl_sq = (ctrl**2).sum(1)
    step = max(1, _KERNEL_CHUNK_BYTES // (8 * max(len(ctrl), 1)))
    for i in range(0, len(u), step):
        part = u[i : i + step]
        d2 = (part**2).sum(1)[:, None] + ctrl_sq[None, :] - 2.0 * part @ ctrl.T
        np.maximum(d2, 0.0, out=d2)
        out[i : i + step] = np.exp(-d2 / kernel_den) @ weights
    return out


def interpolate_displacement(x: np.ndarray, nodes: np.ndarray, disp: np.ndarray, k: int = 8) -> np.ndarray:
    """Displacement at ``x`` from ``disp`` known at ``nodes``: exact at a node, else a Gaussian
    weighted mean over the ``k`` nearest nodes (width = median nearest-node spacing)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(nodes)
    k = min(k, len(nodes))
    width = float(np.median(tree.query(nodes, k=2)[0][:, 1])) if len(nodes) > 1 else 1.0
    width = width or 1.0
    dist, idx = tree.query(x, k=k)
    dist, idx = dist.reshape(len(x), k), idx.reshape(len(x), k)
    w = np.exp(-0.5 * (dist / width) ** 2)
    exact = dist[:, 0] <= 1e-9 * width
    w[exact] = 0.0
    w[exact, 0] = 1.0
    far = w.sum(1) < 1e-300  # beyond every kernel: the nearest node's displacement
    w[far, 0] = 1.0
    return (w[:, :, None] * disp[idx]).sum(1) / w.sum(1, keepdims=True)


# ---------------------------------------------------------------------------------- results


@dataclass
class PeerResult:
    """One peer run. ``transform`` / ``warped_source`` are set only when ``status == "ok"``.

    Attributes:
        method: the peer's name; status: see the module docstring.
        transform: maps any source-frame points to the target frame (:meth:`apply`).
        warped_source: the tool's own output for the source points (target frame).
        wall_s / cpu_s: wall and CPU (user + system, all threads) seconds of the registration
            call in the child (imports and start-up excluded; ``startup_s`` has those).
        peak_rss_mb: peak resident memory of the child process, MiB;
            peak_rss_delta_mb: its increase over the RSS just before the call (the method's own
            memory, beyond the interpreter, libraries and inputs).
        params: the settings used; info: what the tool reported (iterations, fitness, versions,
            ``self_check_max_abs``); message: detail of a failure.
    """

    method: str
    status: str
    transform: PeerTransform | None = None
    warped_source: np.ndarray | None = None
    wall_s: float = math.nan
    cpu_s: float = math.nan
    peak_rss_mb: float = math.nan
    peak_rss_delta_mb: float = math.nan
    startup_s: float = math.nan
    seed: int = 0
    params: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def apply(self, points: np.ndarray) -> np.ndarray:
        if self.transform is None:
            raise RuntimeError(f"{self.method}: no transform (status {self.status})")
        return self.transform.apply(points)

    def record(self) -> dict:
        """JSON-friendly summary (no arrays) for a benchmark record."""
        return {
            "method": self.method,
            "status": self.status,
            "seconds": self.wall_s,
            "cpu_seconds": self.cpu_s,
            "peak_rss_mb": self.peak_rss_mb,
            "peak_rss_delta_mb": self.peak_rss_delta_mb,
            "startup_seconds": self.startup_s,
            "seed": self.seed,
            "params": self.params,
            "info": self.info,
            **({"message": self.message} if self.message else {}),
        }


# --------------------------------------------------------------------------- availability


NO_BCPD = f"no bcpd binary in {PEERS_BIN} or on PATH (build it: bash benchmarks/setup_peers.sh bcpd)"


def bcpd_binary() -> str | None:
    """The BCPD executable: ``PEERS_BIN/bcpd`` (built by ``benchmarks/setup_peers.sh``), else
    ``bcpd`` on PATH, else ``None``."""
    built = PEERS_BIN / "bcpd"
    if built.is_file() and os.access(built, os.X_OK):
        return str(built)
    return shutil.which("bcpd")


def availability(method: str) -> str | None:
    """``None`` when ``method`` can run here, else the reason it cannot (nothing is imported)."""
    if method in BCPD_METHODS:
        return None if bcpd_binary() else NO_BCPD
    package = _PACKAGES.get(method)
    if package is not None and importlib.util.find_spec(package) is None:
        extra = (
            " (pip install --no-deps probreg; see pyproject's bench extra)" if package == "probreg" else ""
        )
        return f"python package {package!r} not installed{extra}"
    return None


def available_methods() -> list[str]:
    return [m for m in PEER_METHODS if availability(m) is None]


# ------------------------------------------------------------------- child-side functions


def _setup(method: str) -> None:
    """Imports before the clock starts (runs in the child)."""
    package = _PACKAGES.get(method)
    if package is None:
        return
    try:
        if package == "probreg":
            import probreg.cpd  # noqa: F401
        elif package == "pycpd":
            import pycpd  # noqa: F401
        elif package == "open3d":
            import open3d  # noqa: F401
    except ImportError as exc:
        raise PeerUnavailable(f"import {package} failed: {exc}") from exc


def _normaliser(points: np.ndarray, on: bool) -> tuple[np.ndarray, float]:
    """Centroid and RMS radius of ``points`` (identity when ``on`` is false)."""
    if not on:
        return np.zeros(points.shape[1]), 1.0
    centre = points.mean(0)
    scale = float(np.sqrt(((points - centre) ** 2).sum(1).mean())) or 1.0
    return centre, scale


def _affine_back(b: np.ndarray, t: np.ndarray, cs, ss, ct, st) -> PeerTransform:
    """``y_n = b x_n + t`` in normalised frames -> the same map in the original frames."""
    matrix = (st / ss) * np.asarray(b, dtype=np.float64)
    translation = st * np.asarray(t, dtype=np.float64) + ct - matrix @ cs
    return PeerTransform("affine", matrix=matrix, translation=translation)


def _open3d_icp(source, target, seed, p) -> dict:
    import open3d as o3d

    o3d.utility.random.seed(seed)
    src = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(source))
    tgt = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(target))
    diagonal = float(np.linalg.norm(target.max(0) - target.min(0)))
    distance = p["max_correspondence_fraction"] * diagonal
    reg = o3d.pipelines.registration
    out = reg.registration_icp(
        src,
        tgt,
        distance,
        np.eye(4),
        reg.TransformationEstimationPointToPoint(),
        reg.ICPConvergenceCriteria(max_iteration=int(p["max_iteration"])),
    )
    m = np.asarray(out.transformation)
    transform = PeerTransform("affine", matrix=m[:3, :3].copy(), translation=m[:3, 3].copy())
    warped = np.asarray(src.transform(m).points)
    return {
        "transform": transform,
        "warped_source": warped,
        "info": {
            "fitness": float(out.fitness),
            "inlier_rmse": float(out.inlier_rmse),
            "max_correspondence_distance": distance,
            "open3d": o3d.__version__,
        },
    }


def _probreg_cpd(kind: str, source, target, seed, p) -> dict:
    import probreg
    from probreg import cpd

    cs, ss = _normaliser(source, p["normalise"])
    ct, st = _normaliser(target, p["normalise"])
    xs, yt = (source - cs) / ss, (target - ct) / st
    kwargs = {}
    if kind == "rigid":
        kwargs["update_scale"] = p["update_scale"]
    elif kind == "nonrigid":
        kwargs.update(beta=p["beta"], lmd=p["lmd"])
    iterations = []
    res = cpd.registration_cpd(
        xs,
        yt,
        tf_type_name=kind,
        w=p["w"],
        maxiter=int(p["maxiter"]),
        tol=p["tol"],
        callbacks=[lambda _t: iterations.append(1)],
        **kwargs,
    )
    tf = res.transformation
    own = np.asarray(tf.transform(xs)) * st + ct  # probreg's own result at the source points
    info = {"iterations": len(iterations), "sigma2": float(res.sigma2), "probreg": probreg.__version__}
    if kind == "rigid":
        transform = _affine_back(tf.scale * tf.rot, tf.t, cs, ss, ct, st)
        info["scale"] = float(tf.scale) * st / ss
    elif kind == "affine":
        transform = _affine_back(tf.b, tf.t, cs, ss, ct, st)
    else:
        # probreg's rbf kernel is exp(-d^2 / (2 beta)) (beta is a variance here, unlike pycpd).
        transform = PeerTransform(
            "cpd_kernel",
            ctrl=xs.copy(),
            weights=np.asarray(tf.w, dtype=np.float64).copy(),
            kernel_den=2.0 * p["beta"],
            src_centre=cs,
            src_scale=ss,
            tgt_centre=ct,
            tgt_scale=st,
        )
        rows = xs[:200]  # same kernel convention and orientation as probreg's G (a few rows)
        g_ours = np.exp(-((rows[:, None, :] - xs[None, :, :]) ** 2).sum(-1) / (2.0 * p["beta"]))
        info["kernel_check_max_abs"] = float(np.abs(g_ours - np.asarray(tf.g)[: len(rows)]).max())
    return {"transform": transform, "warped_source": own, "info": info}


def _pycpd_deformable(source, target, seed, p) -> dict:
    from importlib.metadata import version

    from pycpd import DeformableRegistration

    cs, ss = _normaliser(source, p["normalise"])
    ct, st = _normaliser(target, p["normalise"])
    xs, yt = (source - cs) / ss, (target - ct) / st
    reg = DeformableRegistration(
        X=yt,
        Y=xs,
        alpha=p["alpha"],
        beta=p["beta"],
        max_iterations=int(p["max_iterations"]),
        tolerance=p["tolerance"],
        w=p["w"],
    )
    ty, (_g, w) = reg.register()
    own = np.asarray(ty) * st + ct
    # pycpd's kernel is exp(-d^2 / (2 beta^2)); G W only exists at its own points: evaluate it here.
    transform = PeerTransform(
        "cpd_kernel",
        ctrl=xs.copy(),
        weights=np.asarray(w, dtype=np.float64).copy(),
        kernel_den=2.0 * p["beta"] ** 2,
        src_centre=cs,
        src_scale=ss,
        tgt_centre=ct,
        tgt_scale=st,
    )
    info = {
        "iterations": int(reg.iteration),
        "sigma2": float(reg.sigma2),
        "pycpd": version("pycpd"),
    }
    return {"transform": transform, "warped_source": own, "info": info}


def _bcpd(source, target, seed, p) -> dict:
    binary = p["binary"] or bcpd_binary()
    if binary is None:
        raise PeerUnavailable(NO_BCPD)
    with tempfile.TemporaryDirectory(prefix="peer-bcpd-") as tmp:
        tmp = Path(tmp)
        # BCPD reads comma- or tab-separated .txt files; X = target, Y = source.
        np.savetxt(tmp / "X.txt", target, delimiter=",", fmt="%.10g")
        np.savetxt(tmp / "Y.txt", source, delimiter=",", fmt="%.10g")
        args = [str(a) for a in p["args"]]
        if not any(a.startswith("-r") for a in args):
            args.append(f"-r{seed}")  # seed of BCPD's Nystrom sampling (used only with -J / -K)
        command = [binary, "-x", str(tmp / "X.txt"), "-y", str(tmp / "Y.txt"), "-o", str(tmp / "out_"), "-q"]
        proc = subprocess.run(command + args, capture_output=True, text=True, cwd=tmp)
        out = tmp / "out_y.txt"
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(
                f"bcpd exited with {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-500:]}"
            )
        rows = [line.replace(",", " ").split() for line in out.read_text().splitlines()]
        warped = np.array([[float(v) for v in row] for row in rows if row], dtype=np.float64)
    if warped.shape != source.shape:
        raise RuntimeError(f"bcpd wrote {warped.shape} points for a {source.shape} source")
    transform = PeerTransform("displacement", nodes=source.copy(), disp=warped - source)
    return {
        "transform": transform,
        "warped_source": warped,
        "info": {"binary": binary, "args": args, "landmarks": "interpolated from the source displacements"},
    }


def _test_sleep(source, target, seed, p) -> dict:
    time.sleep(p["seconds"])
    return {"transform": PeerTransform.identity(source.shape[1]), "warped_source": source, "info": {}}


def _test_error(source, target, seed, p) -> dict:
    raise ValueError("deliberate failure (test hook)")


def _test_alloc(source, target, seed, p) -> dict:
    block = np.ones(int(p["mb"] * 1024 * 1024 / 8))  # written, hence resident
    time.sleep(p["seconds"])
    return {
        "transform": PeerTransform.identity(source.shape[1]),
        "warped_source": source,
        "info": {"held_mb": block.nbytes / 2**20},
    }


_WORKERS = {
    "open3d_icp": _open3d_icp,
    "probreg_cpd_rigid": functools.partial(_probreg_cpd, "rigid"),
    "probreg_cpd_affine": functools.partial(_probreg_cpd, "affine"),
    "probreg_cpd_nonrigid": functools.partial(_probreg_cpd, "nonrigid"),
    "pycpd_deformable": _pycpd_deformable,
    "bcpd": _bcpd,
    "bcpd_tuned": _bcpd,
    "bcpd_shapes": _bcpd,
    "_test_sleep": _test_sleep,
    "_test_error": _test_error,
    "_test_alloc": _test_alloc,
}


def _work(method: str, source: np.ndarray, target: np.ndarray, seed: int, params: dict) -> dict:
    """The timed call in the child."""
    np.random.seed(seed % 2**32)
    return _WORKERS[method](source, target, seed, params)


# ---------------------------------------------------------------------------------- parent


def _as_points(name: str, points: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(points, dtype=np.float64))
    if x.ndim != 2 or x.shape[1] != 3 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty (N, 3) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has non-finite coordinates")
    return x


def run_peer(
    method: str,
    source: np.ndarray,
    target: np.ndarray,
    *,
    time_limit_s: float,
    seed: int,
    memory_limit_mb: float | None = None,
    threads: int | None = None,
    params: dict | None = None,
    startup_timeout_s: float = 300.0,
) -> PeerResult:
    """Register ``source (N, 3)`` onto ``target (M, 3)`` with a peer tool in a child process.

    Args:
        method: one of ``PEER_METHODS`` (or a ``TEST_METHODS`` hook).
        time_limit_s: wall-clock limit of the registration call (start-up excluded); the child
            is killed past it (status ``timeout``).
        seed: seeds numpy (and Open3D / BCPD's sampling) in the child; the methods here are
            deterministic otherwise.
        memory_limit_mb: kill the child (status ``oom``) when its resident memory exceeds this.
        threads: if given, ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS``
            of the child (PEERS.md was measured with ``OMP_NUM_THREADS=2``); else inherited.
        params: overrides of ``DEFAULTS[method]``.

    Returns:
        :class:`PeerResult`; never raises for a failure of the peer itself.
    """
    if method not in _WORKERS:
        raise ValueError(f"unknown peer method {method!r}; choose from {', '.join(PEER_METHODS)}")
    unknown = set(params or {}) - set(DEFAULTS[method])
    if unknown:
        raise ValueError(f"{method}: unknown params {sorted(unknown)}; known: {sorted(DEFAULTS[method])}")
    settings = {**DEFAULTS[method], **(params or {})}
    source = _as_points("source", source)
    target = _as_points("target", target)
    reason = availability(method)
    if reason is not None:
        return PeerResult(method, f"unavailable: {reason}", seed=seed, params=settings)
    if method in BCPD_METHODS and settings["binary"] is None:
        settings["binary"] = bcpd_binary()
    env = None
    if threads is not None:
        env = {k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    outcome: ChildOutcome = run_limited(
        _work,
        (method, source, target, seed, settings),
        time_limit_s=time_limit_s,
        memory_limit_mb=memory_limit_mb,
        setup=functools.partial(_setup, method),
        env=env,
        startup_timeout_s=startup_timeout_s,
    )
    status = outcome.status
    if status.startswith("error: PeerUnavailable: "):
        status = "unavailable: " + status.removeprefix("error: PeerUnavailable: ")
    result = PeerResult(
        method,
        status,
        wall_s=outcome.wall_s,
        cpu_s=outcome.cpu_s,
        peak_rss_mb=outcome.peak_rss_mb,
        peak_rss_delta_mb=outcome.peak_rss_delta_mb,
        startup_s=outcome.startup_s,
        seed=seed,
        params=settings,
        message=outcome.message,
    )
    if outcome.status == "ok":
        value = outcome.value
        result.transform = value["transform"]
        result.warped_source = value["warped_source"]
        result.info = value["info"]
        # The map evaluated by our code vs the tool's own output at the source points (data
        # units): ~1e-12 for every kind; it checks the landmark evaluation of CPD's G W.
        result.info["self_check_max_abs"] = float(
            np.abs(result.transform.apply(source) - result.warped_source).max()
        )
    if threads is not None:
        result.info["threads"] = threads
    return result
