"""Drive a batch: plan the pairs, skip the complete ones, run the rest, retry, summarise.

    pairs = read_manifest(Path("cohort.csv"))
    jobs = plan(pairs, Path("out"), BatchOptions(pipeline="lung"))
    check_outdir(Path("out"))
    with LocalRunner(workers=2) as runner:   # or DaskRunner("tcp://host:8786")
        rows, batch = run_batch(jobs, Path("out"), runner, manifest=Path("cohort.csv"))

The output folder holds ``batch.json`` (what was asked), one folder per pair (see
:mod:`register.app.batch.job`), ``summary.csv`` / ``summary.json`` and a hidden lock file. Only
one batch at a time may write into it (an advisory lock, released even by ``kill -9``). On
start, every hidden temporary left by an interrupted run is removed, and every pair whose
folder is not a complete, valid, up-to-date success is (re)run.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from register.app.batch.job import PairJob, check_complete, record_crash, remove
from register.app.batch.manifest import PairSpec
from register.app.batch.summary import BATCH_FILE, SUMMARY_CSV, SUMMARY_JSON, counts, row_of, write_summary
from register.errors import InputError

LOCK_FILE = ".batch.lock"
BATCH_VERSION = 1
# ``on_event(event, job, record)`` of :func:`run_batch`.
Notify = Callable[[str, PairJob, dict | None], None]


@dataclass(frozen=True)
class BatchOptions:
    """Settings shared by every pair (a manifest's ``pipeline`` / ``weights`` cells win).

    Attributes:
        pipeline: default preset name or ``.toml`` path.
        weights: default point attribute used as mass (``None``: the pipeline's choice).
        seed: seed of every pair (results do not depend on which runner runs them).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        overrides: ``TABLE.KEY=VALUE`` config overrides for every pair.
        stages: comma-separated stages, or ``None``.
        images: render each pair's ``qa.png``.
        retries: re-runs of a pair that failed for a reason other than bad input.
    """

    pipeline: str = "default"
    weights: str | None = None
    seed: int = 0
    device: str = "auto"
    overrides: tuple[str, ...] = ()
    stages: str | None = None
    images: bool = True
    retries: int = 0


def plan(pairs: list[PairSpec], outdir: Path, options: BatchOptions) -> list[PairJob]:
    """One :class:`PairJob` per manifest pair, writing to ``outdir / id``."""
    outdir = Path(outdir).resolve()
    return [
        PairJob(
            id=p.id,
            outdir=outdir,
            source=p.source,
            target=p.target,
            landmarks=p.landmarks,
            pipeline=p.pipeline or options.pipeline,
            weights=p.weights or options.weights,
            seed=options.seed,
            device=options.device,
            overrides=tuple(options.overrides),
            stages=options.stages,
            images=options.images,
        )
        for p in pairs
    ]


def check_outdir(outdir: Path) -> None:
    """Refuse an ``outdir`` that is neither new, empty, nor the output of an earlier batch."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"-o {outdir}: exists and is not a folder; choose another output folder")
    if outdir.is_dir() and any(outdir.iterdir()) and not (outdir / BATCH_FILE).is_file():
        raise InputError(
            f"-o {outdir}: folder exists, is not empty and is not a batch output (no {BATCH_FILE}); "
            "choose a new or empty folder (a batch folder is resumed, never anything else)"
        )
    if not outdir.exists() and not outdir.parent.is_dir():
        raise InputError(f"-o {outdir}: parent folder {outdir.parent} does not exist")
    # Can we write there (a read-only or full file system fails here, not after the first pair)?
    probe = (outdir if outdir.is_dir() else outdir.parent) / f".batch.{os.getpid()}.probe"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise InputError(
            f"-o {outdir}: cannot write in {probe.parent} ({exc.strerror or exc}); choose a folder where you can write"
        ) from None


def check_pair_inputs(jobs: list[PairJob]) -> None:
    """Refuse a batch in which a pair's folder holds one of the pair's inputs: the folder is
    replaced as a whole whenever the pair runs (again)."""
    from register.app.run import input_files

    problems = []
    for job in jobs:
        folder = job.folder.resolve()
        for item in input_files(job.request()):
            real = Path(item).resolve()
            if real == folder or folder in real.parents:
                problems.append(f"pair {job.id}: its input {item} is inside its output folder {folder}")
    if problems:
        raise InputError(
            f"{len(problems)} pair(s) would replace their own inputs; move the inputs out of the pair "
            "folders (nothing was run):\n  " + "\n  ".join(problems)
        )


@contextlib.contextmanager
def _locked(outdir: Path) -> Iterator[None]:
    """Hold the batch lock of ``outdir`` (released when the process ends, even by ``kill -9``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    fd = os.open(outdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"-o {outdir}: another register batch is writing into this folder; wait for it to "
                "finish or choose another output folder"
            ) from None
        yield
    finally:
        os.close(fd)


def _clean_temporaries(outdir: Path) -> list[Path]:
    """Remove the hidden temporaries interrupted runs left (we hold the lock: none is live)."""
    from register.app.staging import stale_temporaries

    stale = [*stale_temporaries(outdir), *outdir.glob(".*.log.partial"), *outdir.glob(".*.tmp")]
    for path in stale:
        remove(path)
    return stale


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def run_batch(
    jobs: list[PairJob],
    outdir: Path,
    runner,
    options: BatchOptions | None = None,
    *,
    manifest: Path | None = None,
    on_event: Notify | None = None,
) -> tuple[list[dict], dict]:
    """Run every pair of ``jobs`` that is not complete; returns the summary rows and batch info.

    Args:
        jobs: from :func:`plan` (``outdir`` checked with :func:`check_outdir`).
        outdir: the batch's output folder (created if needed).
        runner: :class:`~register.app.batch.local.LocalRunner` or
            :class:`~register.app.batch.dask_runner.DaskRunner` (closed by the caller).
        options: the options the jobs were planned with (recorded in ``batch.json`` and
            ``summary.json``); its ``retries`` are used here.
        manifest: recorded in ``batch.json`` and ``summary.json``.
        on_event: called as ``on_event(event, job, record)`` with event ``skipped`` (complete
            from an earlier run), ``started``, ``retry`` (failed, submitted again) or ``done``.

    Returns:
        ``(rows, batch)``: one summary row per job, in order, and the ``batch`` table of
        ``summary.json`` (runner, times, counts).
    """
    from register.core.files import atomic_write

    outdir = Path(outdir)
    retries = options.retries if options else 0
    notify = on_event or (lambda event, job, record: None)
    outdir.mkdir(exist_ok=True)
    t0, started = time.perf_counter(), _now()
    with _locked(outdir):
        _clean_temporaries(outdir)
        batch = _batch_record(jobs, outdir, runner, options, manifest, started)
        text = json.dumps(batch, indent=2) + "\n"
        atomic_write(outdir / BATCH_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        rows = {job.id: row_of(None, job.id) for job in jobs}
        queue = _incomplete(jobs, rows, notify)

        def save() -> None:
            batch.update(finished=_now(), wall_seconds=time.perf_counter() - t0)
            table = [rows[job.id] for job in jobs]
            batch["counts"] = counts(table)
            write_summary(outdir, table, batch)

        save()
        try:
            _run_queue(queue, runner, retries, rows, notify, save)
        finally:
            save()
    return [rows[job.id] for job in jobs], batch


def _batch_record(
    jobs: list[PairJob],
    outdir: Path,
    runner,
    options: BatchOptions | None,
    manifest: Path | None,
    started: str,
) -> dict:
    """What ``batch.json`` records: the pairs, options, runner and start time (UTC)."""
    return {
        "format_version": BATCH_VERSION,
        "manifest": str(manifest) if manifest else None,
        "outdir": str(outdir.resolve()),
        "pairs": [job.id for job in jobs],
        "options": asdict(options) if options else None,
        "runner": runner.describe(),
        "started": started,
    }


def _incomplete(jobs: list[PairJob], rows: dict[str, dict], notify: Notify) -> deque[PairJob]:
    """The jobs to run, in order; a complete one (:func:`check_complete`) gets its ``skipped``
    row in ``rows`` instead."""
    queue: deque[PairJob] = deque()
    for job in jobs:
        record, _reason = check_complete(job)
        if record is not None:
            rows[job.id] = row_of(record, job.id, "skipped")
            notify("skipped", job, record)
        else:
            queue.append(job)
    return queue


def _run_queue(
    queue: deque[PairJob],
    runner,
    retries: int,
    rows: dict[str, dict],
    notify: Notify,
    save: Callable[[], None],
) -> None:
    """Run the queued jobs, at most ``runner.capacity`` at a time, until none is left or running.

    A pair whose worker died gets its failure folder (:func:`record_crash`); one that failed
    for a reason other than bad input goes back to the front of the queue while its attempts
    are at most ``retries``; any other finished pair gets its ``ran`` row in ``rows``, then
    ``save()`` writes the summary.
    """
    running = 0
    submitted: dict[str, float] = {}
    while queue or running:
        while queue and running < runner.capacity:
            job = replace(queue.popleft(), threads=runner.threads)
            submitted[job.id] = time.time()
            runner.submit(job)
            running += 1
            notify("started", job, None)
        for job, record in runner.wait():
            running -= 1
            if record.get("error_kind") == "crash":
                _complete_crash_record(record, submitted[job.id])
                record_crash(job, record)
            if record["status"] != "ok" and record.get("error_kind") != "input" and job.attempt <= retries:
                queue.appendleft(job.retry())
                notify("retry", job, record)
                continue
            rows[job.id] = row_of(record, job.id, "ran")
            notify("done", job, record)
            save()


def _complete_crash_record(record: dict, submitted: float) -> None:
    """Times of a pair whose worker died (the runner only knows the error)."""
    start = datetime.datetime.fromtimestamp(submitted, datetime.UTC)
    record.setdefault("started", start.isoformat(timespec="seconds"))
    record.setdefault("finished", _now())
    record.setdefault("wall_seconds", time.time() - submitted)


__all__ = [
    "BATCH_FILE",
    "SUMMARY_CSV",
    "SUMMARY_JSON",
    "BatchOptions",
    "check_outdir",
    "check_pair_inputs",
    "plan",
    "run_batch",
]
