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
        {
            **rec,
            "method": "register:auto",
            "status": "ok",
            "seconds": 100.0,
            "cpu_seconds": 150.0,
            "steal_pct": 1.0,
        },
        {
            **rec,
            "method": "register:sparse",
            "status": "ok",
            "seconds": 50.0,
            "cpu_seconds": 60.0,
            "steal_pct": 30.0,
        },
        {**rec, "method": "probreg_cpd_nonrigid", "status": "timeout", "seconds": np.nan},
    ]
    lines = table(records, ["register:auto", "register:sparse", "probreg_cpd_nonrigid"])
    assert "100.0 s (150.0 s CPU), 100 MiB, 1.5" in lines[2]  # steal below 5 %: not shown
    assert "50.0 s (x0.50) (60.0 s CPU, 30 % stolen)" in lines[2] and "timeout" in lines[2]


def test_steal_share_from_two_proc_stat_readings() -> None:
    from benchmarks.machine import cpu_jiffies, steal_percent

    assert steal_percent((10, 1000), (60, 1200)) == 25.0
    assert steal_percent(None, (60, 1200)) is None and steal_percent((10, 1000), (10, 1000)) is None
    reading = cpu_jiffies()
    if reading is not None:  # Linux
        assert 0 <= reading[0] <= reading[1]


def test_ot_solve_table_gives_ratios_and_gaps_to_dense() -> None:
    from benchmarks.ot_solve import markdown, solve_work

    x = np.random.default_rng(0).uniform(0, 50, size=(300, 3)).astype(np.float32)
    out = solve_work(x, x + 1.0, 1.0, "dense")  # a shifted copy: every point matches its own shift
    assert np.abs(out["targets"] - (x + 1.0)).mean() < 0.5
    base = {"n": 8000, "blur_mm": 4.1, "peak_rss_mb": 300.0}
    records = [
        {**base, "backend": "dense", "status": "ok", "seconds": 40.0},
        {**base, "backend": "sparse", "status": "ok", "seconds": 10.0, "gap_mean_mm": 0.1, "gap_max_mm": 2.0},
        {**base, "backend": "geomloss", "status": "timeout", "seconds": 600.0},
    ]
    meta = {"command": "c", "machine": "m", "limits": "l"}
    row = markdown(records, ["dense", "sparse", "geomloss"], meta)[-1]
    assert row.startswith("| 8000 | 4.10 |") and "10.0 s (x0.25), 300 MiB, 0.100 / 2.00 mm" in row
    assert "timeout" in row
