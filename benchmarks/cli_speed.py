"""Whole-command speed: ``register SRC TGT -o OUT [-p PRESET]`` timed as a user runs it.

    python -m benchmarks.cli_speed --data ../shared/data --sizes 30000,60000 --presets default,lung

Unlike :mod:`benchmarks.speed` (the registration call alone, imports excluded), each run here is
a fresh ``register`` process: interpreter start, imports, reading the files, the registration,
the reliability report and writing every output all count. Inputs: the copd1 vessel-tree pair of ``lung/vessels`` (coordinates x 100 = mm),
a seeded subsample of ``n`` points per cloud, written once as legacy VTK into a temporary folder.
BCPD (when built: ``bash benchmarks/setup_peers.sh bcpd``) runs on the same points in the same
loop, so register / BCPD wall-time ratios come from one run on one (noisy, shared) machine.

Cells: median wall seconds over ``--repeats`` runs (min-max), the stage seconds of the median
run from its ``metrics.json``. Results: ``benchmarks/results/speed/cli_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import cpu_model, memory_total

OUT = Path(__file__).parent / "results" / "speed" / "cli_speed"


def write_inputs(data: Path, n: int, folder: Path) -> tuple[Path, Path] | None:
    """copd1 source / target, ``n`` seeded points each, as VTK files in ``folder`` (None: the
    pair is missing or smaller than ``n``). Same subsample as :mod:`benchmarks.speed`."""
    import pyvista as pv

    vessels = data / "lung/vessels"
    if not (vessels / "copd1_source.vtk").is_file():
        return None
    x = np.asarray(pv.read(vessels / "copd1_source.vtk").points, dtype=np.float64) * 100
    y = np.asarray(pv.read(vessels / "copd1_target.vtk").points, dtype=np.float64) * 100
    if n > min(len(x), len(y)):
        return None
    rng = np.random.default_rng(0)
    x, y = x[rng.choice(len(x), n, replace=False)], y[rng.choice(len(y), n, replace=False)]
    paths = folder / f"copd1_{n}_src.vtk", folder / f"copd1_{n}_tgt.vtk"
    for path, pts in zip(paths, (x, y), strict=True):
        pv.PolyData(pts).save(path, binary=True)
    return paths


def time_register(src: Path, tgt: Path, preset: str, out: Path, threads: int) -> dict:
    """One ``register`` process: wall seconds, exit code and its metrics.json stage seconds."""
    cmd = [sys.executable, "-m", "register", "run", str(src), str(tgt), "-o", str(out), "-q"]
    cmd += [] if preset == "default" else ["-p", preset]
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    rec = {"wall_s": wall, "returncode": proc.returncode}
    if proc.returncode != 0:
        rec["stderr"] = proc.stderr[-2000:]
        return rec
    metrics = json.loads((out / "metrics.json").read_text())
    rec["stage_seconds"] = metrics.get("stage_seconds", {})
    rec["reliability_seconds"] = metrics.get("reliability_seconds")
    rec["chamfer_after"] = metrics.get("chamfer_after")
    return rec


def time_bcpd(src: Path, tgt: Path, threads: int) -> dict | None:
    """BCPD on the same points (the harness of :mod:`benchmarks.peers`), with its Nystrom
    approximation (``bcpd_shapes``: ``-J300 -K70``): at its default settings, without it, BCPD
    crashes (SIGSEGV) on 30k-point clouds on this machine."""
    import pyvista as pv

    from benchmarks.peers import run_peer

    x, y = (np.asarray(pv.read(p).points, dtype=np.float64) for p in (src, tgt))
    t0 = time.perf_counter()
    peer = run_peer("bcpd_shapes", x, y, time_limit_s=600.0, seed=0, memory_limit_mb=12000.0, threads=threads)
    rec = peer.record()
    if rec["status"].startswith("unavailable"):
        return None
    return {"wall_s": time.perf_counter() - t0, "status": rec["status"], "seconds": rec["seconds"]}


def parse_args(argv):
    p = argparse.ArgumentParser(description="Whole register command lines, timed (process start included).")
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    p.add_argument("--sizes", default="30000,60000", help="points per cloud, comma separated")
    p.add_argument("--presets", default="default,lung", help="comma separated; 'default': no -p")
    p.add_argument("--repeats", type=int, default=3, help="runs per cell (the median is reported)")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every run")
    p.add_argument("--no-bcpd", action="store_true", help="do not run BCPD")
    p.add_argument("--out", type=Path, default=OUT, help="output stem (.json and .md added)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.is_dir():
        print(f"--data {args.data}: folder not found (the shared data folder)", file=sys.stderr)
        return 2
    meta = {
        "command": "python -m benchmarks.cli_speed " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"cpu": cpu_model(), "memory": memory_total(), "threads": args.threads},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    rows, records = [], []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="register-cli-speed-") as tmp:
        tmp = Path(tmp)
        for n in (int(s) for s in args.sizes.split(",")):
            paths = write_inputs(args.data, n, tmp)
            if paths is None:
                print(f"[copd1 {n}] not available; skipped", flush=True)
                continue
            bcpd = None if args.no_bcpd else time_bcpd(*paths, args.threads)
            for preset in args.presets.split(","):
                runs = []
                for r in range(args.repeats):
                    rec = time_register(*paths, preset, tmp / f"out_{n}_{preset}_{r}", args.threads)
                    runs.append(rec)
                    print(
                        f"[copd1 {n}] {preset:8s} run {r}: {rec['wall_s']:.1f} s (exit {rec['returncode']})",
                        flush=True,
                    )
                    if rec["returncode"] != 0:
                        print(rec["stderr"], file=sys.stderr)
                        return 1
                walls = [rec["wall_s"] for rec in runs]
                median = sorted(runs, key=lambda rec: rec["wall_s"])[len(runs) // 2]
                records.append({"n": n, "preset": preset, "runs": runs, "bcpd": bcpd})
                stages = ", ".join(f"{k} {v:.1f}" for k, v in median["stage_seconds"].items())
                stages += (
                    f", reliability {median['reliability_seconds']:.1f}"
                    if median.get("reliability_seconds")
                    else ""
                )
                ratio = f"{statistics.median(walls) / bcpd['wall_s']:.2f}" if bcpd else "-"
                bcpd_s = f"{bcpd['wall_s']:.1f}" if bcpd else "-"
                rows.append(
                    f"| {n:,} | {preset} | {statistics.median(walls):.1f} ({min(walls):.1f}-{max(walls):.1f}) "
                    f"| {stages} | {bcpd_s} | {ratio} |"
                )
                args.out.with_suffix(".json").write_text(
                    json.dumps({"meta": meta, "records": records}, indent=1)
                )
    md = [
        f"# Whole `register` command lines, copd1 vessel pair ({meta['date']})",
        "",
        f"`{meta['command']}`",
        "",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['memory']}, OMP_NUM_THREADS={args.threads}. "
        "Wall seconds of the whole process (start, imports, reading, registration, reliability report, "
        f"outputs): median (min-max) of {args.repeats} runs; "
        "stage seconds of the median run; BCPD with its Nystrom approximation (`bcpd_shapes` "
        "settings; at its defaults it crashes on 30k points) on the same points, one run.",
        "",
        "| points per cloud | preset | wall s | stage s | BCPD wall s | register / BCPD |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
