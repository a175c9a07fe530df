"""The hazard fit's bound on person-period rows: every purchase kept, the other rows sampled
with the seed and weighted so that they count as the whole set does."""

from __future__ import annotations

import numpy as np

from propensity.forecast.hazard import bounded_periods


def test_below_the_bound_every_row_is_kept_unweighted() -> None:
    y = (np.random.default_rng(0).random(500) < 0.1).astype("int8")
    sample, weight = bounded_periods(y, 500, seed=3)
    assert np.array_equal(sample, np.arange(500))
    assert weight is None


def test_above_the_bound_purchases_stay_and_the_sample_weighs_for_the_rest() -> None:
    y = (np.random.default_rng(1).random(20_000) < 0.05).astype("int8")
    sample, weight = bounded_periods(y, 5_000, seed=3)
    assert weight is not None
    assert sample.size == 5_000 and np.all(np.diff(sample) > 0)
    assert np.array_equal(np.flatnonzero(y == 1), sample[y[sample] == 1])
    # the weighted rows count as many quiet rows and purchases as the whole set has
    assert np.isclose(weight[y[sample] == 0].sum(), (y == 0).sum())
    assert np.all(weight[y[sample] == 1] == 1.0)
    again, _ = bounded_periods(y, 5_000, seed=3)
    other, _ = bounded_periods(y, 5_000, seed=4)
    assert np.array_equal(sample, again) and not np.array_equal(sample, other)


def test_purchases_beyond_the_bound_still_leave_room_for_quiet_rows() -> None:
    y = np.r_[np.ones(900, "int8"), np.zeros(2_000, "int8")]
    sample, weight = bounded_periods(y, 1_000, seed=0)
    assert weight is not None
    assert (y[sample] == 1).sum() == 900 and (y[sample] == 0).sum() == 250
