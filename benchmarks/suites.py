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

Families (``FAMILIES``) and their cases (names ``group/case``), found by :func:`discover` in any
folder with the layout of the shared data (``GROUPS``: a folder and a file-name pattern per
group, so other case numbers work and a missing folder only skips its group, with a note):

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
* ``realistic``: the DIR-LAB 4DCT, COPD, Lung250M-4B, KITTI, FlyingThings3D and Stanford cases
  above damaged as real acquisitions are (:mod:`benchmarks.realistic`): ``halves`` (source and
  target from disjoint halves of the point pairs), ``crop``, ``outliers``, ``density``; named
  ``<group>.<variant>/<case>`` (e.g. ``dirlab4dct.crop/case1``, group ``dirlab4dct.crop``),
  seeded by a stable hash of that name, each with its data's preset; scored only on the
  evaluation points whose true position the damaged target still covers.

Loading is lazy: ``load_cases(family, data, names=...)`` only reads the files of the cases asked
for. Everything is deterministic (fixed seeds), so every method gets identical inputs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.realistic import VARIANTS, case_rng, damage_target, split_halves, stable_seed

FAMILIES = ("lung", "sceneflow", "shapes", "rigid", "synthetic", "realistic")
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
# TEASER fixtures: the affine stage only, similarity mode, multi-start, lengths relative to the
# clouds' size, one unit of mass per point (also the settings of tests/test_teaser.py).
TEASER_CONFIG = {
    "pipeline": {"stages": ["affine"], "length_unit": "relative", "mass": "point"},
    "affine": {
        "mode": "similarity",
        "multistart": True,
        "blurs": [0.1, 0.05, 0.02, 0.01],
        "reach": [0.3, 0.1, 0.05, 0.03],
        "iterations": 20,
    },
}
# Benchmark presets that are not files of pipelines/: name -> configuration dict.
SPECIAL_PRESETS = {"teaser": TEASER_CONFIG}
# The register presets each family's cases run with (``--set`` overrides must fit all of them).
FAMILY_PRESETS = {
    "lung": ("lung",),
    "sceneflow": ("sceneflow",),
    "shapes": ("shapes",),
    "rigid": ("rigid", "teaser"),
    "synthetic": tuple(preset for preset, _, _ in SYNTH_KINDS.values()),
    "realistic": ("lung", "sceneflow", "shapes"),
}
# One small case per family for ``--quick``.
QUICK = {
    "lung": "dirlab_copd/copd1",
    "sceneflow": "kitti/000000",
    "shapes": "bcpd/male",
    "rigid": "teaser/benchmark_1",
    "synthetic": "synth_lung/0",
    "realistic": "dirlab_copd.crop/copd1",
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


def _l2r(data: Path, case: str = "012") -> Case:
    folder = data / "lung/l2r_case012"
    exp = np.loadtxt(folder / f"case_{case}_exp_lung_surface_mm.xyz", ndmin=2)[:, :3]
    insp = np.loadtxt(folder / f"case_{case}_insp_lung_surface_mm.xyz", ndmin=2)[:, :3]
    kp = load_csv(folder / f"case_{case}_keypoints_mm.csv")  # exp_xyz, insp_xyz
    return _pair_case(
        "lung",
        f"l2r/case_{case}",
        exp,
        insp,
        kp[:, :3],
        kp[:, 3:6],
        "tre",
        "lung",
        "mm",
        note="corrField pseudo ground truth (about 1-2 mm)",
    )


# ----------------------------------------------------------------------------------- shapes


def _bcpd(data: Path, shape: str) -> Case:
    x = _points(data / "shapes/bcpd" / f"{shape}-x.txt")
    y = _points(data / "shapes/bcpd" / f"{shape}-y.txt")
    return _pair_case("shapes", f"bcpd/{shape}", x, y, x, y, "relative", "shapes", "% of diagonal")


def _stanford(data: Path, shape: str, n_points: int = STANFORD_POINTS) -> Case:
    p = _stanford_pairs(data, shape, n_points)
    return _pair_case(
        "shapes",
        f"stanford/{shape}",
        p.source,
        p.target,
        p.eval_source,
        p.eval_reference,
        "relative",
        "shapes",
        "% of diagonal",
        seed=stanford_seed(shape),
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


# ------------------------------------------------------------------------------- realistic


@dataclass
class Pairs:
    """One data case before damage (the ``realistic`` family's raw material).

    ``source``, ``target`` (target rows **not** shuffled), ``eval_source``, ``eval_reference``
    are the family's own case. ``first (P, 3)`` / ``second (P, 3)`` are its point pairs (row
    ``i`` of one is the partner of row ``i`` of the other) from which the ``halves`` variant
    draws its disjoint source and target; that variant scores the source points themselves
    (``halves_eval = "source"``: reference = their partners) or the case's landmarks
    (``"landmarks"``), and subsamples each half to ``halves_points`` points when set.
    """

    group: str
    case: str
    preset: str
    metric: str
    unit: str
    source: np.ndarray
    target: np.ndarray
    eval_source: np.ndarray
    eval_reference: np.ndarray
    first: np.ndarray
    second: np.ndarray
    halves_eval: str = "source"
    halves_points: int | None = None


def _dirlab4dct_pairs(data: Path, n: str) -> Pairs:
    t = load_csv(data / "lung/dirlab4dct" / f"case{n}_dense_EI_EE_mm.csv")
    ei, ee = t[:, :3], t[:, 3:6]
    return Pairs("dirlab4dct", f"case{n}", "lung", "tre", "mm", ei, ee, ei, ee, ei, ee)


def _copd_pairs(data: Path, n: str) -> Pairs:
    t = load_csv(data / "lung/dirlab_copd" / f"copd{n}_insp_exp_mm.csv")
    insp, exp = t[:, :3], t[:, 3:6]
    return Pairs("dirlab_copd", f"copd{n}", "lung", "tre", "mm", insp, exp, insp, exp, insp, exp)


def _lung250m_pairs(data: Path, case: str) -> Pairs:
    kp = load_csv(data / "lung/lung250m/keypoints" / f"case_{case}.csv")
    lms = load_csv(data / "lung/lung250m/landmarks" / f"lms_validation_case_{case}.csv")
    fixed, moving = kp[:, :3], kp[:, 3:6]
    return Pairs(
        "lung250m",
        f"case_{case}",
        "lung",
        "tre",
        "mm",
        fixed,
        moving,
        lms[:, :3],
        lms[:, 3:6],
        fixed,
        moving,
        halves_eval="landmarks",
    )


def _sceneflow_pairs(data: Path, group: str, stem: str) -> Pairs:
    with np.load(data / "sceneflow" / f"{group}_{stem}.npz") as z:
        pc1, pc2, flow = z["pc1"], z["pc2"], z["flow"]
    moved = pc1 + flow
    return Pairs(group, stem, "sceneflow", "scene_flow", "m", pc1, pc2, pc1, moved, pc1, moved)


def stanford_seed(shape: str) -> int:
    """The deformation / sampling seed of a Stanford shape (fixed for the known ones)."""
    return STANFORD_SEEDS.get(shape, stable_seed(f"stanford/{shape}") % 2**31)


def _stanford_pairs(data: Path, shape: str, n_points: int = STANFORD_POINTS) -> Pairs:
    from register.synth.deform import make_smooth_random_field

    full = _points(data / "shapes/stanford" / f"{shape}_30k.ply")
    seed = stanford_seed(shape)
    rng = np.random.default_rng(seed)
    src_idx = rng.choice(len(full), size=min(n_points, len(full)), replace=False)
    tgt_idx = rng.choice(len(full), size=min(n_points, len(full)), replace=False)  # independent
    field_ = make_smooth_random_field(full, seed)  # defaults: sigma 25 %, mean |d| 5 % of diagonal
    source, target = full[src_idx], full[tgt_idx] + field_(full[tgt_idx])
    return Pairs(
        "stanford",
        shape,
        "shapes",
        "relative",
        "% of diagonal",
        source,
        target,
        source,
        source + field_(source),
        full,
        full + field_(full),
        halves_points=n_points,
    )


def realistic_case(pairs: Pairs, variant: str) -> Case:
    """The ``variant`` (:data:`benchmarks.realistic.VARIANTS`) of one data case, named
    ``<group>.<variant>/<case>``, damaged with the generator of that name.

    ``halves``: source = ``first[A]``, target = ``second[B]`` for a random split ``A, B`` of the
    pairs (each subsampled to ``halves_points`` when set); scored on ``first[A] -> second[A]`` or
    on the landmarks. The other variants damage the case's target
    (:func:`benchmarks.realistic.damage_target`) and score the evaluation points whose reference
    lies in the region the damaged target still covers.
    """
    name = f"{pairs.group}.{variant}/{pairs.case}"
    rng = case_rng(name)
    info: dict = {"variant": variant, "data": f"{pairs.group}/{pairs.case}"}
    if variant == "halves":
        a, b = split_halves(len(pairs.first), rng)
        if pairs.halves_points is not None:
            a = np.sort(rng.choice(a, size=min(pairs.halves_points, len(a)), replace=False))
            b = np.sort(rng.choice(b, size=min(pairs.halves_points, len(b)), replace=False))
        source, target = pairs.first[a], pairs.second[b]
        if pairs.halves_eval == "landmarks":
            eval_source, eval_reference = pairs.eval_source, pairs.eval_reference
        else:
            eval_source, eval_reference = source, pairs.second[a]
        keep = np.ones(len(eval_source), dtype=bool)
        info["damage"] = {"pairs": len(pairs.first), "half_a": len(a), "half_b": len(b)}
    else:
        source, eval_source, eval_reference = pairs.source, pairs.eval_source, pairs.eval_reference
        target, keep, info["damage"] = damage_target(variant, pairs.target, eval_reference, rng)
    if not keep.any():
        raise ValueError(f"realistic {name}: no evaluation point left in the damaged target's region")
    return _pair_case(
        "realistic",
        name,
        source,
        target,
        eval_source[keep],
        eval_reference[keep],
        pairs.metric,
        pairs.preset,
        pairs.unit,
        n_eval_all=len(eval_source),
        case_seed=stable_seed(name),
        **info,
    )


# ---------------------------------------------------------------------------------- catalog


def _natural(case_id: str) -> tuple:
    return (0, int(case_id), case_id) if case_id.isdigit() else (1, 0, case_id)


def _ids(folder: Path, pattern: str) -> list[str]:
    """The first group of ``pattern`` over the names in ``folder`` that match it, in natural order."""
    rx = re.compile(pattern)
    found = [m.group(1) for f in folder.iterdir() if (m := rx.fullmatch(f.name))]
    return sorted(found, key=_natural)


def _find_lung250m(folder: Path) -> tuple[list[str], list[str]]:
    ids, notes = [], []
    for c in _ids(folder / "keypoints", r"case_(\w+)\.csv") if (folder / "keypoints").is_dir() else []:
        if (folder / "landmarks" / f"lms_validation_case_{c}.csv").is_file():
            ids.append(c)
        else:
            notes.append(
                f"{folder}/keypoints/case_{c}.csv has no landmarks/lms_validation_case_{c}.csv: skipped"
            )
    return ids, notes


def _find_l2r(folder: Path) -> tuple[list[str], list[str]]:
    ids, notes = [], []
    for c in _ids(folder, r"case_(\w+)_exp_lung_surface_mm\.xyz"):
        needed = [f"case_{c}_insp_lung_surface_mm.xyz", f"case_{c}_keypoints_mm.csv"]
        missing = [f for f in needed if not (folder / f).is_file()]
        if missing:
            notes.append(f"{folder}/case_{c}: {', '.join(missing)} not found: skipped")
        else:
            ids.append(c)
    return ids, notes


def _columns(path: Path) -> int:
    """The number of values on the first non-comment line of a whitespace-separated text file."""
    with path.open() as fh:
        for line in fh:
            if line.strip() and not line.lstrip().startswith("#"):
                return len(line.replace(",", " ").split())
    return 0


def _find_bcpd(folder: Path) -> tuple[list[str], list[str]]:
    ids, notes = [], []
    for shape in _ids(folder, r"(.+)-x\.txt"):
        y = folder / f"{shape}-y.txt"
        if not y.is_file():
            notes.append(f"{folder}/{shape}-x.txt has no {y.name}: skipped")
        elif _columns(folder / f"{shape}-x.txt") != 3:
            notes.append(f"{folder}/{shape}-x.txt is not 3-D: skipped")
        else:
            ids.append(shape)
    return ids, notes


def _find_small_gicp(folder: Path) -> tuple[list[str], list[str]]:
    needed = ("source.ply", "target.ply", "T_target_source.txt")
    missing = [f for f in needed if not (folder / f).is_file()]
    return ([], [f"{folder}: {', '.join(missing)} not found: skipped"]) if missing else (["lidar"], [])


def _found(pattern: str) -> Callable[[Path], tuple[list[str], list[str]]]:
    return lambda folder: (_ids(folder, pattern), [])


@dataclass(frozen=True)
class Group:
    """A case group of the shared data layout: its family, its folder (relative to the data
    folder; ``None`` when generated), ``find(folder) -> (case ids, notes)``, ``name(id)`` the
    case name after ``group/``, ``build(data, id) -> Case`` and, for the groups of the
    ``realistic`` family, ``pairs(data, id) -> Pairs``."""

    family: str
    folder: str | None
    find: Callable[[Path], tuple[list[str], list[str]]]
    name: Callable[[str], str]
    build: Callable[[Path, str], Case]
    pairs: Callable[[Path, str], Pairs] | None = None


def _pairs_case(family: str, pairs: Pairs) -> Case:
    """The family's own case of ``pairs`` (target shuffled)."""
    p = pairs
    name = f"{p.group}/{p.case}"
    return _pair_case(
        family, name, p.source, p.target, p.eval_source, p.eval_reference, p.metric, p.preset, p.unit
    )


GROUPS: dict[str, Group] = {
    "dirlab4dct": Group(
        "lung",
        "lung/dirlab4dct",
        _found(r"case(\d+)_dense_EI_EE_mm\.csv"),
        lambda n: f"case{n}",
        lambda d, n: _pairs_case("lung", _dirlab4dct_pairs(d, n)),
        _dirlab4dct_pairs,
    ),
    "dirlab_copd": Group(
        "lung",
        "lung/dirlab_copd",
        _found(r"copd(\d+)_insp_exp_mm\.csv"),
        lambda n: f"copd{n}",
        lambda d, n: _pairs_case("lung", _copd_pairs(d, n)),
        _copd_pairs,
    ),
    "lung250m": Group(
        "lung",
        "lung/lung250m",
        _find_lung250m,
        lambda c: f"case_{c}",
        lambda d, c: _pairs_case("lung", _lung250m_pairs(d, c)),
        _lung250m_pairs,
    ),
    "l2r": Group("lung", "lung/l2r_case012", _find_l2r, lambda c: f"case_{c}", lambda d, c: _l2r(d, c)),
    "kitti": Group(
        "sceneflow",
        "sceneflow",
        _found(r"kitti_(\w+)\.npz"),
        str,
        lambda d, i: _pairs_case("sceneflow", _sceneflow_pairs(d, "kitti", i)),
        lambda d, i: _sceneflow_pairs(d, "kitti", i),
    ),
    "ft3d": Group(
        "sceneflow",
        "sceneflow",
        _found(r"ft3d_(\w+)\.npz"),
        str,
        lambda d, i: _pairs_case("sceneflow", _sceneflow_pairs(d, "ft3d", i)),
        lambda d, i: _sceneflow_pairs(d, "ft3d", i),
    ),
    "bcpd": Group("shapes", "shapes/bcpd", _find_bcpd, str, lambda d, s: _bcpd(d, s)),
    "stanford": Group(
        "shapes",
        "shapes/stanford",
        _found(r"(.+)_30k\.ply"),
        str,
        lambda d, s: _stanford(d, s),
        _stanford_pairs,
    ),
    "teaser": Group(
        "rigid",
        "rigid/teaser",
        _found(r"benchmark_(\d+)"),
        lambda n: f"benchmark_{n}",
        lambda d, n: _teaser(d, n),
    ),
    "small_gicp": Group("rigid", "rigid/small_gicp", _find_small_gicp, str, lambda d, _: _small_gicp(d)),
}
# The realistic family's groups, quick ones first (the order its cases run in).
REALISTIC_GROUPS = ("dirlab_copd", "dirlab4dct", "kitti", "ft3d", "stanford", "lung250m")
SYNTH_NAMES = [f"synth_{kind}/{i}" for kind in SYNTH_KINDS for i in range(SYNTH_CASES)]

Builder = Callable[[Path], Case]


def _group_ids(group: str, data: Path, notes: list[str]) -> list[str]:
    """Case ids of ``group`` found in ``data`` (a missing folder adds a note and finds none)."""
    g = GROUPS[group]
    folder = data / g.folder
    if not folder.is_dir():
        note = f"{folder} not found: skipping its {group} cases"
        if note not in notes:
            notes.append(note)
        return []
    ids, more = g.find(folder)
    notes += more
    return ids


def _realistic_builder(group: str, case_id: str, variant: str, cache: dict) -> Builder:
    """Builds one realistic case; ``cache`` keeps the last data case read (its variants follow)."""

    def build(data: Path) -> Case:
        key = (str(data), group, case_id)
        if key not in cache:
            cache.clear()
            cache[key] = GROUPS[group].pairs(data, case_id)
        return realistic_case(cache[key], variant)

    return build


def discover(family: str, data: Path) -> tuple[dict[str, Builder], list[str]]:
    """The cases of ``family`` found in ``data`` (any folder with the shared data's layout):
    ``({name: build(data) -> Case}, notes)`` in run order, nothing read but file names (and the
    first line of a BCPD shape file); ``notes`` says what was skipped and why (one line each)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    data = Path(data)
    notes: list[str] = []
    catalog: dict[str, Builder] = {}
    if family == "synthetic":
        for name in SYNTH_NAMES:
            kind, index = name.removeprefix("synth_").split("/")
            catalog[name] = lambda d, kind=kind, index=int(index): _synthetic(kind, index)
    elif family == "realistic":
        cache: dict = {}
        for group in REALISTIC_GROUPS:
            for case_id in _group_ids(group, data, notes):
                for variant in VARIANTS:
                    name = f"{group}.{variant}/{GROUPS[group].name(case_id)}"
                    catalog[name] = _realistic_builder(group, case_id, variant, cache)
    else:
        for group, g in GROUPS.items():
            if g.family != family:
                continue
            for case_id in _group_ids(group, data, notes):
                catalog[f"{group}/{g.name(case_id)}"] = lambda d, g=g, i=case_id: g.build(d, i)
    return catalog, notes


def case_names(family: str, data: Path, quick: bool = False) -> list[str]:
    """The names of the cases of ``family`` found in ``data`` (``quick``: its ``QUICK`` case, or
    the first one found when that one is absent)."""
    names = list(discover(family, data)[0])
    if quick:
        return [QUICK[family]] if QUICK[family] in names else names[:1]
    return names


def load_cases(family: str, data: Path, names: list[str] | None = None) -> Iterator[Case]:
    """Yield the cases of ``family`` found in ``data`` (all, or those named, in that order)."""
    data = Path(data)
    catalog, _ = discover(family, data)
    names = list(catalog) if names is None else names
    for name in names:
        if name not in catalog:
            raise ValueError(f"{family}: no case {name!r} in {data}; found: {', '.join(catalog) or 'none'}")
        yield catalog[name](data)


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
