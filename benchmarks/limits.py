"""Run one function in a fresh child process under a time (and optional memory) limit.

Used by ``benchmarks.peers`` (and usable for ``register`` itself) so that every method of a
benchmark is measured the same way:

* the child is a fresh interpreter (``subprocess``, its own session): no state, threads or
  libraries inherited from the benchmark process (multiprocessing's ``spawn`` would re-import
  the parent's ``__main__`` module, e.g. torch, into it);
* an optional ``setup`` callable runs first (imports, JIT warm-up): it is neither timed nor
  limited by ``time_limit_s``, only by ``startup_timeout_s``;
* then the timed call ``func(*args, **kwargs)``: wall and CPU seconds are measured inside the
  child around that call alone, peak memory is the child's ``ru_maxrss`` (plus that of its own
  children, e.g. an external binary), reported both absolute and as the increase over the RSS
  just before the call;
* the parent polls the child (RSS via ``/proc`` or psutil) and kills it, with every process it
  started, once the call has run longer than ``time_limit_s`` (status ``timeout``) or its
  resident memory exceeds ``memory_limit_mb`` (status ``oom``). A ``MemoryError`` in the child,
  or the child dying from ``SIGKILL`` that the parent did not send (the kernel's OOM killer),
  also gives ``oom``. Any other exception gives ``error: <Type>: <message>``.

Linux only (``/proc``, ``ru_maxrss`` in KiB). psutil is used when installed (it also counts the
memory of the child's own children while polling); without it the child's own RSS is polled.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

try:  # optional: better polling (children of the child) and CPU times of a killed child
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

MB = 1024.0 * 1024.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class ChildOutcome:
    """What happened to one limited call.

    Attributes:
        status: ``ok``, ``timeout``, ``oom`` or ``error: <Type>: <message>``.
        value: what ``func`` returned (``None`` unless ``ok``).
        wall_s: wall seconds of the timed call (until the kill for ``timeout`` / ``oom``).
        cpu_s: CPU seconds (user + system) of the child and its own children during the call
            (sampled, hence approximate, when the child was killed).
        peak_rss_mb: peak resident memory of the child during its whole life, MiB.
        peak_rss_delta_mb: ``peak_rss_mb`` minus the resident memory just before the call, MiB
            (the memory the method itself needed, beyond the interpreter, libraries and inputs).
        startup_s: seconds from starting the child to the beginning of the timed call.
        message: detail for a failure (traceback tail, signal, limit that was hit).
    """

    status: str
    value: Any = None
    wall_s: float = float("nan")
    cpu_s: float = float("nan")
    peak_rss_mb: float = float("nan")
    peak_rss_delta_mb: float = float("nan")
    startup_s: float = float("nan")
    message: str = ""
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- the child


def _rss_bytes_self() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:  # pragma: no cover - non-Linux
        return 0


def _cpu_seconds_self_and_children() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _maxrss_bytes() -> int:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) * 1024  # KiB on Linux


def _child_main(conn, setup, func, args, kwargs) -> None:
    try:
        if setup is not None:
            setup()
        rss0 = _rss_bytes_self()
        cpu0 = _cpu_seconds_self_and_children()
        conn.send(("started", rss0))
        t0 = time.perf_counter()
        value = func(*args, **(kwargs or {}))
        wall = time.perf_counter() - t0
        cpu = _cpu_seconds_self_and_children() - cpu0
        conn.send(("done", value, wall, cpu, _maxrss_bytes(), rss0))
    except MemoryError as exc:
        conn.send(("oom", f"MemoryError: {exc}", _maxrss_bytes()))
    except BaseException as exc:  # report everything; the parent decides
        tb = traceback.format_exc(limit=8)
        conn.send(("error", f"{type(exc).__name__}: {exc}", tb[-3000:]))
    finally:
        conn.close()


def _child_entry(payload_path: str, fd: int) -> None:
    """Entry point of the child interpreter (see ``_CHILD_CODE``)."""
    from multiprocessing.connection import Connection

    conn = Connection(fd, readable=False)
    with open(payload_path, "rb") as fh:
        pickle.load(fh)  # sys.path, already applied by _CHILD_CODE
        setup, func, args, kwargs = pickle.load(fh)
    _child_main(conn, setup, func, args, kwargs)


# The child is a fresh interpreter started with subprocess (not multiprocessing's spawn, which
# would re-import the parent's __main__ module, e.g. torch and register, into every child). It
# takes the parent's sys.path first so that ``func`` (pickled by reference) can be imported.
_CHILD_CODE = (
    "import pickle, sys\n"
    "with open(sys.argv[1], 'rb') as fh:\n"
    "    sys.path[:0] = [p for p in pickle.load(fh) if p not in sys.path]\n"
    "from benchmarks.limits import _child_entry\n"
    "_child_entry(sys.argv[1], int(sys.argv[2]))\n"
)


# ------------------------------------------------------------------------------ the parent


class _Probe:
    """RSS and CPU of the child (and, with psutil, of its descendants) from the parent."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.proc = None
        if psutil is not None:
            with contextlib.suppress(psutil.Error):
                self.proc = psutil.Process(pid)

    def rss_bytes(self) -> int:
        if self.proc is not None:
            total = 0
            with contextlib.suppress(psutil.Error):
                total = self.proc.memory_info().rss
                for kid in self.proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        total += kid.memory_info().rss
            return total
        try:
            with open(f"/proc/{self.pid}/statm") as fh:
                return int(fh.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return 0

    def cpu_seconds(self) -> float:
        if self.proc is not None:
            with contextlib.suppress(psutil.Error):
                t = self.proc.cpu_times()
                total = t.user + t.system + t.children_user + t.children_system
                for kid in self.proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        k = kid.cpu_times()
                        total += k.user + k.system
                return total
            return float("nan")
        try:
            with open(f"/proc/{self.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return sum(int(x) for x in fields[11:15]) / _TICKS  # utime stime cutime cstime
        except (OSError, ValueError, IndexError):
            return float("nan")


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the child's session (the child and everything it started)."""
    if psutil is not None:
        with contextlib.suppress(psutil.Error):
            for kid in psutil.Process(proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    kid.kill()
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: its group id is its pid
    with contextlib.suppress(OSError):
        proc.kill()


def run_limited(
    func: Callable[..., Any],
    args: tuple = (),
    kwargs: dict | None = None,
    *,
    time_limit_s: float,
    memory_limit_mb: float | None = None,
    setup: Callable[[], Any] | None = None,
    env: Mapping[str, str] | None = None,
    startup_timeout_s: float = 300.0,
    poll_s: float = 0.05,
) -> ChildOutcome:
    """Run ``func(*args, **kwargs)`` in a fresh child interpreter under limits (module docstring).

    ``func``, ``setup`` and the arguments must be picklable (module-level functions,
    ``functools.partial`` of them, numpy arrays). ``env`` is added to the child's environment
    (e.g. ``{"OMP_NUM_THREADS": "2"}``: set before anything is imported). ``time_limit_s``
    counts from the end of ``setup``. The child's stdout and stderr are kept in a temporary
    file; their tail is in ``message`` when the child fails without reporting.
    """
    with tempfile.TemporaryDirectory(prefix="bench-child-") as tmp:
        payload = os.path.join(tmp, "payload.pkl")
        with open(payload, "wb") as fh:
            pickle.dump(list(sys.path), fh)
            pickle.dump((setup, func, args, kwargs), fh, protocol=pickle.HIGHEST_PROTOCOL)
        log_path = os.path.join(tmp, "child.log")
        read_fd, write_fd = os.pipe()
        receiver = Connection(read_fd, writable=False)
        t_spawn = time.perf_counter()
        try:
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-c", _CHILD_CODE, payload, str(write_fd)],
                    pass_fds=(write_fd,),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **{k: str(v) for k, v in (env or {}).items()}},
                    start_new_session=True,
                )
        finally:
            os.close(write_fd)  # the child holds the only writer: EOF when it exits
        try:
            outcome = _supervise(
                proc, receiver, t_spawn, time_limit_s, memory_limit_mb, startup_timeout_s, poll_s
            )
        finally:
            receiver.close()
            if proc.poll() is None:
                _kill_tree(proc)
                proc.wait()
        if outcome.status != "ok" and not outcome.message:
            with contextlib.suppress(OSError), open(log_path, "rb") as fh:
                outcome.message = fh.read()[-3000:].decode("utf-8", "replace")
    return outcome


def _supervise(
    proc: subprocess.Popen,
    receiver: Connection,
    t_spawn: float,
    time_limit_s: float,
    memory_limit_mb: float | None,
    startup_timeout_s: float,
    poll_s: float,
) -> ChildOutcome:
    probe = _Probe(proc.pid)
    limit_bytes = None if memory_limit_mb is None else memory_limit_mb * MB
    started = None  # perf_counter at the "started" message
    rss0 = 0
    cpu_at_start = float("nan")
    peak = 0
    cpu_last = float("nan")
    outcome: ChildOutcome | None = None
    killed = None  # "timeout" | "oom" | "startup" when the parent killed the child

    while outcome is None and killed is None:
        message = None
        if receiver.poll(poll_s):
            try:
                message = receiver.recv()
            except (EOFError, OSError):
                break  # the pipe closed without a result: the child died
        now = time.perf_counter()
        if message is not None:
            kind = message[0]
            if kind == "started":
                started, rss0 = now, message[1]
                cpu_at_start = probe.cpu_seconds()
                continue
            if kind == "done":
                _, value, wall, cpu, maxrss, rss_before = message
                outcome = ChildOutcome(
                    "ok",
                    value,
                    wall_s=wall,
                    cpu_s=cpu,
                    peak_rss_mb=maxrss / MB,
                    peak_rss_delta_mb=max(maxrss - rss_before, 0) / MB,
                )
            elif kind == "oom":
                outcome = ChildOutcome("oom", message=message[1], peak_rss_mb=message[2] / MB)
            else:
                outcome = ChildOutcome(f"error: {message[1]}", message=message[2])
            break
        rss = probe.rss_bytes()
        peak = max(peak, rss)
        cpu_now = probe.cpu_seconds()
        if cpu_now == cpu_now:  # not nan
            cpu_last = cpu_now
        if limit_bytes is not None and rss > limit_bytes:
            killed = "oom"
        elif started is not None and now - started > time_limit_s:
            killed = "timeout"
        elif started is None and now - t_spawn > startup_timeout_s:
            killed = "startup"

    now = time.perf_counter()
    if killed is not None:
        _kill_tree(proc)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:  # pragma: no cover - a child that ignores its own exit
        _kill_tree(proc)
        proc.wait()

    if outcome is None:
        wall = now - started if started is not None else float("nan")
        cpu = cpu_last - cpu_at_start if started is not None else float("nan")
        peak_mb = peak / MB if peak else float("nan")
        delta_mb = max(peak - rss0, 0) / MB if peak and started is not None else float("nan")
        common = {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_mb, "peak_rss_delta_mb": delta_mb}
        if killed == "timeout":
            outcome = ChildOutcome("timeout", message=f"killed after {time_limit_s:g} s", **common)
        elif killed == "oom":
            outcome = ChildOutcome(
                "oom", message=f"resident memory over the limit of {memory_limit_mb:g} MiB", **common
            )
        elif killed == "startup":
            outcome = ChildOutcome(
                f"error: start-up (imports / setup) took over {startup_timeout_s:g} s", **common
            )
        elif proc.returncode == -signal.SIGKILL:
            outcome = ChildOutcome(
                "oom", message="killed by SIGKILL (likely the kernel's OOM killer)", **common
            )
        else:
            outcome = ChildOutcome(f"error: child exited with code {proc.returncode} and no result", **common)
    if started is not None:
        outcome.startup_s = started - t_spawn
    return outcome
