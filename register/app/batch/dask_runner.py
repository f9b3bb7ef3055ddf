"""Run pairs on an existing Dask distributed cluster (``register batch --scheduler ADDRESS``).

The client submits every pair at once as a task calling :func:`register.app.batch.job.run_pair`;
the scheduler spreads them over the workers. Workers need ``register`` installed and the
manifest's files and the output folder at the same paths (a shared file system), as on a
SLURM cluster started with dask-jobqueue (see ``examples/``). A worker thread runs one pair
with ``threads`` torch threads (default 1: every worker thread is a pair slot).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from register.app.batch.job import PairJob
from register.errors import InputError

INSTALL_HINT = "pip install 'register[distributed]'"
CONNECT_TIMEOUT = "20s"


def _client(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise InputError(f"--scheduler {address}: Dask is not installed; {INSTALL_HINT}") from None
    path = Path(address)
    try:
        if path.suffix == ".json":
            if not path.is_file():
                raise InputError(f"--scheduler {address}: scheduler file not found")
            return Client(scheduler_file=str(path), timeout=CONNECT_TIMEOUT)
        return Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(
            f"--scheduler {address}: cannot connect to a Dask scheduler ({type(exc).__name__}: {exc}); "
            "give its address (tcp://HOST:8786) or its scheduler file (.json), and check it is running"
        ) from None


class DaskRunner:
    """Every pair as one task on the cluster at ``address``.

    Args:
        address: scheduler address (``tcp://host:8786``) or scheduler file (``.json``).
        threads: torch threads per pair (default 1).
    """

    def __init__(self, address: str, threads: int | None = None) -> None:
        self.address = address
        self.threads = threads or 1
        self.capacity = 1 << 30  # the scheduler queues; submit everything
        self._client = _client(address)
        self._futures: dict = {}

    def describe(self) -> str:
        workers = self._client.scheduler_info().get("workers", {})
        slots = sum(w.get("nthreads", 1) for w in workers.values())
        return f"Dask cluster {self.address}: {len(workers)} worker(s), {slots} slot(s), {self.threads} thread(s) per pair"

    def submit(self, job: PairJob) -> None:
        from register.app.batch.job import run_pair

        key = f"register-{job.id}-{job.attempt}-{uuid.uuid4().hex[:8]}"
        self._futures[self._client.submit(run_pair, job, key=key, pure=False)] = job

    def wait(self) -> list[tuple[PairJob, dict]]:
        """Block until at least one submitted pair ends; its ``(job, record)`` pairs."""
        from distributed import wait

        if not self._futures:
            return []
        done = wait(list(self._futures), return_when="FIRST_COMPLETED").done
        out = []
        for future in done:
            job = self._futures.pop(future)
            try:
                record = future.result()
            except Exception as exc:  # the task died with its worker (KilledWorker), or was cancelled
                record = {
                    "id": job.id,
                    "status": "failed",
                    "error": f"Dask task failed ({type(exc).__name__}: {exc}); see the worker logs",
                    "error_kind": "crash",
                    "attempt": job.attempt,
                }
            out.append((job, record))
        return out

    def close(self) -> None:
        if self._futures:
            self._client.cancel(list(self._futures))
            self._futures = {}
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
