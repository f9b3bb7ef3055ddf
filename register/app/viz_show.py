"""The 3-D view of ``register show`` and ``register run --show``: one scene with layers that can
be toggled (target, source, warped source, landmark errors), or the same view as a PNG.

The drawing helpers it shares with the QA picture (:mod:`register.app.viz`) are imported from
there when a view is drawn.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class ResultView:
    """What ``register show`` draws: one 3-D scene with layers that can be toggled.

    Attributes:
        source: ``(N, D)`` source points; target: ``(M, D)``; warped: ``(N, D)`` moved source
            (data units).
        landmarks: ``(warped source landmarks (L, D), target landmarks (L, D))`` or ``None``;
            each error ``|T(s_i) - t_i|`` is drawn as a tube from the warped landmark to its
            target (radius 0.3 % of the target's bounding-box diagonal, so that millimetre
            errors stay visible), coloured by its length.
        title: text drawn in the corner.
        units: the data's length unit (``"mm"``, ``"millimetres"``; ``""``: data units).
    """

    source: np.ndarray
    target: np.ndarray
    warped: np.ndarray
    landmarks: tuple[np.ndarray, np.ndarray] | None = None
    title: str = ""
    units: str = ""

    @classmethod
    def from_result(cls, source, target, result, landmarks=None, title: str = "") -> ResultView:
        """From a :class:`register.pipeline.Result` and raw landmark pairs ``(L, D)`` (unwarped)."""
        pairs = None if landmarks is None else (result.transform.apply(landmarks[0]), landmarks[1])
        config = getattr(result, "config", None)
        units = getattr(getattr(config, "pipeline", None), "units", "") or ""
        return cls(source, target, result.warped, pairs, title, units)


LAYERS = ("target", "source", "warped", "landmarks")
# Drawn colours; the legend (the toggle buttons) uses the same ones. Landmark errors are
# coloured by their length (LANDMARK_CMAP); their button shows the map's middle colour.
_LAYER_COLOURS = {"target": "dimgray", "source": "crimson", "warped": "seagreen"}
_LAYER_LABELS = {
    "target": "target",
    "source": "source (before)",
    "warped": "warped source (after)",
    "landmarks": "landmark errors (colour bar)",
}
LANDMARK_CMAP = "plasma"
# Tube radius of a landmark error: this fraction of the target's bounding-box diagonal.
TUBE_FRACTION = 0.003


def _landmark_cmap_middle() -> tuple[float, float, float]:
    from matplotlib import colormaps

    return tuple(float(c) for c in colormaps[LANDMARK_CMAP](0.5)[:3])


def landmark_meshes(pv, warped: np.ndarray, target: np.ndarray, radius: float):
    """``(tubes, ends)``: a tube of ``radius`` from each warped landmark to its target landmark
    (errors shorter than a hundredth of the radius have none) and a sphere on each target
    landmark, both with the point scalars ``landmark error`` (data units)."""
    error = np.linalg.norm(warped - target, axis=1)
    keep = np.flatnonzero(error > radius * 1e-2)
    tubes = None
    if len(keep):
        n = len(keep)
        lines = np.column_stack([np.full(n, 2), np.arange(n), np.arange(n) + n]).ravel()
        poly = pv.PolyData(np.vstack([warped[keep], target[keep]]), lines=lines)
        poly.point_data["landmark error"] = np.concatenate([error[keep], error[keep]])
        tubes = poly.tube(radius=radius, n_sides=12, capping=True)
    ends = pv.PolyData(target)
    ends.point_data["landmark error"] = error
    ends = ends.glyph(geom=pv.Sphere(radius=2.5 * radius), scale=False, orient=False)
    return tubes, ends


def add_result_layers(plotter, view: ResultView) -> dict[str, object]:
    """Add the layers of ``view`` to a pyvista ``plotter``; returns ``{layer name: actor}``.

    Layers: ``target`` (grey), ``source`` (translucent red), ``warped`` (green) and, when
    landmarks are known, ``landmarks`` (tubes from each warped landmark to its target landmark,
    a sphere on the target landmark, coloured by the error length, the TRE, data units).
    """
    import pyvista as pv

    from register.app.viz import _as_3d, _point_size, unit_label

    source, target, warped = _as_3d(view.source), _as_3d(view.target), _as_3d(view.warped)
    size = _point_size(max(len(source), len(target)), 1200 * 900)
    common = {"point_size": size, "render_points_as_spheres": True}
    actors = {
        "target": plotter.add_points(
            pv.PolyData(target), color=_LAYER_COLOURS["target"], opacity=0.4, **common
        ),
        "source": plotter.add_points(
            pv.PolyData(source), color=_LAYER_COLOURS["source"], opacity=0.3, **common
        ),
        "warped": plotter.add_points(pv.PolyData(warped), color=_LAYER_COLOURS["warped"], **common),
    }
    if view.landmarks is not None:
        moved, reference = (_as_3d(p) for p in view.landmarks)
        diagonal = float(np.linalg.norm(np.ptp(target, axis=0))) or 1.0
        tubes, ends = landmark_meshes(pv, moved, reference, TUBE_FRACTION * diagonal)
        errors = np.linalg.norm(moved - reference, axis=1)
        # A blank bar title and a text under the bar: a short bar's title overlaps its labels.
        bar = {"title": " ", "color": "black", "position_x": 0.3, "position_y": 0.075}
        bar.update(width=0.4, height=0.04, fmt="%.3g")
        clim = (0.0, float(errors.max()) or 1.0)
        style = {"scalars": "landmark error", "cmap": LANDMARK_CMAP, "clim": clim}
        actor = plotter.add_mesh(ends, scalar_bar_args=bar, **style)
        if tubes is not None:
            tube_actor = plotter.add_mesh(tubes, show_scalar_bar=False, **style)
            actor = _Both(actor, tube_actor)
        label = plotter.add_text(
            f"landmark error ({unit_label(view.units)})",
            position=(0.5, 0.065),
            viewport=True,
            font_size=8,
            color="black",
        )
        label.prop.SetJustificationToCentered()
        label.prop.SetVerticalJustificationToTop()
        actors["landmarks"] = actor
    return actors


class _Both:
    """Two actors toggled as one layer (the landmark tubes and their end spheres)."""

    def __init__(self, *actors) -> None:
        self.actors = actors

    def SetVisibility(self, visible) -> None:  # noqa: N802 (VTK's name)
        for actor in self.actors:
            actor.SetVisibility(visible)

    def GetVisibility(self) -> bool:  # noqa: N802
        return bool(self.actors[0].GetVisibility())


def _summary(view: ResultView) -> str:
    """The title and, with landmarks, the landmark errors' figures (top right)."""
    from register.app.viz import unit_label

    lines = [view.title] if view.title else []
    if view.landmarks is not None:
        errors = np.linalg.norm(np.asarray(view.landmarks[0]) - np.asarray(view.landmarks[1]), axis=1)
        unit = unit_label(view.units)
        lines.append(
            f"{len(errors)} landmarks: TRE mean {errors.mean():.3g} {unit}, max {errors.max():.3g} {unit}"
        )
    return "\n".join(lines)


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

    Raises:
        InputError: no ``screenshot`` and no display to open a window on (the message says to
            use ``--screenshot FILE.png``).
    """
    from register.app.viz import _pyvista, _save_screenshot, require_display, view_axes

    off_screen = screenshot is not None
    if not off_screen:
        require_display()
    pv = _pyvista(off_screen=off_screen)
    plotter = pv.Plotter(off_screen=off_screen, window_size=list(window_size))
    plotter.set_background("white")
    actors = add_result_layers(plotter, view)
    for i, (name, actor) in enumerate(actors.items()):
        y = window_size[1] - 60 - 45 * i
        colour = _LAYER_COLOURS.get(name) or _landmark_cmap_middle()
        plotter.add_checkbox_button_widget(
            actor.SetVisibility, value=True, position=(10, y), size=30, color_on=colour
        )
        plotter.add_text(_LAYER_LABELS[name], position=(50, y + 4), font_size=11, color="black")
    summary = _summary(view)
    if summary:
        plotter.add_text(summary, position="upper_right", font_size=11, color="black")
    _, up, normal = view_axes(view.target)
    plotter.camera_position = [tuple(normal), (0.0, 0.0, 0.0), tuple(up)]
    plotter.reset_camera()
    if off_screen:
        _save_screenshot(plotter, Path(screenshot))
    else:
        plotter.show()
