"""benchmarks/speed.py: inputs and the ratio table (no timed runs: speed is measured by hand)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.speed import make_input, table


def test_synthetic_input_evaluates_a_warp_by_landmark_tre() -> None:
    inp = make_input("synth", 600, Path("/nonexistent"))  # generated: no data folder needed
    assert inp["source"].shape == (600, 3) and inp["target"].shape == (600, 3)
    identity = inp["evaluate"](lambda p: p)
    assert identity > 1.0  # the landmarks move by millimetres
    assert make_input("copd1", 600, Path("/nonexistent")) is None  # real data absent: skipped


def test_table_gives_ratios_to_register_auto_and_failures_by_status() -> None:
    rec = {"input": "synth", "n": 8000, "metric": "TRE mm", "peak_rss_mb": 100.0, "accuracy": 1.5}
    records = [
        {**rec, "method": "register:auto", "status": "ok", "seconds": 100.0},
        {**rec, "method": "register:sparse", "status": "ok", "seconds": 50.0},
        {**rec, "method": "probreg_cpd_nonrigid", "status": "timeout", "seconds": np.nan},
    ]
    lines = table(records, ["register:auto", "register:sparse", "probreg_cpd_nonrigid"])
    assert "100.0 s, 100 MiB, 1.5" in lines[2] and "50.0 s (x0.50)" in lines[2] and "timeout" in lines[2]
