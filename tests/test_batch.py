"""``register batch``: manifest checks, one batch run, resume after a crash, failures, Dask.

Pairs are tiny (about 300 points) and the pipeline is cut to a few levels, so a pair registers
in about a second; most of a batch's time is the worker processes importing torch and VTK.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_cli import (
    CHEAP,
    RESULT_FILES,
    assert_input_error,
    deform,
    invoke,
    stderr_of,
    subprocess_env,
    surface,
)
from test_cli import write_pair as write_cli_pair

from register.app.batch import PairJob, check_complete, read_manifest, run_pair
from register.app.batch.driver import BatchOptions, plan, run_batch
from register.app.batch.local import LocalRunner
from register.app.batch.manifest import ManifestError
from register.core.pointcloud import PointCloud
from register.io import write_points

BATCH_FILES = RESULT_FILES | {"register.log", "qa.png", "status.json"}
FAILED_FILES = {"register.log", "status.json"}
OVERRIDES = tuple(a for a in CHEAP if a != "--set")
TIMEOUT = 300


# ------------------------------------------------------------------------- helpers


def write_pair(folder: Path, landmarks: bool = False) -> dict[str, str]:
    """A small pair in ``folder`` (and corresponding landmarks): manifest cells, relative paths."""
    folder.mkdir(parents=True, exist_ok=True)
    write_cli_pair(folder)
    cells = {"source": f"{folder.name}/src.ply", "target": f"{folder.name}/tgt.ply"}
    if landmarks:
        src_lm = surface(300, 0)[::15]
        write_points(folder / "src_lm.csv", PointCloud(src_lm))
        write_points(folder / "tgt_lm.csv", PointCloud(deform(src_lm)))
        cells |= {
            "source_landmarks": f"{folder.name}/src_lm.csv",
            "target_landmarks": f"{folder.name}/tgt_lm.csv",
        }
    return cells


def write_truncated(folder: Path) -> dict[str, str]:
    """A pair whose source file is a truncated binary PLY (the pair fails, the batch goes on)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_cli_pair(folder)
    data = (folder / "src.ply").read_bytes()
    (folder / "src.ply").write_bytes(data[: len(data) // 2])
    return {"source": f"{folder.name}/src.ply", "target": f"{folder.name}/tgt.ply"}


def write_manifest(path: Path, rows: dict[str, dict[str, str]]) -> Path:
    columns = ["id", "source", "target", "source_landmarks", "target_landmarks"]
    lines = [",".join(columns)]
    lines += [",".join([pid] + [cells.get(c, "") for c in columns[1:]]) for pid, cells in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def batch_args(manifest: Path, outdir: Path, *extra) -> list:
    sets = [x for o in OVERRIDES for x in ("--set", o)]
    return ["batch", manifest, "-o", outdir, "--threads", "1", *sets, *extra]


def summary(outdir: Path) -> dict[str, dict]:
    return {row["id"]: row for row in json.loads((outdir / "summary.json").read_text())["pairs"]}


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a pair folder: (modification time in ns, content)."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def hidden(outdir: Path) -> list[str]:
    return sorted(p.name for p in outdir.iterdir() if p.name.startswith(".") and p.name != ".batch.lock")


def comparable_metrics(folder: Path) -> dict:
    """metrics.json without what legitimately differs between two runs (times, paths, versions)."""
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in (
        "total_seconds",
        "stage_seconds",
        "reliability_seconds",
        "versions",
        "source",
        "target",
        "relative",
    ):
        metrics.pop(key)
    for stage in metrics["stages"]:
        stage.pop("seconds")
    return metrics


def assert_same_result(a: Path, b: Path) -> None:
    with np.load(a / "transform.npz") as x, np.load(b / "transform.npz") as y:
        assert set(x.files) == set(y.files)
        for key in x.files:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
    assert comparable_metrics(a) == comparable_metrics(b)


# ------------------------------------------------------------------------- 1. manifest checks


@pytest.fixture
def cohort(tmp_path) -> Path:
    """Two pairs on disk; returns the folder (manifests are written by each test)."""
    write_pair(tmp_path / "a", landmarks=True)
    write_pair(tmp_path / "b")
    return tmp_path


def test_manifest_csv_and_jsonl_give_the_same_pairs(cohort):
    csv = cohort / "m.csv"
    csv.write_text(
        "# cohort of two\n"
        "id, source, target, source_landmarks, target_landmarks, pipeline, weights\n"
        "p1, a/src.ply, a/tgt.ply, a/src_lm.csv, a/tgt_lm.csv, lung, radius\n"
        "\n"
        "p2, b/src.ply, b/tgt.ply, , , , \n"
    )
    jsonl = cohort / "m.jsonl"
    jsonl.write_text(
        json.dumps(
            {
                "id": "p1",
                "source": "a/src.ply",
                "target": "a/tgt.ply",
                "source_landmarks": "a/src_lm.csv",
                "target_landmarks": "a/tgt_lm.csv",
                "pipeline": "lung",
                "weights": "radius",
            }
        )
        + "\n"
        + json.dumps({"id": "p2", "source": "b/src.ply", "target": "b/tgt.ply"})
        + "\n"
    )
    pairs = read_manifest(csv)
    assert [replace(p, line=0) for p in read_manifest(jsonl)] == [replace(p, line=0) for p in pairs]
    p1, p2 = pairs
    assert (p1.id, p2.id) == ("p1", "p2")
    assert p1.source == (cohort / "a/src.ply").resolve() and p1.source.is_absolute()
    assert p1.landmarks == ((cohort / "a/src_lm.csv").resolve(), (cohort / "a/tgt_lm.csv").resolve())
    assert (p1.pipeline, p1.weights) == ("lung", "radius")
    assert (p2.landmarks, p2.pipeline, p2.weights) == (None, None, None)
    assert (p1.line, p2.line) == (3, 5)


BAD_MANIFESTS = {
    "missing_file": (
        "id,source,target\np1,a/src.ply,a/tgt.ply\np2,b/src.ply,b/nothere.ply\n",
        ["line 3", "id p2", "column target", "b/nothere.ply", "not found"],
    ),
    "duplicate_id": (
        "id,source,target\np1,a/src.ply,a/tgt.ply\nP1,b/src.ply,b/tgt.ply\n",
        ["duplicate id 'P1'", "line 3", "line 2"],
    ),
    "unknown_column": (
        "id,source,target,sauce\np1,a/src.ply,a/tgt.ply,x\n",
        ["unknown column", "'sauce'", "allowed columns", "source_landmarks"],
    ),
    "missing_column": ("id,source\np1,a/src.ply\n", ["missing column", "target"]),
    "cell_count": ("id,source,target\np1,a/src.ply\n", ["line 2", "2 cells", "3 columns"]),
    "one_landmark_file": (
        "id,source,target,source_landmarks\np1,a/src.ply,a/tgt.ply,a/src_lm.csv\n",
        ["id p1", "both source_landmarks and target_landmarks"],
    ),
    "bad_id": ("id,source,target\n../up,a/src.ply,a/tgt.ply\n", ["'../up'", "folder name"]),
    "reserved_id": ("id,source,target\nsummary.csv,a/src.ply,a/tgt.ply\n", ["'summary.csv'", "folder name"]),
    "empty_id": ("id,source,target\n,a/src.ply,a/tgt.ply\n", ["line 2", "empty id"]),
    "unknown_pipeline": (
        "id,source,target,pipeline\np1,a/src.ply,a/tgt.ply,lungs\n",
        ["column pipeline", "lungs", "lung"],
    ),
    "bad_extension": ("id,source,target\np1,a/src.ply,a/notes.doc\n", ["a/notes.doc", "not found"]),
    "no_pairs": ("id,source,target\n# nothing yet\n", ["no pairs"]),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_bad_manifest_fails_before_any_work(case, cohort):
    text, needles = BAD_MANIFESTS[case]
    manifest = cohort / "m.csv"
    manifest.write_text(text)
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    outdir = cohort / "out"
    assert_input_error(invoke(batch_args(manifest, outdir)), "m.csv", *needles)
    assert not outdir.exists(), "a bad manifest created the output folder"


def test_unsupported_point_extension_is_named(cohort):
    (cohort / "a" / "notes.doc").write_text("x")
    manifest = cohort / "m.csv"
    manifest.write_text("id,source,target\np1,a/src.ply,a/notes.doc\n")
    with pytest.raises(ManifestError, match=r"a/notes.doc has an unsupported extension; use one of .*\.ply"):
        read_manifest(manifest)


def test_every_problem_is_reported_at_once(cohort):
    manifest = cohort / "m.jsonl"
    rows = [
        {"id": "p1", "source": "a/src.ply", "target": "a/missing.ply"},
        {"id": "p1", "source": "b/src.ply", "target": "b/tgt.ply"},
        {"id": "p3", "source": "nope.ply", "target": "b/tgt.ply", "pipeline": "nosuch"},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest)
    message = str(info.value)
    assert "4 problem(s)" in message
    for needle in ("a/missing.ply", "duplicate id 'p1'", "nope.ply", "nosuch"):
        assert needle in message


def test_manifest_itself_missing_or_unknown_format(tmp_path):
    assert_input_error(invoke(batch_args(tmp_path / "none.csv", tmp_path / "out")), "none.csv", "not found")
    (tmp_path / "m.xlsx").write_text("x")
    assert_input_error(invoke(batch_args(tmp_path / "m.xlsx", tmp_path / "out")), "m.xlsx", ".csv", ".jsonl")
    (tmp_path / "m.jsonl").write_text('{"id": "p1", "source": "a.ply"\n')
    assert_input_error(
        invoke(batch_args(tmp_path / "m.jsonl", tmp_path / "out")), "m.jsonl", "line 1", "JSON"
    )
    assert sorted(os.listdir(tmp_path)) == ["m.jsonl", "m.xlsx"]


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--set", "affine.mode=bogus"], ["--set", "affine.mode", "bogus"]),
        (["--stages", "affine,warp"], ["--stages", "warp"]),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], ["--workers", "--scheduler"]),
        (["--device", "tpu"], ["--device tpu"]),
        (["-p", "nosuch"], ["--pipeline", "nosuch"]),
    ],
)
def test_bad_option_fails_before_any_work(extra, needles, cohort):
    manifest = write_manifest(cohort / "m.csv", {"p1": write_pair(cohort / "a")})
    assert_input_error(invoke(batch_args(manifest, cohort / "out", *extra)), *needles)
    assert not (cohort / "out").exists()


def test_foreign_output_folder_is_refused(cohort):
    manifest = write_manifest(cohort / "m.csv", {"p1": write_pair(cohort / "a")})
    outdir = cohort / "out"
    outdir.mkdir()
    (outdir / "thesis.tex").write_text("keep")
    assert_input_error(invoke(batch_args(manifest, outdir)), "-o", "not a batch output")
    assert os.listdir(outdir) == ["thesis.tex"]


def test_scheduler_without_dask_says_how_to_install(cohort, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # "import distributed" now fails
    manifest = write_manifest(cohort / "m.csv", {"p1": write_pair(cohort / "a")})
    assert_input_error(
        invoke(batch_args(manifest, cohort / "out", "--scheduler", "tcp://127.0.0.1:8786")),
        "register[distributed]",
    )
    assert not (cohort / "out").exists()


# ------------------------------------------------------------------------- 2. one batch with a failing pair


def write_cohort(root: Path) -> Path:
    """4 pairs: p1 (with landmarks), p2, p3, and "broken" (unreadable source); the manifest."""
    rows = {
        "p1": write_pair(root / "a", landmarks=True),
        "p2": write_pair(root / "b"),
        "p3": write_pair(root / "c"),
        "broken": write_truncated(root / "d"),
    }
    return write_manifest(root / "cohort.csv", rows)


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    """``register batch`` over :func:`write_cohort`, ``--workers 2``."""
    root = tmp_path_factory.mktemp("cohort")
    manifest = write_cohort(root)
    outdir = root / "out"
    t0 = time.perf_counter()
    result = invoke(batch_args(manifest, outdir, "--workers", "2", "--retries", "2", "--json"))
    return result, root, manifest, outdir, time.perf_counter() - t0


def test_failing_pair_does_not_stop_the_batch(batch_run):
    result, _, _, outdir, _ = batch_run
    assert result.exit_code == 3, (result.exit_code, stderr_of(result), result.exception)
    out = json.loads(result.stdout)
    assert out["status"] == "failed" and out["failed_ids"] == ["broken"]
    assert (out["pairs"], out["ok"], out["failed"], out["ran"], out["skipped"]) == (4, 3, 1, 4, 0)
    rows = summary(outdir)
    assert [rows[k]["status"] for k in ("p1", "p2", "p3", "broken")] == ["ok", "ok", "ok", "failed"]
    broken = rows["broken"]
    assert broken["error_kind"] == "input" and "src.ply" in broken["error"] and "truncated" in broken["error"]
    assert broken["attempt"] == 1, "bad input must not be retried"
    assert set(os.listdir(outdir / "broken")) == FAILED_FILES
    assert "truncated" in (outdir / "broken" / "register.log").read_text()
    assert hidden(outdir) == [], "temporary files left behind"


def test_each_pair_folder_holds_a_single_run_result(batch_run, tmp_path):
    """OUTDIR/<id> is what 'register run' writes (same transform, same metrics) plus log, picture, status."""
    result, root, _, outdir, _ = batch_run
    for pid in ("p1", "p2", "p3"):
        assert set(os.listdir(outdir / pid)) == BATCH_FILES
    single = tmp_path / "single"
    args = ["run", root / "a/src.ply", root / "a/tgt.ply", "-o", single, "-q", "--seed", "0", *CHEAP]
    args += ["--landmarks", root / "a/src_lm.csv", root / "a/tgt_lm.csv"]
    import torch

    # Float sums depend on how they are split over threads: compare at the batch's 1 thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert invoke(args).exit_code == 0
    finally:
        torch.set_num_threads(threads)
    assert_same_result(outdir / "p1", single)
    assert set(os.listdir(single)) == RESULT_FILES


def test_summary_has_status_times_counts_and_tre(batch_run):
    _, _, _, outdir, elapsed = batch_run
    rows = summary(outdir)
    p1, p2 = rows["p1"], rows["p2"]
    for row in (p1, p2):
        assert row["action"] == "ran" and row["attempt"] == 1 and row["threads"] == 1
        assert 0 < row["seconds"] < row["wall_seconds"] < elapsed
        assert (row["source_points"], row["target_points"]) == (300, 280)
        assert row["chamfer_after"] < row["chamfer_before"]
        assert row["started"] <= row["finished"]
    assert p1["landmarks"] == 20 and p1["tre_after"] < p1["tre_before"]
    assert p1["tre_after"] <= p1["tre_after_p95"]
    assert p2["landmarks"] is None and p2["tre_after"] is None
    metrics = json.loads((outdir / "p1" / "metrics.json").read_text())
    assert p1["tre_after"] == metrics["landmarks"]["after"]["mean"]
    csv_lines = (outdir / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("id,status,action,") and len(csv_lines) == 5
    assert csv_lines[4].startswith("broken,failed,ran,input,")


def test_complete_batch_reruns_nothing(batch_run):
    _, _, manifest, outdir, _ = batch_run
    before = {pid: snapshot(outdir / pid) for pid in ("p1", "p2", "p3")}
    result = invoke(batch_args(manifest, outdir, "--workers", "2", "--json", "--no-report"))
    assert result.exit_code == 3  # "broken" is still broken: tried again, failed again
    out = json.loads(result.stdout)
    assert (out["skipped"], out["ran"], out["failed_ids"]) == (3, 1, ["broken"])
    assert {pid: snapshot(outdir / pid) for pid in ("p1", "p2", "p3")} == before
    assert summary(outdir)["p1"]["action"] == "skipped"


# ------------------------------------------------------------------------- 3. resume after a crash


def simulate_crash(outdir: Path) -> None:
    """What a killed batch leaves: p2 half-written (hidden temporaries only), p3's result tampered."""
    shutil.rmtree(outdir / "p2")
    partial = outdir / ".p2.0123456789ab.partial"
    partial.mkdir()
    (partial / "transform.npz").write_bytes(b"half a file")
    (outdir / ".p2.0123456789ab.log.partial").write_text("started\n")
    (outdir / ".summary.json.tmp").write_text("{")
    with open(outdir / "p3" / "field.npz", "r+b") as fh:  # same size, different bytes
        fh.seek(100)
        fh.write(b"\x00" * 8)


def test_resume_after_crash_recomputes_nothing_finished(batch_run, tmp_path):
    _, _, manifest, done, _ = batch_run
    outdir = tmp_path / "out"
    shutil.copytree(done, outdir)
    reference = snapshot(outdir / "p1")
    simulate_crash(outdir)
    jobs = {j.id: j for j in plan(read_manifest(manifest), outdir, BatchOptions(overrides=OVERRIDES))}
    assert check_complete(jobs["p1"]) == (
        json.loads((outdir / "p1" / "status.json").read_text())["record"],
        "",
    )
    assert check_complete(jobs["p2"])[1] == "not run yet"
    assert "checksum differs" in check_complete(jobs["p3"])[1]

    again = invoke(batch_args(manifest, outdir, "--workers", "2", "--no-report", "--json"))
    assert again.exit_code == 3, stderr_of(again)  # "broken" fails again
    out = json.loads(again.stdout)
    assert (out["skipped"], out["ran"], out["ok"]) == (1, 3, 3)
    assert snapshot(outdir / "p1") == reference, "a finished pair was recomputed or touched"
    for pid in ("p2", "p3"):
        assert set(os.listdir(outdir / pid)) == BATCH_FILES
        assert_same_result(outdir / pid, done / pid)
    assert hidden(outdir) == []
    assert {pid: r["action"] for pid, r in summary(outdir).items()} == {
        "p1": "skipped",
        "p2": "ran",
        "p3": "ran",
        "broken": "ran",
    }


def test_changed_input_or_setting_is_redone(tmp_path):
    rows = {"p1": write_pair(tmp_path / "a")}
    manifest = write_manifest(tmp_path / "m.csv", rows)
    (job,) = plan(read_manifest(manifest), tmp_path, BatchOptions(overrides=OVERRIDES, images=False))
    assert run_pair(job)["status"] == "ok"
    assert check_complete(job)[1] == ""
    assert "changed" in check_complete(replace(job, seed=1))[1]
    assert "changed" in check_complete(replace(job, overrides=()))[1]
    assert check_complete(replace(job, threads=1, attempt=2))[1] == "", (
        "threads and attempts are not settings"
    )
    write_points(tmp_path / "a" / "tgt.ply", PointCloud(deform(surface(280, 5))))
    record, reason = check_complete(job)
    assert record is None and "changed" in reason


@pytest.mark.slow
def test_kill_9_mid_batch_then_resume(tmp_path):
    """A real ``kill -9`` of the batch and its workers half-way, then the same command again."""
    rows = {f"p{i}": write_pair(tmp_path / f"c{i}") for i in range(1, 5)}
    manifest = write_manifest(tmp_path / "m.csv", rows)
    outdir = tmp_path / "out"
    cmd = [sys.executable, "-m", "register", *map(str, batch_args(manifest, outdir, "--workers", "1", "-q"))]
    proc = subprocess.Popen(cmd, env=subprocess_env(), start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.time() + TIMEOUT
    while not (outdir / "p2" / "status.json").exists():
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {pid: snapshot(outdir / pid) for pid in rows if (outdir / pid).is_dir()}
    assert {"p1", "p2"} <= set(finished)
    again = subprocess.run(
        [*cmd[:-1], "--json"], env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert out["skipped"] == len(finished) and out["ran"] == 4 - len(finished)
    for pid, files in finished.items():
        assert snapshot(outdir / pid) == files
    assert all(set(os.listdir(outdir / pid)) == BATCH_FILES for pid in rows)
    assert hidden(outdir) == []


# ------------------------------------------------------------------------- 4. a worker that dies


class DyingJob(PairJob):
    """A pair whose worker process is killed (as the out-of-memory killer would) as it starts."""

    def __setstate__(self, state):  # runs in the worker, when the job arrives
        os.kill(os.getpid(), signal.SIGKILL)


def test_dead_worker_fails_its_pair_only_and_is_retried(tmp_path):
    rows = {"p1": write_pair(tmp_path / "a"), "dies": write_pair(tmp_path / "b")}
    manifest = write_manifest(tmp_path / "m.csv", rows)
    outdir = tmp_path / "out"
    jobs = plan(read_manifest(manifest), outdir, BatchOptions(overrides=OVERRIDES, images=False))
    jobs[1] = DyingJob(**jobs[1].__dict__)
    events = []
    with LocalRunner(2, threads=1) as runner:
        options = BatchOptions(retries=1)
        table, info = run_batch(
            jobs, outdir, runner, options, on_event=lambda e, j, r: events.append((e, j.id))
        )
    rows = {r["id"]: r for r in table}
    assert rows["p1"]["status"] == "ok"
    dead = rows["dies"]
    assert dead["status"] == "failed" and dead["error_kind"] == "crash" and dead["attempt"] == 2
    assert "SIGKILL" in dead["error"] and dead["wall_seconds"] > 0
    assert ("retry", "dies") in events and info["counts"]["failed"] == 1
    assert set(os.listdir(outdir / "dies")) == FAILED_FILES
    assert "SIGKILL" in (outdir / "dies" / "register.log").read_text()
    assert (outdir / "p1" / "status.json").is_file()
    assert hidden(outdir) == []


# ------------------------------------------------------------------------- 5. Dask gives the same results


def test_dask_local_cluster_matches_local_workers(batch_run, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    import dask

    _, _, manifest, outdir, _ = batch_run
    dask_out = tmp_path / "dask_out"
    # Dask's nannies set OMP_NUM_THREADS=1 (and more) in this process's environment: restore it
    # afterwards, so later tests' subprocesses keep their thread counts.
    for key in dask.config.get("distributed.nanny.pre-spawn-environ", {}):
        monkeypatch.setenv(key, os.environ.get(key, ""))  # remembers the original (or its absence)
        if not os.environ[key]:
            monkeypatch.delenv(key)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        result = invoke(batch_args(manifest, dask_out, "--scheduler", cluster.scheduler_address, "--json"))
    assert result.exit_code == 3, stderr_of(result)
    out = json.loads(result.stdout)
    assert (out["ok"], out["failed_ids"]) == (3, ["broken"])
    for pid in ("p1", "p2", "p3"):
        assert_same_result(outdir / pid, dask_out / pid)
        assert set(os.listdir(dask_out / pid)) == BATCH_FILES
    assert summary(dask_out)["broken"]["error"] == summary(outdir)["broken"]["error"]


def test_batch_with_stderr_to_a_file_logs_one_timestamped_line_per_pair(tmp_path):
    """With stderr redirected (a SLURM log), each pair's start and end is a plain line written
    as it happens (flushed), not a progress bar drawn at the end."""
    manifest = write_cohort(tmp_path)
    log = tmp_path / "batch.log"
    with log.open("w") as err:
        cmd = [sys.executable, "-m", "register.app.cli", *map(str, batch_args(manifest, tmp_path / "out"))]
        subprocess.run(cmd, env=subprocess_env(), stderr=err, stdout=subprocess.DEVNULL, timeout=TIMEOUT)
    lines = log.read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"
    for pid in ("p1", "p2", "p3"):
        assert any(re.fullmatch(rf"{stamp} pair {pid}: started", line) for line in lines), lines
        assert any(re.fullmatch(rf"{stamp} pair {pid}: ok in [\d.]+ s, .* \[\d/4\]", line) for line in lines)
    assert any(re.fullmatch(rf"{stamp} pair broken: failed: .*truncated.* \[\d/4\]", line) for line in lines)
    # no progress bar, no terminal control codes (the final table follows the lines)
    assert not any("\x1b[" in line or line.startswith("pairs ") for line in lines)


@pytest.mark.parametrize(("env", "expected"), [({"OMP_NUM_THREADS": "1"}, 1), ({"OMP_NUM_THREADS": "3"}, 3)])
def test_batch_threads_follow_omp_num_threads_without_threads_option(env, expected):
    from register.app.batch.local import default_threads

    assert default_threads(2, env) == expected
    assert default_threads(1, {}) >= 1 and default_threads(1, {"OMP_NUM_THREADS": "x"}) >= 1
