"""One robust OT matching (the hot loop) per backend and size: time, memory, agreement.

    python -m benchmarks.ot_solve --data ../shared/data --sizes 8000,30000,60000

Input: the copd1 vessel-tree pair of ``lung/vessels`` (60k points each, coordinates x 100 =
mm), a seeded subsample of ``n`` points per cloud, as is (no pre-alignment). Each backend runs
``register.ot.matching.robust_match`` once (balanced, ``blur`` a fraction of the pair's
diameter, the pipeline's default ``scaling`` 0.5 and ``max_iter`` 10) in a fresh child process
under the same limits (``benchmarks.limits``). Reported per run: wall and CPU seconds, peak
resident memory, and how far its matched positions are from those of the reference backend
(``dense``: all ``N x M`` terms, same solver) at the same size: mean and max distance (mm), and
the same in units of the blur. Results: ``benchmarks/results/speed/ot_solve.{json,md}``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import cpu_model, memory_total
from benchmarks.run import run_register_limited
from benchmarks.speed import make_input

BACKENDS = ("dense", "sparse", "geomloss", "keops")
OUT = Path(__file__).parent / "results" / "speed"


def copd1_pair(data: Path, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Seeded ``n``-point subsamples ``(n, 3)`` float32 of the copd1 vessel clouds (mm), or None:
    the same points as the ``copd1`` input of :mod:`benchmarks.speed`."""
    inp = make_input("copd1", n, data)
    if inp is None:
        return None
    return inp["source"].astype(np.float32), inp["target"].astype(np.float32)


def solve_work(x: np.ndarray, y: np.ndarray, blur: float, backend: str) -> dict:
    """The timed call in the child: one matching; returns the targets ``(N, 3)`` (mm)."""
    import torch

    from register.ot.matching import robust_match

    m = robust_match(torch.from_numpy(x), torch.from_numpy(y), blur=blur, max_iter=10, backend=backend)
    return {"targets": m.targets.numpy(), "iterations": m.iterations, "cost": m.cost}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="One robust OT matching per backend and size.")
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    p.add_argument("--sizes", default="8000,30000,60000", help="points per cloud, comma separated")
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma separated; dense is the reference")
    p.add_argument("--blur", type=float, default=0.01, help="blur as a fraction of the pair's diameter")
    p.add_argument("--time-limit", type=float, default=600.0, help="wall seconds per run")
    p.add_argument("--memory-limit", type=float, default=12000.0, help="MiB per run")
    p.add_argument("--threads", type=int, default=2, help="OMP threads of every run")
    p.add_argument("--out", type=Path, default=OUT / "ot_solve", help="output stem (.json and .md added)")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"--data {args.data}: folder not found (the shared data folder)", file=sys.stderr)
        return 2
    backends = args.backends.split(",")
    work = importlib.import_module("benchmarks.ot_solve").solve_work
    records, started = [], time.time()
    for n in (int(s) for s in args.sizes.split(",")):
        pair = copd1_pair(args.data, n)
        if pair is None:
            print(f"copd1 at {n} points: not available (missing data or too few points)", file=sys.stderr)
            continue
        x, y = pair
        both = np.concatenate([x, y])
        blur = args.blur * float(np.linalg.norm(both.max(0) - both.min(0)))
        reference = None
        for backend in backends:
            out = run_register_limited(work, (x, y, blur, backend), args)
            rec = {"n": n, "backend": backend, "blur_mm": blur, "status": out.status, "seconds": out.wall_s}
            rec.update(cpu_seconds=out.cpu_s, peak_rss_mb=out.peak_rss_mb)
            if out.status == "ok":
                rec.update(iterations=out.value["iterations"], cost=out.value["cost"])
                if backend == "dense":
                    reference = out.value["targets"]
                elif reference is not None:
                    gap = np.linalg.norm(out.value["targets"] - reference, axis=1)
                    rec.update(gap_mean_mm=float(gap.mean()), gap_max_mm=float(gap.max()))
            records.append(rec)
            print(json.dumps(rec), flush=True)
    meta = {
        "command": "python -m benchmarks.ot_solve " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{cpu_model()}, {memory_total()}, {args.threads} threads",
        "limits": f"{args.time_limit:.0f} s, {args.memory_limit:.0f} MiB per run",
        "minutes": (time.time() - started) / 60,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    args.out.with_suffix(".md").write_text("\n".join(markdown(records, backends, meta)) + "\n")
    print(args.out.with_suffix(".md").read_text())
    return 0


def markdown(records: list[dict], backends: list[str], meta: dict) -> list[str]:
    """One row per size; per backend ``wall s (ratio to dense), peak MiB, gap to dense``."""
    lines = [
        "# One robust OT matching: copd1 vessel pair, as is (`benchmarks.ot_solve`)",
        "",
        f"`{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; limits {meta['limits']}. Cells: wall seconds (ratio to dense), "
        "peak resident memory, mean / max distance of the matched positions to those of dense (mm).",
        "",
        "| n | blur mm | " + " | ".join(backends) + " |",
        "|---|---|" + "---|" * len(backends),
    ]
    for n in sorted({r["n"] for r in records}):
        rows = {r["backend"]: r for r in records if r["n"] == n}
        ref = rows.get("dense", {}).get("seconds") if rows.get("dense", {}).get("status") == "ok" else None
        cells = []
        for b in backends:
            r = rows.get(b)
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append(r["status"].split(":")[0])
            else:
                ratio = f" (x{r['seconds'] / ref:.2f})" if ref and b != "dense" else ""
                gap = f", {r['gap_mean_mm']:.3f} / {r['gap_max_mm']:.2f} mm" if "gap_mean_mm" in r else ""
                cells.append(f"{r['seconds']:.1f} s{ratio}, {r['peak_rss_mb']:.0f} MiB{gap}")
        blur = next(iter(rows.values()))["blur_mm"]
        lines.append(f"| {n} | {blur:.2f} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
