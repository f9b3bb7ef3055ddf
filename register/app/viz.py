"""pyvista views for visual QA (imported lazily: pyvista/VTK are heavy).

One picture: target (grey), source (translucent red) and warped source coloured by
displacement magnitude (data units). ``show=True`` opens a window; ``screenshot=PATH``
renders the same view off-screen (EGL through Mesa on a headless machine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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
        screenshot: PNG path to render to off-screen (written atomically); takes precedence
            over ``show``.
        show: open an interactive window (needs a display).
        title: text drawn in the corner.
    """
    if screenshot is None and not show:
        return
    show = show and screenshot is None
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
        _save_screenshot(plotter, Path(screenshot))
    elif show:
        plotter.show()


@dataclass
class ResultView:
    """What ``register show`` draws: one 3-D scene with layers that can be toggled.

    Attributes:
        source: ``(N, D)`` source points; target: ``(M, D)``; warped: ``(N, D)`` moved source
            (data units).
        landmarks: ``(warped source landmarks (L, D), target landmarks (L, D))`` or ``None``;
            each error ``|T(s_i) - t_i|`` is drawn as a line from the warped landmark to its
            target, coloured by its length.
        title: text drawn in the corner.
    """

    source: np.ndarray
    target: np.ndarray
    warped: np.ndarray
    landmarks: tuple[np.ndarray, np.ndarray] | None = None
    title: str = ""

    @classmethod
    def from_result(cls, source, target, result, landmarks=None, title: str = "") -> ResultView:
        """From a :class:`register.pipeline.Result` and raw landmark pairs ``(L, D)`` (unwarped)."""
        pairs = None if landmarks is None else (result.transform.apply(landmarks[0]), landmarks[1])
        return cls(source, target, result.warped, pairs, title)


LAYERS = ("target", "source", "warped", "landmarks")
_LAYER_COLOURS = {"target": "dimgray", "source": "crimson", "warped": "seagreen", "landmarks": "darkorange"}


def _landmark_lines(pv, warped: np.ndarray, target: np.ndarray):
    """Polydata of segments ``warped_i -> target_i`` with cell scalars ``landmark error``."""
    n = len(warped)
    lines = np.column_stack([np.full(n, 2), np.arange(n), np.arange(n) + n]).ravel()
    poly = pv.PolyData(np.vstack([warped, target]), lines=lines)
    poly.cell_data["landmark error"] = np.linalg.norm(warped - target, axis=1)
    return poly


def add_result_layers(plotter, view: ResultView) -> dict[str, object]:
    """Add the layers of ``view`` to a pyvista ``plotter``; returns ``{layer name: actor}``.

    Layers: ``target`` (grey), ``source`` (translucent red), ``warped`` (coloured by
    displacement magnitude, data units) and, when landmarks are known, ``landmarks`` (warped
    landmark -> target landmark segments coloured by their length, the TRE, data units).
    """
    import pyvista as pv

    source, target, warped = _as_3d(view.source), _as_3d(view.target), _as_3d(view.warped)
    size = max(2.0, min(6.0, 3000.0 / max(len(source), len(target)) ** 0.5))
    common = {"point_size": size, "render_points_as_spheres": True}
    actors = {
        "target": plotter.add_points(pv.PolyData(target), color="dimgray", opacity=0.4, **common),
        "source": plotter.add_points(pv.PolyData(source), color="crimson", opacity=0.3, **common),
    }
    cloud = pv.PolyData(warped)
    cloud["displacement"] = np.linalg.norm(warped - source, axis=1)
    actors["warped"] = plotter.add_points(
        cloud,
        scalars="displacement",
        cmap="viridis",
        scalar_bar_args={"title": "displacement", "color": "black", "position_x": 0.05, "width": 0.4},
        **common,
    )
    if view.landmarks is not None:
        moved, reference = (_as_3d(p) for p in view.landmarks)
        actors["landmarks"] = plotter.add_mesh(
            _landmark_lines(pv, moved, reference),
            scalars="landmark error",
            cmap="autumn_r",
            line_width=4,
            scalar_bar_args={"title": "landmark error", "color": "black", "position_x": 0.55, "width": 0.4},
        )
    return actors


def show_result(
    view: ResultView,
    *,
    screenshot: str | os.PathLike | None = None,
    window_size: tuple[int, int] = (1200, 900),
) -> None:
    """Open ``view`` in a window with one toggle button per layer, or render it to a PNG.

    Args:
        view: what to draw.
        screenshot: render off-screen to this PNG (written atomically) instead of opening a window.
        window_size: pixels.
    """
    off_screen = screenshot is not None
    pv = _pyvista(off_screen=off_screen)
    plotter = pv.Plotter(off_screen=off_screen, window_size=list(window_size))
    plotter.set_background("white")
    actors = add_result_layers(plotter, view)
    for i, (name, actor) in enumerate(actors.items()):
        y = window_size[1] - 60 - 45 * i
        plotter.add_checkbox_button_widget(
            actor.SetVisibility, value=True, position=(10, y), size=30, color_on=_LAYER_COLOURS[name]
        )
        plotter.add_text(name, position=(50, y + 4), font_size=11, color="black")
    if view.title:
        plotter.add_text(view.title, position="upper_right", font_size=11, color="black")
    plotter.camera_position = "xz"
    if off_screen:
        _save_screenshot(plotter, Path(screenshot))
    else:
        plotter.show()


def _save_screenshot(plotter, path: Path) -> None:
    """Render ``plotter`` off-screen into ``path`` atomically; closes the plotter."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        plotter.screenshot(str(tmp))
        os.replace(tmp, path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(
            f"--screenshot {path}: rendering failed ({exc}); see README 'Headless rendering'"
        ) from exc
    finally:
        plotter.close()
