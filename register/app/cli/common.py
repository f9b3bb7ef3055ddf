"""What the command modules share: exit codes, option aliases, the stderr console, the error
policy of every command (:func:`guarded`), logging and the checks of output files.

Light on purpose (typer and the standard library only): importing it must keep ``--help`` instant.
"""

from __future__ import annotations

import errno
import functools
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from register.errors import InputError

EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_PAIRS_FAILED = 3
EXIT_INTERRUPTED = 130
ADVANCED = "Advanced"
JsonOut = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")]
Overwrite = Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.")]
Verbose = Annotated[
    bool,
    typer.Option(
        "-v", "--verbose", help="Print the traceback of an unexpected error.", rich_help_panel=ADVANCED
    ),
]


# Library messages name a Python argument as ``name=value`` (``register.errors``); the options of
# the command line that set those arguments. Configuration keys (``spline.sigmas``) stay as they
# are: ``--set`` takes them.
OPTION_OF_ARGUMENT = {
    "config": "--pipeline",
    "device": "--device",
    "seed": "--seed",
    "overrides": "--set",
    "drop_nan": "--drop-nan",
    "labels": "--labels",
}


# Configuration keys that have an option of their own: named as the option.
OPTION_OF_KEY = {
    "pipeline.weights": "--weights",
    "pipeline.labels": "--labels",
    "pipeline.backend": "--backend",
    "pipeline.stages": "--stages",
}


def _key_as_option(text: str) -> str:
    """``pipeline.weights = 'radius'`` -> ``--weights radius``; ``pipeline.stages has 'flow'`` ->
    ``--stages flow``; ``pipeline.stages = ['affine', 'spline']`` -> ``--stages affine,spline``;
    the bare key -> the option."""
    for key, flag in OPTION_OF_KEY.items():
        k = re.escape(key)
        text = re.sub(
            rf"{k} = \[([^\]]*)\]",
            lambda m, flag=flag: f"{flag} " + m.group(1).replace("'", "").replace(", ", ","),
            text,
        )
        text = re.sub(rf"{k} (?:=|has) '([^'\s]*)'", rf"{flag} \1", text)
        text = re.sub(rf"{k}(?![\w.])", flag, text)
    return text


def cli_message(text: str) -> str:
    """``text`` with each library argument named as its option: ``device='cuda'`` -> ``--device
    cuda``, ``drop_nan=True`` -> ``--drop-nan``, ``overrides:`` -> ``--set:``; and the keys of
    :data:`OPTION_OF_KEY` with a value, as their options."""
    text = _key_as_option(text)
    for name, flag in OPTION_OF_ARGUMENT.items():
        free = rf"(?<![\w./\\-]){name}"  # not part of a longer name, a config key or a path
        text = re.sub(rf"{free}=True\b", flag, text)
        text = re.sub(rf"{free}='([^'\s]*)'", rf"{flag} \1", text)
        text = re.sub(rf"{free}=(?=[)\s,;]|$)", flag, text)
        text = re.sub(rf"{free}=", f"{flag} ", text)
        text = re.sub(rf"{free}:", f"{flag}:", text)
    return text


def log_line(text: str) -> None:
    """One progress line on stderr when it is a file (a SLURM or nohup log): UTC timestamp, then
    ``text``, flushed at once so the log shows it while the command runs."""
    import datetime

    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    print(f"{now} {text}", file=sys.stderr, flush=True)


def stderr_console():
    """The console of progress bars, tables and messages: stderr (stdout carries the answers)."""
    from rich.console import Console

    return Console(stderr=True)


def error_subject(message: str) -> dict:
    """What a one-line error names first: ``{"option": "--device"}`` for ``--device cuda: ...``,
    ``{"file": PATH}`` for ``PATH: ...`` (a path that exists or has a folder or suffix), else ``{}``."""
    head = message.split(": ", 1)[0] if ": " in message else ""
    if head.startswith("-"):
        return {"option": head.split()[0]}
    path = Path(head) if head else None
    if path is not None and (path.exists() or (" " not in head and ("/" in head or path.suffix))):
        return {"file": head}
    return {}


def fail(message: str, code: int = EXIT_INPUT, *, as_json: bool = False) -> typer.Exit:
    """Print ``error: message`` (one line) on stderr and, with ``as_json`` (the command's
    ``--json``), the JSON object ``{"error", "exit_code", "option" | "file"}`` on stdout, so a
    script reading stdout gets an answer on failure too; the :class:`typer.Exit` to raise."""
    if as_json:
        import json

        print(json.dumps({"error": message, "exit_code": code, **error_subject(message)}), flush=True)
    try:
        from rich.markup import escape

        # Escaped: "[affine]" in a message is text, not markup; soft_wrap: paths are never split.
        stderr_console().print(
            f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True
        )
    except Exception:  # e.g. out of memory: rich itself cannot be imported
        sys.stderr.write(f"error: {message}\n")
    return typer.Exit(code)


def out_of_memory(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is the machine running out of memory: MemoryError,
    torch's allocator errors, and the ImportError / OSError of a lazy import that cannot map its
    shared library under an address-space limit."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc).lower()
        if isinstance(exc, MemoryError):
            return True
        if isinstance(exc, RuntimeError) and any(
            s in text for s in ("can't allocate memory", "out of memory", "not enough memory")
        ):
            return True
        if isinstance(exc, ImportError | OSError) and (
            "failed to map segment" in text
            or "cannot allocate memory" in text
            or getattr(exc, "errno", None) == errno.ENOMEM
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def first_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` of ``exc``, cut to ``limit`` characters."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__


def guarded(command):
    """The error policy of every command.

    A user error (:class:`InputError`: a file, option or key the user can fix) is one line and
    exit 2; running out of memory is one line saying what to do and exit 1; any other failure
    (a bug) is one line and exit 1, its traceback printed only with ``-v``.
    """

    @functools.wraps(command)
    def run_command(*args, **kwargs):
        as_json = bool(kwargs.get("json_out"))
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):  # the command's own exit code
            raise
        except InputError as exc:
            raise fail(cli_message(str(exc)), EXIT_INPUT, as_json=as_json) from None
        except Exception as exc:
            if out_of_memory(exc):
                raise fail(
                    f"out of memory ({first_line(exc)}); use fewer points (e.g. --set "
                    "affine.max_points=2000 --set spline.max_points=2000, or subsample the clouds), "
                    "free memory, or use a machine with more",
                    EXIT_FAILED,
                    as_json=as_json,
                ) from None
            if kwargs.get("verbose"):
                stderr_console().print_exception()
            raise fail(
                f"unexpected {first_line(exc)}. This is a bug: run again with -v for the "
                "traceback and report it",
                EXIT_FAILED,
                as_json=as_json,
            ) from None

    return run_command


def setup_logging(verbose: bool, quiet: bool) -> None:
    """Log to the stderr console: INFO with ``verbose``, ERROR only with ``quiet``, else WARNING."""
    import logging

    from rich.logging import RichHandler

    level = logging.INFO if verbose else logging.WARNING
    if quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=stderr_console())])


def refuse_existing(output: Path, overwrite: bool, *inputs: tuple[Path, str]) -> None:
    """Refuse to replace ``output`` without ``--overwrite``, or to write over one of ``inputs``."""
    if output.exists() and not overwrite:
        raise InputError(f"-o {output}: file exists; choose another name or pass --overwrite")
    for other, name in inputs:
        if other.exists() and output.resolve() == other.resolve():
            raise InputError(f"-o {output}: same file as {name}; write the result elsewhere")


def check_screenshot(screenshot: Path, overwrite: bool) -> None:
    """Refuse a --screenshot that is not a .png, or that exists without --overwrite."""
    if screenshot.suffix.lower() != ".png":
        raise InputError(f"--screenshot {screenshot}: must be a .png file")
    if screenshot.exists() and not overwrite:
        raise InputError(f"--screenshot {screenshot}: file exists; choose another name or pass --overwrite")
