"""The choice between the candidate frames of the flow network (``flow.axes``): each runs the
stages after the affine one from the same state, the end state that fits the target best wins."""

from __future__ import annotations

# A later candidate frame of the flow network replaces the first (the data's declared
# convention) only when its end state scores this much lower (relative): differences of a few
# tenths of a percent in the final matching cost are within the OT solutions' noise.
FRAME_MARGIN = 0.01


def keep_frame(scores: list[float]) -> int:
    """Index of the candidate frame to keep, from the end-state scores (lower is better)."""
    adjusted = [s if i == 0 else s * (1 + FRAME_MARGIN) for i, s in enumerate(scores)]
    return min(range(len(scores)), key=adjusted.__getitem__)
