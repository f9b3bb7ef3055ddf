"""Ablation of stage 2: `register` without and with the flow stage, same cases, one table.

    python -m benchmarks.ablation BASE.json [BASE2.json ...] --arm ARM.json [ARM2.json ...]

``BASE`` are suite results of `register` with its presets (affine + spline), ``ARM`` results
of the same cases with the flow stage switched on, e.g.::

    python -m benchmarks.run --suite lung --methods register \\
        --set 'pipeline.stages=["affine","flow","spline"]' --set flow.model=lung \\
        --out benchmarks/results/flow_lung

Per case group (``dirlab4dct``, ``lung250m``, ``synth_lung``, ...) over the cases present in
both (a case missing from either side is listed, never silently averaged): the mean headline
error without and with the flow stage (lower is better), the relative change
``(with - without) / without`` and the verdict of issue 5's rule: the stage **helps** when it
lowers the mean by at least 20 %, **hurts** when it raises it by more than 2 %, else
**neutral**. Runs that did not finish (timeout, oom, error) make the group's verdict ``n/a``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.run import HEADLINE, _digits, _finite, fmt

HELPS = -0.20  # relative change at or below which the stage helps (issue 5: >= 20 % lower)
HURTS = 0.02  # relative change above which it hurts (issue 5: <= 2 % higher allowed)


def verdict(change: float) -> str:
    """``helps`` / ``neutral`` / ``hurts`` for a relative change of the mean error."""
    if change <= HELPS:
        return "helps"
    if change > HURTS:
        return "hurts"
    return "neutral"


def register_runs(payloads: list[dict]) -> dict[str, dict]:
    """``{case: record}`` of the `register` runs of the payloads (a later file wins)."""
    out = {}
    for p in payloads:
        for r in p["records"]:
            if r["method"] == "register":
                out[r["case"]] = r
    return out


def _ok(r: dict) -> bool:
    return r.get("status") == "ok" and _finite(r.get("value"))


def ablation_table(base: dict[str, dict], arm: dict[str, dict]) -> tuple[str, list[str]]:
    """Markdown table (one row per group) and notes on cases present on one side only."""
    notes = [f"{case}: only without the flow stage" for case in base if case not in arm]
    notes += [f"{case}: only with the flow stage" for case in arm if case not in base]
    groups: dict[str, list[str]] = {}
    for case, r in arm.items():
        if case in base:
            groups.setdefault(r["group"], []).append(case)
    lines = [
        "| data (cases, metric) | affine + spline | affine + flow + spline | change | verdict | s per case (without -> with) |",
        "|---|---|---|---|---|---|",
    ]
    for group, cases in groups.items():
        r0 = arm[cases[0]]
        digits = _digits(r0["unit"])
        label = f"{group} ({len(cases)}, {HEADLINE[r0['metric']]} {r0['unit']})"
        failed = [(c, side[c].get("status", "?")) for c in cases for side in (base, arm) if not _ok(side[c])]
        if failed:
            why = "; ".join(f"{c}: {status.split(':')[0]}" for c, status in failed[:3])
            more = f" (+{len(failed) - 3} more)" if len(failed) > 3 else ""
            lines.append(f"| {label} | | | | n/a ({why}{more}) | |")
            continue
        without = float(np.mean([base[c]["value"] for c in cases]))
        with_flow = float(np.mean([arm[c]["value"] for c in cases]))
        change = (with_flow - without) / without if without > 0 else float("nan")
        secs = [float(np.mean([side[c]["seconds"] for c in cases])) for side in (base, arm)]
        lines.append(
            f"| {label} | {fmt(without, digits)} | {fmt(with_flow, digits)} | {change:+.1%} | "
            f"{verdict(change)} | {secs[0]:.1f} -> {secs[1]:.1f} |"
        )
    return "\n".join(lines) + "\n", notes


def _load(paths: list[Path]) -> list[dict]:
    out = []
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"error: {path} not found (run python -m benchmarks.run first)")
        out.append(json.loads(path.read_text()))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ablation", description=__doc__.split("\n")[0])
    p.add_argument("base", nargs="+", type=Path, help="suite_*.json of register with its presets")
    p.add_argument("--arm", nargs="+", type=Path, required=True, help="suite_*.json with the flow stage")
    args = p.parse_args(argv)
    base, arm = _load(args.base), _load(args.arm)
    for payload in arm:
        print(f"with the flow stage: {payload.get('command', '?')}", file=sys.stderr)
    table, notes = ablation_table(register_runs(base), register_runs(arm))
    sys.stdout.write(table)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
