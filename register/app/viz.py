"""pyvista views for visual QA (imported lazily: pyvista/VTK are heavy).

:func:`render` draws the QA picture: two panels, before (source) and after (warped source),
each moving point coloured by its distance to the nearest target point on one colour scale
shared by both panels, the target in light grey, and the summary figures (points, chamfer or
TRE before -> after, reliability verdict) printed on the image. ``show=True`` opens a window;
``screenshot=PATH`` renders the same view off-screen (EGL through Mesa on a headless machine).

The camera comes from the data (:func:`view_axes`): it looks along the target's axis of least
spread, across its two largest extents (a ground-plane scan is seen from above, a lung from the
front), the same rule for every dataset.

``register show`` (:func:`show_result`, :class:`ResultView`) lives in :mod:`register.app.viz_show`
and is re-exported here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import textwrap
from pathlib import Path

import numpy as np

from register.errors import InputError

# Colour map of the distances (blue: on the target, red: far from it) and its upper end: this
# percentile of the before distances, the same on both panels.
DISTANCE_CMAP = "turbo"
DISTANCE_PERCENTILE = 95.0
TARGET_COLOUR = "lightgray"
# Fractions of a panel's height kept free for the text (top) and the colour bar (bottom).
_TOP, _BOTTOM = 0.17, 0.2
_UNIT_LABELS = {
    "millimetres": "mm",
    "millimeters": "mm",
    "centimetres": "cm",
    "centimeters": "cm",
    "metres": "m",
    "meters": "m",
    "micrometres": "µm",
    "micrometers": "µm",
    "": "data units",
}


def _pyvista(off_screen: bool):
    if off_screen and not os.environ.get("DISPLAY"):
        # Headless: render through EGL instead of asking for an X server.
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import pyvista as pv

    return pv


def _as_3d(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.shape[1] == 3:
        return points
    return np.column_stack([points, np.zeros(len(points))])


def unit_label(units: str | None) -> str:
    """What a colour bar and the figures say of a length: ``"millimetres"`` -> ``"mm"``,
    ``"metres"`` -> ``"m"``, ``None`` / ``""`` -> ``"data units"``, anything else as given."""
    text = (units or "").strip()
    return _UNIT_LABELS.get(text.lower(), text)


# ------------------------------------------------------------------------------ display


def display_problem() -> str | None:
    """Why no window can open here (``None``: one can). On Linux a window needs ``DISPLAY`` (an
    X server that accepts the connection) or ``WAYLAND_DISPLAY``; elsewhere it is assumed."""
    if not sys.platform.startswith("linux"):
        return None
    display = os.environ.get("DISPLAY", "")
    if display:
        return None if _x_display_opens(display) else f"cannot open the X display DISPLAY={display}"
    if os.environ.get("WAYLAND_DISPLAY"):
        return None
    return "no display (DISPLAY and WAYLAND_DISPLAY are not set)"


def _x_display_opens(display: str) -> bool:
    """Whether Xlib connects to ``display`` (what VTK's X window needs)."""
    name = ctypes.util.find_library("X11")
    if name is None:
        return False
    try:
        xlib = ctypes.CDLL(name)
        xlib.XOpenDisplay.restype = ctypes.c_void_p
        xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
        handle = xlib.XOpenDisplay(display.encode())
    except (OSError, AttributeError):
        return False
    if not handle:
        return False
    xlib.XCloseDisplay(handle)
    return True


def require_display() -> None:
    """Raise :class:`InputError` (exit code 2 on the command line) when no window can open."""
    problem = display_problem()
    if problem is not None:
        raise InputError(
            f"cannot open a window: {problem}; render the view to a picture instead with --screenshot FILE.png"
        )


# ------------------------------------------------------------------------------- camera


def view_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(right, up, normal)``: the screen axes of the view of ``points`` (unit vectors).

    The principal axes of the points (PCA): the camera looks along the axis of least spread
    (``normal``; it sits on that side), so that the view spans the two largest extents, the
    largest across (``right``), the second ``up``. Signs: ``up`` points along the positive
    coordinate axis nearest to it (z-up data shows +z up); the camera sits on the +z side (a
    z-up scan is seen from above), the -y side (a y-down camera frame such as KITTI's is seen
    from above too) or the +x side of the coordinate axis nearest to ``normal``; ``right`` then
    makes a right-handed frame, so the picture is never a mirror image.
    """
    p = _as_3d(points)
    if len(p) > 200_000:  # the axes of a regular subsample: same answer, less time
        p = p[:: len(p) // 100_000]
    if len(p) < 3:
        return np.eye(3)[0], np.eye(3)[1], np.eye(3)[2]
    p = p - p.mean(axis=0)
    _, vectors = np.linalg.eigh(p.T @ p / len(p))  # ascending variances
    normal, up = vectors[:, 0].copy(), vectors[:, 1].copy()
    up *= np.sign(up[np.argmax(np.abs(up))]) or 1.0
    nearest = int(np.argmax(np.abs(normal)))
    side = -1.0 if nearest == 1 else 1.0
    normal *= side * (np.sign(normal[nearest]) or 1.0)
    right = np.cross(up, normal)
    return right / np.linalg.norm(right), up, normal


def _frame(plotter, axes, clouds, aspect: float, top: float = _TOP, bottom: float = _BOTTOM) -> None:
    """Point the active renderer's (parallel projection) camera along ``axes`` so that every
    cloud fits between the text band (``top``) and the colour bar band (``bottom``)."""
    right, up, normal = axes
    pts = np.vstack(clouds)
    if len(pts) > 200_000:
        pts = pts[:: len(pts) // 100_000]
    lo_r, hi_r = np.percentile(pts @ right, [0.1, 99.9])
    lo_u, hi_u = np.percentile(pts @ up, [0.1, 99.9])
    depth = pts @ normal
    usable = 1.0 - top - bottom
    width, height = max(hi_r - lo_r, 1e-12), max(hi_u - lo_u, 1e-12)
    scale = 0.5 * max(height / usable, width / (0.95 * aspect)) * 1.03
    # The content's centre sits in the middle of the free band, not of the panel.
    shift = (0.5 - (bottom + usable / 2)) * 2 * scale
    focal = right * (lo_r + hi_r) / 2 + up * ((lo_u + hi_u) / 2 + shift) + normal * depth.mean()
    distance = 2.0 * (np.ptp(depth) + width + height)
    plotter.camera_position = [tuple(focal + distance * normal), tuple(focal), tuple(up)]
    plotter.camera.enable_parallel_projection()
    plotter.camera.parallel_scale = float(scale)
    plotter.renderer.reset_camera_clipping_range()


# ---------------------------------------------------------------------------- distances


def nearest_target_distances(moving: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(N,)`` distance of each moving point to its nearest target point (data units)."""
    from scipy.spatial import cKDTree

    return cKDTree(_as_3d(target)).query(_as_3d(moving), k=1, workers=-1)[0]


def colour_limits(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """The colour scale of both panels: 0 to the :data:`DISTANCE_PERCENTILE` of the before
    distances (the after ones when the source already lay on the target)."""
    for d in (before, after):
        high = float(np.percentile(d, DISTANCE_PERCENTILE)) if len(d) else 0.0
        if high > 0:
            return 0.0, high
    return 0.0, float(max(before.max(initial=0.0), after.max(initial=0.0), 1e-12))


def _point_size(n_points: int, panel_pixels: float) -> float:
    """Sphere size in pixels: smaller as the points crowd the panel."""
    return float(np.clip(0.75 * np.sqrt(panel_pixels / max(n_points, 1)), 1.5, 7.0))


def _fmt(value: float) -> str:
    return f"{value:.3g}"


# ---------------------------------------------------------------------------- QA picture


def figures_of(result, metrics: dict) -> dict:
    """The keyword arguments of :func:`render` that a finished run knows: the data's units (the
    settings' ``pipeline.units``), the reliability verdict, chamfer and TRE before / after."""
    lm = metrics.get("landmarks")
    return {
        "units": (result.config.pipeline.units if result.config is not None else "") or "data units",
        "verdict": result.reliability.verdict if result.reliability is not None else None,
        "chamfer": (metrics["chamfer_before"], metrics["chamfer_after"]),
        "tre": (lm["before"]["mean"], lm["after"]["mean"]) if lm else None,
    }


def render(
    source: np.ndarray,
    target: np.ndarray,
    warped: np.ndarray,
    *,
    screenshot: str | os.PathLike | None = None,
    show: bool = False,
    title: str = "",
    window_size: tuple[int, int] = (1600, 800),
    units: str | None = None,
    verdict: str | None = None,
    chamfer: tuple[float, float] | None = None,
    tre: tuple[float, float] | None = None,
) -> None:
    """Draw before (source + target) and after (warped source + target) side by side.

    Both panels colour the moving points by their distance to the nearest target point, on one
    colour scale (0 to the 95th percentile of the before distances; farther points take the
    top colour); the target is light grey. The camera follows :func:`view_axes` of the target.

    Args:
        source: ``(N, D)`` source points; target: ``(M, D)``; warped: ``(N, D)`` moved source.
        screenshot: PNG path to render to off-screen (written atomically); takes precedence
            over ``show``.
        show: open an interactive window (needs a display: :class:`InputError` otherwise).
        title: text drawn in the corner.
        window_size: pixels ``(width, height)`` of the whole picture.
        units: the data's length unit (``"mm"``, ``"millimetres"``, ``"m"``; default
            ``"data units"``), on the colour bar and the figures.
        verdict: the reliability verdict (``"ok"`` / ``"suspect: ..."``), printed when given.
        chamfer: ``(before, after)`` symmetric chamfer distances; computed from the clouds
            (:func:`register.metrics.chamfer`) when not given.
        tre: ``(before, after)`` mean landmark errors, printed when given.
    """
    if screenshot is None and not show:
        return
    show = show and screenshot is None
    if show:
        require_display()
    plotter = _qa_plotter(
        source,
        target,
        warped,
        off_screen=not show,
        title=title,
        window_size=window_size,
        units=units,
        verdict=verdict,
        chamfer=chamfer,
        tre=tre,
    )
    if screenshot is not None:
        _save_screenshot(plotter, Path(screenshot))
    else:
        plotter.show()


# The colour bar of a QA panel: horizontal, under the points, five labels.
BAR_LAYOUT = {
    "color": "black",
    "position_x": 0.15,
    "position_y": 0.075,
    "width": 0.7,
    "height": 0.05,
    "n_labels": 5,
    "fmt": "%.3g",
    "vertical": False,
}


def _qa_plotter(
    source,
    target,
    warped,
    *,
    off_screen: bool,
    title: str = "",
    window_size: tuple[int, int] = (1600, 800),
    units: str | None = None,
    verdict: str | None = None,
    chamfer: tuple[float, float] | None = None,
    tre: tuple[float, float] | None = None,
):
    """The pyvista plotter of :func:`render`, not yet rendered (the tests read its actors)."""
    pv = _pyvista(off_screen=off_screen)
    source, target, warped = _as_3d(source), _as_3d(target), _as_3d(warped)
    before = nearest_target_distances(source, target)
    after = nearest_target_distances(warped, target)
    clim = colour_limits(before, after)
    if chamfer is None:
        from register.metrics import chamfer as chamfer_of

        chamfer = (chamfer_of(source, target), chamfer_of(warped, target))
    unit = unit_label(units)
    width, height = (int(v) for v in window_size)
    panel = (width / 2) * height
    size = _point_size(max(len(source), len(target)), panel)
    font = int(np.clip(height / 70, 6, 12))  # pyvista draws text at twice this size (pixels)
    axes = view_axes(target)

    plotter = pv.Plotter(shape=(1, 2), off_screen=off_screen, window_size=[width, height])
    plotter.set_background("white")
    bar_title = f"distance to nearest target point ({unit})"
    line_chars = max(20, int(width / 2 / (1.15 * font)))  # characters of one line across a panel
    texts = _panel_texts(title, len(source), len(target), chamfer, tre, unit, verdict, line_chars)
    for col, (moving, distance) in enumerate(((source, before), (warped, after))):
        plotter.subplot(0, col)
        for k, (line, colour) in enumerate(texts[col]):
            y = 0.975 - k * (2.7 * font + 2) / height
            text = plotter.add_text(line, position=(0.015, y), viewport=True, font_size=font, color=colour)
            text.prop.SetVerticalJustificationToTop()
        plotter.add_points(
            pv.PolyData(target),
            color=TARGET_COLOUR,
            point_size=size * 0.8,
            opacity=0.35,
            render_points_as_spheres=True,
        )
        cloud = pv.PolyData(moving)
        cloud["distance"] = distance
        # The bar's own title overlaps its labels in a short bar: a blank title (one per panel:
        # pyvista shares a bar between meshes of equal titles) and a text under the bar.
        key = " " * (col + 1)
        plotter.add_points(
            cloud,
            scalars="distance",
            cmap=DISTANCE_CMAP,
            clim=clim,
            point_size=size,
            render_points_as_spheres=True,
            scalar_bar_args={**BAR_LAYOUT, "title": key, "label_font_size": int(2 * font)},
        )
        label = plotter.add_text(
            bar_title, position=(0.5, 0.065), viewport=True, font_size=font, color="black"
        )
        label.prop.SetJustificationToCentered()
        label.prop.SetVerticalJustificationToTop()
        _frame(plotter, axes, (target, source, warped), aspect=(width / 2) / height)
    plotter.link_views()
    return plotter


def _panel_texts(
    title: str,
    n_source: int,
    n_target: int,
    chamfer,
    tre,
    unit: str,
    verdict: str | None,
    line_chars: int = 80,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The ``(line, colour)`` lines printed at the top of the before and after panels."""
    pairs = [("chamfer", chamfer)] + ([("TRE", tre)] if tre is not None else [])
    before = [(title, "black")] if title else []
    before.append((f"before: source ({n_source:,} points), target ({n_target:,} points)", "black"))
    before.append((", ".join(f"{name} {_fmt(v[0])} {unit}" for name, v in pairs), "black"))
    after = [("after: warped source, target", "black")]
    after.append((", ".join(f"{name} {_fmt(v[0])} -> {_fmt(v[1])} {unit}" for name, v in pairs), "black"))
    if verdict:
        colour = "darkgreen" if verdict == "ok" else "firebrick"
        lines = textwrap.wrap(f"reliability: {verdict}", width=line_chars, max_lines=2, placeholder=" ...")
        after += [(line, colour) for line in lines]
    return before, after


def _save_screenshot(plotter, path: Path) -> None:
    """Render ``plotter`` off-screen into ``path`` atomically; closes the plotter."""
    from register.core.files import atomic_write

    try:
        atomic_write(path, lambda tmp: plotter.screenshot(str(tmp)), suffix=".png")
    except Exception as exc:
        raise InputError(
            f"--screenshot {path}: rendering failed ({exc}); see README 'Headless rendering'"
        ) from exc
    finally:
        plotter.close()


__all__ = [
    "colour_limits",
    "figures_of",
    "display_problem",
    "nearest_target_distances",
    "render",
    "require_display",
    "unit_label",
    "view_axes",
]
