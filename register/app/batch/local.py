"""Run pairs in local worker processes (``register batch --workers N``).

Each worker is a fresh ``spawn``-ed Python process that runs one pair at a time, so torch is
imported once per worker, a crashed worker (out of memory, killed) fails exactly the pair it
held, and its memory goes back to the system. Workers set ``OMP_NUM_THREADS`` and torch's
thread count before torch is imported, and die with the process that started them (Linux
``PR_SET_PDEATHSIG``), so a killed batch leaves no orphan writing into the output folder.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from register.app.batch.job import PairJob


def default_threads(workers: int, environ: dict | None = None) -> int:
    """Torch threads per pair when ``workers`` pairs run side by side on this machine and no
    ``--threads`` was given: ``OMP_NUM_THREADS`` when it is set to a positive integer (a thread
    budget the user or the job scheduler set for this process), else the cores shared out."""
    value = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // workers)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker(conn: Connection, threads: int, parent: int) -> None:
    """Worker process: receive jobs, send back records, until ``None`` arrives."""
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)
    # Ctrl-C reaches the whole process group: the batch handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import logging

    # The pair's log file is its only log; nothing goes to the batch's terminal.
    logging.getLogger().addHandler(logging.NullHandler())
    from register.app.batch.job import run_pair

    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        conn.send(run_pair(job))


@dataclass
class _Slot:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    job: PairJob | None = None


def _crash_record(job: PairJob, exitcode: int | None) -> dict:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(-exitcode)
        how = f"killed by signal {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        how = f"exited with code {exitcode}"
    return {
        "id": job.id,
        "status": "failed",
        "error": f"worker process {how} while registering this pair; see {job.folder}",
        "error_kind": "crash",
        "attempt": job.attempt,
    }


class LocalRunner:
    """Up to ``workers`` pairs at a time, each in its own worker process.

    Args:
        workers: worker processes (pairs run side by side).
        threads: torch threads per pair (default: cores // workers).
    """

    def __init__(self, workers: int, threads: int | None = None) -> None:
        self.capacity = workers
        self.threads = threads or default_threads(workers)
        self._context = multiprocessing.get_context("spawn")
        self._slots: list[_Slot] = []

    def describe(self) -> str:
        return f"{self.capacity} local worker process(es), {self.threads} thread(s) each"

    def _idle_slot(self) -> _Slot:
        for slot in self._slots:
            if slot.job is None:
                return slot
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(
            target=_worker, args=(child_conn, self.threads, os.getpid()), daemon=True, name="register-worker"
        )
        process.start()
        child_conn.close()
        slot = _Slot(process, parent_conn)
        self._slots.append(slot)
        return slot

    def submit(self, job: PairJob) -> None:
        """Start ``job`` in an idle worker (call only while fewer than ``capacity`` run)."""
        slot = self._idle_slot()
        slot.job = job
        slot.conn.send(job)

    def wait(self) -> list[tuple[PairJob, dict]]:
        """Block until at least one running pair ends; its ``(job, record)`` pairs."""
        busy = [s for s in self._slots if s.job is not None]
        if not busy:
            return []
        ready = wait([s.conn for s in busy] + [s.process.sentinel for s in busy])
        done = []
        for slot in busy:
            if slot.conn not in ready and slot.process.sentinel not in ready:
                continue
            job, record = slot.job, None
            try:
                if slot.conn.poll():
                    record = slot.conn.recv()
            except (EOFError, OSError):
                record = None
            if record is None or not slot.process.is_alive():  # the worker died: replace it
                slot.process.join(5)
                record = record or _crash_record(job, slot.process.exitcode)
                slot.conn.close()
                self._slots.remove(slot)
            slot.job = None
            done.append((job, record))
        return done

    def close(self) -> None:
        """Stop every worker (running pairs are abandoned: their temporary folders stay hidden)."""
        for slot in self._slots:
            if slot.job is None:
                with contextlib.suppress(OSError):
                    slot.conn.send(None)
            else:
                slot.process.kill()
        for slot in self._slots:
            slot.process.join(10)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()
            slot.conn.close()
        self._slots = []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
