"""Atomic file writes: a file is either its old content or its whole new content, never half.

The one home of the write-to-a-temporary-then-rename rule, used by every writer of the package
(point files, images, transforms, checkpoints, exports, batch records).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], None], *, suffix: str = ".tmp") -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it onto ``path``.

    The temporary file is created with the usual permissions (0666 minus the umask) and removed
    if ``write`` raises, so a failed write never leaves a file behind. ``suffix`` ends its name
    (a writer that picks the format by extension, e.g. ``".nii.gz"``, needs the real one).
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
