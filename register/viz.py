"""pyvista views for visual QA (imported lazily: pyvista/VTK are heavy).

One picture: target (grey), source (translucent red) and warped source coloured by
displacement magnitude (data units). ``show=True`` opens a window; ``screenshot=PATH``
renders the same view off-screen (EGL through Mesa on a headless machine).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from register.errors import InputError


def _pyvista(off_screen: bool):
    if off_screen and not os.environ.get("DISPLAY"):
        # Headless: render through EGL instead of asking for an X server.
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import pyvista as pv

    return pv


def _as_3d(points: np.ndarray) -> np.ndarray:
    if points.shape[1] == 3:
        return points
    return np.column_stack([points, np.zeros(len(points))])


def render(
    source: np.ndarray,
    target: np.ndarray,
    warped: np.ndarray,
    *,
    screenshot: str | os.PathLike | None = None,
    show: bool = False,
    title: str = "",
    window_size: tuple[int, int] = (1600, 800),
) -> None:
    """Draw before (source + target) and after (warped source + target) side by side.

    Args:
        source: ``(N, D)`` source points; target: ``(M, D)``; warped: ``(N, D)`` moved source.
        screenshot: PNG path to render to off-screen (written atomically).
        show: open an interactive window (needs a display).
        title: text drawn in the corner.
    """
    if screenshot is None and not show:
        return
    pv = _pyvista(off_screen=not show)
    source, target, warped = _as_3d(source), _as_3d(target), _as_3d(warped)
    magnitude = np.linalg.norm(warped - source, axis=1)
    size = max(2.0, min(6.0, 3000.0 / max(len(source), len(target)) ** 0.5))
    plotter = pv.Plotter(shape=(1, 2), off_screen=not show, window_size=list(window_size))
    plotter.set_background("white")
    for col, (moving, label) in enumerate(((source, "before"), (warped, "after"))):
        plotter.subplot(0, col)
        plotter.add_text(f"{title} {label}".strip(), font_size=12, color="black")
        plotter.add_points(
            pv.PolyData(target),
            color="dimgray",
            point_size=size,
            opacity=0.5,
            render_points_as_spheres=True,
            label="target",
        )
        cloud = pv.PolyData(moving)
        if col == 0:
            plotter.add_points(
                cloud, color="crimson", point_size=size, render_points_as_spheres=True, label="source"
            )
        else:
            cloud["displacement"] = magnitude
            plotter.add_points(
                cloud,
                scalars="displacement",
                cmap="viridis",
                point_size=size,
                render_points_as_spheres=True,
                scalar_bar_args={"title": "displacement", "color": "black"},
            )
        if col == 0:
            plotter.add_legend(bcolor="white", size=(0.15, 0.08), loc="lower left")
    plotter.link_views()
    plotter.camera_position = "xz"
    plotter.camera.zoom(1.2)
    if screenshot is not None:
        path = Path(screenshot)
        tmp = path.with_name(f".{path.name}.tmp.png")
        try:
            plotter.show(screenshot=str(tmp), auto_close=False) if show else plotter.screenshot(str(tmp))
            os.replace(tmp, path)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise InputError(
                f"--screenshot {path}: rendering failed ({exc}); see README 'Headless rendering'"
            ) from exc
        finally:
            plotter.close()
    elif show:
        plotter.show()
