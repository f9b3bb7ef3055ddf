"""The reliability report (:mod:`register.reliability`): known answers for each measure, the
verdict on a clean and on broken registrations, and where the report shows up (metrics.json,
the run summary, ``--json``, the batch summary and the HTML report)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_cli import CHEAP, deform, invoke, stderr_of, surface, write_pair

from register.config import load_config, with_overrides
from register.core.transforms import Affine, Composite, KernelField
from register.pipeline import register
from register.reliability import (
    HELDOUT_MARGIN,
    MAX_FOLDED_FRACTION,
    MAX_LOG_JACOBIAN_STD,
    MIN_MATCHED_MASS,
    TRUNCATION_SPACINGS,
    assess,
    heldout_residuals,
    jacobian_summary,
    judge,
    matched_mass,
    median_spacing,
)


def blob(n: int = 400, seed: int = 0) -> np.ndarray:
    """``(n, 3)`` points filling a unit ball, roughly evenly."""
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True) * rng.uniform(0, 1, (n, 1)) ** (1 / 3)


def rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ------------------------------------------------------------------------- the measures


def test_matched_mass_is_mass_weighted_and_capped():
    # (1.2 capped to 1) * 1 + 0 * 3, over a total mass of 4
    assert matched_mass(np.array([1.2, 0.0]), np.array([1.0, 3.0])) == pytest.approx(0.25)
    assert matched_mass(np.array([np.nan, 1.0]), np.array([1.0, 1.0])) == pytest.approx(0.5)
    assert matched_mass(np.ones(5), np.full(5, 7.0)) == pytest.approx(1.0)


def test_folded_fraction_of_a_reflection_is_one_and_of_a_rotation_zero():
    x = blob()
    folded, std, mean, probes = jacobian_summary(Affine(np.diag([1.0, 1.0, -1.0]), np.zeros(3)), x)
    assert (folded, std, mean, probes) == (1.0, None, None, len(x))
    folded, std, mean, _ = jacobian_summary(Affine(rotation(0.7), np.array([5.0, 0, 0])), x)
    assert folded == 0.0 and std < 1e-9 and abs(mean) < 1e-9


def test_log_jacobian_std_of_an_affine_map_is_zero():
    matrix = np.array([[1.5, 0.2, 0.0], [0.1, 0.8, 0.3], [0.0, -0.2, 1.1]])
    folded, std, mean, _ = jacobian_summary(Affine(matrix, np.array([1.0, 2.0, 3.0])), blob())
    assert folded == 0.0 and std < 1e-9
    assert mean == pytest.approx(math.log(np.linalg.det(matrix)), abs=1e-9)


def test_a_strong_narrow_bump_folds_and_the_probes_are_subsampled():
    x = blob(3000)
    # v(x) = w exp(-|x - c|^2 / 2 sigma^2): det J = 1 - w.(x - c) / sigma^2 exp(...) < 0 on the
    # side of c that w points away from, within ~sigma, when |w| >> sigma
    bump = KernelField(np.zeros((1, 3)), np.array([[-3.0, 0.0, 0.0]]), (0.3,))
    folded, std, _, probes = jacobian_summary(bump, x, max_points=1000)
    assert probes == 1000
    assert 0.02 < folded < 0.5
    assert std is not None and std > 0


def test_heldout_residual_is_truncated_and_zero_shift_changes_nothing():
    x = blob()
    before, after, tau = heldout_residuals(x, x, x, np.ones(len(x)))
    assert before == after < tau
    assert tau == pytest.approx(TRUNCATION_SPACINGS * median_spacing(x))
    # moved far away: every distance is truncated at tau
    _, far, _ = heldout_residuals(x, x + 100.0, x, np.ones(len(x)))
    assert far == pytest.approx(tau)
    # the last blur bounds the truncation from below
    assert heldout_residuals(x, x, x, np.ones(len(x)), blur=10 * tau)[2] == 10 * tau


def test_judge_names_each_threshold_it_crosses():
    assert judge(MIN_MATCHED_MASS, 1.0, 1.0 + HELDOUT_MARGIN, MAX_FOLDED_FRACTION, MAX_LOG_JACOBIAN_STD) == []
    reasons = judge(MIN_MATCHED_MASS - 0.01, 1.0, 1.1 + HELDOUT_MARGIN, MAX_FOLDED_FRACTION + 0.002, 2.0)
    assert [r.split()[0] for r in reasons] == [
        "matched",
        "held-out",
        f"{MAX_FOLDED_FRACTION + 0.002:.2%}",
        "log-Jacobian",
    ]
    assert judge(1.0, 1.0, 0.5, 0.0, None) == []  # every probe unfolded: no std needed


# ------------------------------------------------------------------------- the verdict


def test_identity_on_identical_clouds_is_ok():
    x = blob()
    rel = assess(Composite([]), x, x)
    assert rel.verdict == "ok" and rel.ok and rel.reasons == []
    assert rel.matched_mass > 0.9 and rel.matched_mass_from == "matching"
    assert rel.heldout_residual_after == rel.heldout_residual_before
    assert rel.folded_fraction == 0.0 and rel.log_jacobian_std < 1e-9
    assert rel.to_dict()["thresholds"]["min_matched_mass"] == MIN_MATCHED_MASS
    json.dumps(rel.to_dict())  # plain values


def test_moving_the_source_away_is_suspect():
    x = blob()
    rel = assess(Affine(np.eye(3), np.array([10.0, 0, 0])), x, x)
    assert rel.verdict.startswith("suspect: ")
    assert rel.matched_mass < 0.1
    assert rel.heldout_residual_after > rel.heldout_residual_before
    assert any(r.startswith("matched mass") for r in rel.reasons)
    assert any(r.startswith("held-out residual rose") for r in rel.reasons)
    assert rel.verdict == "suspect: " + "; ".join(rel.reasons)


def test_a_folding_field_is_suspect():
    x = blob(1000)
    rng = np.random.default_rng(2)
    crumple = KernelField(x[::10], rng.normal(scale=5.0, size=(100, 3)), (0.1,))
    rel = assess(crumple, x, x)
    assert rel.folded_fraction > MAX_FOLDED_FRACTION
    assert any("folded" in r for r in rel.reasons), rel.verdict


def test_given_confidences_are_used_on_their_points():
    x = blob()
    conf = np.zeros(len(x))
    conf[:100] = 1.0
    rel = assess(
        Composite([]), x, x, confidence=conf[::2], confidence_indices=np.arange(0, len(x), 2), reach=1e3
    )
    assert rel.matched_mass_from == "spline"
    assert rel.matched_mass == pytest.approx(50 / 200)
    assert "matched mass 0.25 < 0.5" in rel.verdict


def test_a_smooth_deformation_registered_is_ok():
    cfg = with_overrides(load_config("default"), [a for a in CHEAP if a != "--set"])
    result = register(surface(300, 0), deform(surface(280, 2)), cfg, device="cpu")
    rel = result.reliability
    assert rel.verdict == "ok", rel.verdict
    assert rel.heldout_residual_after < rel.heldout_residual_before
    assert result.metrics["reliability"] == rel.to_dict()


def _registered_at_reach(reach: float):
    """A smooth pair registered with the default preset, one spline level at ``reach``
    (relative to the diagonal): the result and its configuration."""
    cfg = with_overrides(
        load_config("default"),
        [a for a in CHEAP if a != "--set"] + [f"spline.reach=[{reach}]", "spline.max_points=200"],
    )
    return register(surface(300, 0), deform(surface(280, 2)), cfg, device="cpu"), cfg


def test_spline_confidences_at_a_finite_reach_are_reported():
    result, cfg = _registered_at_reach(0.1)
    rel = result.reliability
    assert rel.matched_mass_from == "spline"
    assert rel.match_reach == pytest.approx(
        cfg.in_data_units(result.metrics["target_diameter"]).spline.reach[0]
    )
    assert 0 < rel.matched_mass <= 1


def test_a_reach_below_the_truncation_is_not_used_for_the_matched_mass():
    """A last reach of a fraction of the spacing says how many samples coincide, not whether
    the clouds are aligned: the report runs its own matching at ``tau`` instead."""
    rel = _registered_at_reach(0.001)[0].reliability
    assert rel.matched_mass_from == "matching"
    assert rel.match_reach == pytest.approx(rel.heldout_truncation)
    assert rel.matched_mass > MIN_MATCHED_MASS


# ------------------------------------------------------------------------- where it is shown


def test_run_shows_the_verdict_in_metrics_json_summary_and_json(tmp_path):
    src, tgt = write_pair(tmp_path)
    result = invoke(["run", src, tgt, "-o", tmp_path / "out", "--json", *CHEAP])
    assert result.exit_code == 0, stderr_of(result)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    rel = metrics["reliability"]
    assert rel["verdict"] == "ok" and set(rel["thresholds"]) >= {"min_matched_mass", "max_folded_fraction"}
    assert json.loads(result.stdout)["reliability"] == rel
    table = invoke(["run", src, tgt, "-o", tmp_path / "out2", *CHEAP])
    assert table.exit_code == 0, stderr_of(table)
    # the human summary is written to stderr (stdout stays free for --json)
    assert "reliability" in stderr_of(table) and "held-out residual" in stderr_of(table)


def test_batch_summary_and_report_carry_the_verdict(tmp_path):
    from test_batch import OVERRIDES, write_cohort

    from register.app.batch import BatchOptions, plan, read_manifest, run_batch, run_pair
    from register.app.report import write_report

    class InProcess:
        capacity, threads = 1, None

        def __init__(self):
            self.done = []

        def describe(self):
            return "this process"

        def submit(self, job):
            self.done.append((job, run_pair(job)))

        def wait(self):
            done, self.done = self.done, []
            return done

    manifest = write_cohort(tmp_path)
    outdir = tmp_path / "out"
    jobs = [j for j in plan(read_manifest(manifest), outdir, BatchOptions(overrides=OVERRIDES, images=False))]
    run_batch(jobs[:1], outdir, InProcess(), manifest=manifest)
    row = json.loads((outdir / "summary.json").read_text())["pairs"][0]
    metrics = json.loads((outdir / row["id"] / "metrics.json").read_text())
    assert row["verdict"] == metrics["reliability"]["verdict"] == "ok"
    assert row["matched_mass"] == metrics["reliability"]["matched_mass"]
    header = (outdir / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"verdict", "matched_mass", "heldout_residual_after", "folded_fraction"} <= set(header)
    page = write_report(outdir).read_text()
    assert ">reliability</th>" in page and f'data-v="{row["verdict"]}">ok</td>' in page
