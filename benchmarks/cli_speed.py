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

from benchmarks.machine import run_meta
from benchmarks.speed import make_input

OUT = Path(__file__).parent / "results" / "speed" / "cli_speed"


def write_inputs(data: Path, n: int, folder: Path) -> tuple[np.ndarray, np.ndarray, Path, Path] | None:
    """The copd1 input of :func:`benchmarks.speed.make_input` (``n`` seeded points per cloud, mm)
    written as VTK files into ``folder``: ``(source, target, source path, target path)``, or None
    when the pair is missing or smaller than ``n``."""
    import pyvista as pv

    inp = make_input("copd1", n, data)
    if inp is None:
        return None
    paths = folder / f"copd1_{n}_src.vtk", folder / f"copd1_{n}_tgt.vtk"
    for path, pts in zip(paths, (inp["source"], inp["target"]), strict=True):
        pv.PolyData(pts).save(path, binary=True)
    return inp["source"], inp["target"], *paths


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


def time_bcpd(x: np.ndarray, y: np.ndarray, threads: int) -> dict | None:
    """BCPD on the same points (the harness of :mod:`benchmarks.peers`), with its Nystrom
    approximation (``bcpd_shapes``: ``-J300 -K70``): at its default settings, without it, BCPD
    crashes (SIGSEGV) on 30k-point clouds on this machine."""
    from benchmarks.peers import run_peer

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


def table_row(n: int, preset: str, runs: list[dict], bcpd: dict | None) -> str:
    """One Markdown row: median (min-max) wall seconds of ``runs``, the stage seconds of the
    median run, BCPD's wall seconds and the ratio register / BCPD."""
    walls = sorted(rec["wall_s"] for rec in runs)
    median = sorted(runs, key=lambda rec: rec["wall_s"])[len(runs) // 2]
    stages = ", ".join(f"{k} {v:.1f}" for k, v in median["stage_seconds"].items())
    if median.get("reliability_seconds"):
        stages += f", reliability {median['reliability_seconds']:.1f}"
    wall = statistics.median(walls)
    bcpd_s, ratio = (f"{bcpd['wall_s']:.1f}", f"{wall / bcpd['wall_s']:.2f}") if bcpd else ("-", "-")
    return (
        f"| {n:,} | {preset} | {wall:.1f} ({walls[0]:.1f}-{walls[-1]:.1f}) | {stages} | {bcpd_s} | {ratio} |"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.is_dir():
        print(f"--data {args.data}: folder not found (the shared data folder)", file=sys.stderr)
        return 2
    meta = run_meta("benchmarks.cli_speed", argv, args.threads)
    rows, records = [], []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="register-cli-speed-") as tmp:
        tmp = Path(tmp)
        for n in (int(s) for s in args.sizes.split(",")):
            inputs = write_inputs(args.data, n, tmp)
            if inputs is None:
                print(f"[copd1 {n}] not available; skipped", flush=True)
                continue
            x, y, src, tgt = inputs
            bcpd = None if args.no_bcpd else time_bcpd(x, y, args.threads)
            for preset in args.presets.split(","):
                runs = []
                for r in range(args.repeats):
                    rec = time_register(src, tgt, preset, tmp / f"out_{n}_{preset}_{r}", args.threads)
                    runs.append(rec)
                    print(
                        f"[copd1 {n}] {preset:8s} run {r}: {rec['wall_s']:.1f} s (exit {rec['returncode']})",
                        flush=True,
                    )
                    if rec["returncode"] != 0:
                        print(rec["stderr"], file=sys.stderr)
                        return 1
                records.append({"n": n, "preset": preset, "runs": runs, "bcpd": bcpd})
                rows.append(table_row(n, preset, runs, bcpd))
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
