"""Staging beside a destination: hidden temporaries named after their owner, renames that never
replace, and the clean-up of what killed runs left.

A result folder is written into a hidden sibling ``.<name>.<pid>-<hex12>.partial`` (an old
folder it replaces is first moved to ``.<name>.<pid>-<hex12>.old``), then renamed onto
``<name>`` with :func:`rename_noreplace`. The owner's pid in the name lets a later run tell a
live temporary from a stale one (:func:`remove_stale_temporaries`). The output folder's checks
and its commit are :mod:`register.app.output_folder`.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shutil
import time
import uuid
from pathlib import Path

# Temporaries of an older register recorded no owner; one untouched this long is stale (a
# result is written in seconds).
_LEGACY_STALE_SECONDS = 600


# ------------------------------------------------------------------------- renames that never replace


@functools.cache
def _renameat2():
    """libc's ``renameat2`` (Linux, glibc >= 2.28), or ``None``."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` atomically, failing if anything (even an empty folder) is at ``dst``.

    ``os.rename`` onto an existing empty folder silently replaces it, and checking first leaves a
    window; Linux's ``renameat2(RENAME_NOREPLACE)`` makes the check part of the rename. Where it
    does not exist (another OS, or a file system without the flag), a folder is moved by
    ``os.mkdir(dst)`` (which fails if ``dst`` exists) and a rename of each entry into it: it
    never replaces anything either, but ``dst`` is briefly incomplete.

    Raises:
        FileExistsError: something is at ``dst``; ``src`` is left as it was.
        OSError: any other failure of the rename.
    """
    fn = _renameat2()
    if fn is not None:
        at_fdcwd, rename_noreplace_flag = -100, 1
        if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace_flag) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    if not src.is_dir() or src.is_symlink():
        os.link(src, dst)  # fails if dst exists
        os.unlink(src)
        return
    os.mkdir(dst)
    for entry in os.listdir(src):
        os.rename(src / entry, dst / entry)
    os.rmdir(src)


# ------------------------------------------------------------------------- temporaries, stale or not


def temp_path(path: Path, suffix: str) -> Path:
    """A fresh hidden sibling of ``path`` for this process: ``.<name>.<pid>-<hex12>.<suffix>``
    (``suffix``: ``partial`` or ``old``)."""
    # The owner's pid in the name: a later run knows whether the folder is still in use.
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.{suffix}")


def _temp_pattern(name: str) -> re.Pattern:
    """Names of the temporaries of output ``name``: ``.<name>.<pid>-<hex>.partial`` / ``.old``,
    and an older register's ``.<name>.<hex12>.partial`` / ``.<name>.<hex32>.old``."""
    return re.compile(
        rf"\.{re.escape(name)}\.(?:(?P<pid>\d+)-[0-9a-f]{{12}}\.(?:partial|old)"
        r"|[0-9a-f]{12}\.partial|[0-9a-f]{32}\.old)"
    )


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a reused pid counts as alive: its folder stays)."""
    if pid == os.getpid():
        return True  # this process's own temporary (another thread's commit)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def stale_temporaries(folder: Path, name: str = "*") -> list[Path]:
    """Every temporary folder :meth:`~register.app.output_folder.OutputFolder.staged` may have
    left in ``folder`` for ``name`` (``"*"``: any name), in use or not (``register batch``
    removes them all under its lock; :func:`remove_stale_temporaries` only the stale ones)."""
    return sorted([*folder.glob(f".{name}.*.partial"), *folder.glob(f".{name}.*.old")])


def remove_stale_temporaries(folder: Path, name: str) -> list[Path]:
    """Remove the temporaries of output ``name`` in ``folder`` that no live run uses.

    Only folders (not links, not files) whose names match :func:`_temp_pattern` for ``name``,
    and only when their owner (the pid in the name) is dead, or, for an older register's
    unowned ones, when untouched for ten minutes.

    Returns:
        The folders removed.
    """
    pattern = _temp_pattern(name)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        pid = match.group("pid")
        if pid is not None:
            if _alive(int(pid)):
                continue
        elif entry.stat(follow_symlinks=False).st_mtime > time.time() - _LEGACY_STALE_SECONDS:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed
