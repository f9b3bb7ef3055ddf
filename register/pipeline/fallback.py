"""The fallback settings (``pipeline.fallback``): when the first result calls for them, and which
of the two results is kept."""

from __future__ import annotations

import dataclasses

from register.config import PipelineConfig, load_config
from register.errors import ConfigError
from register.reliability import MIN_MATCHED_MASS, Reliability


def fallback_reasons(
    report: Reliability, min_matched_mass: float, max_stray_fraction: float = 1.0
) -> list[str]:
    """Why the first result calls for the fallback settings (empty: it does not): a suspect
    verdict, a matched mass (either side) below ``min_matched_mass``, a copy pair's partnered
    fraction below it, or a stray fraction above ``max_stray_fraction``
    (:mod:`register.partners`)."""
    reasons = list(report.reasons)
    # (the verdict's own reasons already name a matched mass below MIN_MATCHED_MASS)
    if report.matched_mass >= MIN_MATCHED_MASS and not report.matched_mass >= min_matched_mass:
        reasons.append(f"matched mass {report.matched_mass:.2f} < {min_matched_mass:g}")
    if not report.target_matched_mass >= min_matched_mass:
        reasons.append(f"target matched mass {report.target_matched_mass:.2f} < {min_matched_mass:g}")
    if report.copy_pair and not report.partnered_fraction >= min_matched_mass:
        reasons.append(
            f"copy pair, partnered fraction {report.partnered_fraction:.2f} < {min_matched_mass:g}"
        )
    if report.stray_fraction > max_stray_fraction:
        reasons.append(f"stray fraction {report.stray_fraction:.3f} > {max_stray_fraction:g}")
    return reasons


# Keys of [pipeline] the fallback run takes from the first run's settings.
CARRIED_OVER = ("stages", "weights", "weights_optional", "labels")


def fallback_config(cfg: PipelineConfig) -> PipelineConfig | None:
    """The settings of ``pipeline.fallback`` (None when unset), loaded before any work."""
    if not cfg.pipeline.fallback:
        return None
    fallback = load_config(cfg.pipeline.fallback)
    if fallback.pipeline.fallback:
        raise ConfigError(
            f"pipeline.fallback = {cfg.pipeline.fallback!r}: those settings have a fallback of their own "
            f"({fallback.pipeline.fallback!r}); a fallback must not"
        )
    # The fallback changes how the stages run, not which, nor what the data are: the stages asked
    # for (--stages affine must not end with a spline stage) and the point attributes used as
    # masses and labels carry over.
    changes = {key: getattr(cfg.pipeline, key) for key in CARRIED_OVER}
    return dataclasses.replace(fallback, pipeline=dataclasses.replace(fallback.pipeline, **changes))


def run_summary(result) -> dict:
    """Verdict, matched mass and seconds of one run (the fallback record)."""
    return {
        "verdict": result.reliability.verdict,
        "matched_mass": result.reliability.matched_mass,
        "seconds": sum(result.metrics["stage_seconds"].values()) + result.metrics["reliability_seconds"],
    }
