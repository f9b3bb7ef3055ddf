"""Counterparts of a registered pair (register.partners): copies, partnered and stray fractions."""

import numpy as np
import pytest

from register.partners import partners


def _cloud(n, seed):
    """``(n, 3)`` points uniform in a unit ball (a solid shape with no structure of its own)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(size=(n, 1)) ** (1 / 3)


def _ones(x):
    return np.ones(len(x))


def test_a_complete_copy_pair_is_partnered_and_has_no_stray_points():
    x = _cloud(2000, 0)
    y = x[np.random.default_rng(1).permutation(len(x))] + 1e-4  # a shuffled copy, tiny residual
    p = partners(x, y, _ones(x), _ones(y))
    assert p.copies and p.partnered_fraction > 0.99 and p.stray_fraction == 0.0


def test_a_cropped_copy_loses_the_partners_of_its_slab():
    x = _cloud(2000, 0)
    kept = x[:, 2] < np.quantile(x[:, 2], 0.85)  # the target loses its top 15 %
    p = partners(x, x[kept], _ones(x), _ones(x[kept]))
    assert p.copies
    assert p.partnered_fraction == pytest.approx(kept.mean(), abs=0.01)  # the source's side


def test_a_source_point_dragged_onto_another_ones_partner_takes_no_partner_of_its_own():
    x = _cloud(1000, 0)
    y = x[:900]  # 100 source points have no partner ...
    z = x.copy()
    z[900:] = y[:100]  # ... and the registration put them onto partnered target points
    p = partners(z, y, _ones(z), _ones(y))
    assert p.copies and p.partnered_fraction == pytest.approx(0.9, abs=1e-9)  # not 1.0


def test_outliers_around_a_copy_are_stray():
    x = _cloud(2000, 0)
    rng = np.random.default_rng(2)
    outliers = rng.uniform(-1.5, 1.5, size=(400, 3))
    outliers = outliers[np.linalg.norm(outliers, axis=1) > 1.3]  # outside the shape
    y = np.concatenate([x, outliers])
    p = partners(x, y, _ones(x), _ones(y))
    assert p.copies
    assert p.stray_fraction > 0.05  # the outliers lie many spacings from the source
    assert p.partnered_fraction == pytest.approx(len(x) / len(y), abs=0.01)  # the target's side


def test_independent_samplings_of_one_shape_are_not_copies_nor_stray():
    x, y = _cloud(2000, 0), _cloud(2000, 1)
    p = partners(x, y, _ones(x), _ones(y))
    assert not p.copies and p.stray_fraction < 0.002


def test_fractions_are_mass_weighted():
    x = _cloud(1000, 0)
    y = x[:900]
    a = np.ones(len(x))
    a[900:] = 9.0  # the unpartnered tenth carries half of the source's mass
    p = partners(x, y, a, _ones(y))
    assert p.partnered_fraction == pytest.approx(0.5, abs=0.01)
