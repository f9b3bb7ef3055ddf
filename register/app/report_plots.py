"""The cohort part of ``register report``: a summary line of figures and three plots, as inline
SVG (no script, no external resource, so the page opens from disk and prints as it shows).

The error of a pair is its mean landmark error (TRE) when the batch had landmarks, else its
chamfer distance (data units, mm for CT; lower is better), before and after registration.

Plots:
  1. per pair, error before (grey) and after (blue), pairs sorted by the error after;
  2. the distribution of the errors after (histogram, 12 equal bins from 0);
  3. seconds per pair (the registration), same pair order as plot 1.
"""

from __future__ import annotations

import html
import math

import numpy as np

WIDTH, HEIGHT = 560, 220  # pixels of each plot
MARGIN = {"left": 56, "right": 12, "top": 26, "bottom": 40}
BEFORE, AFTER, BAR = "#9a9a9a", "#1f62b4", "#4a8a3c"
BINS = 12


def error_metric(rows: list[dict]) -> tuple[str, str, str]:
    """``(before key, after key, label)``: TRE when any finished pair has it, else chamfer."""
    if any(r.get("tre_after") is not None for r in rows):
        return "tre_before", "tre_after", "TRE (mean landmark error)"
    return "chamfer_before", "chamfer_after", "chamfer distance"


def cohort_figures(rows: list[dict], metric: tuple[str, str, str], done: list[dict]) -> dict:
    """Counts, mean / median / 95th percentile of the error before and after over the finished
    pairs ``done`` (those with the ``metric``'s value after), and the total registration time (s)."""
    before_key, after_key, label = metric
    out: dict = {
        "pairs": len(rows),
        "ok": sum(r["status"] == "ok" for r in rows),
        "failed": sum(r["status"] == "failed" for r in rows),
        "pending": sum(r["status"] == "pending" for r in rows),
        "metric": label,
        "measured": len(done),
        "seconds": float(sum(r.get("seconds") or 0.0 for r in rows)),
    }
    for when, key in (("before", before_key), ("after", after_key)):
        values = np.array([r[key] for r in done if r.get(key) is not None], dtype=float)
        if len(values):
            out[when] = {
                "mean": float(values.mean()),
                "median": float(np.median(values)),
                "p95": float(np.percentile(values, 95)),
            }
    return out


def summary_html(fig: dict) -> str:
    """The summary paragraph of :func:`cohort_figures`."""
    parts = [
        f"<b>{fig['pairs']} pairs</b>: {fig['ok']} ok, {fig['failed']} failed, {fig['pending']} pending",
        f"total registration time {fig['seconds']:.1f} s",
    ]
    if "after" in fig:
        parts.append(f"{html.escape(fig['metric'])} over the {fig['measured']} finished pairs that have it")
    for when in ("before", "after"):
        if when in fig:
            s = fig[when]
            parts.append(f"{when}: mean {s['mean']:.4g}, median {s['median']:.4g}, p95 {s['p95']:.4g}")
    return '<p class="summary" id="cohort-summary">' + "; ".join(parts) + " (data units).</p>"


def _nice_max(value: float) -> float:
    """The axis top: ``value`` rounded up to 1, 2 or 5 times a power of ten."""
    if not value > 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


class _Axes:
    """Pixel mapping of one plot: x from 0 to ``n`` slots, y from 0 to ``top``."""

    def __init__(self, n: int, top: float) -> None:
        self.n, self.top = max(n, 1), top
        self.x0, self.x1 = MARGIN["left"], WIDTH - MARGIN["right"]
        self.y0, self.y1 = HEIGHT - MARGIN["bottom"], MARGIN["top"]

    def x(self, slot: float) -> float:
        return self.x0 + (self.x1 - self.x0) * slot / self.n

    def y(self, value: float) -> float:
        return self.y0 - (self.y0 - self.y1) * min(value, self.top) / self.top

    def frame(self, title: str, ylabel: str, xlabel: str) -> list[str]:
        """Title, axes lines, y ticks at 0, top / 2 and top, axis labels."""
        out = [
            f'<text x="{WIDTH / 2:.0f}" y="16" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>',
            f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x1}" y2="{self.y0}" stroke="#444"/>',
            f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x0}" y2="{self.y1}" stroke="#444"/>',
            f'<text x="{(self.x0 + self.x1) / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle">{html.escape(xlabel)}</text>',
            f'<text x="14" y="{(self.y0 + self.y1) / 2:.0f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {(self.y0 + self.y1) / 2:.0f})">{html.escape(ylabel)}</text>',
        ]
        for v in (0.0, self.top / 2, self.top):
            out.append(
                f'<text x="{self.x0 - 4}" y="{self.y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>'
                f'<line x1="{self.x0}" y1="{self.y(v):.1f}" x2="{self.x1}" y2="{self.y(v):.1f}" stroke="#ddd"/>'
            )
        return out


def _svg(plot_id: str, parts: list[str], description: str) -> str:
    return (
        f'<svg id="{plot_id}" class="plot" role="img" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-size="11" '
        f'font-family="system-ui,sans-serif"><title>{html.escape(description)}</title>{"".join(parts)}</svg>'
    )


def error_plot(metric: tuple[str, str, str], done: list[dict]) -> str:
    """Plot 1: error before and after per pair (``done``, sorted by the error after), side by side."""
    before_key, after_key, label = metric
    top = _nice_max(max([r.get(before_key) or 0.0 for r in done] + [r[after_key] for r in done] + [0.0]))
    ax = _Axes(len(done), top)
    parts = ax.frame(
        f"{label} per pair, before and after", label.split(" ")[0], "pairs, sorted by the error after"
    )
    width = (ax.x1 - ax.x0) / ax.n * 0.4
    for i, r in enumerate(done):
        for j, (key, colour) in enumerate(((before_key, BEFORE), (after_key, AFTER))):
            value = r.get(key)
            if value is None:
                continue
            x = ax.x(i + 0.1) + j * width
            parts.append(
                f'<rect x="{x:.1f}" y="{ax.y(value):.1f}" width="{width:.1f}" height="{ax.y0 - ax.y(value):.1f}" '
                f'fill="{colour}"><title>{html.escape(r["id"])} {key.split("_")[-1]}: {value:.4g}</title></rect>'
            )
    parts.append(
        f'<rect x="{ax.x1 - 120}" y="{ax.y1}" width="10" height="10" fill="{BEFORE}"/>'
        f'<text x="{ax.x1 - 106}" y="{ax.y1 + 9}">before</text>'
        f'<rect x="{ax.x1 - 60}" y="{ax.y1}" width="10" height="10" fill="{AFTER}"/>'
        f'<text x="{ax.x1 - 46}" y="{ax.y1 + 9}">after</text>'
    )
    return _svg("plot-errors", parts, f"{label} before and after, per pair")


def histogram_plot(metric: tuple[str, str, str], done: list[dict]) -> str:
    """Plot 2: how many pairs end in each error bin (``BINS`` equal bins from 0)."""
    _, after_key, label = metric
    values = np.array([r[after_key] for r in done], dtype=float)
    top_x = _nice_max(float(values.max()) if len(values) else 1.0)
    counts, edges = np.histogram(values, bins=BINS, range=(0.0, top_x))
    ax = _Axes(BINS, _nice_max(float(counts.max()) if len(values) else 1.0))
    parts = ax.frame(f"distribution of the {label} after", "pairs", f"{label} after (data units)")
    for i, c in enumerate(counts):
        parts.append(
            f'<rect x="{ax.x(i) + 1:.1f}" y="{ax.y(c):.1f}" width="{ax.x(1) - ax.x0 - 2:.1f}" '
            f'height="{ax.y0 - ax.y(c):.1f}" fill="{AFTER}"><title>{edges[i]:.3g}-{edges[i + 1]:.3g}: '
            f"{c} pairs</title></rect>"
        )
    for i in (0, BINS // 2, BINS):
        parts.append(f'<text x="{ax.x(i):.1f}" y="{ax.y0 + 14}" text-anchor="middle">{edges[i]:.3g}</text>')
    return _svg("plot-histogram", parts, f"distribution of the {label} after registration")


def seconds_plot(done: list[dict]) -> str:
    """Plot 3: registration seconds per pair, in the order of plot 1."""
    ax = _Axes(len(done), _nice_max(max([r.get("seconds") or 0.0 for r in done] + [0.0])))
    parts = ax.frame(
        "seconds per pair (the registration)", "seconds", "pairs, in the order of the first plot"
    )
    width = (ax.x1 - ax.x0) / ax.n * 0.7
    for i, r in enumerate(done):
        s = r.get("seconds") or 0.0
        parts.append(
            f'<rect x="{ax.x(i + 0.15):.1f}" y="{ax.y(s):.1f}" width="{width:.1f}" height="{ax.y0 - ax.y(s):.1f}" '
            f'fill="{BAR}"><title>{html.escape(r["id"])}: {s:.1f} s</title></rect>'
        )
    return _svg("plot-seconds", parts, "seconds per pair")


def cohort_html(rows: list[dict]) -> str:
    """The summary paragraph and the three plots (nothing to plot: the summary alone)."""
    metric = error_metric(rows)
    after_key = metric[1]
    # The finished pairs that have the metric, by their error after (the plots' order).
    done = sorted(
        (r for r in rows if r["status"] == "ok" and r.get(after_key) is not None), key=lambda r: r[after_key]
    )
    fig = cohort_figures(rows, metric, done)
    plots = ""
    if "after" in fig:
        plots = (
            '<div class="plots">'
            + error_plot(metric, done)
            + histogram_plot(metric, done)
            + seconds_plot(done)
            + "</div>"
        )
    return summary_html(fig) + plots
