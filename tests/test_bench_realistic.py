"""The damage of the realistic benchmark family (benchmarks/realistic.py) and its cases.

Small hand-made clouds with known answers (no data needed), then the realistic cases built
from ``../shared/data`` (skipped with a message when it is absent).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import realistic, suites
from benchmarks.realistic import add_outliers, case_rng, crop, split_halves, stable_seed, thin

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def grid(n: int = 10) -> np.ndarray:
    """``n^3`` points on a regular grid over ``[0, 9]^3`` (extent 9 on every axis)."""
    g = np.arange(n, dtype=np.float64) * 9.0 / (n - 1)
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)


class Fixed:
    """A stand-in generator whose integer draws are given (axis, then end / half)."""

    def __init__(self, *ints: int, seed: int = 0) -> None:
        self.ints = list(ints)
        self.rng = np.random.default_rng(seed)

    def integers(self, high: int) -> int:
        value = self.ints.pop(0)
        assert 0 <= value < high
        return value

    def __getattr__(self, name):
        return getattr(self.rng, name)


def test_stable_seed_is_fixed_and_name_dependent() -> None:
    # sha256("dirlab4dct.crop/case1")[:8] little-endian: the same in every process / version.
    assert stable_seed("dirlab4dct.crop/case1") == stable_seed("dirlab4dct.crop/case1")
    assert stable_seed("dirlab4dct.crop/case1") != stable_seed("dirlab4dct.crop/case2")
    assert stable_seed("abc") == int.from_bytes(bytes.fromhex("ba7816bf8f01cfea"), "little")
    a, b = case_rng("x/y").random(3), case_rng("x/y").random(3)
    np.testing.assert_array_equal(a, b)


def test_halves_are_disjoint_and_cover() -> None:
    for n in (2, 7, 300):
        a, b = split_halves(n, case_rng(f"h/{n}"))
        assert len(a) == n // 2 and len(b) == n - n // 2
        assert not set(a) & set(b) and set(a) | set(b) == set(range(n))
        a2, b2 = split_halves(n, case_rng(f"h/{n}"))
        np.testing.assert_array_equal(a, a2)
        np.testing.assert_array_equal(b, b2)
    with pytest.raises(ValueError, match="at least 2"):
        split_halves(1, case_rng("h/1"))


@pytest.mark.parametrize(("end", "kept_range"), [(0, (1.35, 9.0)), (1, (0.0, 7.65))])
def test_crop_removes_a_15_percent_slab_and_masks_the_reference(end: int, kept_range) -> None:
    target = grid()  # x in {0, 1, ..., 9}: the slab x < 1.35 (low) or x > 7.65 (high)
    reference = np.array([[0.5, 4, 4], [1.4, 4, 4], [5.0, 4, 4], [7.6, 4, 4], [8.0, 4, 4], [-3.0, 4, 4]])
    out, keep, info = crop(target, reference, Fixed(0, end))
    assert info["axis"] == 0 and info["end"] == ("low", "high")[end]
    assert info["cut"] == pytest.approx((1.35, 7.65)[end]) and info["fraction"] == 0.15
    # A 15 % slab of a 10-plane grid: the 2 planes x = 0, 1 (or x = 8, 9) are gone.
    assert len(out) == len(target) - 200 and info["removed"] == 200
    lo, hi = kept_range
    assert out[:, 0].min() >= lo and out[:, 0].max() <= hi
    expected = [False, True, True, True, True, False] if end == 0 else [True, True, True, True, False, True]
    np.testing.assert_array_equal(keep, expected)


def test_crop_on_other_axes_and_inputs_untouched() -> None:
    target = grid()
    before = target.copy()
    out, keep, info = crop(target, target, Fixed(2, 1))
    assert info["axis"] == 2 and out[:, 2].max() <= 7.65 and np.array_equal(target, before)
    np.testing.assert_array_equal(keep, target[:, 2] <= info["cut"])  # the reference here is the target


def test_outliers_add_20_percent_inside_the_box() -> None:
    target = grid() * [1.0, 2.0, 0.5] + 10.0
    out, keep, info = add_outliers(target, 17, case_rng("o/1"))
    assert len(out) == len(target) + 200 and info["added"] == 200
    np.testing.assert_array_equal(out[: len(target)], target)
    extra = out[len(target) :]
    assert (extra >= target.min(0)).all() and (extra <= target.max(0)).all()
    assert not np.isin(extra[:, 0], target[:, 0]).all()  # new positions, not copies
    assert keep.shape == (17,) and keep.all()


def test_thin_keeps_one_in_three_in_one_half() -> None:
    target = grid()  # the low half along y: y < 4.5, the 5 planes y = 0 .. 4 (500 points)
    out, keep, info = thin(target, 9, Fixed(1, 0, seed=3))
    assert info["axis"] == 1 and info["half"] == "low" and info["mid"] == pytest.approx(4.5)
    assert info["in_half"] == 500 and info["kept_in_half"] == 167  # ceil(500 / 3)
    assert (out[:, 1] < 4.5).sum() == 167 and (out[:, 1] >= 4.5).sum() == 500
    # Kept rows are original rows, in their order, without repeats.
    rows = {tuple(p) for p in target}
    assert all(tuple(p) in rows for p in out) and len({tuple(p) for p in out}) == len(out)
    assert keep.shape == (9,) and keep.all()
    out_high, _, info_high = thin(target, 9, Fixed(1, 1, seed=3))
    assert info_high["half"] == "high" and (out_high[:, 1] >= 4.5).sum() == 167


def test_damage_is_deterministic_for_a_name() -> None:
    target = np.random.default_rng(5).normal(size=(500, 3))
    for variant in ("crop", "outliers", "density"):
        a = realistic.damage_target(variant, target, target[:40], case_rng(f"g.{variant}/c"))
        b = realistic.damage_target(variant, target, target[:40], case_rng(f"g.{variant}/c"))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert a[2] == b[2]
    with pytest.raises(ValueError, match="unknown target damage"):
        realistic.damage_target("halves", target, target, case_rng("g/c"))


def _pairs(n: int = 400, landmarks: bool = False) -> suites.Pairs:
    rng = np.random.default_rng(9)
    first = rng.uniform(0, 100, size=(n, 3))
    second = first + [3.0, -2.0, 1.0]
    lms = rng.uniform(0, 100, size=(25, 3))
    eval_source, eval_reference = (lms, lms + [3.0, -2.0, 1.0]) if landmarks else (first, second)
    return suites.Pairs(
        "toy",
        "case9",
        "lung",
        "tre",
        "mm",
        first,
        second,
        eval_source,
        eval_reference,
        first,
        second,
        halves_eval="landmarks" if landmarks else "source",
    )


def test_realistic_case_halves_have_no_partners() -> None:
    pairs = _pairs()
    case = suites.realistic_case(pairs, "halves")
    assert case.name == "toy.halves/case9" and case.group == "toy.halves" and case.family == "realistic"
    assert len(case.source) == 200 and len(case.target) == 200
    src = {tuple(p) for p in case.source}
    partners = {tuple(p - [3.0, -2.0, 1.0]) for p in case.target}  # the first cloud of half B
    assert not src & partners  # no source point has its partner in the target
    np.testing.assert_allclose(case.eval_reference - case.eval_source, [[3.0, -2.0, 1.0]] * 200)
    landmarks = suites.realistic_case(_pairs(landmarks=True), "halves")
    assert len(landmarks.eval_source) == 25  # the landmarks are still the evaluation points


def test_realistic_case_crop_scores_only_the_kept_region() -> None:
    pairs = _pairs()
    case = suites.realistic_case(pairs, "crop")
    damage = case.info["damage"]
    axis, cut = damage["axis"], damage["cut"]
    ref = pairs.eval_reference[:, axis]
    kept = ref >= cut if damage["end"] == "low" else ref <= cut
    assert case.info["n_eval_all"] == 400 and len(case.eval_reference) == kept.sum() < 400
    np.testing.assert_array_equal(case.eval_reference, pairs.eval_reference[kept])
    np.testing.assert_array_equal(np.sort(case.source, 0), np.sort(pairs.source, 0))
    assert math.isclose(suites.evaluate(case, case.eval_source)["value"], math.sqrt(14.0))


@pytest.fixture(scope="module")
def data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data folder {DATA} not found: realistic cases not tested")
    return DATA


def test_realistic_cases_from_the_data_are_deterministic(data: Path) -> None:
    names = ["dirlab_copd.halves/copd2", "dirlab_copd.outliers/copd2", "dirlab_copd.density/copd2"]
    first = list(suites.load_cases("realistic", data, names))
    second = list(suites.load_cases("realistic", data, names))
    for a, b in zip(first, second, strict=True):
        for x, y in ((a.source, b.source), (a.target, b.target), (a.eval_reference, b.eval_reference)):
            np.testing.assert_array_equal(x, y)
        assert a.preset == "lung" and a.unit == "mm"
    halves, outliers, density = first
    assert len(halves.source) == len(halves.target) == 150
    assert len(outliers.target) == 360 and len(density.target) < 300
    catalog, notes = suites.discover("realistic", data)
    groups = {n.split("/")[0] for n in catalog}
    assert {f"dirlab4dct.{v}" for v in realistic.VARIANTS} <= groups and not notes
    assert list(catalog)[0].startswith("dirlab_copd.") and list(catalog)[-1].startswith("lung250m.")


# ------------------------------------------------------------------ discovery (--data DIR)


def _cloud(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 50.0, size=(n, 3))


def _pairs_csv(path: Path, n: int, seed: int, header: bool = True) -> None:
    x = _cloud(n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(
        path, np.hstack([x, x + 1.5]), delimiter=",", header="a,b,c,d,e,f" if header else "", comments="# "
    )


def make_layout(root: Path) -> Path:
    """A tiny data folder in the shared data's layout: other case numbers, no rigid/ and no
    Learn2Reg folder, a Lung250M case without landmarks and a 2-D BCPD shape."""
    lung = root / "lung"
    _pairs_csv(lung / "dirlab4dct/case12_dense_EI_EE_mm.csv", 40, 1)
    _pairs_csv(lung / "dirlab4dct/case7_dense_EI_EE_mm.csv", 30, 2)
    (lung / "dirlab4dct/case7_300_EI_EE_mm.csv").write_text("# not a dense file\n")
    _pairs_csv(lung / "dirlab_copd/copd9_insp_exp_mm.csv", 30, 3)
    _pairs_csv(lung / "lung250m/keypoints/case_123.csv", 60, 4, header=False)
    _pairs_csv(lung / "lung250m/landmarks/lms_validation_case_123.csv", 12, 5)
    _pairs_csv(lung / "lung250m/keypoints/case_124.csv", 60, 6, header=False)  # no landmarks
    flow = root / "sceneflow"
    flow.mkdir()
    for name, seed in (("kitti_000042", 7), ("ft3d_0000099", 8)):
        pc1 = _cloud(50, seed)
        np.savez(flow / f"{name}.npz", pc1=pc1, pc2=_cloud(50, seed + 100), flow=np.full((50, 3), 0.25))
    bcpd = root / "shapes/bcpd"
    bcpd.mkdir(parents=True)
    np.savetxt(bcpd / "duck-x.txt", _cloud(40, 9), delimiter="\t")
    np.savetxt(bcpd / "duck-y.txt", _cloud(40, 9) + 1.0, delimiter="\t")
    np.savetxt(bcpd / "flat-x.txt", _cloud(40, 10)[:, :2], delimiter="\t")
    np.savetxt(bcpd / "flat-y.txt", _cloud(40, 10)[:, :2], delimiter="\t")
    stanford = root / "shapes/stanford"
    stanford.mkdir()
    pts = _cloud(80, 11)
    head = "ply\nformat ascii 1.0\nelement vertex 80\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    (stanford / "teapot_30k.ply").write_text(
        head + "\n".join(" ".join(f"{v:.6f}" for v in p) for p in pts) + "\n"
    )
    return root


def test_discovery_finds_other_case_numbers_and_skips_what_is_missing(tmp_path: Path) -> None:
    data = make_layout(tmp_path / "data")
    found = {family: suites.discover(family, data) for family in suites.FAMILIES}
    lung, notes = found["lung"]
    assert list(lung) == ["dirlab4dct/case7", "dirlab4dct/case12", "dirlab_copd/copd9", "lung250m/case_123"]
    assert any("case_124.csv has no landmarks" in n for n in notes)
    assert any("l2r_case012 not found" in n for n in notes)
    assert list(found["sceneflow"][0]) == ["kitti/000042", "ft3d/0000099"]
    shapes, notes = found["shapes"]
    assert list(shapes) == ["bcpd/duck", "stanford/teapot"] and any(
        "flat-x.txt is not 3-D" in n for n in notes
    )
    rigid, notes = found["rigid"]
    assert not rigid and len(notes) == 2 and all("not found" in n for n in notes)
    realistic_names = list(found["realistic"][0])
    assert len(realistic_names) == 4 * 7  # copd9, case7, case12, kitti, ft3d, teapot, case_123
    expected_bases = ["copd9", "case7", "case12", "000042", "0000099", "teapot", "case_123"]
    assert [n.split("/")[1] for n in realistic_names[::4]] == expected_bases[: len(realistic_names) // 4]
    for family in ("lung", "sceneflow", "shapes", "realistic"):
        for case in suites.load_cases(family, data):
            none = suites.evaluate(case, case.eval_source)["value"]
            assert math.isfinite(none) and none > 0, case.name
    flow = next(suites.load_cases("sceneflow", data, ["kitti/000042"]))
    np.testing.assert_allclose(flow.eval_reference - flow.eval_source, 0.25)
    with pytest.raises(ValueError, match="no case 'dirlab4dct/case1'"):
        next(suites.load_cases("lung", data, ["dirlab4dct/case1"]))


def test_runner_on_a_discovered_folder(tmp_path: Path, capsys) -> None:
    from benchmarks import run

    data = make_layout(tmp_path / "data")
    out = tmp_path / "out"
    assert (
        run.main(["--data", str(data), "--suite", "lung,rigid", "--methods", "none", "--out", str(out)]) == 0
    )
    err = capsys.readouterr().err
    assert "rigid/teaser not found" in err and "rigid/small_gicp not found" in err
    import json

    payload = json.loads((out / "suite_lung.json").read_text())
    assert {r["case"] for r in payload["records"]} == {
        "dirlab4dct/case7",
        "dirlab4dct/case12",
        "dirlab_copd/copd9",
        "lung250m/case_123",
    }
    assert not (out / "suite_rigid.json").exists()  # nothing found: nothing written


# ------------------------------------------------------------------------------- tables


def _record(case, method, value, seconds=2.0, status="ok", run_id="r1", unit="mm"):
    return {
        "family": "realistic",
        "case": case,
        "group": case.split("/")[0],
        "metric": "tre",
        "unit": unit,
        "method": method,
        "status": status,
        "value": value if status == "ok" else math.nan,
        "seconds": 0.0 if method == "none" else seconds,
        "cpu_seconds": 1.0,
        "peak_rss_mb": 300.0,
        "run": run_id,
    }


def _meta(methods):
    from benchmarks import run

    return {
        "suite": "realistic",
        "quick": False,
        "methods": methods,
        "command": "python -m benchmarks.run --suite realistic",
        "date": "2026-01-01",
        "machine": run.machine_info(),
        "threads": 2,
        "time_limit_s": 900.0,
        "memory_limit_mb": 12000.0,
        "seed": 0,
        "device": "cpu",
        "set": [],
        "total_seconds": 60.0,
        "finished": True,
    }


def test_realistic_tables_group_means_ratios_and_worse_counts(tmp_path: Path) -> None:
    from benchmarks import run

    records = [
        # DIR-LAB / crop: register 1.0 and 2.0 (mean 1.5), best peer bcpd_tuned (mean 3.0)
        _record("dirlab4dct.crop/case2", "none", 4.0),
        _record("dirlab4dct.crop/case2", "register", 2.0, seconds=1.0, run_id="r2"),
        _record("dirlab4dct.crop/case2", "bcpd", 5.0, seconds=8.0),  # worse than none
        _record("dirlab4dct.crop/case2", "bcpd_tuned", 2.0, seconds=4.0),
        _record("dirlab4dct.crop/case2", "probreg_cpd_nonrigid", 1.0, status="timeout"),
        _record("dirlab4dct.crop/case1", "none", 3.0),
        _record("dirlab4dct.crop/case1", "register", 1.0, seconds=3.0, run_id="r2"),
        _record("dirlab4dct.crop/case1", "bcpd", 2.0, seconds=8.0),
        _record("dirlab4dct.crop/case1", "bcpd_tuned", 4.0, seconds=2.0),
        _record("dirlab4dct.crop/case1", "probreg_cpd_nonrigid", 0.5, seconds=9.0),
        # KITTI / halves, metres: register in the same run as BCPD
        _record("kitti.halves/000000", "none", 2.0, unit="m"),
        _record("kitti.halves/000000", "register", 0.5, seconds=6.0, unit="m"),
        _record("kitti.halves/000000", "bcpd", 1.0, seconds=3.0, unit="m"),
    ]
    run.write_markdown(
        tmp_path / "r.md", records, _meta(["register", "bcpd", "bcpd_tuned", "probreg_cpd_nonrigid"])
    )
    md = (tmp_path / "r.md").read_text()
    # Group rows: means over the successful cases, seconds per case; the ratio to the best
    # complete peer (CPD timed out once: not a candidate); wall ratio against the best BCPD,
    # marked as measured by another run.
    assert (
        "| DIR-LAB 4DCT / crop (2, mm) | 3.50 | 1.50 (2.0 s) | 3.50 (8.0 s) | 3.00 (3.0 s) | 0.50 (9.0 s) [1/2 ok] "
        "| 0.50 (bcpd_tuned) | 0.67 (bcpd_tuned) ‡ |" in md
    )
    assert (
        "| KITTI / halves (1, m) | 2.000 | 0.500 (6.0 s) | 1.000 (3.0 s) |  |  | 0.50 (bcpd) | 2.00 (bcpd) |"
        in md
    )
    assert md.index("DIR-LAB 4DCT / crop (2") < md.index("KITTI / halves (1")
    # Worse than none: bcpd on case2, bcpd_tuned on case1; CPD's timeout is not counted.
    assert "| DIR-LAB 4DCT / crop | 0/2 | 1/2 | 1/2 | 0/1 |" in md
    # One row per case, in natural order.
    assert md.index("| dirlab4dct.crop/case1 | 3.00 |") < md.index("| dirlab4dct.crop/case2 | 4.00 |")
    assert "PEERS.md, not run" not in md.split("## Failures")[0].split("## Realistic")[1]


def test_measured_bcpd_replaces_the_peers_md_reference(tmp_path: Path) -> None:
    from benchmarks import run

    lung = [
        {**_record("dirlab4dct/case1", m, v), "family": "lung"}
        for m, v in (("none", 3.5), ("bcpd", 0.47), ("bcpd_tuned", 0.3))
    ]
    lung[2]["status"] = "timeout"  # bcpd_tuned did not succeed: its reference stays
    run.write_markdown(tmp_path / "l.md", lung, _meta(["bcpd", "bcpd_tuned"]) | {"suite": "lung"})
    md = (tmp_path / "l.md").read_text()
    assert "† BCPD tuned (PEERS.md, not run)" in md and "† BCPD default" not in md
    assert "default mean 0.71 mm" in md  # the DIR-LAB note stands for both settings: kept
    lung[2]["status"] = "ok"
    run.write_markdown(tmp_path / "l.md", lung, _meta(["bcpd", "bcpd_tuned"]) | {"suite": "lung"})
    md = (tmp_path / "l.md").read_text()
    assert "(PEERS.md, not run)" not in md and "default mean 0.71 mm" not in md
    assert "BCPD default 2.08 mm" in md  # Lung250M-4B: no BCPD run there


def test_tables_only_rewrites_the_markdown_from_the_json(tmp_path: Path) -> None:
    from benchmarks import run

    records = [
        _record("dirlab_copd.crop/copd1", "none", 20.0),
        _record("dirlab_copd.crop/copd1", "bcpd", 5.0),
    ]
    run.write_json(tmp_path / "suite_realistic.json", records, _meta(["bcpd"]))
    assert (
        run.main(["--suite", "realistic", "--tables-only", "--out", str(tmp_path), "--data", str(tmp_path)])
        == 0
    )
    assert (
        "| DIR-LAB COPD / crop (1, mm) | 20.00 | 5.00 (2.0 s) |"
        in (tmp_path / "suite_realistic.md").read_text()
    )
    assert (tmp_path / "suite_realistic.csv").read_text().startswith("family,case,group")
    assert (
        run.main(["--suite", "lung", "--tables-only", "--out", str(tmp_path), "--data", str(tmp_path)]) == 2
    )


def test_realistic_tables_mark_methods_not_run_on_every_case(tmp_path: Path) -> None:
    """A method not (yet) run on every case of a group says so; one that never succeeded
    shows its status (an interrupted or still running peers' run)."""
    from benchmarks import run

    records = [
        _record("dirlab4dct.crop/case1", "none", 3.0),
        _record("dirlab4dct.crop/case1", "register", 1.0),
        _record("dirlab4dct.crop/case1", "bcpd", 2.0, seconds=4.0),
        _record("dirlab4dct.crop/case1", "probreg_cpd_nonrigid", 1.0, status="timeout"),
        _record("dirlab4dct.crop/case2", "none", 4.0),
        _record("dirlab4dct.crop/case2", "register", 2.0),
    ]
    run.write_markdown(tmp_path / "p.md", records, _meta(["register", "bcpd", "probreg_cpd_nonrigid"]))
    row = next(
        x for x in (tmp_path / "p.md").read_text().splitlines() if x.startswith("| DIR-LAB 4DCT / crop (2")
    )
    assert "| 1.50 (2.0 s) | 2.00 (4.0 s) [run on 1/2] | timeout [run on 1/2, 0 ok] |" in row
    assert row.endswith("|  |  |")  # no peer ran on every case: no ratios


@pytest.mark.parametrize("variant", ["crop", "outliers"])
def test_the_lung_preset_falls_back_on_a_damaged_copy_pair(data: Path, variant: str) -> None:
    """COPD landmarks, 300 points: the matched masses cannot see a 15 % crop or 20 % outliers
    (their reach, 50-60 mm here, covers both), the counterparts can (register.partners): the
    balanced first result is a copy pair with a third of the target, or a tenth of the source,
    unpartnered, so the fallback runs; its result is many times closer."""
    from benchmarks.run import _register_config
    from register.pipeline import register

    (case,) = suites.load_cases("realistic", data, [f"dirlab_copd.{variant}/copd1"])

    def error(sets):
        result = register(case.source, case.target, _register_config("lung", sets), device="cpu", seed=0)
        return suites.evaluate(case, result.transform.apply(case.eval_source))["value"], result

    balanced, _ = error(['pipeline.fallback=""'])
    shipped, result = error([])
    reasons = result.metrics["fallback"]["triggered_by"]
    assert any(r.startswith("copy pair, partnered fraction") for r in reasons), reasons
    assert result.metrics["fallback"]["kept"] == "fallback"
    assert balanced > 2.0 and shipped < 0.5, (balanced, shipped)
