"""The output folder of a result: checked before any work, committed all or nothing.

:func:`check_output` refuses, before the registration starts, an output that is or holds one
of the inputs (with or without ``overwrite``), an existing non-empty folder (without
``overwrite``), a folder holding anything register does not write (even with ``overwrite``),
and an output location that cannot be written; it removes the stale temporaries killed runs
left for the same output name. Everything is then written into a hidden temporary sibling
folder that becomes ``OUTDIR`` in one rename which cannot replace anything (see
:meth:`OutputFolder.staged`), so ``OUTDIR`` either holds a whole result or is as it was.

Also here: the names register writes into a result folder (:data:`RESULT_FILES`,
:data:`BATCH_FILES`, :func:`warped_name`) and :func:`atomic_folder`, any folder written all or
nothing. The temporaries and the rename that never replaces are :mod:`register.app.staging`;
what goes into a result folder is :mod:`register.app.outputs`; single files are written
atomically by :func:`register.core.files.atomic_write`.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from register.app.staging import remove_stale_temporaries, rename_noreplace, temp_path
from register.core.pointcloud import PointCloud
from register.errors import InputError

RESULT_FILES = ("transform.npz", "field.npz", "field.vtk", "metrics.json", "config.toml")
# What ``register batch`` adds to a pair's folder (register.app.batch.job: LOG, IMAGE, STATUS).
BATCH_FILES = ("register.log", "qa.png", "status.json")
# A folder may be replaced (``--overwrite``) only when it holds nothing but these (and at least
# one of the records register writes), so a folder of the user's is never deleted.
_OWN_NAME = re.compile(
    "|".join(re.escape(n) for n in (*RESULT_FILES, *BATCH_FILES)) + r"|warped\.[A-Za-z0-9]+"
)
_RECORDS = ("metrics.json", "status.json")


def warped_name(source: PointCloud) -> str:
    """Name of the warped source in a result folder: ``warped.<ext>``, in the source's format
    (``.ply`` when it has no path or a format register cannot write)."""
    from register.io import output_extension

    return f"warped{output_extension(source.path, '.ply')}"


# ------------------------------------------------------------------------- the output folder


def foreign_entries(folder: Path) -> list[str]:
    """Names in ``folder`` that register does not write into a result folder (sorted); a folder
    without a ``metrics.json`` or ``status.json`` is all foreign (not a result folder)."""
    names = sorted(os.listdir(folder))
    foreign = [
        n
        for n in names
        if not _OWN_NAME.fullmatch(n) or not (folder / n).is_file() or (folder / n).is_symlink()
    ]
    if names and not foreign and not any(n in names for n in _RECORDS):
        return names
    return foreign


def _as_shown(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _identity(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_dev, st.st_ino


@dataclass(frozen=True)
class OutputFolder:
    """An output folder checked by :func:`check_output`, committed by :meth:`staged`.

    Attributes:
        path: absolute path of the folder (its parent resolved).
        label: how messages name it (``"-o out"``: the option and the path as given).
        overwrite: an existing result folder may be replaced.
        found: ``(device, inode)`` of the folder at ``path`` when checked (an empty folder, or
            a result folder to replace), ``None`` if nothing was there. The commit replaces
            only that very folder, and only if it still holds nothing foreign.
    """

    path: Path
    label: str
    overwrite: bool = False
    found: tuple[int, int] | None = None

    def _temp(self, suffix: str) -> Path:
        return temp_path(self.path, suffix)

    def _refuse(self, problem: str, fix: str) -> InputError:
        return InputError(f"{self.label}: {problem}; {fix}")

    def check_writable(self) -> None:
        """Create and remove a temporary folder beside ``path`` (a read-only, immutable or full
        file system fails here, before any work)."""
        probe = self._temp("partial")
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError as exc:
            raise self._refuse(
                f"cannot write in {self.path.parent} ({exc.strerror or exc})",
                "choose an output folder where you can write",
            ) from None

    def check_space(self, nbytes: int) -> None:
        """Refuse when the file system of ``path`` has less than ``nbytes`` free (an estimate of
        the result's size, :func:`~register.app.outputs.result_bytes`)."""
        try:
            st = os.statvfs(self.path.parent)
        except (OSError, AttributeError):  # not POSIX, or vanished: the commit will tell
            return
        free = st.f_bavail * st.f_frsize
        if free < nbytes:
            raise self._refuse(
                f"only {_size(free)} free space on the file system of {self.path.parent}, and the "
                f"result needs about {_size(nbytes)}",
                "free some space or choose another output folder",
            )

    def write_error(self, exc: OSError) -> InputError:
        """The error for an OS failure while writing the result (nothing was committed)."""
        reason = "no space left on the device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
        return self._refuse(
            f"writing the result failed ({reason or exc}); nothing was written",
            "free some space or choose another output folder"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else "check the output location",
        )

    @contextmanager
    def staged(self) -> Iterator[Path]:
        """Yield a hidden temporary sibling of ``path``; when the block ends, it becomes ``path``.

        The commit never replaces anything this run did not check:

        * nothing was at ``path`` when checked: the temporary folder is renamed with
          :func:`rename_noreplace`, so a folder (even an empty one) or file that appeared
          meanwhile, e.g. a concurrent run's result, makes it fail and stays as it is;
        * a folder was (empty, or with ``overwrite`` a result folder): it is first renamed to a
          fresh hidden ``.old`` name (nothing can be there), then checked to be the very folder
          seen at the start (same device and inode) and to still hold nothing foreign; if not,
          it is put back and the run fails. Then the new folder takes the name (no-replace, as
          above) and the old one is removed.

        If the block or the commit fails, the temporary folder is removed and ``path`` is as
        it was; should something take the name in the microseconds between the two renames,
        it stays and the old folder is kept beside it as ``<name>.kept-<hex>``. So two runs
        into the same folder never both succeed with one replacing the other: the second gets
        an error. Temporary names hold the owner's pid (``.<name>.<pid>-<hex>.partial``,
        ``.old``), so a killed run's are found and removed by the next run
        (:func:`remove_stale_temporaries`).

        Raises:
            InputError: ``path`` appeared or changed while the run was going; an OS error
                while writing (no space left...) or renaming.
        """
        tmp = self._temp("partial")
        try:
            tmp.mkdir()
        except OSError as exc:
            raise self.write_error(exc) from None
        try:
            try:
                yield tmp
            except OSError as exc:
                raise self.write_error(exc) from None
            except InputError as exc:  # a writer's message names the temporary file
                if isinstance(exc.__cause__, OSError) and str(tmp) in str(exc):
                    raise self.write_error(exc.__cause__) from None
                raise
            self._commit(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _commit(self, tmp: Path) -> None:
        old = self._move_aside() if self.found is not None else None
        try:
            rename_noreplace(tmp, self.path)
        except OSError as exc:
            if old is not None:
                self._put_back(old)
            if isinstance(exc, FileExistsError):
                raise self._refuse(
                    f"{self.path} appeared while this run was going (another run writing there?); it "
                    "was left as it is and this run's result was not written",
                    "choose another output folder",
                ) from None
            raise self.write_error(exc) from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)  # checked by _move_aside: empty, or a result folder

    def _move_aside(self) -> Path | None:
        """Rename the folder found at ``path`` to a fresh hidden ``.old`` name and check it is
        the one seen at the start, still replaceable; ``None`` if it is gone."""
        old = self._temp("old")
        try:
            os.rename(self.path, old)  # a fresh name: nothing is replaced
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self.write_error(exc) from None
        same = _identity(old) == self.found and old.is_dir() and not old.is_symlink()
        if same and (foreign_entries(old) == [] if self.overwrite else not os.listdir(old)):
            return old
        self._put_back(old)
        raise self._refuse(
            f"{self.path} changed while this run was going (another process wrote there); it was "
            "left as it is and this run's result was not written",
            "choose another output folder",
        )

    def _put_back(self, old: Path) -> None:
        """Return a folder moved aside to ``path``; if something took the name meanwhile, to a
        visible ``<name>.kept-<hex>`` beside it (never left under a temporary name, which a
        later run would remove)."""
        try:
            rename_noreplace(old, self.path)
        except OSError:
            kept = self.path.with_name(f"{self.path.name}.kept-{uuid.uuid4().hex[:8]}")
            os.rename(old, kept)
            raise self._refuse(
                f"{self.path} changed while this run was going; the folder that was there is now {kept}",
                "check both and choose another output folder",
            ) from None

    def check_writers(self, source: PointCloud) -> None:
        """Write the point files of a 4-point result (``warped.<ext>`` in the source's format,
        ``field.vtk``) into a temporary folder, then remove it: a format that cannot hold the
        source's attributes, or a writer's import failing (e.g. out of memory), fails now
        rather than after the registration."""
        from register.io import write_points

        tiny = PointCloud(
            source.points[:4], {k: v[:4] for k, v in source.point_data.items()}, path=source.path
        )
        extra = {"displacement": np.zeros_like(tiny.points), "confidence": np.ones(len(tiny))}
        probe = self._temp("partial")
        try:
            probe.mkdir()
            write_points(probe / warped_name(source), tiny.with_points(tiny.points, **extra))
            write_points(probe / "field.vtk", PointCloud(tiny.points, extra))
        except OSError as exc:
            raise self.write_error(exc) from None
        finally:
            shutil.rmtree(probe, ignore_errors=True)


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"  # pragma: no cover


def _absolute(path: Path) -> Path:
    """``path`` absolute with its parent resolved (the last name kept, links resolved)."""
    path = Path(path)
    if path.name in ("", ".", "..") or path.is_symlink():
        return path.resolve()
    return Path(os.path.abspath(path)).parent.resolve() / path.name


def check_output(
    outdir: Path,
    *,
    overwrite: bool = False,
    inputs: Iterable[Path] = (),
    label: str | None = None,
) -> OutputFolder:
    """Check an output folder before any work, and remove its stale temporaries.

    Args:
        outdir: the output folder (a link to a folder stands for that folder).
        overwrite: an existing result folder may be replaced (never a folder holding anything
            else, see :func:`foreign_entries`).
        inputs: every file the run reads (points, landmarks, a pipeline file); none may be
            ``outdir`` or inside it, with or without ``overwrite``.
        label: how messages name the folder (default ``"-o OUTDIR"``).

    Returns:
        The :class:`OutputFolder` to commit into.

    Raises:
        InputError: the folder holds an input, is a file, is not empty (without
            ``overwrite``), holds files register did not write, has no parent, or its location
            cannot be written.
    """
    label = label or f"-o {outdir}"
    if Path(outdir).is_symlink() and not Path(outdir).exists():
        raise InputError(f"{label}: is a broken symbolic link; give an output folder")
    path = _absolute(outdir)
    for item in inputs:
        real = Path(item).resolve()
        if real == path or path in real.parents:
            raise InputError(
                f"{label}: the output folder holds the input {item}; write the result to another "
                "folder (the output folder is replaced as a whole)"
            )
    out = OutputFolder(path, label, overwrite)
    if path.exists() and not path.is_dir():
        raise out._refuse("exists and is not a folder", "choose another output folder")
    if not path.parent.is_dir():
        raise out._refuse(f"parent folder {Path(outdir).parent} does not exist", "create it first")
    found = None
    if path.is_dir():
        try:
            names = os.listdir(path)
        except OSError as exc:
            raise out._refuse(f"cannot be read ({exc.strerror})", "choose another output folder") from None
        if names and not overwrite:
            raise out._refuse("folder exists and is not empty", "choose another one or pass --overwrite")
        foreign = foreign_entries(path) if names else []
        if foreign:
            raise out._refuse(
                f"--overwrite replaces only a result folder written by register, and {path} also "
                f"holds {_as_shown(foreign)}",
                "move those away or choose another output folder",
            )
        found = _identity(path)
    out = OutputFolder(path, label, overwrite, found)
    remove_stale_temporaries(path.parent, path.name)
    out.check_writable()
    return out


@contextmanager
def atomic_folder(outdir: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """``check_output(outdir, overwrite=overwrite).staged()``: a folder written all or nothing."""
    with check_output(outdir, overwrite=overwrite).staged() as tmp:
        yield tmp
