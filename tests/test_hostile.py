"""Hostile inputs and faults against the ``register`` command line (issue 19), as a table.

Every case builds its files in a fresh folder, runs one command line in a separate process
(``register.app.cli.main`` forked from :mod:`cli_server`, so torch is imported once; the
concurrency and ``ulimit`` cases start the console script itself) and checks:

* the exit code (2: input the user can fix; 1: an unexpected failure or out of memory);
* stderr names the file, option or key at fault and holds no traceback;
* nothing was left behind and nothing outside the case's own output changed: the folder tree
  (names, sizes, mtimes, SHA-256) is the same before and after, except the paths a case lists.

Every child is killed after its timeout, so a reader that hangs (row 1 of the issue did)
cannot hang the suite.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from test_cli import ENV, write_pair

ROOT = Path(__file__).resolve().parents[1]
SERVER = Path(__file__).with_name("cli_server.py")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \".*\", line \d+", re.M)
SKIP = 77
# The registration of the tiny pair (affine stage, two blurs): about 0.5 s in a child.
QUICK = ["--stages", "affine", "-q", "--set", "affine.blurs=[0.2,0.1]"]
MEMORY = int(os.environ.get("HOSTILE_MEMORY", 24 << 20))
RESULT = {"transform.npz", "warped.ply", "field.npz", "field.vtk", "metrics.json", "config.toml"}


def env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, **ENV, "PYTHONPATH": path, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}


# ------------------------------------------------------------------------- the fork server


@dataclass
class Ran:
    rc: int | None  # None: killed after the timeout
    stdout: str
    stderr: str
    seconds: float


class Server:
    """Client of :mod:`cli_server` (one per test module)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env(),
            cwd=ROOT,
        )
        assert "ready" in json.loads(self.proc.stdout.readline())
        self.count = 0

    def run(self, argv, cwd: Path, *, setup="", post="", timeout=60.0, memory=None) -> Ran:
        self.count += 1
        out, err = (cwd.parent / f".{cwd.name}.{self.count}.{s}" for s in ("out", "err"))
        req = {
            "argv": [str(a) for a in argv],
            "cwd": str(cwd),
            "stdout": str(out),
            "stderr": str(err),
            "timeout": timeout,
            "setup": setup,
            "post": post,
            "memory": memory,
        }
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        ran = Ran(
            reply["rc"], out.read_text(errors="replace"), err.read_text(errors="replace"), reply["seconds"]
        )
        out.unlink()
        err.unlink()
        return ran

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


# ------------------------------------------------------------------------- folder snapshots


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every path below ``folder`` (hidden ones too): kind, size, mtime and SHA-256 of files."""
    table = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            st = path.lstat()
            if path.is_symlink():
                table[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                table[rel] = ("dir",)
            else:
                table[rel] = (
                    "file",
                    st.st_size,
                    st.st_mtime_ns,
                    hashlib.sha256(path.read_bytes()).hexdigest(),
                )
    return table


def under(rel: str, roots) -> bool:
    return any(rel == r or rel.startswith(r.rstrip("/") + "/") for r in roots)


# ------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One hostile command line.

    Attributes:
        row: the row of issue 19 it reproduces (``msg``: its messages paragraph; ``rule``: the
            CLI's general rule on unexpected errors).
        build: makes the case's files in its (working) folder and returns the argv.
        needles: what stderr must contain (the file, option or key at fault).
        code: expected exit code.
        setup, post: Python run in the child before / after the CLI (fault injection).
        changes: paths (with what is below them) the case may create or change; ``check``
            says what they must hold. Everything else must be as before.
        gone: ``gone(name)``: whether a top-level name must have been removed (stale
            temporaries).
        check: ``check(folder, ran)``: extra assertions.
        traceback: stderr must hold a traceback (``-v``) instead of none.
        timeout: the child is killed after this many seconds (a hang).
        memory: address-space limit of the child, bytes above the server's size.
    """

    row: str
    build: Callable[[Path], list]
    needles: tuple[str, ...] = ()
    code: int = 2
    setup: str = ""
    post: str = ""
    changes: tuple[str, ...] = ()
    gone: Callable[[str], bool] | None = None
    check: Callable | None = None
    traceback: bool = False
    timeout: float = 60.0
    memory: int | None = None
    marks: tuple = field(default=())


# --- fault injection (Python run in the child before the CLI)


def after_registration(body: str) -> str:
    """Setup code running ``body`` in the child once the registration is done."""
    indented = "\n".join("    " + ln for ln in body.strip().splitlines())
    return (
        "import register.app.run as _run\n"
        "_execute = _run.execute\n"
        "def _patched(*args, **kwargs):\n"
        "    out = _execute(*args, **kwargs)\n"
        f"{indented}\n"
        "    return out\n"
        "_run.execute = _patched\n"
    )


# ``body`` runs as the result folder is committed (the library's ``before_commit`` hook).
DURING_COMMIT = (
    "import register.app.outputs as _outputs\n"
    "_write = _outputs.write_result\n"
    "def _patched(*args, **kwargs):\n"
    "    kwargs['before_commit'] = lambda tmp: ({body})\n"
    "    return _write(*args, **kwargs)\n"
    "_outputs.write_result = _patched\n"
)

# The registration must not start: the case's check comes before it.
NO_REGISTRATION = (
    "import register.app.run as _run\n"
    "def _patched(*args, **kwargs):\n"
    "    raise RuntimeError('the registration ran: the check came too late')\n"
    "_run.execute = _patched\n"
)

# `register show` without opening a window (rendering takes seconds): checks what it is given.
STUB_VIEWER = (
    "import register.app.viz_show as _viz\n"
    "def _show(view, screenshot=None):\n"
    "    assert view.source.shape == view.warped.shape and len(view.target)\n"
    "_viz.show_result = _show\n"
)

FILL_DISK = after_registration(
    """
st = os.statvfs("full")
with open("full/filler", "wb") as fh:
    fh.write(bytes(st.f_bavail * st.f_frsize - 8192))
"""
)


def in_namespace(mount: str, size: int, *, readonly: bool = False, then: str = "") -> str:
    """Setup code: a ``size``-byte tmpfs on ``mount`` that only the child sees, then ``then``."""
    return (
        f"os.makedirs({mount!r}, exist_ok=True)\nmount_tmpfs({mount!r}, {size}, readonly={readonly})\n{then}"
    )


def list_into(folder: str, report: str) -> str:
    """Post code: the listing of ``folder`` as the child sees it, into the file ``report``."""
    return f"import json\njson.dump(sorted(os.listdir({folder!r})), open({report!r}, 'w'))"


# --- files


def pair(d: Path, sub: str = "") -> tuple[str, str]:
    """The tiny pair ``src.ply`` / ``tgt.ply`` in ``d / sub``; their paths relative to ``d``."""
    folder = d / sub
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("src.ply", "tgt.ply"):
        shutil.copyfile(PAIR / name, folder / name)
    return (f"{sub}/src.ply", f"{sub}/tgt.ply") if sub else ("src.ply", "tgt.ply")


def result_folder(d: Path, name: str = "out") -> Path:
    """A copy of a complete result folder of ``register run`` at ``d / name``."""
    shutil.copytree(PAIR / "result", d / name)
    return d / name


def text(d: Path, name: str, content: str) -> str:
    (d / name).parent.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(content)
    return name


def cloud_rows(n: int, far: int | None = None) -> str:
    """CSV of ``n`` points in the unit cube; point ``far`` (0-based) at ``x = 1e12``."""
    pts = np.random.default_rng(7).uniform(-1, 1, (n, 3))
    if far is not None:
        pts[far] = [1e12, 0.0, 0.0]
    return "x,y,z\n" + "".join(f"{x!r},{y!r},{z!r}\n" for x, y, z in pts.tolist())


def npz(path: Path, **arrays) -> str:
    arrays.setdefault("format_version", np.array(1))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path.name


def affine_npz(d: Path, matrix=None, translation=None, **extra) -> str:
    matrix = np.eye(3) if matrix is None else matrix
    translation = np.zeros(3) if translation is None else translation
    return npz(
        d / "t.npz", **{"kind": np.array("affine"), **extra, "matrix": matrix, "translation": translation}
    )


def kernel_npz(d: Path, controls, weights, sigmas) -> str:
    return npz(d / "t.npz", kind=np.array("kernel_field"), controls=controls, weights=weights, sigmas=sigmas)


def nested_npz(d: Path, depth: int) -> str:
    arrays, prefix = {}, ""
    for _ in range(depth):
        arrays[prefix + "kind"], arrays[prefix + "count"] = np.array("composite"), np.array(1)
        prefix += "step0/"
    arrays |= {
        prefix + "kind": np.array("affine"),
        prefix + "matrix": np.eye(3),
        prefix + "translation": np.zeros(3),
    }
    npz(d / "t.npz", **arrays)
    return "t.npz"


def damaged_zip(d: Path, how: str) -> str:
    """The shared result's ``transform.npz`` cut in half, or with bytes of a member zeroed."""
    data = (PAIR / "result" / "transform.npz").read_bytes()
    if how == "truncated":
        data = data[: len(data) // 2]
    else:  # a CRC error when the member is read
        start = data.index(b"NUMPY") + 200
        data = data[:start] + bytes(64) + data[start + 64 :]
    (d / "t.npz").write_bytes(data)
    return "t.npz"


def manifest(d: Path, rows: list[str], name: str = "m.csv") -> str:
    """A manifest ``name`` (header ``id,source,target``, then ``rows``) over the pair in ``p/``."""
    pair(d, "p")
    header = "" if name.endswith(".jsonl") else "id,source,target\n"
    return text(d, name, header + "".join(r + "\n" for r in rows))


def vtk_legacy(d: Path, tail: str) -> str:
    pts = "".join(f"{i} {i * i % 7} {i % 3}\n" for i in range(20))
    return text(
        d, "bad.vtk", f"# vtk DataFile Version 4.2\nx\nASCII\nDATASET POLYDATA\nPOINTS 20 double\n{pts}{tail}"
    )


def pcd(d: Path, header_points: str, fields: str = "x y z", rows: int = 200) -> str:
    body = "".join(f"{i * 0.01} {np.sin(i)} {np.cos(i)}\n" for i in range(rows))
    header = (
        f"# .PCD v0.7\nVERSION 0.7\nFIELDS {fields}\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
        f"WIDTH {header_points}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {header_points}\nDATA ascii\n"
    )
    return text(d, "bad.pcd", header + body)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


FLAT = "x,y\n" + "".join(f"{np.cos(i / 9)},{np.sin(i / 7)}\n" for i in range(150))

# Stale temporaries of "-o out" (owner dead, or an older register's with no owner, an hour old).
STALE = re.compile(r"\.out\.(?!1-)(\d+-0123456789ab|fedcba987654)\.(partial|old)")


def make_stale(d: Path) -> None:
    """What killed runs into ``out`` left, and look-alikes that must stay."""
    dead = dead_pid()
    for name in (
        f".out.{dead}-0123456789ab.partial",  # a killed run's folder (its owner recorded)
        f".out.{dead}-0123456789ab.old",  # a killed --overwrite's old folder
        ".out.fedcba987654.partial",  # an older register's temporary (no owner recorded)
        ".out.1-0123456789ab.partial",  # owner alive (pid 1): in use
        ".out.notes",  # not our pattern
        f".other.{dead}-0123456789ab.partial",  # another output's
    ):
        text(d, f"{name}/file.txt", "x")
    text(d, f".out.{dead}-aaaaaaaaaaaa.partial", "a file, not a folder")
    old = time.time() - 3600
    os.utime(d / ".out.fedcba987654.partial", (old, old))


# --- builders: each makes the pair (and ``prep``'s files) and returns the argv


def run_args(
    *argv, prep: Callable[[Path], object] | None = None, sub: str | None = ""
) -> Callable[[Path], list]:
    """A builder: the pair in ``sub`` (``None``: no pair), ``prep(d)``; the argv is ``argv``'s
    words (``"run src.ply tgt.ply"`` is three)."""

    def build(d: Path) -> list:
        if sub is not None:
            pair(d, sub)
        if prep is not None:
            prep(d)
        return [w for a in argv for w in str(a).split()]

    return build


def warp_case(row: str, make: Callable[[Path], str], *needles: str, name: str = "t.npz", **kw) -> Case:
    """``register warp T src.ply -o moved.ply`` with the transform file ``make`` writes."""

    def build(d: Path) -> list:
        pair(d)
        return ["warp", make(d), "src.ply", "-o", "moved.ply"]

    return Case(row, build, (name, *needles), **kw)


def show_case(edit: Callable[[Path], object], *needles: str) -> Case:
    """``register show out`` on a result folder damaged by ``edit(out)``."""
    return Case("6", run_args("show", "out", prep=lambda d: edit(result_folder(d))), needles)


def edit_metrics(change) -> Callable[[Path], None]:
    def edit(out: Path) -> None:
        metrics = json.loads((out / "metrics.json").read_text())
        (out / "metrics.json").write_text(json.dumps(change(metrics)))

    return edit


def legacy_result_elsewhere(d: Path) -> None:
    """A result folder of an older register (input paths relative to the folder it ran in)."""
    pair(d, "proj")
    out = result_folder(d / "proj", "out")
    edit_metrics(lambda m: m | {"source": "src.ply", "target": "tgt.ply"})(out)


def previous_batch(d: Path) -> None:
    """An earlier batch ``bout`` whose pair p1 is to be registered again from its own result."""
    result_folder(d / "bout", "p1")
    text(d, "bout/batch.json", "{}\n")
    text(d, "m.csv", "id,source,target\np1,bout/p1/warped.ply,tgt.ply\n")


def lung_pair(d: Path) -> None:
    for side in ("source", "target"):
        shutil.copyfile(ROOT / f"data_samples/lung_{side}.ply", d / f"lung_{side}.ply")


# --- checks


def holds(path: str, content: str) -> Callable:
    def check(d: Path, ran: Ran) -> None:
        assert (d / path).read_text() == content, f"{path} changed"

    return check


def listing_is(folder: str, names) -> Callable:
    def check(d: Path, ran: Ran) -> None:
        assert sorted(os.listdir(d / folder)) == sorted(names), os.listdir(d / folder)

    return check


def reported(report: str, names: list[str]) -> Callable:
    def check(d: Path, ran: Ran) -> None:
        assert json.loads((d / report).read_text()) == names

    return check


def all_of(*checks: Callable) -> Callable:
    def check(d: Path, ran: Ran) -> None:
        for c in checks:
            c(d, ran)

    return check


def no_raw_bytes(d: Path, ran: Ran) -> None:
    assert "\\x" not in ran.stderr and "\x80" not in ran.stderr, ran.stderr


Q = " ".join(QUICK)
RUN = f"run src.ply tgt.ply -o out {Q}"
MID_RUN_FOLDER = "(os.makedirs('out'), open('out/user.txt', 'w').write('mine'))"
BATCH = "-o bout -q --no-images --no-report"

CASES: dict[str, Case] = {
    # ---- row 2: a folder appearing at OUT (or replaced) while the registration runs
    "2-folder-with-a-file-appears-at-out": Case(
        "2",
        run_args(RUN),
        ("-o out",),
        setup=after_registration(MID_RUN_FOLDER),
        changes=("out",),
        check=all_of(holds("out/user.txt", "mine"), listing_is("out", ["user.txt"])),
    ),
    "2-folder-appears-during-the-commit": Case(
        "2",
        run_args(RUN),
        ("-o out",),
        setup=DURING_COMMIT.format(body=MID_RUN_FOLDER),
        changes=("out",),
        check=all_of(holds("out/user.txt", "mine"), listing_is("out", ["user.txt"])),
    ),
    "2-empty-folder-appears-at-out": Case(
        "2",
        run_args(RUN),
        ("-o out",),
        setup=after_registration("os.makedirs('out')"),
        changes=("out",),
        check=listing_is("out", []),
    ),
    "2-overwrite-folder-replaced-mid-run": Case(
        "2",
        run_args(RUN, "--overwrite", prep=result_folder),
        ("-o out",),
        setup=after_registration(f"os.rename('out', 'moved'); {MID_RUN_FOLDER}"),
        changes=("out", "moved"),
        check=all_of(listing_is("out", ["user.txt"]), listing_is("moved", RESULT)),
    ),
    "2-overwrite-refuses-a-user-folder": Case(
        "2",
        run_args(RUN, "--overwrite", prep=lambda d: text(d, "out/notes.txt", "mine")),
        ("-o out", "notes.txt"),
    ),
    "2-overwrite-refuses-a-result-holding-user-files": Case(
        "2",
        run_args(RUN, "--overwrite", prep=lambda d: (result_folder(d), text(d, "out/notes.txt", "mine"))),
        ("-o out", "notes.txt"),
    ),
    "2-overwrite-through-a-link-to-a-user-folder": Case(
        "2",
        run_args(
            RUN,
            "--overwrite",
            prep=lambda d: (text(d, "real/notes.txt", "mine"), (d / "out").symlink_to("real")),
        ),
        ("-o out", "notes.txt"),
    ),
    # ---- row 3: an output folder holding the inputs, with and without --overwrite
    "3-output-is-the-input-folder-overwrite": Case(
        "3",
        run_args(
            f"run data/src.ply data/tgt.ply -o data --overwrite {Q}",
            sub="data",
            prep=lambda d: text(d, "data/notes.txt", "x"),
        ),
        ("-o data", "data/src.ply"),
    ),
    "3-output-is-the-input-folder": Case(
        "3",
        run_args(
            f"run data/src.ply data/tgt.ply -o data {Q}",
            sub="data",
            prep=lambda d: text(d, "data/notes.txt", "x"),
        ),
        ("-o data",),
    ),
    "3-output-holds-the-input-folder-overwrite": Case(
        "3",
        run_args(f"run proj/data/src.ply proj/data/tgt.ply -o proj --overwrite {Q}", sub="proj/data"),
        ("-o proj", "proj/data/src.ply"),
    ),
    "3-output-links-to-the-input-folder-overwrite": Case(
        "3",
        run_args(
            f"run data/src.ply data/tgt.ply -o out --overwrite {Q}",
            sub="data",
            prep=lambda d: (d / "out").symlink_to("data"),
        ),
        ("-o out", "data/src.ply"),
    ),
    "3-source-inside-the-result-it-overwrites": Case(
        "3",
        run_args(f"run out/warped.ply tgt.ply -o out --overwrite {Q}", prep=result_folder),
        ("-o out", "out/warped.ply"),
    ),
    "3-pipeline-file-inside-the-output": Case(
        "3",
        run_args(RUN, "-p out/config.toml --overwrite", prep=result_folder),
        ("-o out", "out/config.toml"),
    ),
    "3-landmarks-inside-the-output": Case(
        "3",
        run_args(
            RUN,
            "--landmarks out/lm.csv out/lm.csv --overwrite",
            prep=lambda d: (result_folder(d), text(d, "out/lm.csv", cloud_rows(5))),
        ),
        ("-o out", "out/lm.csv"),
    ),
    "3-batch-pair-folder-holds-its-input": Case(
        "3", run_args(f"batch m.csv {BATCH} --stages affine", prep=previous_batch), ("bout/p1", "warped.ply")
    ),
    "3-warp-output-is-the-transform": Case(
        "3",
        run_args("warp out/transform.npz src.ply -o out/transform.npz --overwrite", prep=result_folder),
        ("-o out/transform.npz",),
    ),
    # ---- row 4: warp must not write non-finite points
    "4-warp-nan-matrix": warp_case("4", lambda d: affine_npz(d, matrix=np.full((3, 3), np.nan)), "NaN"),
    "4-warp-overflowing-matrix": warp_case(
        "4", lambda d: affine_npz(d, matrix=np.full((3, 3), 1e308)), "non-finite"
    ),
    "4-warp-overflowing-kernel-field": warp_case(
        "4", lambda d: kernel_npz(d, np.zeros((2, 3)), np.full((2, 3), 1e308), np.array([10.0])), "non-finite"
    ),
    # ---- row 5: damaged transform files
    "5-truncated-zip": warp_case("5", lambda d: damaged_zip(d, "truncated")),
    "5-corrupt-zip-member": warp_case("5", lambda d: damaged_zip(d, "corrupt")),
    "5-format-version-text": warp_case(
        "5", lambda d: affine_npz(d, format_version=np.array("abc")), "format_version"
    ),
    "5-format-version-list": warp_case(
        "5", lambda d: affine_npz(d, format_version=np.array([1, 2])), "format_version"
    ),
    "5-format-version-too-new": warp_case(
        "5", lambda d: affine_npz(d, format_version=np.array(99)), "upgrade"
    ),
    "5-npy-given": warp_case(
        "5", lambda d: (np.save(d / "t.npy", np.eye(3)), "t.npy")[1], ".npz", name="t.npy"
    ),
    "5-3000-nested-composites": warp_case("5", lambda d: nested_npz(d, 3000), "nested"),
    "5-matrix-shape": warp_case("5", lambda d: affine_npz(d, matrix=np.ones((3, 2))), "matrix"),
    "5-translation-shape": warp_case("5", lambda d: affine_npz(d, translation=np.zeros(2)), "translation"),
    "5-matrix-of-text": warp_case("5", lambda d: affine_npz(d, matrix=np.full((3, 3), "abc")), "matrix"),
    "5-weights-shape": warp_case(
        "5", lambda d: kernel_npz(d, np.zeros((4, 3)), np.zeros((4, 2)), np.array([1.0])), "weights"
    ),
    "5-kernel-width-zero": warp_case(
        "5", lambda d: kernel_npz(d, np.zeros((4, 3)), np.zeros((4, 3)), np.array([0.0])), "sigmas"
    ),
    "5-kernel-width-negative": warp_case(
        "5", lambda d: kernel_npz(d, np.zeros((4, 3)), np.zeros((4, 3)), np.array([-1.0])), "sigmas"
    ),
    "5-kernel-width-infinite": warp_case(
        "5", lambda d: kernel_npz(d, np.zeros((4, 3)), np.zeros((4, 3)), np.array([np.inf])), "sigmas"
    ),
    "5-object-array-entry": warp_case(
        "5", lambda d: affine_npz(d, matrix=np.array([np.eye(3), "x"], dtype=object)), "matrix"
    ),
    "5-composite-count-negative": warp_case(
        "5", lambda d: npz(d / "t.npz", kind=np.array("composite"), count=np.array(-1)), "count"
    ),
    "5-composite-mixed-dimensions": warp_case(
        "5",
        lambda d: npz(
            d / "t.npz",
            kind=np.array("composite"),
            count=np.array(2),
            **{"step0/kind": np.array("affine"), "step0/matrix": np.eye(3), "step0/translation": np.zeros(3)},
            **{"step1/kind": np.array("affine"), "step1/matrix": np.eye(2), "step1/translation": np.zeros(2)},
        ),
        "2-D",
    ),
    "5-eval-truncated-zip": Case(
        "5",
        run_args(
            "eval t.npz --landmarks lm.csv lm.csv",
            prep=lambda d: (damaged_zip(d, "truncated"), text(d, "lm.csv", cloud_rows(5))),
        ),
        ("t.npz",),
    ),
    # ---- the messages paragraph: the file / key named, no raw bytes
    "msg-unknown-kind-with-pickle-bytes": warp_case(
        "msg",
        lambda d: affine_npz(d, kind=np.array(pickle.dumps({"x": 1}).decode("latin-1"))),
        "kind",
        check=no_raw_bytes,
    ),
    "msg-empty-composite": warp_case(
        "msg", lambda d: npz(d / "t.npz", kind=np.array("composite"), count=np.array(0)), "empty"
    ),
    "msg-infinite-blurs-set": Case(
        "msg", run_args(RUN, "--set affine.blurs=[inf]"), ("--set", "affine.blurs")
    ),
    "msg-infinite-blurs-toml": Case(
        "msg",
        run_args(RUN, "-p my.toml", prep=lambda d: text(d, "my.toml", "[affine]\nblurs = [inf, 0.1]\n")),
        ("my.toml", "affine.blurs"),
    ),
    "msg-infinite-kernel-widths-set": Case(
        "msg", run_args(RUN, "--set spline.sigmas=[inf]"), ("spline.sigmas",)
    ),
    # ---- row 6: show on a damaged result folder; show from another folder
    "6-bad-json": show_case(lambda out: (out / "metrics.json").write_text("{not json"), "metrics.json"),
    "6-missing-key": show_case(
        edit_metrics(lambda m: {k: v for k, v in m.items() if k != "target"}), "metrics.json", "target"
    ),
    "6-list-instead-of-object": show_case(edit_metrics(lambda m: [m]), "metrics.json"),
    "6-target-not-a-path": show_case(edit_metrics(lambda m: m | {"target": 12}), "metrics.json", "target"),
    "6-corrupt-field": show_case(
        lambda out: (out / "field.npz").write_bytes(b"PK\x03\x04" + bytes(100)), "field.npz"
    ),
    "6-object-array-field": show_case(
        lambda out: np.savez(
            out / "field.npz", points=np.array([1, "a"], dtype=object), displacement=np.zeros(2)
        ),
        "field.npz",
    ),
    "6-field-shapes-differ": show_case(
        lambda out: np.savez(out / "field.npz", points=np.zeros((10, 3)), displacement=np.zeros((9, 3))),
        "field.npz",
    ),
    "6-show-older-result-from-another-folder": Case(
        "6", run_args("show proj/out", prep=legacy_result_elsewhere, sub=None), code=0, setup=STUB_VIEWER
    ),
    # ---- row 7: output location unwritable or full: refused before the registration
    "7-read-only-parent": Case(
        "7",
        run_args(f"run src.ply tgt.ply -o ro/out {Q}"),
        ("-o ro/out", "writ"),
        setup=in_namespace("ro", 1 << 20, readonly=True, then=NO_REGISTRATION),
        changes=("ro",),
    ),
    "7-read-only-batch-output": Case(
        "7",
        lambda d: ["batch", manifest(d, ["p1,p/src.ply,p/tgt.ply"]), "-o", "ro/bout", "-q"],
        ("-o ro/bout", "cannot write"),
        setup=in_namespace("ro", 1 << 20, readonly=True),
        changes=("ro",),
    ),
    "7-missing-parent": Case(
        "7", run_args(f"run src.ply tgt.ply -o no/such/out {Q}"), ("no/such/out", "does not exist")
    ),
    "7-no-space-before-the-run": Case(
        "7",
        run_args(f"run src.ply tgt.ply -o full/out {Q}"),
        ("-o full/out", "space"),
        setup=in_namespace("full", 64 << 10, then=NO_REGISTRATION),
        post=list_into("full", "inside.json"),
        changes=("full", "inside.json"),
        check=reported("inside.json", []),
    ),
    "7-disk-full-while-writing": Case(
        "7",
        run_args(f"run src.ply tgt.ply -o full/out {Q}"),
        ("-o full/out", "space"),
        setup=in_namespace("full", 8 << 20, then=FILL_DISK),
        post=list_into("full", "inside.json"),
        changes=("full", "inside.json"),
        check=reported("inside.json", ["filler"]),
    ),
    # ---- row 8: seeds out of range
    "8-negative-seed": Case("8", run_args(RUN, "--seed -1"), ("--seed -1",)),
    "8-negative-seed-batch": Case(
        "8",
        lambda d: ["batch", manifest(d, ["p1,p/src.ply,p/tgt.ply"]), *BATCH.split(), "--seed", "-1"],
        ("--seed -1",),
    ),
    "8-negative-seed-train": Case(
        "8", run_args("train --preset lung --steps 1 --out m.pt --seed -1 -q"), ("--seed -1",)
    ),
    # ---- row 9: one point far away from the others
    "9-far-point-in-source": Case(
        "9",
        run_args(f"run far.csv tgt.ply -o out {Q}", prep=lambda d: text(d, "far.csv", cloud_rows(300, 123))),
        ("far.csv", "point 123"),
    ),
    "9-far-point-in-target": Case(
        "9",
        run_args(f"run src.ply far.csv -o out {Q}", prep=lambda d: text(d, "far.csv", cloud_rows(300, 123))),
        ("far.csv", "point 123"),
    ),
    # ---- row 11: manifest problems: the whole list, exit 2
    "11-quoted-cell-spans-a-line-break": Case(
        "11",
        lambda d: [
            "batch",
            manifest(d, ['p1,"p/src', 'ply",p/tgt.ply', "p2,p/missing.ply,p/tgt.ply"]),
            *BATCH.split(),
        ],
        ("m.csv", "2 problem(s)", "line 2", "line 4"),
    ),
    "11-nul-byte-in-a-path": Case(
        "11",
        lambda d: ["batch", manifest(d, ["p1,p/src\x00.ply,p/tgt.ply"]), *BATCH.split()],
        ("m.csv", "line 2", "NUL"),
    ),
    "11-nul-byte-in-a-jsonl-path": Case(
        "11",
        lambda d: [
            "batch",
            manifest(
                d, [json.dumps({"id": "p1", "source": "p/s\x00.ply", "target": "p/tgt.ply"})], "m.jsonl"
            ),
            *BATCH.split(),
        ],
        ("m.jsonl", "line 1", "NUL"),
    ),
    # ---- row 12: batch --device cuda on a machine without CUDA: refused before any pair
    "12-batch-cuda-without-cuda": Case(
        "12",
        lambda d: ["batch", manifest(d, ["p1,p/src.ply,p/tgt.ply"]), *BATCH.split(), "--device", "cuda"],
        ("--device cuda",),
    ),
    # ---- row 14: out of memory (a limit a little above the child's size)
    "14-out-of-memory": Case(
        "14",
        run_args("run lung_source.ply lung_target.ply -o out -q", prep=lung_pair, sub=None),
        ("out of memory", "max_points"),
        code=1,
        memory=MEMORY,
    ),
    # ---- row 15: a run removes the stale temporaries of its own output name, nothing else
    "15-stale-temporaries-removed": Case(
        "15", run_args(RUN, prep=make_stale), code=0, changes=("out",), gone=STALE.fullmatch
    ),
    # ---- the general rule: an unexpected failure is one line and exit 1; the traceback with -v
    "rule-unexpected-error": Case(
        "rule",
        run_args(RUN),
        ("RuntimeError", "boom", "-v"),
        code=1,
        setup=after_registration("raise RuntimeError('boom')"),
    ),
    "rule-unexpected-error-verbose": Case(
        "rule",
        run_args(RUN, "-v"),
        ("RuntimeError", "boom"),
        code=1,
        setup=after_registration("raise RuntimeError('boom')"),
        traceback=True,
    ),
    # ---- the readers (branch io-bounds): rows 1, 10, 13
    "1-vtk-field-names-past-the-end": Case(
        "1",
        run_args(
            f"run bad.vtk tgt.ply -o out {Q}",
            prep=lambda d: vtk_legacy(d, "FIELD FieldData 1\nnames 1 1000000000000 string\n"),
        ),
        ("bad.vtk",),
        timeout=10,
        memory=1 << 30,
    ),
    "10-vtk-polygons-count": Case(
        "10",
        run_args(
            f"run bad.vtk tgt.ply -o out {Q}",
            prep=lambda d: vtk_legacy(d, "POLYGONS 1000000000000 4\n3 0 1 2\n"),
        ),
        ("bad.vtk",),
        timeout=10,
        memory=1 << 30,
    ),
    "13-pcd-negative-points": Case(
        "13",
        run_args(f"run bad.pcd tgt.ply -o out {Q}", prep=lambda d: pcd(d, "-50")),
        ("bad.pcd",),
    ),
    "13-pcd-fewer-points-than-rows": Case(
        "13",
        run_args(f"run bad.pcd tgt.ply -o out {Q}", prep=lambda d: pcd(d, "150")),
        ("bad.pcd",),
    ),
    "13-pcd-duplicate-field": Case(
        "13",
        # A planar target: the source read as 2-D (z taken for a second y) would register.
        run_args(
            f"run bad.pcd flat.csv -o out {Q}",
            prep=lambda d: (pcd(d, "200", "x y y"), text(d, "flat.csv", FLAT)),
        ),
        ("bad.pcd",),
    ),
}


# ------------------------------------------------------------------------- the shared pair


PAIR: Path = Path()


@pytest.fixture(scope="module", autouse=True)
def shared_pair(tmp_path_factory, server):
    """The tiny pair and one complete result folder of it (copied into the cases)."""
    global PAIR
    PAIR = tmp_path_factory.mktemp("shared")
    write_pair(PAIR, 200, 190)
    ran = server.run(["run", "src.ply", "tgt.ply", "-o", "result", *QUICK], PAIR)
    assert ran.rc == 0, ran.stderr
    return PAIR


# ------------------------------------------------------------------------- running a case


def server_vm(server: Server) -> int:
    with open(f"/proc/{server.proc.pid}/status") as fh:
        return next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmSize:"))


def run_case(server: Server, case: Case, folder: Path) -> tuple[Ran, dict, dict]:
    """Build ``case`` in ``folder`` and run it; returns what ran and the snapshots around it."""
    folder.mkdir()
    argv = case.build(folder)
    before = snapshot(folder)
    memory = None if case.memory is None else case.memory + server_vm(server)
    ran = server.run(argv, folder, setup=case.setup, post=case.post, timeout=case.timeout, memory=memory)
    return ran, before, snapshot(folder)


def problems(case: Case, ran: Ran, before: dict, after: dict) -> dict[str, list]:
    """What went wrong, by kind: ``hang``, ``data loss`` (a path of the user's removed or
    changed), ``traceback``, ``wrong exit 0``, ``other`` (exit code, message, left-overs)."""
    err = ANSI.sub("", ran.stderr)
    found: dict[str, list] = {}
    if ran.rc is None:
        return {"hang": [f"killed after {case.timeout} s"]}
    must_go = {p for p in before if case.gone is not None and case.gone(p.split("/")[0])}
    lost = [p for p in before if (p not in after or after[p] != before[p]) and p not in must_go]
    lost = [p for p in lost if not under(p, case.changes)]
    if lost:
        found["data loss"] = lost
    if bool(TRACEBACK.search(err)) != case.traceback:
        found["traceback"] = [err[-2000:]]
    if ran.rc == 0 and case.code != 0:
        found["wrong exit 0"] = [err[-500:]]
    other = []
    if ran.rc != case.code:
        other.append(f"exit {ran.rc}, expected {case.code}")
    other += [f"{n!r} not in stderr" for n in case.needles if n not in err]
    if case.code == 2 and "error:" not in err:
        other.append("no 'error:' line")
    other += [f"left behind: {p}" for p in after if p not in before and not under(p, case.changes)]
    other += [f"not removed: {p}" for p in must_go if p in after]
    if other:
        found["other"] = [*other, err[-1500:]]
    return found


OUTCOMES = ("hang", "data loss", "traceback", "wrong exit 0", "other")


def outcome(found: dict) -> str:
    """The worst kind of problem, or ``clean``."""
    return next((kind for kind in OUTCOMES if kind in found), "clean")


@pytest.mark.parametrize("name", [pytest.param(n, marks=list(c.marks), id=n) for n, c in CASES.items()])
def test_hostile(name, server, tmp_path):
    case = CASES[name]
    if name.startswith("12-"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available: --device cuda is valid here")
    ran, before, after = run_case(server, case, tmp_path / "case")
    if ran.rc == SKIP:
        pytest.skip(ran.stderr.strip())
    found = problems(case, ran, before, after)
    assert not found, f"{outcome(found)}: {found}"
    if case.check is not None:
        case.check(tmp_path / "case", ran)


# ------------------------------------------------------------------------- the data-loss rows, as faults


def fake_result(n: int = 20):
    """A source cloud and a :class:`register.pipeline.Result` for it (no registration)."""
    from register.config import PipelineConfig
    from register.core.pointcloud import PointCloud
    from register.core.transforms import Affine, Composite
    from register.pipeline import Result

    pts = np.random.default_rng(0).normal(size=(n, 3))
    result = Result(
        Composite([Affine.identity()]), pts, np.zeros_like(pts), np.ones(n), config=PipelineConfig()
    )
    return PointCloud(pts, path="src.ply"), result


def intrude(what: str, out: Path) -> None:
    if what == "folder with a file":
        out.mkdir()
        (out / "user.txt").write_text("mine")
    elif what == "empty folder":
        out.mkdir()
    else:
        out.write_text("mine")


@pytest.mark.parametrize("rename", ["renameat2", "mkdir fallback"])
@pytest.mark.parametrize("what", ["folder with a file", "empty folder", "file"])
def test_something_appearing_at_out_during_the_commit_survives(what, rename, tmp_path, monkeypatch):
    """The library's ``before_commit`` hook puts something at OUT: the commit fails, it stays."""
    import register.app.outputs as outputs
    import register.app.staging as staging
    from register.errors import InputError

    if rename == "mkdir fallback":
        monkeypatch.setattr(staging, "_renameat2", lambda: None)
    source, result = fake_result()
    out = outputs.check_output(tmp_path / "out")
    before = None

    def hook(tmp: Path) -> None:
        nonlocal before
        intrude(what, tmp_path / "out")
        before = snapshot(tmp_path)

    with pytest.raises(InputError, match="appeared while this run was going"):
        outputs.write_result(out, source, result, {}, before_commit=hook)
    assert snapshot(tmp_path) == {k: v for k, v in before.items() if not k.startswith(".out.")}


def test_overwrite_replaces_only_the_folder_it_checked(tmp_path):
    """With --overwrite, a result folder swapped for the user's during the run is not replaced;
    of two runs overwriting the same result, the second fails and the first's result stays."""
    import register.app.outputs as outputs
    from register.errors import InputError

    source, result = fake_result()
    outputs.write_result(tmp_path / "out", source, result, {"run": 0})
    swapped = outputs.check_output(tmp_path / "out", overwrite=True)

    def swap(tmp: Path) -> None:
        shutil.rmtree(tmp_path / "out")
        intrude("folder with a file", tmp_path / "out")

    with pytest.raises(InputError, match="changed while this run was going"):
        outputs.write_result(swapped, source, result, {"run": 1}, before_commit=swap)
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["user.txt"]

    shutil.rmtree(tmp_path / "out")
    outputs.write_result(tmp_path / "out", source, result, {"run": 0})
    first, second = (outputs.check_output(tmp_path / "out", overwrite=True) for _ in range(2))
    outputs.write_result(first, source, result, {"run": 1})
    with pytest.raises(InputError, match="changed while this run was going"):
        outputs.write_result(second, source, result, {"run": 2})
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["run"] == 1
    assert os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("layout", ["out is the folder", "out holds the folder", "out links to the folder"])
def test_inputs_inside_the_output_are_refused(layout, overwrite, tmp_path):
    import register.app.outputs as outputs
    from register.errors import InputError

    data = tmp_path / "proj" / "data"
    data.mkdir(parents=True)
    src = data / "src.ply"
    src.write_text("points")
    out = {"out is the folder": data, "out holds the folder": tmp_path / "proj"}.get(
        layout, tmp_path / "link"
    )
    if layout == "out links to the folder":
        out.symlink_to(data)
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match="holds the input"):
        outputs.check_output(out, overwrite=overwrite, inputs=[src])
    assert snapshot(tmp_path) == before


def test_two_concurrent_runs_into_the_same_output(tmp_path):
    """Two console processes, both past their checks before either commits (a barrier after the
    registration): one writes OUT, the other exits 2 and leaves it alone."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    case = tmp_path / "case"
    case.mkdir()
    pair(case)
    code = (
        "import os, sys, time\n"
        + after_registration(
            f"open(os.path.join({str(barrier)!r}, str(os.getpid())), 'w').close()\n"
            "deadline = time.time() + 120\n"
            f"while len(os.listdir({str(barrier)!r})) < 2 and time.time() < deadline:\n"
            "    time.sleep(0.05)"
        )
        + "from register.app.cli import main\nmain(sys.argv[1:])\n"
    )
    argv = [sys.executable, "-c", code, *RUN.split()]
    procs = [
        subprocess.Popen(argv, cwd=case, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    errors = " ".join(ANSI.sub("", err) for _, err in outs)
    assert codes == [0, 2], errors
    assert "-o out" in errors and "appeared while this run was going" in errors
    assert not TRACEBACK.search(errors), errors
    assert sorted(os.listdir(case)) == ["out", "src.ply", "tgt.ply"]
    assert set(os.listdir(case / "out")) == RESULT


def test_a_killed_run_leaves_only_what_the_next_run_removes(server, tmp_path):
    """A run killed (SIGKILL) while it writes OUT leaves a hidden temporary and no OUT; the next
    run into OUT removes it and writes the result."""
    case = tmp_path / "case"
    case.mkdir()
    pair(case)
    die = DURING_COMMIT.format(body="os.kill(os.getpid(), 9)")
    killed = server.run(RUN.split(), case, setup=die)
    assert killed.rc == -9
    left = [n for n in os.listdir(case) if n not in ("src.ply", "tgt.ply")]
    assert len(left) == 1 and re.fullmatch(r"\.out\.\d+-[0-9a-f]{12}\.partial", left[0]), left
    again = server.run(RUN.split(), case)
    assert again.rc == 0, again.stderr
    assert sorted(os.listdir(case)) == ["out", "src.ply", "tgt.ply"]


def test_show_finds_the_inputs_of_a_moved_project(tmp_path, monkeypatch):
    """metrics.json records absolute input paths and paths relative to the result folder: a result
    is shown from any working folder, and after the project folder moved as a whole."""
    import register.app.outputs as outputs

    proj = tmp_path / "proj"
    pair(proj)
    source, result = fake_result()
    metrics = {"source": str(proj / "src.ply"), "target": str(proj / "tgt.ply")}
    outputs.write_result(proj / "out", source, result, metrics)
    monkeypatch.chdir(tmp_path)
    assert outputs.read_result(Path("proj/out"))["target"].shape[1] == 3
    proj.rename(tmp_path / "moved")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    view = outputs.read_result(tmp_path / "moved" / "out")
    assert view["title"] == "src.ply -> tgt.ply" and len(view["target"]) == 190


def test_the_fork_server_runs_commands_as_the_console_script(server, tmp_path):
    """The table's children behave as ``python -m register``: same exit code, same message."""
    case = CASES["8-negative-seed"]
    forked, _, _ = run_case(server, case, tmp_path / "forked")
    folder = tmp_path / "console"
    folder.mkdir()
    argv = case.build(folder)
    proc = subprocess.run(
        [sys.executable, "-m", "register", *argv],
        cwd=folder,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (proc.returncode, ANSI.sub("", proc.stderr)) == (forked.rc, ANSI.sub("", forked.stderr))


@pytest.mark.slow
def test_out_of_memory_under_ulimit(tmp_path):
    """Issue 19's reproduction: ``ulimit -v 1200000`` on the sample lung pair, the console script."""
    import resource

    lung_pair(tmp_path)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1_200_000 * 1024, resource.RLIM_INFINITY))

    proc = subprocess.run(
        [sys.executable, "-m", "register", *["run", "lung_source.ply", "lung_target.ply", "-o", "out", "-q"]],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit,
    )
    err = ANSI.sub("", proc.stderr)
    if proc.returncode == 0:
        pytest.skip("the registration fits in 1.2 GB of address space here")
    assert proc.returncode == 1 and "out of memory" in err and not TRACEBACK.search(err), err
    assert sorted(os.listdir(tmp_path)) == ["lung_source.ply", "lung_target.ply"]
