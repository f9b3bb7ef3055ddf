"""Benchmark cases of ``benchmarks.run``, one loader per family, read from the shared data folder.

Every case is a :class:`Case`: register ``source (N, 3)`` onto ``target (M, 3)`` (rows shuffled
with ``numpy.random.default_rng(0).permutation``, so no correspondence is given), then apply the
estimated map to ``eval_source (L, 3)`` and compare with ``eval_reference (L, 3)`` with the
case's ``metric``:

* ``tre``: ``|T(e_i) - r_i|`` in data units (mm for lung, m for LiDAR);
* ``scene_flow``: ``T(e_i) - e_i`` against the ground-truth flow ``r_i - e_i`` (EPE3D, m, ...);
* ``relative``: mean ``|T(e_i) - r_i|`` in % of the bounding-box diagonal of ``r``;
* ``rotation``: the rotation of the best similarity fit of ``e -> T(e)`` against that of
  ``e -> r`` (degrees; TEASER fixtures, where ``r = s R e + t``).

Families (``FAMILIES``) and their cases (``CATALOG``, names ``group/case``):

* ``lung``: DIR-LAB 4DCT dense 1-5 (EI -> EE), DIR-LAB COPD 300 landmarks 1-5 (insp -> exp,
  landmark-only clouds), Lung250M-4B keypoints (fixed -> moving; expert landmarks), Learn2Reg
  case 012 (exp lung surface -> insp lung surface; corrField keypoints ``exp_xyz, insp_xyz``).
* ``sceneflow``: KITTI (3) and FlyingThings3D (4) npz, ``pc1 -> pc2``, flow of ``pc1``.
* ``shapes``: BCPD pairs bunny, monkey, male, female (x -> y); synthetic smooth deformations of
  the Stanford bunny, armadillo and dragon (8k points each for source and target, sampled
  independently from the 30k cloud; the target sample is moved by a seeded
  :func:`register.synth.deform.make_smooth_random_field`, evaluated on the source points).
* ``rigid``: TEASER++ fixtures 1-6 (rotation error) and the small_gicp LiDAR pair (mean
  ``|T_est(x) - T_gt(x)|`` over the source points, m).
* ``synthetic``: pairs of :func:`register.synth.pairs.make_training_pair` (the flow network's
  training distribution: large smooth and breathing-like motion, independent resampling,
  noise, outliers) from held-out seeds no training run draws (``HELD_OUT_STREAM`` from index
  ``SYNTH_FIRST``): ``synth_lung`` (mm, TRE), ``synth_sceneflow`` (m, EPE3D), ``synth_shapes``
  (% of diagonal), ``SYNTH_CASES`` each of ``SYNTH_POINTS`` points; evaluated on the source's
  inliers. Generated, so they need no data folder (the ablation of the flow stage). Each case
  is given in its preset's first ``flow.axes`` frame (scene flow: KITTI's camera frame, x
  right, y down, z forward), as the preset expects real data.

Loading is lazy: ``load_cases(family, data, names=...)`` only reads the files of the cases asked
for. Everything is deterministic (fixed seeds), so every method gets identical inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FAMILIES = ("lung", "sceneflow", "shapes", "rigid", "synthetic")
METRICS = ("tre", "scene_flow", "relative", "rotation")
STANFORD_POINTS = 8000  # per cloud (source and target) of the synthetic shape cases
STANFORD_SEEDS = {"bunny": 11, "armadillo": 12, "dragon": 13}
SYNTH_CASES = 4  # held-out synthetic pairs per kind
SYNTH_POINTS = 8192  # points per cloud of each
SYNTH_FIRST = 2000  # first held-out index (training runs validate on 0-999, flow_heldout 1000+)
# kind -> (preset, metric, unit) of the synthetic cases
SYNTH_KINDS = {
    "lung": ("lung", "tre", "mm"),
    "sceneflow": ("sceneflow", "scene_flow", "m"),
    "shapes": ("shapes", "relative", "% of diagonal"),
}
# TEASER fixtures: the affine stage only, similarity mode, multi-start (as benchmarks/core.py).
SPECIAL_PRESETS = {"teaser": "benchmarks.core.TEASER_CONFIG"}
# The register presets each family's cases run with (``--set`` overrides must fit all of them).
FAMILY_PRESETS = {
    "lung": ("lung",),
    "sceneflow": ("sceneflow",),
    "shapes": ("shapes",),
    "rigid": ("rigid", "teaser"),
    "synthetic": tuple(preset for preset, _, _ in SYNTH_KINDS.values()),
}
# Folders each family needs (a missing one skips its cases with a warning).
FOLDERS = {
    "lung": ("lung/dirlab4dct", "lung/dirlab_copd", "lung/lung250m", "lung/l2r_case012"),
    "sceneflow": ("sceneflow",),
    "shapes": ("shapes/bcpd", "shapes/stanford"),
    "rigid": ("rigid/teaser", "rigid/small_gicp"),
    "synthetic": (),
}
# One small case per family for ``--quick``.
QUICK = {
    "lung": "dirlab_copd/copd1",
    "sceneflow": "kitti/000000",
    "shapes": "bcpd/male",
    "rigid": "teaser/benchmark_1",
    "synthetic": "synth_lung/0",
}


@dataclass
class Case:
    """One registration problem with ground truth (see the module docstring).

    ``unit`` is that of the metric's headline value; ``info`` holds extras (sizes, origin).
    """

    family: str
    name: str
    source: np.ndarray
    target: np.ndarray
    eval_source: np.ndarray
    eval_reference: np.ndarray
    metric: str
    preset: str
    unit: str = ""
    info: dict = field(default_factory=dict)

    @property
    def group(self) -> str:
        return self.name.split("/", 1)[0]

    def check(self) -> Case:
        for label, x in (
            ("source", self.source),
            ("target", self.target),
            ("eval_source", self.eval_source),
            ("eval_reference", self.eval_reference),
        ):
            if x.ndim != 2 or x.shape[1] != 3 or len(x) == 0 or not np.isfinite(x).all():
                raise ValueError(f"{self.family} {self.name}: bad {label} of shape {x.shape}")
        if self.eval_source.shape != self.eval_reference.shape:
            raise ValueError(f"{self.family} {self.name}: eval_source / eval_reference shapes differ")
        if self.metric not in METRICS:
            raise ValueError(f"{self.family} {self.name}: unknown metric {self.metric!r}")
        return self


# ---------------------------------------------------------------------------------- helpers


def shuffled(points: np.ndarray) -> np.ndarray:
    """Rows permuted by ``numpy.random.default_rng(0).permutation`` (the PEERS.md rule)."""
    return points[np.random.default_rng(0).permutation(len(points))]


def load_csv(path: Path) -> np.ndarray:
    """Comma-separated numbers; ``#`` lines are comments."""
    return np.loadtxt(path, delimiter=",", comments="#", ndmin=2)


def _f64(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float64))


def _points(path: Path) -> np.ndarray:
    from register.io import read_points

    return _f64(read_points(path).points)


def _pair_case(family, name, source, target, eval_source, eval_reference, metric, preset, unit, **info):
    source, target = _f64(source), _f64(target)
    return Case(
        family,
        name,
        source,
        shuffled(target),
        _f64(eval_source),
        _f64(eval_reference),
        metric,
        preset,
        unit,
        {"n_source": len(source), "n_target": len(target), "n_eval": len(eval_source), **info},
    ).check()


# ------------------------------------------------------------------------------------- lung


def _dirlab4dct(data: Path, n: int) -> Case:
    t = load_csv(data / "lung/dirlab4dct" / f"case{n}_dense_EI_EE_mm.csv")
    ei, ee = t[:, :3], t[:, 3:6]
    return _pair_case("lung", f"dirlab4dct/case{n}", ei, ee, ei, ee, "tre", "lung", "mm")


def _copd(data: Path, n: int) -> Case:
    t = load_csv(data / "lung/dirlab_copd" / f"copd{n}_insp_exp_mm.csv")
    insp, exp = t[:, :3], t[:, 3:6]
    return _pair_case("lung", f"dirlab_copd/copd{n}", insp, exp, insp, exp, "tre", "lung", "mm")


def _lung250m(data: Path, case: str) -> Case:
    kp = load_csv(data / "lung/lung250m/keypoints" / f"case_{case}.csv")
    lms = load_csv(data / "lung/lung250m/landmarks" / f"lms_validation_case_{case}.csv")
    return _pair_case(
        "lung", f"lung250m/case_{case}", kp[:, :3], kp[:, 3:6], lms[:, :3], lms[:, 3:6], "tre", "lung", "mm"
    )


def _l2r012(data: Path) -> Case:
    folder = data / "lung/l2r_case012"
    exp = np.loadtxt(folder / "case_012_exp_lung_surface_mm.xyz", ndmin=2)[:, :3]
    insp = np.loadtxt(folder / "case_012_insp_lung_surface_mm.xyz", ndmin=2)[:, :3]
    kp = load_csv(folder / "case_012_keypoints_mm.csv")  # exp_xyz, insp_xyz
    return _pair_case(
        "lung",
        "l2r/case_012",
        exp,
        insp,
        kp[:, :3],
        kp[:, 3:6],
        "tre",
        "lung",
        "mm",
        note="corrField pseudo ground truth (about 1-2 mm)",
    )


# ------------------------------------------------------------------------------- sceneflow


def _sceneflow(data: Path, stem: str, name: str) -> Case:
    with np.load(data / "sceneflow" / f"{stem}.npz") as z:
        pc1, pc2, flow = z["pc1"], z["pc2"], z["flow"]
    return _pair_case("sceneflow", name, pc1, pc2, pc1, pc1 + flow, "scene_flow", "sceneflow", "m")


# ----------------------------------------------------------------------------------- shapes


def _bcpd(data: Path, shape: str) -> Case:
    x = _points(data / "shapes/bcpd" / f"{shape}-x.txt")
    y = _points(data / "shapes/bcpd" / f"{shape}-y.txt")
    return _pair_case("shapes", f"bcpd/{shape}", x, y, x, y, "relative", "shapes", "% of diagonal")


def _stanford(data: Path, shape: str, n_points: int = STANFORD_POINTS) -> Case:
    from register.synth.deform import make_smooth_random_field

    full = _points(data / "shapes/stanford" / f"{shape}_30k.ply")
    seed = STANFORD_SEEDS[shape]
    rng = np.random.default_rng(seed)
    src_idx = rng.choice(len(full), size=min(n_points, len(full)), replace=False)
    tgt_idx = rng.choice(len(full), size=min(n_points, len(full)), replace=False)  # independent
    field_ = make_smooth_random_field(full, seed)  # defaults: sigma 25 %, mean |d| 5 % of diagonal
    source = full[src_idx]
    target = full[tgt_idx] + field_(full[tgt_idx])
    return _pair_case(
        "shapes",
        f"stanford/{shape}",
        source,
        target,
        source,
        source + field_(source),
        "relative",
        "shapes",
        "% of diagonal",
        seed=seed,
        deformation="make_smooth_random_field(full 30k cloud, seed): sigma 0.25, mean 0.05 of diagonal",
    )


# ------------------------------------------------------------------------------------ rigid


def read_teaser_fixture(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, dict]:
    """One TEASER++ fixture: ``src (N, 3)``, ``dst (N, 3)``, ``R_ref (3, 3)``, ``t_ref (3,)``,
    ``s_ref`` (``dst ~ s R src + t`` on the inliers) and ``parameters.txt`` as a dict of floats."""
    src, dst = _points(folder / "src.ply"), _points(folder / "dst.ply")
    r_ref = load_csv(folder / "R_ref.csv").reshape(3, 3)
    t_ref = load_csv(folder / "t_ref.csv").reshape(3)
    s_ref = float(load_csv(folder / "s_ref.csv").reshape(-1)[0])
    params = {}
    for line in (folder / "parameters.txt").read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            params[key.strip()] = float(value)
    return src, dst, r_ref, t_ref, s_ref, params


def _teaser(data: Path, n: int) -> Case:
    src, dst, r_ref, t_ref, s_ref, params = read_teaser_fixture(data / "rigid/teaser" / f"benchmark_{n}")
    truth = s_ref * src @ r_ref.T + t_ref
    return _pair_case(
        "rigid",
        f"teaser/benchmark_{n}",
        src,
        dst,
        src,
        truth,
        "rotation",
        "teaser",
        "deg",
        outlier_ratio=params.get("Outlier Ratio", math.nan),
    )


def _small_gicp(data: Path) -> Case:
    folder = data / "rigid/small_gicp"
    src, tgt = _points(folder / "source.ply"), _points(folder / "target.ply")
    t_gt = np.loadtxt(folder / "T_target_source.txt").reshape(4, 4)
    truth = src @ t_gt[:3, :3].T + t_gt[:3, 3]
    return _pair_case("rigid", "small_gicp/lidar", src, tgt, src, truth, "tre", "rigid", "m")


# ------------------------------------------------------------------------------- synthetic


def _synthetic(kind: str, index: int) -> Case:
    from register.config import load_config
    from register.core.axes import axes_matrix
    from register.synth.pairs import HELD_OUT_STREAM, make_training_pair, pair_seed

    preset, metric, unit = SYNTH_KINDS[kind]
    seed = pair_seed(0, HELD_OUT_STREAM, SYNTH_FIRST + index)
    pair = make_training_pair(kind, seed, SYNTH_POINTS)
    # The pair is made in the models' training frame; the case is given in the preset's first
    # candidate frame of its data (``flow.axes``: p_model = R p_data, so p_data = R^T p_model;
    # the sceneflow preset: KITTI's camera frame), as a user's clouds would be.
    r = axes_matrix(load_config(preset).flow.axes[0])
    inl = pair.source[pair.valid]
    name = f"synth_{kind}/{index}"
    return _pair_case(
        "synthetic",
        name,
        pair.source @ r,
        pair.target @ r,
        inl @ r,
        (inl + pair.flow[pair.valid]) @ r,
        metric,
        preset,
        unit,
        seed=seed,
    )


# ---------------------------------------------------------------------------------- catalog

Builder = Callable[[Path], Case]
CATALOG: dict[str, dict[str, Builder]] = {
    "lung": {
        **{f"dirlab4dct/case{n}": (lambda d, n=n: _dirlab4dct(d, n)) for n in range(1, 6)},
        **{f"dirlab_copd/copd{n}": (lambda d, n=n: _copd(d, n)) for n in range(1, 6)},
        **{
            f"lung250m/case_{c}": (lambda d, c=c: _lung250m(d, c))
            for c in ("002", "008", "054", "055", "056", "094", "097")
        },
        "l2r/case_012": _l2r012,
    },
    "sceneflow": {
        **{
            f"kitti/{i:06d}": (lambda d, i=i: _sceneflow(d, f"kitti_{i:06d}", f"kitti/{i:06d}"))
            for i in range(3)
        },
        **{
            f"ft3d/{i:07d}": (lambda d, i=i: _sceneflow(d, f"ft3d_{i:07d}", f"ft3d/{i:07d}"))
            for i in range(4)
        },
    },
    "shapes": {
        **{f"bcpd/{s}": (lambda d, s=s: _bcpd(d, s)) for s in ("bunny", "monkey", "male", "female")},
        **{f"stanford/{s}": (lambda d, s=s: _stanford(d, s)) for s in STANFORD_SEEDS},
    },
    "rigid": {
        **{f"teaser/benchmark_{n}": (lambda d, n=n: _teaser(d, n)) for n in range(1, 7)},
        "small_gicp/lidar": _small_gicp,
    },
    "synthetic": {
        f"synth_{kind}/{i}": (lambda d, kind=kind, i=i: _synthetic(kind, i))
        for kind in SYNTH_KINDS
        for i in range(SYNTH_CASES)
    },
}
# The folder each group's files live in (to skip a group whose data is missing).
GROUP_FOLDER = {
    "dirlab4dct": "lung/dirlab4dct",
    "dirlab_copd": "lung/dirlab_copd",
    "lung250m": "lung/lung250m",
    "l2r": "lung/l2r_case012",
    "kitti": "sceneflow",
    "ft3d": "sceneflow",
    "bcpd": "shapes/bcpd",
    "stanford": "shapes/stanford",
    "teaser": "rigid/teaser",
    "small_gicp": "rigid/small_gicp",
    **{f"synth_{kind}": None for kind in SYNTH_KINDS},  # generated: no folder
}


def case_names(family: str, quick: bool = False) -> list[str]:
    if family not in CATALOG:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    return [QUICK[family]] if quick else list(CATALOG[family])


def missing_folders(family: str, data: Path, names: list[str]) -> list[str]:
    """Data folders (relative to ``data``) the given cases need but that do not exist."""
    needed = dict.fromkeys(GROUP_FOLDER[n.split("/", 1)[0]] for n in names)
    return [f for f in needed if f is not None and not (data / f).is_dir()]


def load_cases(family: str, data: Path, names: list[str] | None = None) -> Iterator[Case]:
    """Yield the cases of ``family`` (all, or those named), skipping groups whose folder is absent."""
    data = Path(data)
    names = case_names(family) if names is None else names
    missing = set(missing_folders(family, data, names))
    for name in names:
        if name not in CATALOG[family]:
            raise ValueError(f"{family}: unknown case {name!r}; known: {', '.join(CATALOG[family])}")
        if GROUP_FOLDER[name.split("/", 1)[0]] in missing:
            continue
        yield CATALOG[family][name](data)


def lung_cases(data: Path, names: list[str] | None = None) -> Iterator[Case]:
    return load_cases("lung", data, names)


def sceneflow_cases(data: Path, names: list[str] | None = None) -> Iterator[Case]:
    return load_cases("sceneflow", data, names)


def shapes_cases(data: Path, names: list[str] | None = None) -> Iterator[Case]:
    return load_cases("shapes", data, names)


def rigid_cases(data: Path, names: list[str] | None = None) -> Iterator[Case]:
    return load_cases("rigid", data, names)


# ---------------------------------------------------------------------------------- metrics


def similarity_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama least-squares ``y ~ s R x + t``; returns ``(s, R, t)``."""
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    cov = yc.T @ xc / len(x)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    r = u @ np.diag(sign) @ vt
    var = (xc**2).sum() / len(x)
    s = float((d * sign).sum() / var) if var > 0 else 1.0
    return s, r, my - s * r @ mx


def rotation_angle_deg(r: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))


def evaluate(case: Case, warped: np.ndarray) -> dict:
    """Metrics of ``warped = T(case.eval_source)``; ``value`` is the headline (``case.unit``)."""
    from register.metrics import relative_correspondence_error, scene_flow, tre

    warped = np.asarray(warped, dtype=np.float64)
    if warped.shape != case.eval_reference.shape or not np.isfinite(warped).all():
        return {"value": math.nan, "metric_error": f"warped points of shape {warped.shape} / non-finite"}
    stats = tre(warped, case.eval_reference)
    if case.metric == "tre":
        return {"value": stats["mean"], **stats}
    if case.metric == "scene_flow":
        flow = scene_flow(warped - case.eval_source, case.eval_reference - case.eval_source)
        return {"value": flow["epe3d"], **flow, **stats}
    if case.metric == "relative":
        rel = 100.0 * relative_correspondence_error(warped, case.eval_reference)
        return {"value": rel, "relative_percent": rel, **stats}
    s_est, r_est, _ = similarity_fit(case.eval_source, warped)
    s_ref, r_ref, _ = similarity_fit(case.eval_source, case.eval_reference)
    angle = rotation_angle_deg(r_est @ r_ref.T)
    return {
        "value": angle,
        "rotation_error_deg": angle,
        "scale_rel_error": abs(s_est - s_ref) / s_ref,
        **stats,
    }
