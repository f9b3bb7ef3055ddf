"""Benchmark-suite runner: ``register`` and peer tools on the families of ``benchmarks.suites``.

Run from the repository root (``. .venv/bin/activate``)::

    python -m benchmarks.run --data ../shared/data --suite lung
    python -m benchmarks.run --suite all --methods register,open3d_icp,probreg_cpd_nonrigid
    python -m benchmarks.run --quick --suite all          # smoke test: one small case per family

Every method (``register`` included) runs in a fresh child process under a wall-clock limit
(``--time-limit``, default 600 s) and an optional memory limit (``--memory-limit`` MiB), through
``benchmarks.limits.run_limited`` / ``benchmarks.peers.run_peer``: wall and CPU seconds of the
registration call alone (imports and a warm-up untimed), peak resident memory. Status: ``ok``,
``timeout``, ``oom``, ``error: ...`` or ``unavailable: ...``. Every method gets identical inputs
(same shuffled target, same subsamples, same ``--seed``). The map each method returns is applied
to the case's evaluation points in this process and scored with the case's metric
(``benchmarks.suites.evaluate``). ``none`` (no registration) is always reported.

Outputs in ``--out`` (default ``benchmarks/results/suite``), rewritten after every case:
``<stem>.json``, ``<stem>.csv``, ``<stem>.md`` with ``<stem> = suite_<suite>[_quick]``.
"""

from __future__ import annotations

import os

# Inherited by every child: idle OpenMP threads sleep instead of spinning (small shared CPUs).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import suites  # noqa: E402
from benchmarks.machine import cpu_model, memory_total  # noqa: E402
from benchmarks.peers import PEER_METHODS  # noqa: E402
from benchmarks.tables import write_rows  # noqa: E402

FAST_METHODS = ("register", "open3d_icp")
DEFAULT_METHODS = ("register", *PEER_METHODS)
HEADLINE = {"tre": "TRE", "scene_flow": "EPE3D", "relative": "error", "rotation": "rotation error"}
TITLES = {
    "lung": "Lung: TRE of landmarks / keypoints (preset `lung`)",
    "sceneflow": "Scene flow: KITTI + FlyingThings3D 8k (preset `sceneflow`), EPE3D on pc1",
    "shapes": "Shapes: BCPD pairs and synthetic Stanford deformations (preset `shapes`)",
    "rigid": "Rigid: TEASER++ fixtures (affine stage, similarity, multi-start) and small_gicp LiDAR",
    "synthetic": "Synthetic: held-out pairs of the flow network's training distribution (lung, scene flow, shapes)",
    "realistic": "Realistic: the lung, scene-flow and Stanford cases damaged as real acquisitions are "
    "(halves, crop, outliers, density; each with its data's preset)",
}
# Reference values from ../shared/data/PEERS.md, shown (marked †) only where the method they stand
# for (``REFERENCE_METHOD``) has no successful run of its own in the table.
REFERENCE_CASES = {
    "† BCPD default": {
        "dirlab4dct/case1": 0.47,
        "dirlab4dct/case2": 0.57,
        "dirlab4dct/case3": 0.59,
        "dirlab4dct/case4": 0.95,
        "dirlab4dct/case5": 0.98,
    },
    "† BCPD tuned": {
        "dirlab4dct/case1": 0.25,
        "dirlab4dct/case2": 0.29,
        "dirlab4dct/case3": 0.29,
        "dirlab4dct/case4": 0.41,
        "dirlab4dct/case5": 0.51,
    },
}
REFERENCE_METHOD = {"† BCPD default": "bcpd", "† BCPD tuned": "bcpd_tuned"}
# Per family: ((method, group) pairs the note stands for, note); a note is left out once every
# one of those methods has a successful run on a case of its group.
REFERENCE_NOTES = {
    "lung": [
        (
            (("bcpd", "dirlab4dct"), ("bcpd_tuned", "dirlab4dct")),
            "† BCPD on DIR-LAB 4DCT (columns above), from PEERS.md, **not run here**: default mean 0.71 mm "
            "(2.9-5.5 s), tuned (`-ux -g0.1 -b0.5 -l200`, chosen on these cases) 0.35 mm.",
        ),
        (
            (("bcpd", "lung250m"),),
            "† Lung250M-4B, PEERS.md, not run here: BCPD default 2.08 mm (cases 002 and 094 only, 288 s "
            "each); BCPD with acceleration (-A) 7.8-13.1 mm in 4-6 s. Open3D ICP 12.2 mm, none 16.9 mm.",
        ),
    ],
    "sceneflow": [
        (
            (("bcpd", "kitti"), ("bcpd", "ft3d")),
            "† PEERS.md, not run here: BCPD EPE3D 0.63-0.86 m (6-250 s); Open3D ICP 0.68 m; none 1.89 m. "
            "Published D-RobOT 0.0315 m on the 142-pair KITTI test set (GPU).",
        ),
    ],
    "shapes": [
        (
            (("bcpd_shapes", "bcpd"),),
            "† BCPD pairs, PEERS.md, not run here: BCPD with its shape-demo settings 0.62 % (7 s), with "
            "acceleration (-A) 10.9 %; Open3D ICP 10.1 %; none 17.6 %.",
        ),
    ],
}


def measured(records: list[dict]) -> set[tuple[str, str]]:
    """``(method, group)`` pairs with at least one successful run in ``records``."""
    return {(r["method"], r["group"]) for r in records if r.get("status") == "ok"}


def reference_notes(family: str, records: list[dict]) -> list[str]:
    """The family's PEERS.md notes whose methods were not all run here."""
    done = measured(records)
    return [note for pairs, note in REFERENCE_NOTES.get(family, []) if not set(pairs) <= done]


def say(message: str) -> None:
    print(message, flush=True)


# ----------------------------------------------------------------- register in a child process


def _register_config(preset: str, overrides: list[str] = ()):
    """A preset name (or TOML path), or one of ``suites.SPECIAL_PRESETS``, with ``--set``
    ``overrides`` (``TABLE.KEY=VALUE``) applied."""
    from register.config import from_dict, load_config, with_overrides

    if preset in suites.SPECIAL_PRESETS:
        cfg = from_dict(suites.SPECIAL_PRESETS[preset], origin=f"benchmark preset {preset}")
    else:
        cfg = load_config(preset)
    return with_overrides(cfg, list(overrides))


def register_setup() -> None:
    """Child set-up (untimed): imports and one tiny warm-up registration."""
    import logging

    logging.getLogger("register").setLevel(logging.ERROR)  # e.g. "no radius attribute" per call
    from register.pipeline import register

    x = np.random.default_rng(1).normal(size=(200, 3))
    register(x, x + 0.1, "default", device="cpu", seed=0)


def register_work(
    source: np.ndarray, target: np.ndarray, preset: str, seed: int, device: str, overrides: list[str] = ()
) -> dict:
    """The timed call in the child: ``register.pipeline.register(source, target, preset)``."""
    from register.pipeline import register

    result = register(source, target, _register_config(preset, overrides), device=device, seed=seed)
    info = {
        "stage_seconds": {s["name"]: s["seconds"] for s in result.stages},
        **{k: result.metrics.get(k) for k in ("backend", "chamfer_before", "chamfer_after", "reliability")},
    }
    if "fallback" in result.metrics:  # the lung preset: what triggered a second run, which was kept
        info["fallback"] = result.metrics["fallback"]
    return {"transform": result.transform, "info": info}


def thread_env(threads: int | None) -> dict[str, str]:
    if threads is None:
        return {}
    return {k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def run_register_limited(work, work_args: tuple, args: argparse.Namespace):
    """``work(*work_args)`` in a child with ``register`` imported and warmed up, under the run's
    time / memory limits and thread count (``benchmarks.limits.ChildOutcome``)."""
    from benchmarks.limits import run_limited

    return run_limited(
        work,
        work_args,
        time_limit_s=args.time_limit,
        memory_limit_mb=args.memory_limit,
        setup=register_setup,
        env=thread_env(args.threads),
    )


def run_method(method: str, case: suites.Case, args: argparse.Namespace) -> dict:
    """Run one method on one case; a record (status, metrics, resources). Never raises."""
    base = {
        "family": case.family,
        "case": case.name,
        "group": case.group,
        "metric": case.metric,
        "unit": case.unit,
        "preset": case.preset,
        "method": method,
        **case.info,
    }
    if method == "none":
        return {**base, "status": "ok", "seconds": 0.0, **suites.evaluate(case, case.eval_source)}
    transform, info = None, {}
    # The child is forked from this process, and Linux carries the parent's peak RSS over fork
    # and exec into the child's ru_maxrss: a child peak at or below this value is only a bound.
    base["parent_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if method == "register":
        out = run_register_limited(
            register_work, (case.source, case.target, case.preset, args.seed, args.device, args.set), args
        )
        res = {
            "status": out.status,
            "seconds": out.wall_s,
            "cpu_seconds": out.cpu_s,
            "peak_rss_mb": out.peak_rss_mb,
            "peak_rss_delta_mb": out.peak_rss_delta_mb,
            "startup_seconds": out.startup_s,
        }
        message = out.message
        if out.status == "ok":
            transform, info = out.value["transform"], out.value["info"]
    else:
        from benchmarks.peers import run_peer

        peer = run_peer(
            method,
            case.source,
            case.target,
            time_limit_s=args.time_limit,
            seed=args.seed,
            memory_limit_mb=args.memory_limit,
            threads=args.threads,
        )
        rec = peer.record()
        res = {k: rec[k] for k in ("status", "seconds", "cpu_seconds", "peak_rss_mb", "peak_rss_delta_mb")}
        res["startup_seconds"] = rec["startup_seconds"]
        message, transform, info = peer.message, peer.transform, peer.info
    record = {**base, **res, "info": info}
    if message and res["status"] != "ok":
        record["message"] = message[-1500:]
    if transform is not None:
        try:
            record |= suites.evaluate(case, transform.apply(case.eval_source))
        except Exception as exc:  # a map that cannot be evaluated is an error of that method
            record |= {"status": f"error: evaluation: {type(exc).__name__}: {exc}", "value": math.nan}
    return record


# -------------------------------------------------------------------------------- writing


def machine_info() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("torch", "numpy", "open3d-cpu", "open3d", "probreg", "pycpd"):
        with contextlib.suppress(PackageNotFoundError):
            versions[pkg] = version(pkg)
    return {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory": memory_total(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", ""),
        "nice": os.nice(0) if hasattr(os, "nice") else None,
    }


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def write_json(path: Path, records: list[dict], meta: dict) -> None:
    payload = {**meta, "records": records}
    path.write_text(json.dumps(_jsonable(payload), indent=2, default=str, allow_nan=True) + "\n")


def write_csv(path: Path, records: list[dict]) -> None:
    flat = []
    for r in records:
        row = {}
        for k, v in r.items():
            if isinstance(v, dict | list):
                row[k] = json.dumps(_jsonable(v), default=str)
            else:
                row[k] = v
        flat.append(row)
    write_rows(path, flat)


def _finite(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def fmt(v, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if _finite(v) else "—"


def _digits(unit: str) -> int:
    return 3 if unit in ("m", "deg") else 2


def _status_cell(r: dict) -> str:
    status = r.get("status", "")
    if status.startswith("unavailable"):
        return "n/a"
    if status.startswith("error"):
        return "error"
    return status or "—"


def accuracy_cell(r: dict | None, digits: int) -> str:
    if r is None:
        return ""
    if r.get("status") != "ok" or not _finite(r.get("value")):
        return _status_cell(r) if r.get("status") != "ok" else "error"
    if r["method"] == "none":
        return fmt(r["value"], digits)
    return f"{fmt(r['value'], digits)} ({fmt(r.get('seconds'), 1)} s)"


def resource_cell(r: dict | None) -> str:
    if r is None:
        return ""
    if r.get("status") not in ("ok", "timeout", "oom"):
        return _status_cell(r)
    peak = r.get("peak_rss_mb")
    parent = r.get("parent_maxrss_mb")
    peak_cell = fmt(peak, 0)
    if _finite(peak) and _finite(parent) and peak <= parent + 1.0:
        peak_cell = f"≤{peak_cell}*"  # inherited from the parent: the child's own peak is unknown
    cell = f"{fmt(r.get('seconds'), 1)} / {fmt(r.get('cpu_seconds'), 1)} / {peak_cell}"
    return cell if r["status"] == "ok" else f"{r['status']}: {cell}"


def family_tables(family: str, records: list[dict], methods: list[str]) -> list[str]:
    """Cases x methods accuracy table with mean rows, then a resource table."""
    cases: dict[str, dict[str, dict]] = {}
    for r in records:
        cases.setdefault(r["case"], {})[r["method"]] = r
    ran = {(r["method"], r["case"]) for r in records if r.get("status") == "ok"}
    refs = [
        name
        for name, values in REFERENCE_CASES.items()
        if any(c in values and (REFERENCE_METHOD[name], c) not in ran for c in cases)
    ]
    lines = []
    # One mean row per metric/unit within the family (a family mixing metrics gets several).
    kinds = list(
        dict.fromkeys(
            (next(iter(m.values()))["metric"], next(iter(m.values()))["unit"]) for m in cases.values()
        )
    )
    head = ["case", *methods, *(f"{n} (PEERS.md, not run)" for n in refs)]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, by_method in cases.items():
        unit = next(iter(by_method.values()))["unit"]
        cells = [case] + [accuracy_cell(by_method.get(m), _digits(unit)) for m in methods]
        cells += [fmt(REFERENCE_CASES[n].get(case), 2) if case in REFERENCE_CASES[n] else "" for n in refs]
        lines.append("| " + " | ".join(cells) + " |")
    for metric, unit in kinds:
        rows = [m for m in cases.values() if next(iter(m.values()))["metric"] == metric]
        cells = [f"**mean {HEADLINE[metric]} ({unit}), {len(rows)} case{'s' * (len(rows) > 1)}**"]
        for method in methods:
            vals = [m.get(method, {}).get("value") for m in rows]
            # Mean time over the successful runs only (a timeout's 600 s would swamp it).
            secs = [m.get(method, {}).get("seconds") for m in rows if _finite(m.get(method, {}).get("value"))]
            ok = [v for v in vals if _finite(v)]
            if not ok:
                cells.append("—")
                continue
            cell = f"**{fmt(float(np.mean(ok)), _digits(unit))}**"
            if method != "none":
                cell += f" ({fmt(float(np.mean([s for s in secs if _finite(s)])), 1)} s)"
            if len(ok) < len(vals):
                cell += f" [{len(ok)}/{len(vals)} ok]"
            cells.append(cell)
        for n in refs:
            vals = [REFERENCE_CASES[n].get(c) for c in cases if c in REFERENCE_CASES[n]]
            cells.append(fmt(float(np.mean(vals)), 2) if len(vals) == len(REFERENCE_CASES[n]) else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Resources per run: wall s / CPU s of the registration call / peak resident MiB of the child "
        "(`≤N*`: not above the runner's own peak, which Linux copies into a forked child's peak, so "
        "only an upper bound).",
        "",
        "| case | " + " | ".join(m for m in methods if m != "none") + " |",
        "|" + "---|" * (len(methods)),
    ]
    for case, by_method in cases.items():
        lines.append(
            "| "
            + " | ".join([case] + [resource_cell(by_method.get(m)) for m in methods if m != "none"])
            + " |"
        )
    return lines


def write_markdown(path: Path, records: list[dict], meta: dict) -> None:
    m = meta["machine"]
    methods = list(dict.fromkeys(["none", *meta["methods"]]))
    lines = [
        f"# register benchmark suite `{meta['suite']}`" + (" (quick smoke test)" if meta["quick"] else ""),
        "",
        *(f"- command: `{c}`" for c in meta.get("commands", [meta["command"]])),
        f"- date: {meta['date']}; wall time {meta.get('total_seconds', math.nan) / 60:.1f} min"
        + ("" if meta.get("finished") else " (**incomplete**: still running or interrupted)"),
        f"- machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory']} RAM, {m['platform']}, "
        f"Python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- child processes: threads {meta['threads']} (OMP/OPENBLAS/MKL_NUM_THREADS), "
        f"OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']}, nice {m['nice']}, time limit {meta['time_limit_s']:g} s, "
        f"memory limit {meta['memory_limit_mb'] or 'none'} MiB, seed {meta['seed']}, device {meta['device']}"
        + (f", register overrides {' '.join(meta['set'])}" if meta.get("set") else ""),
        "- inputs: read from the shared data folder (never copied); targets shuffled with "
        "`numpy.random.default_rng(0).permutation`; identical inputs for every method. Cells: "
        "headline metric (wall s of the registration call); `timeout` / `oom` / `error` / `n/a` "
        "(package or binary not installed) otherwise. Mean rows average the cases that succeeded.",
        "- † columns and notes (where shown) are reference values copied from `../shared/data/PEERS.md`: "
        "**not run here**; a method run here replaces its reference.",
        "",
    ]
    for family in suites.FAMILIES:
        fam = [r for r in records if r["family"] == family]
        if not fam:
            continue
        lines += [f"## {TITLES[family]}", ""]
        if family == "realistic":
            from benchmarks.realistic_report import realistic_tables

            lines += realistic_tables(fam, methods, _digits)
        else:
            lines += family_tables(family, fam, methods)
        notes = reference_notes(family, fam)
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        lines.append("")
    failures = [r for r in records if r.get("status") != "ok" and not r["status"].startswith("unavailable")]
    unavailable = sorted(
        {f"{r['method']}: {r['status']}" for r in records if r["status"].startswith("unavailable")}
    )
    lines += ["## Failures and unavailable methods", ""]
    lines += [f"- {r['family']} {r['case']} {r['method']}: {r['status']}" for r in failures]
    lines += [f"- {u}" for u in unavailable]
    if not failures and not unavailable:
        lines.append("- none")
    path.write_text("\n".join(lines) + "\n")


def write_all(out: Path, stem: str, records: list[dict], meta: dict) -> None:
    write_json(out / f"{stem}.json", records, meta)
    write_csv(out / f"{stem}.csv", records)
    write_markdown(out / f"{stem}.md", records, meta)


# ----------------------------------------------------------------------------------- main


def merge_base(
    path: Path, meta: dict, methods: list[str], replace: bool, cases: list[str] | None = None
) -> tuple[list[dict], dict]:
    """Records and metadata to start from with ``--update`` / ``--resume``.

    The records of ``path``, minus those of ``methods`` (on ``cases``, or every case when
    ``None``) when ``replace`` (``--update`` reruns them; ``--resume`` keeps them and skips
    their runs).

    The merged metadata lists every command that contributed (``commands``) and the union of the
    methods (previous ones first); settings that must match (seed, threads, limits, device) are
    checked so that the merged table stays a like-for-like comparison.
    """
    if not path.exists():
        return [], meta
    old = json.loads(path.read_text())
    for key in ("seed", "threads", "time_limit_s", "memory_limit_mb", "device", "quick", "set"):
        if old.get(key, [] if key == "set" else None) != meta[key]:
            raise SystemExit(
                f"error: --update: {path} was made with {key}={old.get(key)!r}, this run has "
                f"{meta[key]!r}; use the same settings or another --out"
            )
    kept = [
        r
        for r in old["records"]
        if not (replace and r["method"] in methods and (cases is None or r["case"] in cases))
    ]
    merged = dict(meta)
    merged["methods"] = list(dict.fromkeys([*old["methods"], *methods]))
    merged["commands"] = [*old.get("commands", [old["command"]]), meta["command"]]
    merged["previous_seconds"] = float(old.get("total_seconds", 0.0))
    return kept, merged


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="register and peer tools on the benchmark suites (see benchmarks/README.md).",
    )
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data folder")
    p.add_argument("--suite", default="all", help=f"{' | '.join(suites.FAMILIES)} | all (or comma-separated)")
    p.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated; default {','.join(DEFAULT_METHODS)} ({','.join(FAST_METHODS)} with --quick)",
    )
    p.add_argument("--cases", default=None, help="comma-separated case names (e.g. dirlab4dct/case1)")
    p.add_argument("--time-limit", type=float, default=600.0, help="wall seconds per registration")
    p.add_argument("--memory-limit", type=float, default=None, help="MiB of resident memory per child")
    p.add_argument("--threads", type=int, default=2, help="OMP/BLAS threads of each child (PEERS.md: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="device of register (cpu, cuda, auto)")
    p.add_argument("--quick", action="store_true", help="one small case per family, fast methods only")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TABLE.KEY=VALUE",
        help="override a key of register's preset in every case (repeatable), e.g. "
        "--set pipeline.backend=geomloss; use another --out to keep the default results",
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/suite"), help="results folder")
    p.add_argument(
        "--update",
        action="store_true",
        help="merge into the existing results of the same suite: rerun only the given methods and keep "
        "the other methods' records (e.g. peers once, register after each change)",
    )
    p.add_argument(
        "--tables-only",
        action="store_true",
        help="run nothing: rewrite the .md and .csv of the suites' results in --out from their .json "
        "(e.g. after a change of the table code)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: like --update, but keep (and skip) the case/method runs "
        "already recorded; results are saved after every run",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:

    args = parse_args(argv)
    families = list(suites.FAMILIES) if args.suite == "all" else [s.strip() for s in args.suite.split(",")]
    bad = [f for f in families if f not in suites.FAMILIES]
    if bad:
        print(f"error: unknown suite {bad}; choose from {', '.join(suites.FAMILIES)} or all", file=sys.stderr)
        return 2
    methods = (
        [m.strip() for m in args.methods.split(",") if m.strip()]
        if args.methods
        else list(FAST_METHODS if args.quick else DEFAULT_METHODS)
    )
    bad = [m for m in methods if m not in ("register", "none", *PEER_METHODS)]
    if bad:
        known = ", ".join(("register", *PEER_METHODS))
        print(f"error: unknown methods {bad}; choose from {known}", file=sys.stderr)
        return 2
    if args.tables_only:
        return rewrite_tables(families, args, args.out.resolve())
    data = args.data.expanduser()
    if not data.is_dir():
        print(
            f"error: data folder {data} (resolved {data.resolve()}) not found; pass --data PATH "
            "(see ../shared/data/README.md)",
            file=sys.stderr,
        )
        return 2
    from register.errors import ConfigError

    # A bad --set fails here, not once per case in the children: it must fit the preset of
    # every case to run (a per-level list must match each preset's number of levels).
    for preset in dict.fromkeys(p for family in families for p in suites.FAMILY_PRESETS[family]):
        try:
            _register_config(preset, args.set)
        except ConfigError as exc:
            print(f"error: --set with preset {preset}: {exc}", file=sys.stderr)
            return 2
    out = args.out.resolve()
    if data.resolve() == out or data.resolve() in out.parents:
        print("error: --out is inside the data folder; write results elsewhere", file=sys.stderr)
        return 2
    wanted = [c.strip() for c in args.cases.split(",")] if args.cases else None
    known = {name for family in families for name in suites.case_names(family, data)}
    unknown = [c for c in wanted or [] if c not in known]
    if unknown:
        print(
            f"error: --cases {', '.join(unknown)}: not a case of --suite {args.suite} "
            "(names as in the result tables, e.g. dirlab4dct/case1)",
            file=sys.stderr,
        )
        return 2
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.run " + shlex.join(sys.argv[1:] if argv is None else argv)
    for family in families:  # one result file per family, whatever --suite groups
        run_family(family, args, command, methods, data, out, wanted)
    return 0


def rewrite_tables(families: list[str], args: argparse.Namespace, out: Path) -> int:
    """``--tables-only``: the .md and .csv of each family's results rewritten from its .json."""
    found = False
    for family in families:
        stem = f"suite_{family}" + ("_quick" if args.quick else "")
        for path in (out / f"{stem}.json", out / f"{stem}_partial.json"):
            if path.is_file():
                payload = json.loads(path.read_text())
                records = payload.pop("records")
                write_csv(path.with_suffix(".csv"), records)
                write_markdown(path.with_suffix(".md"), records, payload)
                say(f"rewrote {path.with_suffix('.md')} and .csv from {path.name}")
                found = True
    if not found:
        print(
            f"error: --tables-only: no suite_<family>.json of {', '.join(families)} in {out}", file=sys.stderr
        )
        return 2
    return 0


def run_family(
    family: str,
    args: argparse.Namespace,
    command: str,
    methods: list[str],
    data: Path,
    out: Path,
    wanted: list[str] | None,
) -> None:
    """Run ``methods`` on the cases of one family and write ``suite_<family>.{json,csv,md}``
    (merged into the existing file with ``--update`` / ``--resume``)."""
    stem = f"suite_{family}" + ("_quick" if args.quick else "")
    if wanted and not (args.update or args.resume):
        stem += "_partial"  # a subset on its own; with --update/--resume it merges into the full results
    meta = {
        "suite": family,
        "quick": args.quick,
        "methods": methods,
        "command": command,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "threads": args.threads,
        "time_limit_s": args.time_limit,
        "memory_limit_mb": args.memory_limit,
        "seed": args.seed,
        "device": args.device,
        "set": list(args.set),
        "data": str(data),
        "finished": False,
    }
    records: list[dict] = []
    if args.update or args.resume:
        records, meta = merge_base(out / f"{stem}.json", meta, methods, not args.resume, wanted)
    done = {(r["case"], r["method"]) for r in records} if args.resume else set()
    say(f"suite {family}{' (quick)' if args.quick else ''}: methods {', '.join(methods)}")
    t_start = time.perf_counter() - meta.get("previous_seconds", 0.0)
    catalog, notes = suites.discover(family, data)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    names = suites.case_names(family, data, args.quick)
    if wanted:
        names = [n for n in catalog if n in wanted]
    if not names:
        say(f"suite {family}: no case found in {data}: nothing run")
        return
    for case in suites.load_cases(family, data, names):
        say(f"[{family}] {case.name}: {len(case.source)} -> {len(case.target)} points, preset {case.preset}")
        for method in ["none", *[m for m in methods if m != "none"]]:
            if (case.name, method) in done:
                say(f"  {method:22s} already recorded (--resume)")
                continue
            r = run_method(method, case, args) | {"run": meta["date"]}  # which invocation measured it
            records = [q for q in records if (q["case"], q["method"]) != (case.name, method)]
            records.append(r)
            detail = "" if r["status"] == "ok" else f"  {r.get('message', '')[-200:]!r}"
            say(
                f"  {method:22s} {r['status'][:60]:12s} {fmt(r.get('value'), _digits(case.unit))} {case.unit}"
                f"  wall {fmt(r.get('seconds'), 1)} s  cpu {fmt(r.get('cpu_seconds'), 1)} s"
                f"  peak {fmt(r.get('peak_rss_mb'), 0)} MiB{detail if r['status'].startswith('error') else ''}"
            )
            meta["total_seconds"] = time.perf_counter() - t_start
            write_all(out, stem, records, meta)
    meta["total_seconds"] = time.perf_counter() - t_start
    meta["finished"] = True
    write_all(out, stem, records, meta)
    say(f"done in {meta['total_seconds']:.0f} s; wrote {out / stem}.{{json,csv,md}}")


if __name__ == "__main__":
    # Re-enter through the package so the child-process functions pickle as benchmarks.run.*
    from benchmarks.run import main as _main

    sys.exit(_main())
