"""A fork server that runs ``register`` command lines as separate processes, fast.

Starting ``register`` costs about three seconds on a busy 2-core machine (torch, VTK), which
would make a table of sixty command lines take minutes. This server imports the CLI once and
then, for each request, forks a child that runs ``register.app.cli.main(argv)`` exactly as the
console script does: its own working folder, stdout and stderr (files), exit code, address
space limit and, on a timeout, a SIGKILL. An exception that escapes ``main`` is printed by
``sys.excepthook`` (Typer's, as in the console script) and exits 1.

Protocol (one JSON object per line on stdin, one reply per line on stdout)::

    {"argv": [...], "cwd": DIR, "stdout": FILE, "stderr": FILE, "timeout": s,
     "setup": PYTHON, "post": PYTHON, "memory": bytes | null}
    -> {"rc": int | null, "seconds": float}        (rc null: killed after the timeout)

``setup`` runs in the child before ``main`` (fault injection: wrap a function, mount a small
file system in a private mount namespace with :func:`mount_tmpfs`); ``post`` runs after it,
still in the child (e.g. to list a folder only the child's mount namespace sees). A setup that
raises ``Skip`` ends the child with exit code 77 (the test is skipped).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time

SKIP = 77


class Skip(Exception):
    """The child cannot set the case up here (e.g. no mount namespaces)."""


def mount_tmpfs(path: str, size: int, readonly: bool = False) -> None:
    """Mount a ``size``-byte tmpfs on ``path`` in a private mount namespace of this process.

    Root unshares the mount namespace only; anyone else also a user namespace in which it is
    root. Raises :class:`Skip` when the kernel does not allow it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.geteuid(), os.getegid()
    clone_newns, clone_newuser = 0x00020000, 0x10000000
    if libc.unshare(clone_newns | (0 if uid == 0 else clone_newuser)) != 0:
        raise Skip(f"unshare: {os.strerror(ctypes.get_errno())}")
    if uid != 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
    ms_rdonly, ms_rec, ms_private = 1, 1 << 14, 1 << 18
    if libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        raise Skip(f"mount --make-rprivate /: {os.strerror(ctypes.get_errno())}")
    flags = ms_rdonly if readonly else 0
    if libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", flags, f"size={size}".encode()) != 0:
        raise Skip(f"mount tmpfs: {os.strerror(ctypes.get_errno())}")


def vm_size() -> int:
    """This process's virtual memory size, bytes (what ``ulimit -v`` limits)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(req: dict) -> int:
    import resource

    os.chdir(req["cwd"])
    for fd, name in ((1, req["stdout"]), (2, req["stderr"])):
        os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    scope = {"mount_tmpfs": mount_tmpfs, "Skip": Skip, "vm_size": vm_size, "os": os}
    try:
        exec(req.get("setup") or "", scope)
    except Skip as exc:
        print(f"skip: {exc}", file=sys.stderr)
        return SKIP
    if req.get("memory"):
        resource.setrlimit(resource.RLIMIT_AS, (req["memory"], resource.RLIM_INFINITY))
    from register.app.cli import main

    try:
        main(list(req["argv"]))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    if req.get("post"):
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        exec(req["post"], scope)
    return code


def serve() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # What every command line imports anyway: done once here, shared by the children.
    import tempfile

    import numpy
    import torch  # noqa: F401

    import register.app.cli  # noqa: F401
    import register.pipeline  # noqa: F401
    from register.core.pointcloud import PointCloud
    from register.io import write_points

    with tempfile.TemporaryDirectory() as tmp:  # loads the VTK writer's libraries
        write_points(os.path.join(tmp, "warm.vtk"), PointCloud(numpy.eye(4, 3)))

    protocol = sys.stdout
    print(json.dumps({"ready": os.getpid()}), file=protocol, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(req)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = t0 + req["timeout"]
        rc = None
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                rc = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)
        reply = {"rc": rc, "seconds": time.monotonic() - t0}
        print(json.dumps(reply), file=protocol, flush=True)


if __name__ == "__main__":
    serve()
