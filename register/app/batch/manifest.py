"""Read and check a batch manifest: one registration pair per row.

Formats, chosen by extension:

* ``.csv``: a header row, then one row per pair; lines starting with ``#`` and blank lines are
  skipped; cells are stripped of surrounding spaces;
* ``.jsonl`` / ``.ndjson``: one JSON object per line with the same keys.

Columns: ``id``, ``source``, ``target`` (required) and ``source_landmarks``,
``target_landmarks``, ``pipeline``, ``weights`` (optional; an empty cell means "not given").
Relative paths (points, landmarks, a pipeline ``.toml``) are relative to the manifest's folder.

Every row is checked before any work starts, and every problem is reported at once: unknown
or missing columns, empty or duplicate ids, ids that cannot be folder names, missing files,
unsupported extensions, landmarks given for one side only, unknown pipelines, rows whose
quoted cell runs over a line break, NUL bytes in paths.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from register.errors import InputError

REQUIRED = ("id", "source", "target")
OPTIONAL = ("source_landmarks", "target_landmarks", "pipeline", "weights")
COLUMNS = REQUIRED + OPTIONAL
FORMATS = (".csv", ".jsonl", ".ndjson")
# Names the batch writes beside the pair folders; no pair may take them.
RESERVED_IDS = frozenset({"batch.json", "summary.csv", "summary.json", "report.html", "report"})
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MAX_SHOWN = 20


class ManifestError(InputError):
    """A manifest that cannot be run; the message lists every problem with its line."""


@dataclass(frozen=True)
class PairSpec:
    """One row of a manifest, checked.

    Attributes:
        id: the pair's name, also its folder ``OUTDIR/<id>``.
        source, target: absolute paths of the point files (source is moved onto target).
        landmarks: absolute ``(source_landmarks, target_landmarks)`` paths, or ``None``.
        pipeline: preset name or absolute ``.toml`` path, or ``None`` (the batch's default).
        weights: point attribute used as mass, or ``None`` (the batch's default).
        line: line of the row in the manifest (for messages).
    """

    id: str
    source: Path
    target: Path
    landmarks: tuple[Path, Path] | None = None
    pipeline: str | None = None
    weights: str | None = None
    line: int = 0


def read_manifest(path: Path) -> list[PairSpec]:
    """Parse and check the manifest at ``path``.

    Returns:
        The pairs, in manifest order.

    Raises:
        ManifestError: the manifest is missing, unreadable, empty or has any bad row.
    """
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ManifestError(
            f"manifest {path}: unsupported extension '{path.suffix}'; use a .csv file with a header "
            f"row ({', '.join(REQUIRED)}, ...) or JSON lines (.jsonl)"
        )
    if not path.is_file():
        raise ManifestError(f"manifest {path}: file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {path}: cannot be read ({exc})") from None
    problems: list[str] = []
    rows = _jsonl_rows(path, text) if path.suffix.lower() != ".csv" else _csv_rows(path, text, problems)
    if not rows and not problems:
        raise ManifestError(f"manifest {path}: no pairs; add one row per pair ({', '.join(REQUIRED)})")
    pairs = [_check_row(path.parent, line, row, problems) for line, row in rows]
    _check_unique(pairs, problems)
    if problems:
        shown = problems[:_MAX_SHOWN]
        more = f"\n  ... and {len(problems) - _MAX_SHOWN} more" if len(problems) > _MAX_SHOWN else ""
        raise ManifestError(
            f"manifest {path}: {len(problems)} problem(s); fix them and run again (nothing was run):\n  "
            + "\n  ".join(shown)
            + more
        )
    return pairs


def _csv_rows(path: Path, text: str, problems: list[str]) -> list[tuple[int, dict[str, str]]]:
    # Comment lines become blank (an unmatched quote in a comment must not swallow rows), then
    # the whole text is parsed at once, so a quoted cell may not silently span lines: every
    # record's first and last line are known and a multi-line record is a problem of its own.
    lines = text.splitlines()
    kept = "\n".join("" if ln.startswith("#") else ln for ln in lines) + "\n"
    reader = csv.reader(io.StringIO(kept), skipinitialspace=True)
    records: list[tuple[int, int, list[str]]] = []
    first = 1
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                records.append((first, reader.line_num, cells))
            first = reader.line_num + 1
    except csv.Error as exc:
        raise ManifestError(f"manifest {path} line {reader.line_num}: not valid CSV ({exc})") from None
    if not records:
        return []
    header_line, _, header_cells = records[0]
    header = [h.strip() for h in header_cells]
    _check_columns(path, header_line, header)
    rows = []
    for line, last, cells in records[1:]:
        if last != line:
            problems.append(
                f"line {line}: a quoted cell runs on to line {last} (a missing closing quote?); "
                "put every row on one line"
            )
        elif len(cells) != len(header):
            problems.append(
                f"line {line}: {len(cells)} cells but the header has {len(header)} columns "
                f"({', '.join(header)}); quote cells that contain commas"
            )
        else:
            rows.append((line, {h: c.strip() for h, c in zip(header, cells, strict=True)}))
    return rows


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict[str, str]]]:
    rows = []
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"manifest {path} line {line}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise ManifestError(
                f"manifest {path} line {line}: expected a JSON object with keys id, source, target"
            )
        _check_columns(path, line, list(obj))
        for key, value in obj.items():
            if value is not None and not isinstance(value, str | int | float):
                raise ManifestError(f"manifest {path} line {line}: '{key}' must be a string, got {value!r}")
        rows.append((line, {k: "" if v is None else str(v).strip() for k, v in obj.items()}))
    return rows


def _check_columns(path: Path, line: int, names: list[str]) -> None:
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise ManifestError(
            f"manifest {path} line {line}: unknown column(s) {', '.join(repr(n) for n in unknown)}; "
            f"allowed columns: {', '.join(COLUMNS)}"
        )
    if len(set(names)) != len(names):
        raise ManifestError(f"manifest {path} line {line}: a column appears twice in {names}")
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise ManifestError(
            f"manifest {path} line {line}: missing column(s) {', '.join(missing)}; "
            f"required: {', '.join(REQUIRED)}"
        )


def _check_row(base: Path, line: int, row: dict[str, str], problems: list[str]) -> PairSpec:
    pair_id = row.get("id", "")
    where = f"line {line}" + (f" (id {pair_id})" if pair_id else "")
    if not pair_id:
        problems.append(f"{where}: empty id; give every pair a name (it becomes its output folder)")
    elif not _ID.fullmatch(pair_id) or pair_id in RESERVED_IDS:
        problems.append(
            f"{where}: id {pair_id!r} cannot be a folder name; use letters, digits, '.', '_' and '-' "
            "(not starting with '.' or '-'), and not one of " + ", ".join(sorted(RESERVED_IDS))
        )
    source = _point_file(base, row.get("source", ""), "source", where, problems)
    target = _point_file(base, row.get("target", ""), "target", where, problems)
    lm_cells = (row.get("source_landmarks", ""), row.get("target_landmarks", ""))
    landmarks = None
    if any(lm_cells) and not all(lm_cells):
        problems.append(f"{where}: give both source_landmarks and target_landmarks, or neither")
    elif all(lm_cells):
        src_lm = _point_file(base, lm_cells[0], "source_landmarks", where, problems)
        tgt_lm = _point_file(base, lm_cells[1], "target_landmarks", where, problems)
        landmarks = (src_lm, tgt_lm)
    pipeline = _pipeline(base, row.get("pipeline", ""), where, problems)
    if "\x00" in row.get("weights", ""):
        problems.append(f"{where}, column weights: contains a NUL byte; fix the manifest")
    return PairSpec(pair_id, source, target, landmarks, pipeline, row.get("weights") or None, line)


def _point_file(base: Path, cell: str, column: str, where: str, problems: list[str]) -> Path:
    from register.io import supported_extensions

    if "\x00" in cell:
        problems.append(f"{where}, column {column}: the path contains a NUL byte; fix the manifest")
        return base
    path = (base / cell).resolve() if cell else base
    if not cell:
        problems.append(f"{where}, column {column}: empty; give the path of a point file")
    elif not path.is_file():
        problems.append(f"{where}, column {column}: file {cell} not found (looked for {path})")
    elif path.suffix.lower() not in supported_extensions():
        problems.append(
            f"{where}, column {column}: {cell} has an unsupported extension; "
            f"use one of {' '.join(supported_extensions())}"
        )
    return path


def _pipeline(base: Path, cell: str, where: str, problems: list[str]) -> str | None:
    from register.config import load_config

    if not cell:
        return None
    if "\x00" in cell:
        problems.append(f"{where}, column pipeline: contains a NUL byte; fix the manifest")
        return None
    value = str((base / cell).resolve()) if cell.endswith(".toml") else cell
    try:
        load_config(value)
    except InputError as exc:
        problems.append(f"{where}, column pipeline: {exc}")
    return value


def _check_unique(pairs: list[PairSpec], problems: list[str]) -> None:
    # Case-insensitively: "P1" and "p1" are the same folder on macOS and Windows file systems.
    first: dict[str, PairSpec] = {}
    for pair in pairs:
        key = pair.id.casefold()
        if pair.id and key in first:
            other = first[key]
            problems.append(
                f"line {pair.line}: duplicate id {pair.id!r} (id {other.id!r} is on line {other.line}); "
                "ids name output folders and must differ (ignoring case)"
            )
        first.setdefault(key, pair)
