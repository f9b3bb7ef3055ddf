"""Core accuracy / speed benchmark of ``register`` on real public data.

Run from the repository root::

    OMP_WAIT_POLICY=passive python -m benchmarks.core --data ../shared/data --out benchmarks/results
    python -m benchmarks.core --quick            # smoke check, about a minute or two

Families (see ``../shared/data/README.md`` for the data and its ground truth):

* ``dirlab``   DIR-LAB 4DCT dense landmark clouds, cases 1-5, preset ``lung``, TRE in mm.
* ``lung250m`` Lung250M-4B keypoint clouds (7 cases), preset ``lung``, TRE of the expert
  landmarks in mm; every case is also warped through ``register warp`` (CLI) and compared.
* ``shapes``   BCPD shape pairs bunny/monkey/male/female, preset ``shapes``, error in % of the
  target's bounding-box diagonal.
* ``teaser``   TEASER++ similarity fixtures 1-6 (0-90 % outliers), affine stage only in
  ``similarity`` mode with multi-start: rotation, scale and translation errors.

Every target cloud has its rows shuffled with ``numpy.random.default_rng(0).permutation`` so
no correspondence is given to the registration. For each case the script measures: no
registration, affine only (``pipeline.stages = ["affine"]``) and affine + spline (the preset),
each with mean / median / p75 / p95 / max error and wall seconds of the ``register()`` call.

Outputs in ``--out`` (results only; no data file is ever copied there): ``<family>.json`` and
``<family>.csv`` per family and ``core.md``. A ``--quick`` run names them ``*_quick.*`` and a run
of a subset of the families ``*_partial.*``, so neither overwrites the results of a full run.
"""

from __future__ import annotations

import os

# Before torch is imported (by register): idle OpenMP threads sleep instead of spinning, which
# matters on a small shared CPU. An explicit value in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.tables import write_rows  # noqa: E402
from register.metrics import error_summary  # noqa: E402

FAMILIES = ("dirlab", "lung250m", "shapes", "teaser")
METHODS = ("none", "affine", "affine+spline")
DIRLAB_CASES = (1, 2, 3, 4, 5)
LUNG250M_CASES = ("002", "008", "054", "055", "056", "094", "097")
SHAPES = ("bunny", "monkey", "male", "female")  # fish is 2-D: skipped
TEASER_CASES = (1, 2, 3, 4, 5, 6)
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
# DIR-LAB 4DCT mean TRE (mm) of peer tools, copied from ../shared/data/PEERS.md (not run here).
PEERS_DIRLAB = {
    "no registration": [3.54, 5.78, 6.63, 9.21, 6.41, 6.32],
    "probreg CPD non-rigid": [0.82, 0.80, 0.91, 1.29, 1.16, 1.00],
    "BCPD default": [0.47, 0.57, 0.59, 0.95, 0.98, 0.71],
    "BCPD tuned (-ux -g0.1 -b0.5 -l200, tuned on these cases)": [0.25, 0.29, 0.29, 0.41, 0.51, 0.35],
}
UNITS = {"dirlab": "mm", "lung250m": "mm", "shapes": "% of diagonal"}

log = logging.getLogger("benchmarks.core")


# ------------------------------------------------------------------------------------ helpers


def say(message: str) -> None:
    print(message, flush=True)


def shuffled(points: np.ndarray) -> np.ndarray:
    """Rows permuted by ``numpy.random.default_rng(0).permutation`` (the PEERS.md rule)."""
    return points[np.random.default_rng(0).permutation(len(points))]


def load_csv(path: Path) -> np.ndarray:
    """A comma-separated numeric table; ``#`` lines are comments."""
    return np.loadtxt(path, delimiter=",", comments="#", ndmin=2)


def machine_info() -> dict:
    import torch

    cpu = cpu_model()
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        nproc = str(len(os.sched_getaffinity(0)))
    return {
        "nproc": nproc,
        "cpu_model": cpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", ""),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
    }


def configs(preset: str):
    """``{"affine": cfg, "affine+spline": cfg}`` for a preset."""
    from register.config import load_config, with_overrides

    full = load_config(preset)
    return {"affine": with_overrides(full, ['pipeline.stages=["affine"]']), "affine+spline": full}


def timed_register(source: np.ndarray, target: np.ndarray, cfg, device: str):
    from register.pipeline import register

    t0 = time.perf_counter()
    result = register(source, target, cfg, device=device, seed=0)
    return result, time.perf_counter() - t0


def warm_up(device: str) -> None:
    """One tiny registration so the first timed case does not pay torch's start-up costs."""
    from register.pipeline import register

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    register(x, x + 0.1, "default", device=device, seed=0)


# --------------------------------------------------------------------- correspondence families


def run_landmark_case(
    family: str,
    case: str,
    source: np.ndarray,
    target: np.ndarray,
    evaluate: np.ndarray,
    reference: np.ndarray,
    preset: str,
    device: str,
    scale: float = 1.0,
    after: Callable | None = None,
) -> list[dict]:
    """Register ``source`` onto shuffled ``target``; error = |T(evaluate_i) - reference_i| * scale.

    Returns one record per method. ``after(method, result)`` may add entries to the record.
    """
    target_shuffled = shuffled(target)
    base = {
        "family": family,
        "case": case,
        "preset": preset,
        "n_source": len(source),
        "n_target": len(target),
        "n_eval": len(evaluate),
    }
    records = [
        {**base, "method": "none", "seconds": 0.0}
        | error_summary(np.linalg.norm(evaluate - reference, axis=1) * scale)
    ]
    for method, cfg in configs(preset).items():
        record = {**base, "method": method}
        try:
            result, seconds = timed_register(source, target_shuffled, cfg, device)
            warped = result.transform.apply(evaluate)
            record |= error_summary(np.linalg.norm(warped - reference, axis=1) * scale)
            record |= {
                "seconds": seconds,
                "stage_seconds": {s["name"]: s["seconds"] for s in result.stages},
                "backend": result.metrics["backend"],
                "weights": result.metrics["weights"],
                "chamfer_before": result.metrics["chamfer_before"],
                "chamfer_after": result.metrics["chamfer_after"],
            }
            if after is not None:
                record |= after(method, result)
        except Exception as exc:  # keep going: one failure must not hide the other cases
            record |= {"error": f"{type(exc).__name__}: {exc}", "seconds": math.nan}
            log.debug(traceback.format_exc())
        records.append(record)
        say(f"  {family} {case} {method:14s} " + summary_line(record))
    return records


def summary_line(record: dict) -> str:
    if "error" in record:
        return f"FAILED ({record['error']})"
    return (
        f"mean {record['mean']:.3f}  median {record['median']:.3f}  p95 {record['p95']:.3f}  "
        f"({record['seconds']:.1f} s)"
    )


def bench_dirlab(data: Path, quick: bool, device: str) -> list[dict]:
    records = []
    for n in DIRLAB_CASES[:1] if quick else DIRLAB_CASES:
        table = load_csv(data / "lung/dirlab4dct" / f"case{n}_dense_EI_EE_mm.csv")
        ei, ee = table[:, :3], table[:, 3:6]
        records += run_landmark_case("dirlab", f"case{n}", ei, ee, ei, ee, "lung", device)
    return records


def cli_warp_check(result, landmarks: np.ndarray) -> dict:
    """Save the transform, run ``register warp`` on the landmarks as CSV, compare with in-process."""
    from register.core.pointcloud import PointCloud
    from register.io import read_points, write_points

    exe = Path(sys.executable).with_name("register")
    command = (
        [str(exe)] if exe.is_file() else ([shutil.which("register")] if shutil.which("register") else [])
    )
    if not command:
        command = [sys.executable, "-m", "register.app.cli"]
    with tempfile.TemporaryDirectory(prefix="register-bench-") as tmp:
        tmp = Path(tmp)
        result.transform.save(tmp / "transform.npz")
        write_points(tmp / "lms.csv", PointCloud(np.ascontiguousarray(landmarks)))
        argv = command + [
            "warp",
            str(tmp / "transform.npz"),
            str(tmp / "lms.csv"),
            "-o",
            str(tmp / "out.csv"),
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        shown = "register warp tmp/transform.npz tmp/lms.csv -o tmp/out.csv"
        if proc.returncode != 0:
            return {
                "command": shown,
                "ok": False,
                "returncode": proc.returncode,
                "stderr": proc.stderr[-2000:],
            }
        cli = read_points(tmp / "out.csv").points
    inproc = result.transform.apply(landmarks)
    diff = float(np.abs(cli - inproc).max()) if cli.shape == inproc.shape else math.inf
    return {
        "command": shown,
        "ok": cli.shape == inproc.shape and diff <= 1e-9,
        "returncode": 0,
        "points": len(cli),
        "max_abs_difference_mm": diff,
        "seconds": seconds,
    }


def bench_lung250m(data: Path, quick: bool, device: str) -> list[dict]:
    records = []
    for case in LUNG250M_CASES[:1] if quick else LUNG250M_CASES:
        keypoints = load_csv(data / "lung/lung250m/keypoints" / f"case_{case}.csv")
        lms = load_csv(data / "lung/lung250m/landmarks" / f"lms_validation_case_{case}.csv")
        fixed_lms, moving_lms = lms[:, :3], lms[:, 3:6]

        def after(method: str, result, fixed_lms=fixed_lms) -> dict:
            # Every case's landmarks also go through the CLI (`register warp`) and must agree.
            if method != "affine+spline":
                return {}
            check = cli_warp_check(result, fixed_lms)
            say(f"  lung250m CLI check: {check}")
            return {"cli_warp_check": check}

        records += run_landmark_case(
            "lung250m",
            f"case_{case}",
            keypoints[:, :3],
            keypoints[:, 3:6],
            fixed_lms,
            moving_lms,
            "lung",
            device,
            after=after,
        )
    return records


def bench_shapes(data: Path, quick: bool, device: str) -> list[dict]:
    from register.io import read_points

    records = []
    for name in SHAPES[:1] if quick else SHAPES:
        x = read_points(data / "shapes/bcpd" / f"{name}-x.txt").points
        y = read_points(data / "shapes/bcpd" / f"{name}-y.txt").points
        diagonal = float(np.linalg.norm(y.max(0) - y.min(0)))
        records += run_landmark_case("shapes", name, x, y, x, y, "shapes", device, scale=100.0 / diagonal)
        for r in records[-3:]:
            r["diagonal"] = diagonal
    return records


# ----------------------------------------------------------------------------------- teaser


def rotation_angle_deg(r: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))


def similarity_errors(
    a: np.ndarray,
    t: np.ndarray,
    *,
    src: np.ndarray,
    dst: np.ndarray,
    inliers: np.ndarray,
    r_ref: np.ndarray,
    t_ref: np.ndarray,
    s_ref: float,
) -> dict:
    """Errors of ``x -> a x + t`` against ``dst = s_ref r_ref src + t_ref`` (TEASER convention)."""
    s_est = float(np.cbrt(np.linalg.det(a)))
    r_est = a / s_est
    moved = src[inliers] @ a.T + t
    return {
        "rotation_error_deg": rotation_angle_deg(r_est @ r_ref.T),
        "scale_rel_error": abs(s_est - s_ref) / s_ref,
        "translation_error": float(np.linalg.norm(t - t_ref)),
        "inlier_residual_mean": float(np.linalg.norm(moved - dst[inliers], axis=1).mean())
        if inliers.any()
        else math.nan,
        "s_est": s_est,
        "s_ref": s_ref,
    }


def bench_teaser(data: Path, quick: bool, device: str) -> list[dict]:
    from benchmarks.suites import read_teaser_fixture
    from register.config import from_dict

    cfg = from_dict(TEASER_CONFIG, origin="teaser benchmark")
    records = []
    for n in TEASER_CASES[:2] if quick else TEASER_CASES:
        folder = data / "rigid/teaser" / f"benchmark_{n}"
        src, dst, r_ref, t_ref, s_ref, params = read_teaser_fixture(folder)
        noise_bound = params.get("Noise Bound", 0.0)
        residual = np.linalg.norm(s_ref * src @ r_ref.T + t_ref - dst, axis=1)
        inliers = residual <= noise_bound + 1e-6
        base = {
            "family": "teaser",
            "case": f"benchmark_{n}",
            "n_source": len(src),
            "n_target": len(dst),
            "outlier_ratio": params.get("Outlier Ratio", math.nan),
            "noise_sigma": params.get("Noise Sigma", math.nan),
            "noise_bound": noise_bound,
            "n_inliers": int(inliers.sum()),
        }

        truth = {"src": src, "dst": dst, "inliers": inliers, "r_ref": r_ref, "t_ref": t_ref, "s_ref": s_ref}

        records.append(
            {**base, **similarity_errors(np.eye(3), np.zeros(3), **truth), "method": "none", "seconds": 0.0}
        )
        record = {**base, "method": "affine"}
        try:
            result, seconds = timed_register(src, shuffled(dst), cfg, device)
            step = result.transform.steps[0]
            record = {
                **base,
                **similarity_errors(step.matrix, step.translation, **truth),
                "method": "affine",
                "seconds": seconds,
                "multistart_choice": result.stages[0].get("multistart_choice"),
                "matrix": step.matrix.tolist(),
                "translation": step.translation.tolist(),
            }
        except Exception as exc:
            record |= {"error": f"{type(exc).__name__}: {exc}", "seconds": math.nan}
            log.debug(traceback.format_exc())
        records.append(record)
        if "error" in record:
            say(f"  teaser benchmark_{n} affine FAILED ({record['error']})")
        else:
            say(
                f"  teaser benchmark_{n} (outliers {base['outlier_ratio']:.0%}) rotation "
                f"{record['rotation_error_deg']:.3f} deg, scale {record['scale_rel_error']:.2e}, "
                f"translation {record['translation_error']:.3e} ({record['seconds']:.1f} s)"
            )
    return records


BENCHES = {"dirlab": bench_dirlab, "lung250m": bench_lung250m, "shapes": bench_shapes, "teaser": bench_teaser}


# ---------------------------------------------------------------------------------- writing


def write_json(path: Path, family: str, records: list[dict], meta: dict) -> None:
    payload = {"family": family, **meta, "records": records}
    path.write_text(json.dumps(payload, indent=2, default=float, allow_nan=True) + "\n")


def write_csv(path: Path, records: list[dict]) -> None:
    flat = []
    for r in records:
        row = {}
        for k, v in r.items():
            if isinstance(v, dict):
                row.update({f"{k}.{kk}": vv for kk, vv in v.items()})
            elif isinstance(v, list):
                row[k] = json.dumps(v)
            else:
                row[k] = v
        flat.append(row)
    write_rows(path, flat)


def fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}"


def by_case(records: list[dict]) -> dict[str, dict[str, dict]]:
    cases: dict[str, dict[str, dict]] = {}
    for r in records:
        cases.setdefault(r["case"], {})[r["method"]] = r
    return cases


def mean_of(rows: list[dict], key: str) -> float:
    values = [r.get(key, math.nan) for r in rows]
    values = [v for v in values if isinstance(v, float | int) and math.isfinite(v)]
    return float(np.mean(values)) if values and len(values) == len(rows) else math.nan


def landmark_table(family: str, records: list[dict]) -> list[str]:
    unit = UNITS[family]
    digits = 3 if family == "shapes" else 2
    head = (
        "| case | points (src / tgt / eval) | none mean | none p95 | affine mean | affine p95 | affine s "
        "| affine+spline mean | affine+spline p95 | affine+spline s |"
    )
    lines = [f"Error in {unit}; times are wall seconds of the `register()` call.", "", head]
    lines.append("|" + "---|" * (head.count("|") - 1))
    cases = by_case(records)
    for case, methods in cases.items():
        cells = [case]
        any_row = next(iter(methods.values()))
        cells.append(f"{any_row['n_source']} / {any_row['n_target']} / {any_row['n_eval']}")
        for method in METHODS:
            r = methods.get(method, {})
            if "error" in r:
                cells += ["failed", "failed"] + ([] if method == "none" else ["—"])
                continue
            cells += [fmt(r.get("mean"), digits), fmt(r.get("p95"), digits)]
            if method != "none":
                cells.append(fmt(r.get("seconds"), 1))
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["**mean**", ""]
    for method in METHODS:
        rows = [m.get(method, {}) for m in cases.values()]
        cells += [f"**{fmt(mean_of(rows, 'mean'), digits)}**", fmt(mean_of(rows, "p95"), digits)]
        if method != "none":
            cells.append(fmt(mean_of(rows, "seconds"), 1))
    lines.append("| " + " | ".join(cells) + " |")
    return lines


def teaser_table(records: list[dict]) -> list[str]:
    head = (
        "| case | outliers | points | GT inliers | none rot ° | none scale err | none t err "
        "| affine rot ° | affine scale err | affine t err | inlier residual | affine s |"
    )
    lines = [
        'Affine stage only, `mode = "similarity"`, multi-start, relative lengths, `mass = "point"`. '
        "Rotation error = angle of R_est R_ref^T (R_est = A / cbrt(det A)); scale error = "
        "|s_est - s_ref| / s_ref; translation error = |t_est - t_ref| (data units); inlier residual "
        "= mean |T(src_i) - dst_i| over the ground-truth inliers.",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    cases = by_case(records)
    for case, methods in cases.items():
        none, aff = methods["none"], methods.get("affine", {})
        cells = [
            case,
            f"{none['outlier_ratio']:.0%}",
            str(none["n_source"]),
            str(none["n_inliers"]),
            fmt(none["rotation_error_deg"], 1),
            fmt(none["scale_rel_error"], 3),
            fmt(none["translation_error"], 3),
        ]
        if "error" in aff:
            cells += ["failed"] * 4 + ["—"]
        else:
            cells += [
                fmt(aff.get("rotation_error_deg"), 3),
                f"{aff['scale_rel_error']:.1e}" if "scale_rel_error" in aff else "—",
                f"{aff['translation_error']:.1e}" if "translation_error" in aff else "—",
                f"{aff['inlier_residual_mean']:.1e}" if "inlier_residual_mean" in aff else "—",
                fmt(aff.get("seconds"), 1),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    nones = [m["none"] for m in cases.values()]
    affs = [m.get("affine", {}) for m in cases.values()]
    cells = [
        "**mean**",
        "",
        "",
        "",
        fmt(mean_of(nones, "rotation_error_deg"), 1),
        fmt(mean_of(nones, "scale_rel_error"), 3),
        fmt(mean_of(nones, "translation_error"), 3),
        f"**{fmt(mean_of(affs, 'rotation_error_deg'), 3)}**",
        f"{mean_of(affs, 'scale_rel_error'):.1e}",
        f"{mean_of(affs, 'translation_error'):.1e}",
        f"{mean_of(affs, 'inlier_residual_mean'):.1e}",
        fmt(mean_of(affs, "seconds"), 1),
    ]
    lines.append("| " + " | ".join(cells) + " |")
    return lines


def dirlab_peers(records: list[dict]) -> list[str]:
    ours = {r["case"]: r for r in records if r["method"] == "affine+spline"}
    aff = {r["case"]: r for r in records if r["method"] == "affine"}
    head = "| method | case1 | case2 | case3 | case4 | case5 | mean |"
    lines = [
        "Comparison with peer tools. **Rows marked † are reference values from PEERS.md, not run "
        "here** (same inputs and shuffling rule, same machine class, measured 2026-11-22).",
        "",
        head,
        "|---|---|---|---|---|---|---|",
    ]
    for name, values in PEERS_DIRLAB.items():
        lines.append(
            f"| † {name} (reference from PEERS.md, not run here) | " + " | ".join(map(str, values)) + " |"
        )
    for label, rows in (("register affine (this run)", aff), ("register affine+spline (this run)", ours)):
        values = [rows.get(f"case{n}", {}).get("mean", math.nan) for n in DIRLAB_CASES]
        done = [v for v in values if math.isfinite(v)]
        mean = f"{np.mean(done):.2f}" + ("" if len(done) == len(values) else f" ({len(done)} cases)")
        lines.append(f"| **{label}** | " + " | ".join(fmt(v) for v in values) + f" | **{mean}** |")
    return lines


def observations(results: dict[str, list[dict]]) -> list[str]:
    """Things worth a second look, found automatically."""
    notes = []
    for family, records in results.items():
        for case, methods in by_case(records).items():
            for method, r in methods.items():
                if "error" in r:
                    notes.append(f"{family} {case}: {method} failed: {r['error']}")
            if family == "teaser":
                aff = methods.get("affine", {})
                if "rotation_error_deg" in aff and (
                    aff["rotation_error_deg"] > 1 or aff["scale_rel_error"] > 0.01
                ):
                    notes.append(
                        f"teaser {case} (outliers {aff['outlier_ratio']:.0%}): not recovered "
                        f"(rotation error {aff['rotation_error_deg']:.1f} deg, scale error "
                        f"{aff['scale_rel_error']:.1%})"
                    )
                continue
            none, aff, full = (methods.get(m, {}) for m in METHODS)
            if "mean" in aff and "mean" in full and full["mean"] > aff["mean"]:
                notes.append(
                    f"{family} {case}: affine+spline ({full['mean']:.3f}) is worse than affine only "
                    f"({aff['mean']:.3f})"
                )
            for m, r in (("affine", aff), ("affine+spline", full)):
                if "mean" in r and "mean" in none and r["mean"] > none["mean"]:
                    notes.append(
                        f"{family} {case}: {m} ({r['mean']:.3f}) is worse than no registration "
                        f"({none['mean']:.3f})"
                    )
            check = full.get("cli_warp_check")
            if check is not None:
                if check.get("ok"):
                    notes.append(
                        f"{family} {case}: `{check['command']}` reproduces the in-process landmarks "
                        f"({check['points']} points, max |difference| {check['max_abs_difference_mm']:.2e} mm)"
                    )
                else:
                    notes.append(f"{family} {case}: CLI warp check FAILED: {check}")
    return notes


def write_markdown(path: Path, results: dict[str, list[dict]], meta: dict) -> None:
    m = meta["machine"]
    lines = [
        "# register core benchmark" + (" (quick smoke check)" if meta["quick"] else ""),
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}; total wall time {meta['total_seconds'] / 60:.1f} min",
        f"- machine: nproc {m['nproc']}, CPU {m['cpu_model']}, torch {m['torch']} "
        f"({m['torch_threads']} threads), numpy {m['numpy']}, Python {m['python']}, "
        f"OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']}, OMP_NUM_THREADS={m['OMP_NUM_THREADS']}, device {meta['device']}",
        "- inputs: data read from the shared data folder (not copied); every target cloud shuffled "
        "with `numpy.random.default_rng(0).permutation`; `seed=0`; one warm-up registration before "
        "timing. The `lung` preset weights by a `radius` attribute these clouds do not have, so "
        "masses are uniform.",
        "",
    ]
    titles = {
        "dirlab": "DIR-LAB 4DCT dense landmarks (preset `lung`): TRE = |T(EI_i) - EE_i|",
        "lung250m": "Lung250M-4B keypoints (preset `lung`): TRE of the expert landmarks",
        "shapes": "BCPD shape pairs (preset `shapes`): mean |T(x_i) - y_i| / diagonal of y",
        "teaser": "TEASER++ similarity fixtures",
    }
    for family, records in results.items():
        lines += [f"## {family}: {titles[family]}", ""]
        lines += teaser_table(records) if family == "teaser" else landmark_table(family, records)
        lines.append("")
        if family == "dirlab":
            lines += dirlab_peers(records) + [""]
    notes = observations(results)
    lines += ["## Observations (automatic)", ""] + ([f"- {n}" for n in notes] or ["- none"]) + [""]
    path.write_text("\n".join(lines))


# ------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.core",
        description="Accuracy and speed of register on real public data (see benchmarks/README.md).",
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data folder")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="results folder")
    parser.add_argument(
        "--families", default=",".join(FAMILIES), help=f"comma-separated subset of {','.join(FAMILIES)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke check: dirlab case1, one lung250m case, bunny, teaser 1-2"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        print(f"error: unknown families {unknown}; choose from {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    data = args.data.expanduser()
    if not data.is_dir():
        print(
            f"error: data folder {data} (resolved: {data.resolve()}) not found. The benchmark reads the "
            "shared registration data (see its README.md) and never ships it; pass --data PATH.",
            file=sys.stderr,
        )
        return 2
    needed = {
        "dirlab": "lung/dirlab4dct",
        "lung250m": "lung/lung250m",
        "shapes": "shapes/bcpd",
        "teaser": "rigid/teaser",
    }
    missing = [f for f in families if not (data / needed[f]).is_dir()]
    for f in missing:
        print(f"warning: {data / needed[f]} not found: skipping family {f}", file=sys.stderr)
    families = [f for f in families if f not in missing]
    if not families:
        print("error: none of the requested families has its data; nothing to do", file=sys.stderr)
        return 2
    data_root = data.resolve()
    out = args.out.resolve()
    if out == data_root or data_root in out.parents:
        print(f"error: --out {args.out} is inside the data folder; write results elsewhere", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    # The lung preset logs on every call that the clouds have no "radius" attribute: expected here.
    logging.getLogger("register.pipeline").setLevel(logging.ERROR)

    meta = {
        "command": "python -m benchmarks.core " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "quick": args.quick,
        "device": args.device,
        "data": str(data),
    }
    say(f"register core benchmark: {', '.join(families)}{' (quick)' if args.quick else ''}")
    say(f"machine: {meta['machine']}")
    t_start = time.perf_counter()
    warm_up(args.device)
    # Only a full run writes core.md / <family>.json: a smoke check or a subset never clobbers it.
    suffix = "_quick" if args.quick else ("" if families == list(FAMILIES) else "_partial")
    results: dict[str, list[dict]] = {}
    for family in families:
        t0 = time.perf_counter()
        say(f"[{family}]")
        records = BENCHES[family](data, args.quick, args.device)
        results[family] = records
        family_meta = {**meta, "family_seconds": time.perf_counter() - t0}
        write_json(out / f"{family}{suffix}.json", family, records, family_meta)
        write_csv(out / f"{family}{suffix}.csv", records)
        say(f"[{family}] done in {family_meta['family_seconds']:.0f} s")
    meta["total_seconds"] = time.perf_counter() - t_start
    md = out / f"core{suffix}.md"
    write_markdown(md, results, meta)
    say(f"total {meta['total_seconds']:.0f} s; wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
