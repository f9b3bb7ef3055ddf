"""Write a registration result folder, all or nothing, never over anything register did not write.

Layout of ``OUTDIR``:
    transform.npz        the composite transform (``register warp`` reuses it)
    warped.<ext>         the source moved into the target frame, in the source's format,
                         with point attributes ``displacement`` (N, D) and ``confidence`` (N,)
    field.npz            arrays ``points``, ``displacement``, ``confidence`` (source points)
    field.vtk            the same as legacy VTK, for ParaView
    metrics.json         times, counts, residuals, versions, device, seed, input paths
    config.toml          the resolved configuration (lengths in data units)

One routine writes every result folder (``register run``, each pair of ``register batch``):

    out = check_output(Path("out"), overwrite=False, inputs=[src, tgt])   # before any work
    out.check_space(result_bytes(n_points, dim, values, levels))          # once sizes are known
    ...                                                                   # the registration
    write_result(out, source, result, metrics)                            # the commit

:func:`check_output` refuses, before the registration starts, an output that is or holds one
of the inputs (with or without ``overwrite``), an existing non-empty folder (without
``overwrite``), a folder holding anything register does not write (even with ``overwrite``),
and an output location that cannot be written; it removes the stale temporaries killed runs
left for the same output name. Everything is then written into a hidden temporary sibling
folder that becomes ``OUTDIR`` in one rename which cannot replace anything (see
:meth:`OutputFolder.staged`), so ``OUTDIR`` either holds a whole result or is as it was.
:func:`read_result` reads a folder back for viewing.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from register.config import to_toml
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
# Temporaries of an older register recorded no owner; one untouched this long is stale (a
# result is written in seconds).
_LEGACY_STALE_SECONDS = 600


def json_safe(value):
    """``value`` with non-finite floats as strings (``"inf"``), so the JSON is standard."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


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


# ------------------------------------------------------------------------- stale temporaries


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
    """Every temporary folder :meth:`OutputFolder.staged` may have left in ``folder`` for
    ``name`` (``"*"``: any name), in use or not (``register batch`` removes them all under its
    lock; :func:`remove_stale_temporaries` only the stale ones)."""
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
        # The owner's pid in the name: a later run knows whether the folder is still in use.
        return self.path.with_name(f".{self.path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.{suffix}")

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
        the result's size, :func:`result_bytes`)."""
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
        from register.io import output_extension, write_points

        tiny = PointCloud(
            source.points[:4], {k: v[:4] for k, v in source.point_data.items()}, path=source.path
        )
        extra = {"displacement": np.zeros_like(tiny.points), "confidence": np.ones(len(tiny))}
        probe = self._temp("partial")
        try:
            probe.mkdir()
            ext = output_extension(source.path, ".ply") if source.path else ".ply"
            write_points(probe / f"warped{ext}", tiny.with_points(tiny.points, **extra))
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


def result_bytes(n_points: int, dim: int, values: int = 0, levels: int = 1, landmarks: int = 0) -> int:
    """An upper estimate of a result folder's size, bytes.

    Args:
        n_points: source points ``N``; dim: ``D``.
        values: numbers per point in the source's attributes (columns of ``point_data``).
        levels: kernel fields in the transform (each at most ``N`` controls and weights).
        landmarks: landmark pairs (per-landmark errors in ``metrics.json``).
    """
    text = 25  # bytes of a float64 written as text (the largest of the formats)
    warped = n_points * (2 * dim + 1 + values) * text
    field = n_points * (2 * dim + 1) * (8 + text)  # field.npz (binary) and field.vtk
    transform = levels * n_points * 2 * dim * 8
    return int(1.1 * (warped + field + transform + landmarks * text)) + (1 << 20)


def _write_files(tmp: Path, source: PointCloud, result, metrics: dict) -> Path:
    from register.io import output_extension, write_points

    ext = output_extension(source.path, ".ply") if source.path else ".ply"
    warped_name = f"warped{ext}"
    result.transform.save(tmp / "transform.npz")
    extra = {"displacement": result.displacement, "confidence": result.confidence}
    write_points(tmp / warped_name, source.with_points(result.warped, **extra))
    np.savez(
        tmp / "field.npz",
        points=source.points,
        displacement=result.displacement,
        confidence=result.confidence,
    )
    write_points(tmp / "field.vtk", PointCloud(source.points, extra))
    (tmp / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
    (tmp / "config.toml").write_text(to_toml(result.config))
    return tmp / warped_name


def _relative_inputs(metrics: dict, folder: Path) -> dict:
    """The input paths of ``metrics`` relative to the result ``folder`` (for a moved project)."""

    def rel(p):
        return os.path.relpath(p, folder) if isinstance(p, str) and os.path.isabs(p) else None

    out = {key: rel(metrics.get(key)) for key in ("source", "target")}
    files = (metrics.get("landmarks") or {}).get("files")
    if files:
        out["landmarks"] = [rel(p) for p in files]
    return out


def write_result(
    outdir: OutputFolder | Path,
    source: PointCloud,
    result,
    metrics: dict,
    *,
    overwrite: bool = False,
    before_commit: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``result`` (a :class:`register.pipeline.Result`) for ``source`` into ``outdir``.

    Args:
        outdir: checked by :func:`check_output` before the registration (or a path, checked
            now with ``overwrite``).
        before_commit: called with the temporary folder once the result files are in it;
            what it adds there is committed with them (``register batch`` adds its log, QA
            picture and ``status.json``).

    Returns:
        The path of the warped source file inside ``outdir``.
    """
    out = outdir if isinstance(outdir, OutputFolder) else check_output(Path(outdir), overwrite=overwrite)
    metrics = {**metrics, "relative": _relative_inputs(metrics, out.path)}
    with out.staged() as tmp:
        warped = _write_files(tmp, source, result, metrics)
        if before_commit is not None:
            before_commit(tmp)
    return out.path / warped.name


@contextmanager
def atomic_folder(outdir: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """``check_output(outdir, overwrite=overwrite).staged()``: a folder written all or nothing."""
    with check_output(outdir, overwrite=overwrite).staged() as tmp:
        yield tmp


# ------------------------------------------------------------------------- reading back


def _locate(folder: Path, key: str, recorded, relative=None) -> Path | None:
    """Where an input recorded in ``metrics.json`` is now, or ``None``.

    Tried in order: the recorded path (absolute since this version; an older register's is
    relative to the folder the run was started in), the path relative to the result folder
    (``metrics["relative"]``), and an older relative path from the result folder's parent.
    """
    if recorded is None:
        raise InputError(f"{folder / 'metrics.json'}: no '{key}' entry; pass it with --{key.split('.')[0]}")
    if not isinstance(recorded, str) or not recorded or "\x00" in recorded:
        raise InputError(
            f"{folder / 'metrics.json'}: '{key}' is not a file path ({type(recorded).__name__}); "
            f"the result folder is damaged: pass --{key.split('.')[0]} or register the pair again"
        )
    candidates = [Path(recorded)]
    if isinstance(relative, str) and relative and "\x00" not in relative:
        candidates.append(folder / relative)
    if not Path(recorded).is_absolute():
        candidates.append(folder.parent / recorded)
    return next((p for p in candidates if p.is_file()), None)


def _read_json(path: Path) -> dict:
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: not readable JSON ({exc}); the result folder is damaged: register the pair again"
        ) from None
    if not isinstance(metrics, dict):
        raise InputError(
            f"{path}: expected a JSON object, got a {type(metrics).__name__}; the result folder is "
            "damaged: register the pair again"
        )
    return metrics


def _read_field(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``points`` and ``displacement`` ``(N, D)`` of a ``field.npz``, checked."""
    import zipfile
    import zlib

    damaged = "the result folder is damaged: register the pair again"
    try:
        with np.load(path, allow_pickle=False) as field:
            if not isinstance(field, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            source, displacement = field["points"], field["displacement"]
    except KeyError as exc:
        raise InputError(f"{path}: no {exc} array; {damaged}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({exc}); {damaged}") from None
    for name, arr in (("points", source), ("displacement", displacement)):
        if arr.dtype.kind not in "fiu" or arr.ndim != 2 or arr.shape[1] not in (2, 3) or not len(arr):
            raise InputError(
                f"{path}: '{name}' is not an (N, 3) array of numbers ({arr.dtype}, {arr.shape}); {damaged}"
            )
    if source.shape != displacement.shape:
        raise InputError(
            f"{path}: 'points' {source.shape} and 'displacement' {displacement.shape} differ; {damaged}"
        )
    if not (np.isfinite(source).all() and np.isfinite(displacement).all()):
        raise InputError(f"{path}: non-finite values; {damaged}")
    return source.astype(np.float64), displacement.astype(np.float64)


def read_result(
    folder: Path, *, target: Path | None = None, landmarks: tuple[Path, Path] | None = None
) -> dict:
    """Read a result folder back for viewing (``register show``), from any working folder.

    Args:
        folder: written by :func:`write_result`.
        target: the target points file, when the one named in ``metrics.json`` has moved.
        landmarks: ``(source, target)`` landmark files, when not named in ``metrics.json``.

    Returns:
        ``source`` ``(N, D)``, ``target`` ``(M, D)``, ``warped`` ``(N, D)`` (data units),
        ``landmarks`` (``(T(source landmarks), target landmarks)``, each ``(L, D)``, or ``None``)
        and ``title``.

    Raises:
        InputError: not a result folder, a damaged file in it (the message names it), or a file
            it names cannot be found (the message says which option gives it).
    """
    from register.app.landmarks import read_landmarks
    from register.core.transforms import Transform
    from register.io import read_points

    folder = Path(folder)
    for name in ("field.npz", "metrics.json", "transform.npz"):
        if not (folder / name).is_file():
            raise InputError(
                f"{folder}: no {name}; give a result folder of 'register run' or 'register batch'"
            )
    metrics = _read_json(folder / "metrics.json")
    source, displacement = _read_field(folder / "field.npz")
    relative = metrics.get("relative") if isinstance(metrics.get("relative"), dict) else {}
    target_path = (
        Path(target)
        if target is not None
        else _locate(folder, "target", metrics.get("target"), relative.get("target"))
    )
    if target_path is None:
        raise InputError(
            f"{folder}: target file {metrics['target']} (from metrics.json) not found; pass --target PATH"
        )
    pairs = None
    recorded = metrics["landmarks"].get("files") if isinstance(metrics.get("landmarks"), dict) else None
    if landmarks is not None:
        paths = tuple(Path(p) for p in landmarks)
    elif recorded:
        if not (isinstance(recorded, list) and len(recorded) == 2):
            raise InputError(
                f"{folder / 'metrics.json'}: 'landmarks.files' is not a pair of paths; pass --landmarks SRC_LM TGT_LM"
            )
        rel = relative.get("landmarks") if isinstance(relative.get("landmarks"), list) else [None, None]
        paths = tuple(
            _locate(folder, "landmarks.files", p, r)
            for p, r in zip(recorded, [*rel, None, None], strict=False)
        )
        missing = [p for p, found in zip(recorded, paths, strict=True) if found is None]
        if missing:
            raise InputError(
                f"{folder}: landmarks {missing[0]} (from metrics.json) not found; pass --landmarks SRC_LM TGT_LM"
            )
    if landmarks is not None or recorded:
        src_lm, tgt_lm = read_landmarks(paths, source.shape[1])
        pairs = (Transform.load(folder / "transform.npz").apply(src_lm), tgt_lm)
    source_name = metrics.get("source")
    return {
        "source": source,
        "target": read_points(target_path).points,
        "warped": source + displacement,
        "landmarks": pairs,
        "title": f"{Path(source_name).name if isinstance(source_name, str) else folder.name} -> {target_path.name}",
    }
