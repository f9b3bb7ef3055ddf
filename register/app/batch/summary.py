"""The batch's tables: ``OUTDIR/summary.csv`` and ``OUTDIR/summary.json``, one row per pair.

Rows come from the pairs' records (see :func:`register.app.batch.job.run_pair`); both files are
rewritten atomically after every finished pair, so an interrupted batch still has an up-to-date
summary. :func:`collect` rebuilds the rows from the pair folders alone (``batch.json`` gives the
pair order), which is what ``register report`` reads.

Columns: :data:`COLUMNS` (times in seconds, UTC timestamps; chamfer, TRE and held-out residuals
in data units, lower is better; the reliability verdict, :mod:`register.reliability`).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from register.app.batch.job import read_status

BATCH_FILE = "batch.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
COLUMNS = {
    "id": "the pair (its folder is OUTDIR/<id>)",
    "status": "ok, failed, or pending (not run or interrupted)",
    "action": "ran (in this run), skipped (complete from an earlier run) or empty",
    "error_kind": "input (bad file or setting), error (e.g. out of memory), crash (worker died)",
    "error": "the error message",
    "attempt": "tries this run took (retries + 1)",
    "started": "UTC start",
    "finished": "UTC end",
    "wall_seconds": "whole pair: reading, registering, writing, rendering",
    "seconds": "the registration alone",
    "source_points": "points of the source",
    "target_points": "points of the target",
    "chamfer_before": "symmetric chamfer distance before",
    "chamfer_after": "after",
    "landmarks": "landmark pairs (empty without landmarks)",
    "tre_before": "mean landmark error before",
    "tre_after": "mean landmark error after",
    "tre_after_p95": "95th percentile of the landmark error after",
    "verdict": "reliability verdict: ok, or suspect: <reasons> (docs/reliability.md)",
    "matched_mass": "fraction of the source mass matched at the end (higher is better)",
    "heldout_residual_before": "held-out matching residual before (truncated RMS, data units)",
    "heldout_residual_after": "after",
    "folded_fraction": "fraction of probed source points where the transform folds",
    "log_jacobian_std": "standard deviation of log det Jacobian (unfolded points)",
    "image": "QA picture inside the pair folder",
    "host": "machine that ran the pair",
    "threads": "torch threads of the pair",
}
STATUS_ORDER = {"failed": 0, "pending": 1, "ok": 2}


def row_of(record: dict | None, pair_id: str, action: str = "") -> dict:
    """One summary row (every column, ``None`` where unknown) from a pair's record."""
    if record is None:
        record = {"id": pair_id, "status": "pending"}
    row = {key: record.get(key) for key in COLUMNS}
    row["action"] = action or None
    return row


def atomic_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    from register.core.files import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_summary(outdir: Path, rows: list[dict], batch: dict) -> None:
    """Write ``summary.csv`` and ``summary.json`` (``{"batch": batch, "pairs": rows}``)."""
    from register.app.outputs import json_safe

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    atomic_text(outdir / SUMMARY_CSV, buf.getvalue())
    atomic_text(
        outdir / SUMMARY_JSON, json.dumps(json_safe({"batch": batch, "pairs": rows}), indent=2) + "\n"
    )


def read_batch(outdir: Path) -> dict | None:
    """``OUTDIR/batch.json`` (what the batch was asked to do), or ``None`` if absent."""
    try:
        return json.loads((outdir / BATCH_FILE).read_text())
    except (OSError, ValueError):
        return None


def collect(outdir: Path) -> list[dict]:
    """Summary rows rebuilt from ``batch.json`` and each pair's ``status.json``, manifest order."""
    batch = read_batch(outdir) or {}
    rows = []
    for pair_id in batch.get("pairs", []):
        status = read_status(outdir / pair_id)
        rows.append(row_of(status["record"] if status else None, pair_id))
    return rows


def counts(rows: list[dict]) -> dict[str, int]:
    """Pairs per status (``ok``, ``failed``, ``pending``) and per action (``ran``, ``skipped``)."""
    out = {"pairs": len(rows), "ok": 0, "failed": 0, "pending": 0, "ran": 0, "skipped": 0}
    for row in rows:
        out[row["status"]] = out.get(row["status"], 0) + 1
        if row.get("action"):
            out[row["action"]] += 1
    return out
