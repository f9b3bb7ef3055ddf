"""Kill a ``register batch`` with ``kill -9`` half-way, run it again, and check nothing was lost.

    python -m benchmarks.batch_resume MANIFEST OUTDIR [--kill-fraction 0.5] [-- BATCH OPTIONS]

1. starts ``register batch MANIFEST -o OUTDIR BATCH OPTIONS`` (OUTDIR must not exist);
2. once ``--kill-fraction`` of the pairs are complete, sends SIGKILL to the batch and its
   worker processes (the whole process group, as a scheduler killing a job would);
3. records every complete pair folder (content checksums and modification times of every
   file) and the hidden temporaries the killed run left;
4. runs the same command again and checks that every pair folder complete before the kill is
   untouched (same bytes, same times: nothing recomputed), that the second run skipped exactly
   those and ran the others, that every pair ended ``ok`` and that no temporary is left.

Prints the times and writes them with the checks to ``OUTDIR.resume.json``. Exit code 0 when
every check passes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def complete_pairs(outdir: Path) -> list[str]:
    """Pair folders whose ``status.json`` says ok (the completion marker, written last)."""
    done = []
    for status in outdir.glob("*/status.json"):
        try:
            if json.loads(status.read_text()).get("status") == "ok":
                done.append(status.parent.name)
        except (OSError, ValueError):
            continue
    return sorted(done)


def snapshot(folder: Path) -> dict[str, list]:
    """``{file: [sha256, mtime_ns]}`` of a pair folder."""
    return {
        p.name: [hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns]
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def temporaries(outdir: Path) -> list[str]:
    return sorted(p.name for p in outdir.iterdir() if p.name.startswith(".") and p.name != ".batch.lock")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("outdir", type=Path)
    parser.add_argument(
        "--kill-fraction", type=float, default=0.5, help="kill once this fraction of pairs is done"
    )
    parser.add_argument("batch_options", nargs="*", help="after --: options of 'register batch'")
    args = parser.parse_args()
    if args.outdir.exists():
        parser.error(f"{args.outdir} exists; the check needs a fresh output folder")
    from register.app.batch import read_manifest

    n_pairs = len(read_manifest(args.manifest))
    kill_at = max(1, min(n_pairs - 1, round(args.kill_fraction * n_pairs)))
    command = [sys.executable, "-m", "register", "batch", str(args.manifest), "-o", str(args.outdir)]
    command += args.batch_options

    t0 = time.perf_counter()
    first = subprocess.Popen([*command, "--quiet"], start_new_session=True)
    while not args.outdir.is_dir() or len(complete_pairs(args.outdir)) < kill_at:
        if first.poll() is not None:
            print(
                f"the batch ended (exit {first.returncode}) before {kill_at} pairs were done", file=sys.stderr
            )
            return 1
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_after = time.perf_counter() - t0
    time.sleep(1)  # the workers die with their parent; let the kernel reap them
    done_before = complete_pairs(args.outdir)
    before = {pid: snapshot(args.outdir / pid) for pid in done_before}
    left = temporaries(args.outdir)
    print(
        f"killed -9 after {killed_after:.1f} s: {len(done_before)}/{n_pairs} pairs complete; left behind: {left}"
    )

    t1 = time.perf_counter()
    second = subprocess.run([*command, "--json"], capture_output=True, text=True)
    rerun_seconds = time.perf_counter() - t1
    out = json.loads(second.stdout)
    rows = json.loads((args.outdir / "summary.json").read_text())["pairs"]
    checks = {
        "rerun exit code 0": second.returncode == 0,
        "finished pairs untouched (bytes and times)": all(
            snapshot(args.outdir / p) == before[p] for p in done_before
        ),
        "rerun skipped exactly the finished pairs": sorted(r["id"] for r in rows if r["action"] == "skipped")
        == done_before,
        "rerun ran every other pair": out["ran"] == n_pairs - len(done_before),
        "every pair ok": out["ok"] == n_pairs,
        "no temporaries left": temporaries(args.outdir) == [],
    }
    report = {
        "pairs": n_pairs,
        "killed_after_seconds": killed_after,
        "complete_at_kill": done_before,
        "temporaries_at_kill": left,
        "rerun_seconds": rerun_seconds,
        "total_seconds": killed_after + rerun_seconds,
        "pair_seconds": {r["id"]: [r["seconds"], r["wall_seconds"], r["action"]] for r in rows},
        "tre_after": {r["id"]: r["tre_after"] for r in rows},
        "checks": checks,
        "command": command,
    }
    args.outdir.with_name(args.outdir.name + ".resume.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"rerun {rerun_seconds:.1f} s: skipped {out['skipped']}, ran {out['ran']}, ok {out['ok']}/{n_pairs}"
    )
    for name, passed in checks.items():
        print(f"  {'PASS' if passed else 'FAIL'}  {name}")
    if second.returncode != 0:
        print(second.stderr[-2000:], file=sys.stderr)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
