"""One compact table from suite results: mean error per data group x method (for the README).

    python -m benchmarks.summary benchmarks/results/suite/suite_*.json > summary.md

Rows are the case groups (``dirlab4dct``, ``lung250m``, ``kitti``, ...), columns the methods
of the result files. A cell is the mean headline error over the group's cases with the mean
wall seconds of the successful runs; ``k/n ok`` when some runs timed out, ran out of memory or
failed, ``—`` when none succeeded and blank when the method was not run on the group. The
best mean of each row is in bold (only among methods that succeeded on every case of the
group, and better than no registration). The last column holds BCPD's figures from
``../shared/data/PEERS.md`` for the groups where no BCPD setting (``bcpd``, ``bcpd_tuned``,
``bcpd_shapes``) was run successfully here: reference values measured elsewhere on the same
inputs, **not run here**.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from benchmarks.peers import BCPD_METHODS
from benchmarks.run import HEADLINE, _digits, fmt

# BCPD in ../shared/data/PEERS.md, per group (not run here; same inputs, same machine class).
BCPD_REFERENCE = {
    "dirlab4dct": "0.71 default, 0.35 tuned on these cases",
    "lung250m": "2.08 (cases 002 and 094 only, 288 s each)",
    "bcpd": "0.62 (shape-demo settings, 7 s)",
    "kitti": "0.63-0.86 (KITTI + FlyingThings3D)",
    "ft3d": "0.63-0.86 (KITTI + FlyingThings3D)",
}


def _finite(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def group_rows(records: list[dict]) -> dict[tuple[str, str], dict[str, list[dict]]]:
    """``{(family, group): {method: [records]}}`` in first-seen order."""
    out: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in records:
        out.setdefault((r["family"], r["group"]), {}).setdefault(r["method"], []).append(r)
    return out


def cell(runs: list[dict] | None, n_cases: int, digits: int) -> tuple[str, float | None]:
    """Markdown cell and the mean value (``None`` unless every case succeeded)."""
    if not runs:
        return "", None
    ran = f" [run on {len(runs)}/{n_cases}]" if len(runs) < n_cases else ""
    ok = [r for r in runs if r.get("status") == "ok" and _finite(r.get("value"))]
    if not ok:
        statuses = sorted({r.get("status", "?").split(":")[0] for r in runs})
        return "/".join("n/a" if s == "unavailable" else s for s in statuses) + ran, None
    mean = float(np.mean([r["value"] for r in ok]))
    text = fmt(mean, digits)
    if runs[0]["method"] != "none":
        secs = [r["seconds"] for r in ok if _finite(r.get("seconds"))]
        text += f" ({fmt(float(np.mean(secs)), 1)} s)" if secs else ""
    if len(runs) < n_cases:
        failed = f", {len(ok)} ok" if len(ok) < len(runs) else ""
        return text + f" [run on {len(runs)}/{n_cases}{failed}]", None
    if len(ok) < n_cases:
        return text + f" [{len(ok)}/{n_cases} ok]", None
    return text, mean


def full_runs(payloads: list[dict]) -> tuple[list[dict], list[dict]]:
    """``(kept, left out)``: quick smoke-test payloads (``--quick``) are left out whenever a full
    run is given too, so that their subsampled cases never enter a group mean."""
    full = [p for p in payloads if not p.get("quick")]
    if not full:
        return payloads, []
    return full, [p for p in payloads if p.get("quick")]


def summary(payloads: list[dict]) -> str:
    """Markdown table of group means for the given suite result payloads."""
    records = [r for p in payloads for r in p["records"]]
    seen = {m for p in payloads for m in p["methods"]}
    first = [m for m in ("none", "register") if m == "none" or m in seen]
    methods = list(dict.fromkeys([*first, *(m for p in payloads for m in p["methods"])]))
    groups = group_rows(records)
    head = ["data (cases, metric)", *methods, "† BCPD (PEERS.md, not run)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (_family, group), by_method in groups.items():
        any_run = next(iter(by_method.values()))
        n_cases = len({r["case"] for runs in by_method.values() for r in runs})
        unit, metric = any_run[0]["unit"], any_run[0]["metric"]
        cells, means = [], {}
        for m in methods:
            text, mean = cell(by_method.get(m), n_cases, _digits(unit))
            cells.append(text)
            if mean is not None and m != "none":
                means[m] = mean
        baseline = cell(by_method.get("none"), n_cases, _digits(unit))[1]
        means = {m: v for m, v in means.items() if baseline is None or v < baseline}
        if means:
            best = min(means, key=means.get)
            i = methods.index(best)
            cells[i] = f"**{cells[i]}**"
        label = f"{group} ({n_cases}, {HEADLINE[metric]} {unit})"
        bcpd_ran = any(r.get("status") == "ok" for m in BCPD_METHODS for r in by_method.get(m, []))
        reference = "" if bcpd_ran else BCPD_REFERENCE.get(group, "")
        lines.append("| " + " | ".join([label, *cells, reference]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.summary", description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="suite_*.json files of benchmarks.run")
    args = p.parse_args(argv)
    payloads = []
    for path in args.results:
        if not path.is_file():
            print(f"error: {path} not found (run python -m benchmarks.run first)", file=sys.stderr)
            return 2
        payloads.append(json.loads(path.read_text()))
    payloads, skipped = full_runs(payloads)
    for payload in skipped:
        print(f"note: left out the quick smoke-test results ({payload.get('command', '?')})", file=sys.stderr)
    sys.stdout.write(summary(payloads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
