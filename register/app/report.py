"""``register report OUTDIR``: one self-contained HTML page over a batch's results.

A cohort summary first (pairs ok / failed, mean / median / p95 error before and after, total
time) with three inline SVG plots (:mod:`register.app.report_plots`), then one row per pair: status, the reliability verdict (``ok`` or ``suspect: <reasons>``,
:mod:`register.reliability`), landmark error (TRE) and chamfer distance before/after (data units,
lower is better), point counts, time, the pair's QA picture (before / after overlays) and links
to its log and metrics. Failed pairs come first, then pending ones, then the successes, worst
error first; a click on a column header sorts by it (a few lines of inline JavaScript, which
keep failures on top). No external resource is loaded: the page opens from disk, offline.
Pictures are linked by relative path (keep the page in OUTDIR), or embedded with
``embed=True`` (one movable file, larger).
"""

from __future__ import annotations

import base64
import datetime
import html
import math
import os
from pathlib import Path
from urllib.parse import quote

from register.app.batch.summary import STATUS_ORDER, collect, read_batch
from register.app.report_plots import cohort_html
from register.errors import InputError

GENERATOR = "register report"
REPORT_FILE = "report.html"

# (column key, header, kind): kind "num" sorts numerically, "text" alphabetically.
COLUMNS = (
    ("status", "status", "text"),
    ("id", "pair", "text"),
    ("verdict", "reliability", "text"),
    ("tre_before", "TRE before", "num"),
    ("tre_after", "TRE after", "num"),
    ("tre_after_p95", "TRE p95 after", "num"),
    ("chamfer_before", "chamfer before", "num"),
    ("chamfer_after", "chamfer after", "num"),
    ("source_points", "points (source \u2192 target)", "num"),
    ("seconds", "seconds (pair)", "num"),
)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#eee;cursor:pointer;position:sticky;top:0;max-width:7em}
th.sorted::after{content:" \\25BE"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed{background:#fde2e2} tr.pending{background:#f1f1f1;color:#777}
td.suspect{color:#a50;font-weight:bold}
td.error{color:#a00;max-width:40em;white-space:pre-wrap;font-family:monospace;font-size:12px}
img{width:420px;display:block}
.meta{color:#555}
.summary{font-size:15px}
.plots{display:flex;flex-wrap:wrap;gap:12px;margin:0.5em 0 1.5em}
svg.plot{border:1px solid #ddd;background:#fff}
"""

# Sort by a column, keeping failed rows first, then pending; empty cells last.
_SCRIPT = """
function sortBy(th){
  const table=th.closest('table'), body=table.tBodies[0], col=th.cellIndex;
  const num=th.dataset.kind==='num', desc=th.dataset.desc!=='1';
  table.querySelectorAll('th').forEach(h=>{h.classList.remove('sorted');delete h.dataset.desc;});
  th.classList.add('sorted'); if(desc) th.dataset.desc='1';
  const rows=Array.from(body.rows);
  rows.sort((a,b)=>{
    const r=a.dataset.rank-b.dataset.rank; if(r) return r;
    const x=a.cells[col].dataset.v, y=b.cells[col].dataset.v;
    if(x===''&&y==='') return 0; if(x==='') return 1; if(y==='') return -1;
    const c=num?parseFloat(x)-parseFloat(y):x.localeCompare(y);
    return desc?-c:c;
  });
  rows.forEach(r=>body.appendChild(r));
}
"""


def _fmt(row: dict, key: str, kind: str) -> str:
    """The text of one cell (the sort value is the raw ``row[key]``)."""
    value = row.get(key)
    if value is None or value == "":
        return ""
    if key == "source_points":
        return f"{value:,} \u2192 {row.get('target_points') or 0:,}"
    if key == "seconds" and row.get("wall_seconds") is not None:
        return f"{value:.1f} ({row['wall_seconds']:.1f})"
    if kind == "num" and isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _sort_key(row: dict) -> tuple:
    """Failed, pending, then ok; worst error (TRE after, else chamfer after) first."""
    error = row.get("tre_after")
    if error is None:
        error = row.get("chamfer_after")
    return (STATUS_ORDER.get(row["status"], 1), -(error if isinstance(error, int | float) else -1), row["id"])


def _link(path: Path, base: Path) -> str:
    """``path`` relative to the page's folder ``base``, as an escaped URL path."""
    rel = Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
    return html.escape(quote(rel), quote=True)


def _image_cell(outdir: Path, row: dict, embed: bool, base: Path) -> str:
    if not row.get("image"):
        return "<td></td>"
    path = outdir / row["id"] / row["image"]
    if not path.is_file():
        return "<td>picture missing</td>"
    rel = _link(path, base)
    src = f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" if embed else rel
    alt = html.escape(f"{row['id']}: before and after", quote=True)
    return f'<td><a href="{rel}"><img src="{src}" alt="{alt}" loading="lazy"></a></td>'


def _row_html(outdir: Path, row: dict, columns, embed: bool, base: Path) -> str:
    cells = []
    for key, _, kind in columns:
        value = row.get(key)
        shown = html.escape(_fmt(row, key, kind))
        sort_value = html.escape("" if value is None else str(value), quote=True)
        suspect = " suspect" if key == "verdict" and str(value or "").startswith("suspect") else ""
        cells.append(f'<td class="{kind}{suspect}" data-v="{sort_value}">{shown}</td>')
    cells.append(_image_cell(outdir, row, embed, base))
    links = [
        f'<a href="{_link(outdir / row["id"] / name, base)}">{name}</a>'
        for name in ("register.log", "metrics.json", "status.json")
        if (outdir / row["id"] / name).is_file()
    ]
    error = html.escape(row.get("error") or "")
    cells.append(f'<td class="error">{error}{"<br>" if error and links else ""}{" ".join(links)}</td>')
    rank = STATUS_ORDER.get(row["status"], 1)
    return f'<tr class="{html.escape(row["status"])}" data-rank="{rank}">{"".join(cells)}</tr>'


def render_report(outdir: Path, *, embed: bool = False, base: Path | None = None) -> str:
    """The HTML page of the batch in ``outdir`` (see the module docstring).

    Args:
        outdir: the batch's output folder.
        embed: embed the pictures (base64) instead of linking them.
        base: folder the page will be saved in (links are relative to it; default ``outdir``).

    Raises:
        InputError: ``outdir`` is not a batch output folder.
    """
    outdir = Path(outdir)
    batch = read_batch(outdir)
    if batch is None:
        raise InputError(
            f"{outdir}: not a batch output folder (no readable batch.json); give the -o folder of "
            "'register batch'"
        )
    rows = sorted(collect(outdir), key=_sort_key)
    # Columns nobody has a value for (TRE without landmarks) are left out.
    columns = [c for c in COLUMNS if c[2] == "text" or any(r.get(c[0]) is not None for r in rows)]
    tally = {status: sum(r["status"] == status for r in rows) for status in ("ok", "failed", "pending")}
    head = "".join(
        f'<th data-kind="{kind}" onclick="sortBy(this)" title="click to sort">{html.escape(label)}</th>'
        for _, label, kind in columns
    )
    body = "\n".join(_row_html(outdir, row, columns, embed, base or outdir) for row in rows)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    title = f"register batch: {outdir.resolve().name}"
    meta = (
        f"{len(rows)} pairs: {tally['ok']} ok, {tally['failed']} failed, {tally['pending']} pending. "
        f"Manifest {html.escape(str(batch.get('manifest')))}; ran on {html.escape(str(batch.get('runner')))}; "
        f"report made {now}. Reliability: ok, or suspect with the reasons (matched mass, held-out "
        "residual, folding; docs/reliability.md). "
        "TRE and chamfer distances in data units (mm for CT), lower is better; "
        "seconds of the registration (and of the whole pair: reading, writing, picture). "
        "Pictures: target grey; left, source red (before); right, warped source coloured by "
        "displacement (after). Click a column header to sort; failures stay on top."
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="{GENERATOR}">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
<script>{_SCRIPT}</script>
</head><body>
<h1>{html.escape(title)}</h1>
{cohort_html(rows)}
<p class="meta">{meta}</p>
<table>
<thead><tr>{head}<th>before / after</th><th>error, files</th></tr></thead>
<tbody>
{body}
</tbody></table>
</body></html>
"""


def write_report(
    outdir: Path, output: Path | None = None, *, embed: bool = False, overwrite: bool = False
) -> Path:
    """Write the report of ``outdir`` to ``output`` (default ``OUTDIR/report.html``).

    An existing file is replaced only if ``overwrite`` or if it is an earlier report (its
    generator tag says so); the file is written atomically.

    Returns:
        The path written.
    """
    from register.app.batch.summary import atomic_text

    outdir = Path(outdir)
    output = Path(output) if output is not None else outdir / REPORT_FILE
    if output.exists() and not overwrite:
        try:
            ours = f'content="{GENERATOR}"' in output.read_text(errors="replace")[:2000]
        except OSError:
            ours = False
        if not ours:
            raise InputError(f"-o {output}: file exists; choose another name or pass --overwrite")
    if output.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"-o {output}: the report is HTML; give a .html file name")
    page = render_report(outdir, embed=embed, base=output.parent)
    atomic_text(output, page)
    return output
