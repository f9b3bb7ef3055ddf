"""Markdown tables of the ``realistic`` family (``benchmarks.run`` writes them into
``suite_realistic.md``): group means per (data, variant), then one row per case.

Groups are the case groups ``<data>.<variant>`` (``dirlab4dct.crop``: "DIR-LAB 4DCT / crop"),
each in its data's unit (mm, m or % of the diagonal), so means are never taken across data.
Per group and method: the mean error over the cases that succeeded with the mean wall seconds
per case, ``[k/n ok]`` when some failed; the number of cases a method ends worse than no
registration (``none``); the ratio of ``register``'s mean error to that of the best peer
(lowest mean among ``BEST_PEER_CANDIDATES`` that succeeded on every case of the group; below 1:
``register`` is better); and ``register``'s wall seconds over those of the best BCPD setting
(``‡`` when the two were measured by different invocations of the runner, e.g. with
``--update``, so under other machine load).
"""

from __future__ import annotations

import math
import re

import numpy as np

from benchmarks.realistic import VARIANTS

# The peers ``register`` must beat on this family (issue 20): BCPD's three settings and CPD.
BEST_PEER_CANDIDATES = ("bcpd", "bcpd_tuned", "bcpd_shapes", "probreg_cpd_nonrigid", "pycpd_deformable")
BCPD_SETTINGS = ("bcpd", "bcpd_tuned", "bcpd_shapes")
DATA_LABELS = {
    "dirlab4dct": "DIR-LAB 4DCT",
    "dirlab_copd": "DIR-LAB COPD",
    "lung250m": "Lung250M-4B",
    "kitti": "KITTI",
    "ft3d": "FlyingThings3D",
    "stanford": "Stanford",
}


def _finite(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _ok(r: dict | None) -> bool:
    return r is not None and r.get("status") == "ok" and _finite(r.get("value"))


def group_label(group: str) -> str:
    """``dirlab4dct.crop`` -> ``DIR-LAB 4DCT / crop``."""
    data, _, variant = group.partition(".")
    return f"{DATA_LABELS.get(data, data)} / {variant}" if variant else DATA_LABELS.get(data, data)


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _group_key(group: str) -> tuple:
    data, _, variant = group.partition(".")
    order = list(DATA_LABELS)
    return (
        order.index(data) if data in order else len(order),
        data,
        VARIANTS.index(variant) if variant in VARIANTS else len(VARIANTS),
        variant,
    )


def by_group(records: list[dict]) -> dict[str, dict[str, dict[str, dict]]]:
    """``{group: {case: {method: record}}}``, groups in ``DATA_LABELS`` x ``VARIANTS`` order,
    cases in natural order (whatever order the runs were made in)."""
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for r in sorted(records, key=lambda r: (_group_key(r["group"]), _natural(r["case"]))):
        out.setdefault(r["group"], {}).setdefault(r["case"], {})[r["method"]] = r
    return out


def method_stats(cases: dict[str, dict[str, dict]], method: str) -> dict:
    """Over a group's cases: ``n`` (cases), ``ran``, ``ok``, ``mean`` error and ``seconds`` per
    case over the successful runs, ``worse`` (successful runs worse than ``none``), ``runs``
    (the invocations that measured them)."""
    runs = [c[method] for c in cases.values() if method in c]
    ok = [r for r in runs if _ok(r)]
    worse = sum(
        1
        for c in cases.values()
        if _ok(c.get(method)) and _ok(c.get("none")) and c[method]["value"] > c["none"]["value"]
    )
    secs = [r["seconds"] for r in ok if _finite(r.get("seconds"))]
    return {
        "n": len(cases),
        "ran": len(runs),
        "ok": len(ok),
        "mean": float(np.mean([r["value"] for r in ok])) if ok else math.nan,
        "seconds": float(np.mean(secs)) if secs else math.nan,
        "worse": worse,
        "runs": {r.get("run") for r in ok},
        "statuses": sorted({r.get("status", "?").split(":")[0] for r in runs if not _ok(r)}),
    }


def _complete(s: dict) -> bool:
    return s["ok"] == s["n"] > 0


def best_of(stats: dict[str, dict], candidates) -> str | None:
    """The candidate with the lowest mean among those that succeeded on every case."""
    full = [m for m in candidates if m in stats and _complete(stats[m])]
    return min(full, key=lambda m: stats[m]["mean"]) if full else None


def mean_cell(s: dict, digits: int, with_seconds: bool) -> str:
    if s["ran"] == 0:
        return ""
    if s["ok"] == 0:
        cell = "/".join("n/a" if x == "unavailable" else x for x in s["statuses"])
    else:
        cell = f"{s['mean']:.{digits}f}"
        if with_seconds and _finite(s["seconds"]):
            cell += f" ({s['seconds']:.1f} s)"
    if s["ran"] < s["n"]:  # e.g. a run still in progress
        cell += f" [run on {s['ran']}/{s['n']}" + (f", {s['ok']} ok]" if s["ok"] < s["ran"] else "]")
    elif 0 < s["ok"] < s["n"]:
        cell += f" [{s['ok']}/{s['n']} ok]"
    return cell


def ratio_cells(stats: dict[str, dict]) -> tuple[str, str]:
    """``(register / best peer error, register / best BCPD wall time)`` cells of a group."""
    reg = stats.get("register")
    if reg is None or not _complete(reg):
        return "", ""
    best = best_of(stats, BEST_PEER_CANDIDATES)
    err = f"{reg['mean'] / stats[best]['mean']:.2f} ({best})" if best and stats[best]["mean"] > 0 else ""
    bcpd = best_of(stats, BCPD_SETTINGS)
    wall = ""
    if bcpd and stats[bcpd]["seconds"] > 0:
        wall = f"{reg['seconds'] / stats[bcpd]['seconds']:.2f} ({bcpd})"
        if reg["runs"] != stats[bcpd]["runs"] or len(reg["runs"]) != 1:
            wall += " ‡"
    return err, wall


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def realistic_tables(records: list[dict], methods: list[str], digits_of) -> list[str]:
    """Group means, cases worse than ``none``, then one row per case (``digits_of(unit)``)."""
    from benchmarks.run import accuracy_cell, resource_cell

    groups = by_group(records)
    methods = list(dict.fromkeys(["none", *methods]))
    ran = [m for m in methods if m != "none"]
    mean_rows, worse_rows, case_rows, resource_rows = [], [], [], []
    for group, cases in groups.items():
        unit = next(iter(next(iter(cases.values())).values()))["unit"]
        digits = digits_of(unit)
        stats = {m: method_stats(cases, m) for m in methods}
        mean_rows.append(
            [f"{group_label(group)} ({len(cases)}, {unit})"]
            + [mean_cell(stats[m], digits, m != "none") for m in methods]
            + list(ratio_cells(stats))
        )
        worse = [f"{stats[m]['worse']}/{stats[m]['ok']}" if stats[m]["ran"] else "" for m in ran]
        worse_rows.append([group_label(group), *worse])
        for case, by_method in cases.items():
            case_rows.append([case] + [accuracy_cell(by_method.get(m), digits) for m in methods])
            resource_rows.append([case] + [resource_cell(by_method.get(m)) for m in ran])
    return [
        "Group means: mean error over the cases that succeeded (wall seconds per case); "
        "`[k/n ok]` when some failed. Ratio columns only where `register` succeeded on every case "
        "of the group; best peer = lowest mean of BCPD's settings and CPD among those that succeeded "
        "on every case; BCPD s = the best BCPD setting's seconds; ‡ measured by different runs.",
        "",
        *_table(
            ["data / variant (cases, unit)", *methods, "register / best peer", "register s / BCPD s"],
            mean_rows,
        ),
        "",
        "Cases where a method ends worse than no registration (`k/n`: of the n cases it succeeded on).",
        "",
        *_table(["data / variant", *ran], worse_rows),
        "",
        "Cases: error (wall s of the registration call); scored on the evaluation points the damaged "
        "target still covers (`n_eval` of `n_eval_all` in the JSON).",
        "",
        *_table(["case", *methods], case_rows),
        "",
        "Resources per run: wall s / CPU s of the registration call / peak resident MiB of the child.",
        "",
        *_table(["case", *ran], resource_rows),
    ]
