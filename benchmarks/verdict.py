"""How well the reliability verdict separates failed registrations from good ones.

    python -m benchmarks.verdict benchmarks/results/realistic_verdict/suite_realistic.json [...]

Reads suite results written by :mod:`benchmarks.run` that hold both ``none`` and ``register``
records (``register``'s carry the reliability measures in ``info.reliability``). A case
**failed** when register's error is above half of the ``none`` error (the registration removed
less than half of the misalignment, or added some). The verdict is judged again here by
:func:`register.reliability.judge` from the recorded measures, so the rates below are those of
the thresholds in the code that runs this script (the records also keep the verdict of the run).

Output (Markdown on stdout): per variant group and in total, the failed cases flagged
(``suspect``) and the good cases flagged, and which reasons fired.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

from register.reliability import judge


def cases(paths: list[Path]) -> list[dict]:
    """One row per (results file, case) with both records: group, errors, measures, reasons."""
    rows = []
    for path in paths:
        records = json.loads(path.read_text())["records"]
        none = {r["case"]: r for r in records if r["method"] == "none" and r["status"] == "ok"}
        for r in records:
            if r["method"] != "register" or r["status"] != "ok" or r["case"] not in none:
                continue
            rel = (r.get("info") or {}).get("reliability")
            if rel is None:
                continue
            reasons = judge(
                rel["matched_mass"],
                rel["heldout_residual_before"],
                rel["heldout_residual_after"],
                rel["folded_fraction"],
                rel["log_jacobian_std"],
            )
            rows.append(
                {
                    "file": path.parent.name,
                    "case": r["case"],
                    "group": r["group"],
                    "error": r["value"],
                    "none": none[r["case"]]["value"],
                    "failed": r["value"] > 0.5 * none[r["case"]]["value"],
                    "reasons": reasons,
                }
            )
    return rows


# The reasons of register.reliability.judge, by the words each one contains.
REASON_KINDS = ("matched mass", "held-out residual", "folded", "log-Jacobian std")


def reason_kind(reason: str) -> str:
    """Which threshold ``reason`` (one of :func:`register.reliability.judge`'s) names."""
    return next((kind for kind in REASON_KINDS if kind in reason), reason)


def rates(rows: list[dict]) -> tuple[str, str]:
    """``"k / n (p %)"`` of failed cases flagged and of good cases flagged."""

    def share(sub):
        k = sum(1 for r in sub if r["reasons"])
        return f"{k} / {len(sub)}" + (f" ({100 * k / len(sub):.0f} %)" if sub else "")

    return share([r for r in rows if r["failed"]]), share([r for r in rows if not r["failed"]])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Flag rates of the reliability verdict on suite results.")
    p.add_argument("results", nargs="+", type=Path, help="suite_*.json files of benchmarks.run")
    args = p.parse_args(argv)
    missing = [str(f) for f in args.results if not f.is_file()]
    if missing:
        print(f"results file not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    rows = cases(args.results)
    if not rows:
        print("no case has both a none and a register record with a reliability report", file=sys.stderr)
        return 2
    out = [
        "| group | cases | failed (error > none / 2) | failed flagged | good flagged |",
        "|---|---|---|---|---|",
    ]
    by_group = collections.defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    for group in sorted(by_group):
        sub = by_group[group]
        out.append(
            f"| {group} | {len(sub)} | {sum(r['failed'] for r in sub)} | " + " | ".join(rates(sub)) + " |"
        )
    out.append(
        f"| **all** | {len(rows)} | {sum(r['failed'] for r in rows)} | "
        + " | ".join(f"**{s}**" for s in rates(rows))
        + " |"
    )
    fired = collections.Counter(reason_kind(reason) for r in rows for reason in r["reasons"])
    out += ["", "Reasons fired (cases): " + ", ".join(f"{k}: {v}" for k, v in fired.most_common())]
    missed = [r for r in rows if r["failed"] and not r["reasons"]]
    false = [r for r in rows if not r["failed"] and r["reasons"]]
    out += [
        "",
        "Failed, not flagged: "
        + (", ".join(f"{r['case']} ({r['error']:.3g} / none {r['none']:.3g})" for r in missed) or "none"),
    ]
    out += [
        "",
        "Good, flagged: " + (", ".join(f"{r['case']} ({'; '.join(r['reasons'])})" for r in false) or "none"),
    ]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
