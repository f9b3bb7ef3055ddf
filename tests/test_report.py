"""``register report`` and ``register show``: the HTML page over a batch and the 3-D result view.

The batch here runs in this process (an in-process runner around the real per-pair job), so
the file needs no worker processes: the cohort of ``test_batch`` (tiny pairs), one of which
has an unreadable file, and one of which is made to look as if it never ran (pending).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from test_batch import OVERRIDES, write_cohort
from test_cli import assert_input_error, invoke, stderr_of

from register.app.batch import BatchOptions, plan, read_manifest, run_batch, run_pair
from register.app.report import write_report
from register.app.result_reader import read_result
from register.app.viz_show import ResultView

Image = pytest.importorskip("PIL.Image")

IMG = re.compile(r'<img src="([^"]+)"')
ROW = re.compile(
    r'<tr class="(\w+)" data-rank="\d"><td class="text" data-v="\w+">\w+</td><td class="text" data-v="([^"]*)"'
)


class InProcessRunner:
    """Runs each pair at once, in this process (the driver's runner interface)."""

    capacity = 1
    threads = None  # leave this process's torch thread count alone

    def __init__(self) -> None:
        self.done: list = []

    def describe(self) -> str:
        return "this process"

    def submit(self, job) -> None:
        self.done.append((job, run_pair(job)))

    def wait(self) -> list:
        done, self.done = self.done, []
        return done


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    manifest = write_cohort(root)
    outdir = root / "out"
    jobs = plan(read_manifest(manifest), outdir, BatchOptions(overrides=OVERRIDES))
    run_batch(jobs, outdir, InProcessRunner(), manifest=manifest)
    # p3 never ran: as if the batch was stopped before it.
    (outdir / "p3" / "status.json").unlink()
    status = json.loads((outdir / "p2" / "status.json").read_text())
    if status["status"] != "ok" and "rendering failed" in (status["record"]["error"] or ""):
        pytest.skip(f"off-screen rendering is not possible here: {status['record']['error']}")
    return outdir


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=float)


def assert_not_blank(png: bytes) -> None:
    """A real picture: PNG, many colours, pixel values that vary, not all background."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    rgb = pixels(png)
    assert rgb.shape[0] >= 200 and rgb.shape[1] >= 200
    assert rgb.std() > 5, f"pixel standard deviation {rgb.std():.2f}: a blank picture"
    background = (rgb == rgb[0, 0]).all(axis=2).mean()
    assert background < 0.995, f"{background:.1%} of the pixels are background"
    packed = rgb.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
    assert len(np.unique(packed)) > 50, "too few colours"


def test_report_lists_every_pair_failures_first(batch_dir):
    path = write_report(batch_dir)
    assert path == batch_dir / "report.html"
    page = path.read_text()
    rows = ROW.findall(page)
    assert [status for status, _ in rows] == ["failed", "pending", "ok", "ok"]
    assert [pid for _, pid in rows][:2] == ["broken", "p3"]
    assert {pid for _, pid in rows} == {"p1", "p2", "p3", "broken"}
    assert "truncated" in page  # the failure's message is shown
    assert "4 pairs: 2 ok, 1 failed, 1 pending" in page


def test_report_successes_are_sorted_worst_error_first(batch_dir):
    page = write_report(batch_dir).read_text()
    ok_ids = [pid for status, pid in ROW.findall(page) if status == "ok"]
    summary = {r["id"]: r for r in json.loads((batch_dir / "summary.json").read_text())["pairs"]}
    error = {pid: summary[pid]["tre_after"] or summary[pid]["chamfer_after"] for pid in ok_ids}
    assert error[ok_ids[0]] >= error[ok_ids[1]]


def test_report_links_images_that_exist_and_are_not_blank(batch_dir):
    page = write_report(batch_dir).read_text()
    sources = IMG.findall(page)
    assert len(sources) == 2  # the two successes
    for src in sources:
        path = batch_dir / unquote(html.unescape(src))
        assert path.is_file(), src
        assert_not_blank(path.read_bytes())
    for href in re.findall(r'href="([^"]+)"', page):
        assert (batch_dir / unquote(html.unescape(href))).is_file(), href


def test_report_is_self_contained(batch_dir, tmp_path):
    page = write_report(batch_dir).read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page loads something from the network"
    assert "<script>" in page and "function sortBy" in page and 'onclick="sortBy(this)"' in page
    (tmp_path / "qa").mkdir()
    moved = write_report(batch_dir, tmp_path / "qa" / "cohort.html", embed=True)
    embedded = moved.read_text()
    sources = IMG.findall(embedded)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    for src in sources:
        assert_not_blank(base64.b64decode(src.split(",", 1)[1]))
    for href in re.findall(r'href="([^"]+)"', embedded):  # links still reach the batch folder
        assert (moved.parent / unquote(html.unescape(href))).resolve().is_file(), href


def test_report_overwrites_only_its_own_page(batch_dir, tmp_path):
    write_report(batch_dir)
    write_report(batch_dir)  # an earlier report is regenerated
    mine = tmp_path / "notes.html"
    mine.write_text("<html>my notes</html>")
    assert_input_error(invoke(["report", batch_dir, "-o", mine]), "notes.html", "--overwrite")
    assert mine.read_text() == "<html>my notes</html>"
    result = invoke(["report", batch_dir, "-o", mine, "--overwrite"])
    assert result.exit_code == 0, stderr_of(result)
    assert "register report" in mine.read_text()


def test_report_of_a_folder_that_is_not_a_batch(tmp_path):
    assert_input_error(invoke(["report", tmp_path]), str(tmp_path), "batch.json")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------- register show


def test_show_renders_a_result_with_landmarks(batch_dir, tmp_path):
    view = ResultView(**read_result(batch_dir / "p1"))
    assert view.landmarks is not None and view.landmarks[0].shape == (20, 3)
    metrics = json.loads((batch_dir / "p1" / "metrics.json").read_text())
    errors = np.linalg.norm(view.landmarks[0] - view.landmarks[1], axis=1)
    np.testing.assert_allclose(errors, metrics["landmarks"]["per_landmark_after"], rtol=1e-9)
    assert read_result(batch_dir / "p2")["landmarks"] is None

    shot = tmp_path / "p1.png"
    result = invoke(["show", batch_dir / "p1", "--screenshot", shot])
    assert result.exit_code == 0, stderr_of(result)
    assert_not_blank(shot.read_bytes())
    assert_input_error(invoke(["show", batch_dir / "p1", "--screenshot", shot]), "--overwrite")


def test_show_names_a_moved_target_and_a_non_result(batch_dir, tmp_path):
    metrics = json.loads((batch_dir / "p2" / "metrics.json").read_text())
    moved = tmp_path / "p2"
    moved.mkdir()
    for name in ("field.npz", "transform.npz"):
        (moved / name).write_bytes((batch_dir / "p2" / name).read_bytes())
    (moved / "metrics.json").write_text(json.dumps({**metrics, "target": str(tmp_path / "gone.ply")}))
    assert_input_error(invoke(["show", moved, "--screenshot", tmp_path / "x.png"]), "gone.ply", "--target")
    result = invoke(["show", moved, "--target", metrics["target"], "--screenshot", tmp_path / "x.png"])
    assert result.exit_code == 0, stderr_of(result)
    assert_input_error(invoke(["show", batch_dir / "broken"]), "field.npz", "result folder")


def test_report_opens_with_the_cohort_summary_and_three_plots(batch_dir):
    page = write_report(batch_dir).read_text()
    rows = json.loads((batch_dir / "summary.json").read_text())["pairs"]
    ok = [r for r in rows if r["status"] == "ok"]
    key = "tre_after" if any(r["tre_after"] is not None for r in ok) else "chamfer_after"
    ok = [r for r in ok if r[key] is not None]  # the metric's pairs (TRE: those with landmarks)
    after = np.array([r[key] for r in ok])
    summary = re.search(r'<p class="summary" id="cohort-summary">(.*?)</p>', page).group(1)
    assert "4 pairs</b>: 2 ok, 1 failed, 1 pending" in summary
    assert f"over the {len(ok)} finished pairs that have it" in summary
    assert (
        f"mean {after.mean():.4g}, median {np.median(after):.4g}, p95 {np.percentile(after, 95):.4g}"
        in summary
    )
    for plot in ("plot-errors", "plot-histogram", "plot-seconds"):
        assert f'<svg id="{plot}"' in page
    errors = re.search(r'<svg id="plot-errors".*?</svg>', page).group(0)
    # one bar before and one after per finished pair (with a tooltip naming it), plus the legend
    assert len(re.findall(r"<rect [^>]*><title>", errors)) == 2 * len(ok)
    histogram = re.search(r'<svg id="plot-histogram".*?</svg>', page).group(0)
    counts = [int(c) for c in re.findall(r": (\d+) pairs</title>", histogram)]
    assert sum(counts) == len(ok)


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_report_renders_in_headless_chromium_without_network(batch_dir, tmp_path):
    """The page as a real browser lays it out (scripts run): the summary and the plots are in
    the rendered DOM, and a screenshot is not blank. Network access is refused to the browser
    (a proxy that does not exist), so anything fetched from the network would be missing."""
    import subprocess

    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    page = write_report(batch_dir, tmp_path / "report.html", embed=True)
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--proxy-server=http://127.0.0.1:9",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert 'id="cohort-summary"' in dom and dom.count('class="plot"') == 3
    shot = tmp_path / "report.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1300,1100", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert_not_blank(shot.read_bytes())
