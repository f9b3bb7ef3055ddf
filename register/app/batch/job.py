"""One pair of a batch: a pure function from a :class:`PairJob` to a result folder and a record.

``run_pair(job)`` writes ``OUTDIR/<id>/`` in one atomic rename: exactly what ``register run``
writes (same code path, :mod:`register.app.run`), plus

    register.log   the pair's log (settings, stage levels, the error with its traceback)
    qa.png         before / after overlays side by side (unless images are off)
    status.json    written last inside the folder: status, times, the settings and input
                   checksums that produced the result, and the size and SHA-256 of every file

A failed pair gets a folder with ``register.log`` and ``status.json`` (status ``failed`` and
the error) only. A folder counts as complete only when :func:`check_complete` accepts its
``status.json``: status ``ok``, same settings and inputs, every file present with its checksum.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import platform
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from register.core.threads import torch_threads
from register.errors import InputError

STATUS = "status.json"
LOG = "register.log"
IMAGE = "qa.png"
STATUS_VERSION = 1
# The reliability report's entries (metrics.json's ``reliability``) copied into a pair's record.
RELIABILITY_FIELDS = (
    "verdict",
    "matched_mass",
    "heldout_residual_before",
    "heldout_residual_after",
    "folded_fraction",
    "log_jacobian_std",
)
_CHUNK = 1 << 20

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairJob:
    """Everything a worker needs to register one pair (picklable: sent to other processes).

    Attributes:
        id: the pair's name; the result goes to ``outdir / id``.
        outdir: the batch's output folder (shared with the workers).
        source, target: point files (absolute paths).
        landmarks: ``(source_landmarks, target_landmarks)`` files, or ``None``.
        pipeline: preset name or ``.toml`` path.
        weights: point attribute used as mass, or ``None`` for the pipeline's choice.
        seed: seed of every random subsample (the same for every runner: identical results).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        overrides: ``TABLE.KEY=VALUE`` config overrides.
        stages: comma-separated stages, or ``None`` for the pipeline's.
        images: render ``qa.png``.
        threads: torch threads of the registration (``None``: leave as is).
        attempt: 1 for the first try, 2 for the first retry, ...
    """

    id: str
    outdir: Path
    source: Path
    target: Path
    landmarks: tuple[Path, Path] | None = None
    pipeline: str = "default"
    weights: str | None = None
    seed: int = 0
    device: str = "auto"
    overrides: tuple[str, ...] = ()
    stages: str | None = None
    images: bool = True
    threads: int | None = None
    attempt: int = 1

    @property
    def folder(self) -> Path:
        return self.outdir / self.id

    def request(self):
        """The :class:`register.app.run.RunRequest` of this pair (what ``register run`` would get)."""
        from register.app.run import RunRequest

        return RunRequest(
            source=self.source,
            target=self.target,
            pipeline=self.pipeline,
            stages=self.stages,
            weights=self.weights,
            device=self.device,
            seed=self.seed,
            overrides=self.overrides,
            landmarks=self.landmarks,
        )

    def retry(self) -> PairJob:
        return replace(self, attempt=self.attempt + 1)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(job: PairJob) -> dict:
    """The settings and input checksums that determine a pair's result (not times or threads)."""
    from register.io import file_part

    inputs = [file_part(job.source), file_part(job.target), *(job.landmarks or ())]
    return {
        "source": str(job.source),
        "target": str(job.target),
        "landmarks": [str(p) for p in job.landmarks] if job.landmarks else None,
        "input_sha256": [sha256(p) if p.is_file() else None for p in inputs],
        "pipeline": job.pipeline,
        "weights": job.weights,
        "seed": job.seed,
        "device": job.device,
        "overrides": list(job.overrides),
        "stages": job.stages,
        "images": job.images,
    }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _file_table(folder: Path) -> dict[str, dict]:
    return {
        p.name: {"size": p.stat().st_size, "sha256": sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != STATUS
    }


def _write_status(folder: Path, record: dict, spec: dict) -> None:
    from register.app.outputs import json_safe
    from register.core.files import atomic_write

    status = {
        "format_version": STATUS_VERSION,
        "status": record["status"],
        "record": record,
        "spec": spec,
        "files": _file_table(folder),
    }
    text = json.dumps(json_safe(status), indent=2) + "\n"
    atomic_write(folder / STATUS, lambda tmp: tmp.write_text(text))


def read_status(folder: Path) -> dict | None:
    """The parsed ``status.json`` of a pair folder, or ``None`` if absent or unreadable."""
    try:
        status = json.loads((folder / STATUS).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) and isinstance(status.get("record"), dict) else None


def check_complete(job: PairJob, spec: dict | None = None) -> tuple[dict | None, str]:
    """Whether ``job``'s folder holds a complete, valid, up-to-date success.

    Args:
        job: the pair.
        spec: its :func:`fingerprint` (computed when not given).

    Returns:
        ``(record, "")`` when complete (``record`` from its ``status.json``), else
        ``(None, reason)`` saying why the pair must be (re)done.
    """
    folder = job.folder
    if not folder.is_dir():
        return None, "not run yet"
    status = read_status(folder)
    if status is None:
        return None, f"{folder}: no readable {STATUS} (interrupted or not a batch result)"
    if status.get("status") != "ok" or status.get("format_version") != STATUS_VERSION:
        return None, f"previous attempt {status.get('status')}"
    if status.get("spec") != (spec if spec is not None else fingerprint(job)):
        return None, "inputs or settings changed since it ran"
    files = status.get("files") or {}
    for name, expected in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != expected.get("size"):
            return None, f"{path}: missing or of the wrong size"
        if sha256(path) != expected.get("sha256"):
            return None, f"{path}: checksum differs"
    if not {"transform.npz", "metrics.json", LOG} <= set(files):
        return None, f"{folder}: incomplete file list in {STATUS}"
    return status["record"], ""


class _ThreadFilter(logging.Filter):
    """Passes the records of one thread only (pairs may run side by side in a Dask worker)."""

    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


def _record_of(job: PairJob, metrics: dict) -> dict:
    """The summary fields of a successful pair (times s, counts, chamfer and TRE in data units,
    the reliability verdict and measures)."""
    lm = metrics.get("landmarks")
    rel = metrics.get("reliability") or {}
    return {
        "seconds": metrics["total_seconds"],
        "source_points": metrics["source_points"],
        "target_points": metrics["target_points"],
        "chamfer_before": metrics["chamfer_before"],
        "chamfer_after": metrics["chamfer_after"],
        "landmarks": lm["count"] if lm else None,
        "tre_before": lm["before"]["mean"] if lm else None,
        "tre_after": lm["after"]["mean"] if lm else None,
        "tre_after_p95": lm["after"]["p95"] if lm else None,
        **{key: rel.get(key) for key in RELIABILITY_FIELDS},
        "image": IMAGE if job.images else None,
    }


def run_pair(job: PairJob) -> dict:
    """Register one pair into ``job.folder``; a failing pair is recorded, not raised.

    Returns:
        The pair's record: ``id``, ``status`` (``ok`` or ``failed``), ``error`` and
        ``error_kind`` (``input``: bad file or setting, retrying cannot help; ``error``:
        anything else, e.g. out of memory), ``attempt``, ``started`` / ``finished`` (UTC),
        ``wall_seconds`` (the whole job), ``seconds`` (the registration), point counts,
        chamfer and TRE before/after (data units), the reliability verdict and measures
        (:data:`RELIABILITY_FIELDS`), ``host``, ``pid``, ``threads``.
    """
    t0 = time.perf_counter()
    base = {
        "id": job.id,
        "status": "failed",
        "error": None,
        "error_kind": None,
        "attempt": job.attempt,
        "started": _now(),
        "host": platform.node(),
        "pid": os.getpid(),
        "threads": job.threads,
    }
    record = dict(base)
    spec: dict = {}  # the pair's fingerprint, once computed (a failure before it records {})
    with _pair_log(job) as (log_path, handler):

        def commit(tmp: Path) -> None:
            """Put the log and, last, ``status.json`` into the folder about to be committed."""
            record["finished"] = _now()
            record["wall_seconds"] = time.perf_counter() - t0
            log.info("pair %s: %s after %.1f s", job.id, record["status"], record["wall_seconds"])
            handler.flush()
            shutil.copyfile(log_path, tmp / LOG)
            _write_status(tmp, record, spec)

        try:
            _register(job, record, spec, commit)
        except Exception as exc:
            record.clear()
            record.update(base, error_kind="input" if isinstance(exc, InputError) else "error")
            record["error"] = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            log.error("pair %s failed: %s\n%s", job.id, record["error"], traceback.format_exc())
            _failure_folder(job, commit, record)
    return record


@contextmanager
def _pair_log(job: PairJob) -> Iterator[tuple[Path, logging.Handler]]:
    """Send this thread's records of the ``register`` loggers to a hidden
    ``.<id>.<hex>.log.partial`` file beside the pair's folder (the level lowered to INFO if it
    is higher); yields its path and handler. The handler is removed and closed and the file
    deleted when the block ends, however it ends."""
    log_path = job.outdir / f".{job.id}.{uuid.uuid4().hex[:12]}.log.partial"
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ThreadFilter(threading.get_ident()))
    logger = logging.getLogger("register")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield log_path, handler
    finally:
        logger.removeHandler(handler)
        handler.close()
        log_path.unlink(missing_ok=True)


def _register(job: PairJob, record: dict, spec: dict, commit: Callable[[Path], None]) -> None:
    """Register the pair and commit its folder: the result files, the QA picture, then
    ``commit(tmp)`` (log and ``status.json``). Fills ``spec`` (:func:`fingerprint`) first and
    ``record`` with the success fields; raises on any failure (nothing committed)."""
    from register.app.output_folder import check_output
    from register.app.outputs import write_result
    from register.app.run import execute, input_files, prepare, result_size

    spec.update(fingerprint(job))
    log.info("pair %s, attempt %d, on %s (pid %d)", job.id, job.attempt, record["host"], record["pid"])
    log.info("settings %s", json.dumps(spec))
    request = job.request()
    # The pair's folder is checked before the registration and committed by the one routine
    # of register run (an earlier result of the pair is replaced, nothing else).
    out = check_output(job.folder, overwrite=True, inputs=input_files(request), label=f"pair {job.id}")
    inputs = prepare(request)
    out.check_space(result_size(inputs))
    out.check_writers(inputs.source)
    with torch_threads(job.threads):  # restored after: the worker runs other pairs
        result, metrics = execute(inputs)
    record.update(status="ok", **_record_of(job, metrics))

    def add_extras(tmp: Path) -> None:
        if job.images:
            from register.app.viz import figures_of, render

            src, tgt = inputs.source.points, inputs.target.points
            figures = figures_of(result, metrics)
            render(src, tgt, result.warped, screenshot=tmp / IMAGE, title=job.id, **figures)
        commit(tmp)

    write_result(out, inputs.source, result, metrics, before_commit=add_extras)


def _failure_folder(job: PairJob, fill, record: dict) -> None:
    """Commit the folder of a failed pair (``fill(tmp)`` writes it); a pair folder that may not be
    replaced (it holds files register did not write) is left as it is, the record says so."""
    from register.app.output_folder import atomic_folder

    try:
        with atomic_folder(job.folder, overwrite=True) as tmp:
            fill(tmp)
    except InputError as exc:
        record["error"] = f"{record['error']} (no failure folder written: {exc})"
        log.error("pair %s: %s", job.id, exc)


def record_crash(job: PairJob, record: dict) -> None:
    """Write the failure folder of a pair whose worker died (``record`` from the runner).

    The pair's log up to the crash (its hidden ``.<id>.*.log.partial`` file) becomes its
    ``register.log``; hidden temporaries of the pair are removed.
    """
    from register.app.staging import stale_temporaries

    logs = sorted(job.outdir.glob(f".{job.id}.*.log.partial"), key=lambda p: p.stat().st_mtime)

    def fill(tmp: Path) -> None:
        if logs:
            shutil.copyfile(logs[-1], tmp / LOG)
        with open(tmp / LOG, "a", encoding="utf-8") as fh:
            fh.write(f"{_now()} ERROR {__name__}: pair {job.id} failed: {record['error']}\n")
        _write_status(tmp, record, fingerprint(job))

    _failure_folder(job, fill, record)
    for path in [*logs, *stale_temporaries(job.outdir, job.id)]:
        remove(path)


def remove(path: Path) -> None:
    """Delete a file or a folder tree (a stale temporary), ignoring what is already gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
