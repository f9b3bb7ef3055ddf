"""The reliability report of a run (:func:`register.reliability.assess`) with the run's own
matcher, after the whole run or already after its affine stage (the early fallback test)."""

from __future__ import annotations

import math

from register.core.transforms import Affine
from register.reliability import MATCH_MAX_ITER, Reliability, assess
from register.stages.common import MatchSettings, per_level, to_numpy


def reliability(transform, x, y, a, b, warped, run, cfg, ms: MatchSettings, seed) -> Reliability:
    """The reliability report of the run (:func:`register.reliability.assess`).

    Matched mass: from the spline stage's last matching when its reach is finite; otherwise
    (balanced: every point's mass is transported by construction, or no spline stage) from one
    matching of the report's own, at the last level's reach when finite, with the run's backend,
    device and mass normalisation. The last level's blur bounds the held-out truncation from
    below. Its own seeded generators: the run's random stream is untouched.
    """
    stages = cfg.pipeline.stages
    blur = reach = None
    if "spline" in stages:
        blur, reach = cfg.spline.blurs[-1], per_level(cfg.spline.reach, len(cfg.spline.blurs))[-1]
    elif "affine" in stages:
        blur, reach = cfg.affine.blurs[-1], per_level(cfg.affine.reach, len(cfg.affine.blurs))[-1]
    given = {}
    if "spline" in stages and math.isfinite(reach) and run.conf_points is not None:
        given = {"confidence": run.confidence, "confidence_indices": run.conf_points}
    return assess(
        transform,
        x,
        y,
        a,
        b,
        warped=warped,
        blur=blur,
        reach=reach,
        match=report_matcher(ms),
        seed=seed,
        **given,
    )


def report_matcher(ms: MatchSettings):
    """The reliability report's matcher: the run's backend, device and mass normalisation."""
    report_ms = ms.capped(MATCH_MAX_ITER)

    def match(xs, ys, a_s, b_s, blur_, reach_):
        return to_numpy(report_ms.match(xs, ys, a_s, b_s, blur_, reach_).confidence)

    return match


def early_fallback_reasons(affine: Affine, x, y, a, b, warped, cfg, ms: MatchSettings, seed) -> list[str]:
    """Why the pair calls for the fallback settings already after the affine stage (empty: it
    does not): either matched mass of the report (at its reach of a few target spacings) below
    ``pipeline.fallback_early_matched_mass``. A complete pair, however much non-rigid motion is
    left, still has most of its mass within that reach of a counterpart."""
    blur, reach = cfg.affine.blurs[-1], per_level(cfg.affine.reach, len(cfg.affine.blurs))[-1]
    report = assess(
        affine, x, y, a, b, warped=warped, blur=blur, reach=reach, match=report_matcher(ms), seed=seed
    )
    least = min(report.matched_mass, report.target_matched_mass)
    threshold = cfg.pipeline.fallback_early_matched_mass
    return [f"after the affine stage, matched mass {least:.2f} < {threshold:g}"] if least < threshold else []
