"""Benchmark suites (benchmarks/suites.py) and the suite runner (benchmarks/run.py).

The loader tests read ``../shared/data`` and skip with a message when it is absent; the table
writer runs on fake records; one ``--quick --suite rigid --methods open3d_icp`` run goes end to
end in a subprocess (a 10-point TEASER fixture: a few seconds).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import run, suites

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
# Small cases only (keeps the test fast): one or two per family.
SMALL = {
    "lung": ["dirlab4dct/case4", "dirlab_copd/copd1", "lung250m/case_094"],
    "sceneflow": ["kitti/000000"],
    "shapes": ["bcpd/male", "stanford/bunny"],
    "rigid": ["teaser/benchmark_1", "teaser/benchmark_6"],
    "synthetic": ["synth_lung/0", "synth_sceneflow/1", "synth_shapes/2"],
    "realistic": ["dirlab_copd.halves/copd1", "dirlab4dct.crop/case4", "kitti.density/000000"],
}


@pytest.fixture(scope="module")
def data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data folder {DATA} not found: benchmark loaders not tested")
    return DATA


@pytest.mark.parametrize("family", suites.FAMILIES)
def test_loaders_shapes_and_determinism(data: Path, family: str) -> None:
    first = list(suites.load_cases(family, data, SMALL[family]))
    second = list(suites.load_cases(family, data, SMALL[family]))
    assert [c.name for c in first] == SMALL[family]
    for a, b in zip(first, second, strict=True):
        assert a.family == family and a.metric in suites.METRICS and a.preset
        for x in (a.source, a.target, a.eval_source, a.eval_reference):
            assert x.ndim == 2 and x.shape[1] == 3 and x.dtype == np.float64 and np.isfinite(x).all()
        assert a.eval_source.shape == a.eval_reference.shape
        # Deterministic: identical arrays on a second load (shuffles, subsamples, deformations).
        for x, y in ((a.source, b.source), (a.target, b.target), (a.eval_reference, b.eval_reference)):
            np.testing.assert_array_equal(x, y)
        # No registration scores finite and > 0 (nothing is already aligned).
        none = suites.evaluate(a, a.eval_source)
        assert math.isfinite(none["value"]) and none["value"] > 0


def test_target_is_shuffled_with_rng0(data: Path) -> None:
    case = next(suites.load_cases("lung", data, ["dirlab4dct/case4"]))
    table = suites.load_csv(data / "lung/dirlab4dct/case4_dense_EI_EE_mm.csv")
    perm = np.random.default_rng(0).permutation(len(table))
    np.testing.assert_array_equal(case.target, table[perm, 3:6])
    np.testing.assert_array_equal(case.source, table[:, :3])
    assert not np.array_equal(case.target, table[:, 3:6])
    # PEERS.md "no registration" for case 4: 9.21 mm.
    assert suites.evaluate(case, case.eval_source)["value"] == pytest.approx(9.21, abs=0.01)


def test_l2r_column_order_and_sceneflow_reference(data: Path) -> None:
    kp = suites.load_csv(data / "lung/l2r_case012/case_012_keypoints_mm.csv")
    # README: mean displacement 11.6 mm between exp_xyz and insp_xyz.
    assert np.linalg.norm(kp[:, 3:6] - kp[:, :3], axis=1).mean() == pytest.approx(11.6, abs=0.1)
    case = next(suites.load_cases("sceneflow", data, ["kitti/000000"]))
    with np.load(data / "sceneflow/kitti_000000.npz") as z:
        np.testing.assert_allclose(case.eval_reference - case.eval_source, z["flow"], atol=1e-6)


def test_stanford_synthetic_is_independent_and_deformed(data: Path) -> None:
    case = next(suites.load_cases("shapes", data, ["stanford/bunny"]))
    assert len(case.source) == len(case.target) == suites.STANFORD_POINTS
    disp = np.linalg.norm(case.eval_reference - case.eval_source, axis=1)
    diag = np.linalg.norm(case.eval_reference.max(0) - case.eval_reference.min(0))
    assert 0.02 < disp.mean() / diag < 0.1


def test_evaluate_metrics_on_exact_maps() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 3))
    angle = np.radians(30)
    r = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    y = 2.0 * x @ r.T + 1.0
    case = suites.Case("rigid", "t/x", x, y, x, y, "rotation", "teaser", "deg").check()
    assert suites.evaluate(case, y)["value"] == pytest.approx(0.0, abs=1e-6)
    assert suites.evaluate(case, x)["value"] == pytest.approx(30.0, abs=1e-6)
    flow = suites.Case("sceneflow", "k/x", x, y, x, x + 0.5, "scene_flow", "sceneflow", "m")
    out = suites.evaluate(flow, x + 0.5)
    assert out["epe3d"] == pytest.approx(0.0) and out["acc3ds"] == 1.0
    rel = suites.Case("shapes", "s/x", x, y, x, y, "relative", "shapes", "%")
    assert suites.evaluate(rel, y)["value"] == pytest.approx(0.0)


def _fake(case, method, status="ok", value=1.0, seconds=2.0, family="lung", unit="mm", metric="tre"):
    return {
        "family": family,
        "case": case,
        "group": case.split("/")[0],
        "metric": metric,
        "unit": unit,
        "method": method,
        "status": status,
        "value": value if status == "ok" else math.nan,
        "seconds": seconds,
        "cpu_seconds": 3.0,
        "peak_rss_mb": 400.0,
        "info": {"a": np.float64(1.0)},
    }


def test_table_writer_on_fake_results(tmp_path: Path) -> None:
    records = [
        _fake("dirlab4dct/case1", "none", value=3.54, seconds=0.0),
        _fake("dirlab4dct/case1", "register", value=0.9),
        _fake("dirlab4dct/case1", "bcpd", status="unavailable: no bcpd binary on PATH"),
        _fake("dirlab4dct/case2", "none", value=5.78, seconds=0.0),
        _fake("dirlab4dct/case2", "register", status="timeout", seconds=600.0),
        _fake("dirlab4dct/case2", "bcpd", status="unavailable: no bcpd binary on PATH"),
        _fake("teaser/benchmark_1", "none", value=64.3, family="rigid", unit="deg", metric="rotation"),
        _fake("teaser/benchmark_1", "register", value=0.0, family="rigid", unit="deg", metric="rotation"),
        _fake(
            "teaser/benchmark_1", "bcpd", status="error: boom", family="rigid", unit="deg", metric="rotation"
        ),
    ]
    meta = {
        "suite": "all",
        "quick": False,
        "methods": ["register", "bcpd"],
        "command": "python -m benchmarks.run --suite all",
        "date": "2026-01-01",
        "machine": run.machine_info(),
        "threads": 2,
        "time_limit_s": 600.0,
        "memory_limit_mb": None,
        "seed": 0,
        "device": "cpu",
        "total_seconds": 60.0,
        "finished": True,
    }
    run.write_all(tmp_path, "fake", records, meta)
    md = (tmp_path / "fake.md").read_text()
    assert "| case | none | register | bcpd | † BCPD default (PEERS.md, not run) |" in md
    assert "| dirlab4dct/case1 | 3.54 | 0.90 (2.0 s) | n/a | 0.47 |" in md
    assert "| dirlab4dct/case2 | 5.78 | timeout | n/a | 0.57 |" in md
    assert "**0.90** (2.0 s) [1/2 ok]" in md  # lung mean row: one case ok of two
    assert "| teaser/benchmark_1 | 64.300 | 0.000 (2.0 s) | error |" in md
    assert "not run here" in md and "CPUs" in md
    assert "- rigid teaser/benchmark_1 bcpd: error: boom" in md
    payload = json.loads((tmp_path / "fake.json").read_text())
    assert len(payload["records"]) == len(records) and payload["command"].startswith("python -m")
    header = (tmp_path / "fake.csv").read_text().splitlines()[0]
    assert header.startswith("family,case,group,metric,unit,method,status,value")


def test_quick_rigid_open3d_subprocess(data: Path, tmp_path: Path) -> None:
    pytest.importorskip("open3d")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--data",
            str(data),
            "--quick",
            "--suite",
            "rigid",
            "--methods",
            "open3d_icp",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = json.loads((tmp_path / "suite_rigid_quick.json").read_text())
    methods = {r["method"]: r for r in payload["records"]}
    assert set(methods) == {"none", "open3d_icp"} and payload["finished"]
    assert methods["open3d_icp"]["status"] == "ok" and math.isfinite(methods["open3d_icp"]["value"])
    assert math.isfinite(methods["open3d_icp"]["seconds"])
    assert "teaser/benchmark_1" in (tmp_path / "suite_rigid_quick.md").read_text()


def test_update_merges_methods_and_refuses_other_settings(data: Path, tmp_path: Path) -> None:
    """``--update`` keeps the other methods' records, replaces the rerun ones, checks settings."""
    base = ["--data", str(data), "--quick", "--suite", "rigid", "--out", str(tmp_path)]
    assert run.main([*base, "--methods", "open3d_icp"]) == 0
    first = json.loads((tmp_path / "suite_rigid_quick.json").read_text())
    icp = next(r for r in first["records"] if r["method"] == "open3d_icp")
    # A second method merged in: open3d_icp's record is kept as it was, not rerun.
    assert run.main([*base, "--methods", "register", "--update"]) == 0
    merged = json.loads((tmp_path / "suite_rigid_quick.json").read_text())
    by_method = {r["method"]: r for r in merged["records"]}
    assert set(by_method) == {"none", "open3d_icp", "register"}
    assert by_method["open3d_icp"] == icp
    assert merged["methods"] == ["open3d_icp", "register"] and len(merged["commands"]) == 2
    md = (tmp_path / "suite_rigid_quick.md").read_text()
    assert md.count("- command: `python -m benchmarks.run") == 2
    # Another seed would mix incomparable runs in one table: refused.
    with pytest.raises(SystemExit, match="seed"):
        run.main([*base, "--methods", "open3d_icp", "--update", "--seed", "1"])


def test_resume_skips_recorded_runs(data: Path, tmp_path: Path) -> None:
    """``--resume`` keeps every recorded case/method run and only adds the missing ones."""
    base = ["--data", str(data), "--quick", "--suite", "rigid", "--out", str(tmp_path)]
    assert run.main([*base, "--methods", "open3d_icp"]) == 0
    first = {r["method"]: r for r in json.loads((tmp_path / "suite_rigid_quick.json").read_text())["records"]}
    assert run.main([*base, "--methods", "open3d_icp,register", "--resume"]) == 0
    merged = json.loads((tmp_path / "suite_rigid_quick.json").read_text())
    by_method = {r["method"]: r for r in merged["records"]}
    assert by_method["open3d_icp"] == first["open3d_icp"] and by_method["none"] == first["none"]
    assert by_method["register"]["status"] == "ok" and len(merged["records"]) == 3


def test_update_of_some_cases_keeps_the_others(data: Path, tmp_path: Path) -> None:
    """``--update --cases`` reruns those cases only and merges into the full results file."""
    base = ["--data", str(data), "--suite", "rigid", "--out", str(tmp_path), "--methods", "open3d_icp"]
    assert run.main([*base, "--cases", "teaser/benchmark_1,teaser/benchmark_2", "--update"]) == 0
    first = {
        (r["case"], r["method"]): r
        for r in json.loads((tmp_path / "suite_rigid.json").read_text())["records"]
    }
    assert run.main([*base, "--cases", "teaser/benchmark_2", "--update"]) == 0
    merged = json.loads((tmp_path / "suite_rigid.json").read_text())["records"]
    by_key = {(r["case"], r["method"]): r for r in merged}
    assert set(by_key) == set(first) and len(merged) == 4
    assert by_key[("teaser/benchmark_1", "open3d_icp")] == first[("teaser/benchmark_1", "open3d_icp")]
    assert not (tmp_path / "suite_rigid_partial.json").exists()


def test_several_suites_write_one_file_per_family(data: Path, tmp_path: Path) -> None:
    """``--suite rigid,sceneflow --update`` merges into each family's own file (a combined file
    would duplicate the records the README's summary reads from every ``suite_*.json``)."""
    base = ["--data", str(data), "--quick", "--out", str(tmp_path), "--methods", "open3d_icp"]
    assert run.main([*base, "--suite", "rigid"]) == 0
    assert run.main([*base, "--suite", "rigid,sceneflow", "--update"]) == 0
    written = sorted(p.name for p in tmp_path.glob("suite_*.json"))
    assert written == ["suite_rigid_quick.json", "suite_sceneflow_quick.json"]
    for family in ("rigid", "sceneflow"):
        payload = json.loads((tmp_path / f"suite_{family}_quick.json").read_text())
        assert payload["suite"] == family
        assert {r["family"] for r in payload["records"]} == {family}


def test_set_overrides_reach_register_and_are_recorded(data: Path, tmp_path: Path, capsys) -> None:
    """``--set`` changes register's preset in the children (the backend they report), is
    recorded in the results, must match on ``--update``, and a bad key fails before any run."""
    base = [
        "--data",
        str(data),
        "--quick",
        "--suite",
        "rigid",
        "--out",
        str(tmp_path),
        "--methods",
        "register",
    ]
    assert run.main([*base, "--set", "pipeline.backend=dense"]) == 0
    payload = json.loads((tmp_path / "suite_rigid_quick.json").read_text())
    rec = next(r for r in payload["records"] if r["method"] == "register")
    assert payload["set"] == ["pipeline.backend=dense"] and rec["info"]["backend"] == "dense"
    assert "register overrides pipeline.backend=dense" in (tmp_path / "suite_rigid_quick.md").read_text()
    with pytest.raises(SystemExit, match="set"):
        run.main([*base, "--update"])  # default settings into overridden results: refused
    assert run.main([*base, "--set", "pipeline.bakend=dense", "--out", str(tmp_path / "bad")]) == 2
    assert "pipeline.bakend" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_set_is_checked_against_the_presets_of_the_suites(tmp_path: Path, capsys) -> None:
    """A per-level list fits the lung preset (4 levels) but not the sceneflow preset (3): checked
    against each family's own presets, before any run."""
    from benchmarks import run

    reach = "spline.reach=[inf,inf,10,6]"
    (tmp_path / "data").mkdir()
    args = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--methods", "register"]
    args += ["--set", reach]
    assert run.main([*args, "--suite", "synthetic", "--cases", "nothing/0"]) == 2
    err = capsys.readouterr().err
    assert "with preset sceneflow" in err and "spline.reach" in err and not (tmp_path / "out").exists()
    # lung alone: the --set is accepted; an unknown case name is refused before any run
    assert run.main([*args, "--suite", "lung", "--cases", "nothing/0"]) == 2
    err = capsys.readouterr().err
    assert "--cases nothing/0: not a case of --suite lung" in err and "--set" not in err
    assert not (tmp_path / "out").exists()


def test_synthetic_cases_need_no_data_and_use_seeds_no_training_draws(tmp_path: Path) -> None:
    """The synthetic family is generated (an empty data folder is enough), from held-out seeds
    that neither training pairs nor the training runs' validation pairs use."""
    from register.synth.pairs import HELD_OUT_STREAM, TRAIN_STREAM, pair_seed

    cases = list(suites.load_cases("synthetic", tmp_path, ["synth_lung/0", "synth_shapes/1"]))
    assert [c.name for c in cases] == ["synth_lung/0", "synth_shapes/1"]
    lung = cases[0]
    assert lung.preset == "lung" and lung.unit == "mm" and lung.metric == "tre"
    assert len(lung.source) == suites.SYNTH_POINTS and len(lung.eval_source) <= len(lung.source)
    moved = np.linalg.norm(lung.eval_reference - lung.eval_source, axis=1)
    assert moved.mean() > 1.0  # mm: a real deformation to recover
    used = {pair_seed(0, TRAIN_STREAM, i) for i in range(50_000)}
    used |= {pair_seed(0, HELD_OUT_STREAM, i) for i in range(suites.SYNTH_FIRST)}
    assert not {c.info["seed"] for c in cases} & used


def test_every_family_has_a_title_and_writes_its_table(tmp_path: Path) -> None:
    """The Markdown writer knows every family (a new family without a title crashed the run)."""
    assert set(run.TITLES) == set(suites.FAMILIES)
    case = next(suites.load_cases("synthetic", tmp_path, ["synth_sceneflow/0"]))
    record = {
        "family": case.family,
        "case": case.name,
        "group": case.group,
        "metric": case.metric,
        "unit": case.unit,
        "method": "none",
        "status": "ok",
        "value": 1.0,
    }
    meta = {
        "suite": "synthetic",
        "quick": False,
        "methods": ["none"],
        "command": "test",
        "date": "now",
        "machine": run.machine_info(),
        "threads": 2,
        "time_limit_s": 1.0,
        "memory_limit_mb": None,
        "seed": 0,
        "device": "cpu",
        "data": str(tmp_path),
    }
    run.write_markdown(tmp_path / "t.md", [record], meta)
    assert "synth_sceneflow/0" in (tmp_path / "t.md").read_text()
