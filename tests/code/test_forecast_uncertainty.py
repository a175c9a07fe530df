"""The models' own error in the forecast's intervals: the estimate of the error shared by
every lead, the simulation that adds it, and the shift that anchors a stage's level."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit

from propensity.forecast.hazard import LEVEL_SHIFT_BOUND, level_shift
from propensity.forecast.simulate import interval, simulate
from propensity.forecast.uncertainty import shared_error_sd
from propensity.models.outlook import cumulative


def rows_with_shared_error(sd: float, seed: int, times: int = 80,
                           leads: int = 1000) -> tuple[np.ndarray, ...]:
    """`times` snapshot times of `leads` rows each: every row of a time has its model
    probability moved by the same normal log-odds error of `sd` before its outcome is drawn."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1, 15, times * leads)
    t = np.repeat(np.arange(times), leads)
    shift = rng.normal(0, sd, times)[t] if sd else 0.0
    y = rng.random(p.size) < expit(logit(p) + shift)
    return p, y, t


@pytest.mark.parametrize("sd", [0.0, 0.3])
def test_the_shared_error_is_recovered_from_the_history(sd: float) -> None:
    estimates = [shared_error_sd(*rows_with_shared_error(sd, seed)) for seed in range(5)]
    p, _, _ = rows_with_shared_error(sd, 0)
    se = 1 / np.sqrt((p * (1 - p)).sum())  # the level's own standard error
    expected = np.sqrt(sd ** 2 + se ** 2)
    assert np.mean(estimates) == pytest.approx(expected, abs=0.06), (estimates, expected)
    if sd == 0:
        assert max(estimates) < 0.1  # coin flips alone are not read as the models' error


def test_the_simulated_count_follows_the_exact_mixture_of_shifted_curves() -> None:
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 6, 300)
    sd = 0.4
    sim = simulate(np.column_stack([np.zeros(p.size), p]), np.ones(p.size), np.ones(p.size),
                   np.ones(p.size), np.zeros(p.size, dtype="int64"), 1, sims=20_000, seed=1,
                   level_sd=sd)
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)  # E over the shift ~ N(0, sd)
    cdf = np.zeros(p.size + 1)
    for z, w in zip(nodes, weights / weights.sum(), strict=True):
        pmf = np.array([1.0])
        for q in expit(logit(p) + sd * z):  # the Poisson-binomial of this shift
            pmf = np.convolve(pmf, [1 - q, q])
        cdf += w * np.cumsum(pmf)
    plain = simulate(np.column_stack([np.zeros(p.size), p]), np.ones(p.size),
                     np.ones(p.size), np.ones(p.size), np.zeros(p.size, dtype="int64"), 1,
                     sims=20_000, seed=1)
    for level in (0.8, 0.95):
        a = (1 - level) / 2
        exact = (np.searchsorted(cdf, a), np.searchsorted(cdf, 1 - a))
        low, high = interval(sim.counts[0], level)
        assert abs(low - exact[0]) <= 1 and abs(high - exact[1]) <= 1, (level, low, high, exact)
        narrow = interval(plain.counts[0], level)
        assert high - low > narrow[1] - narrow[0] + 4  # the models' error widens the range


def test_the_level_shift_moves_a_stages_mean_part_of_the_way_to_its_rate() -> None:
    """One shift of a period's hazard log-odds, common to the stage's leads: their mean
    P(converted by the period's end) lands the asked share of the way to the past rate, the
    earlier periods are untouched and the leads keep their order in the period."""
    rng = np.random.default_rng(4)
    margins = rng.normal(-3, 1, (500, 4))
    before = cumulative(margins)
    for k, rate, share in ((0, 0.12, 1.0), (2, 0.30, 0.5), (3, 0.15, 0.25)):
        d = level_shift(margins, k, rate, share)
        moved = margins.copy()
        moved[:, k] += d
        after = cumulative(moved)
        now = before[:, k + 1].mean()
        assert after[:, k + 1].mean() == pytest.approx(now + share * (rate - now), abs=1e-9)
        np.testing.assert_array_equal(after[:, :k + 1], before[:, :k + 1])
        hazard = (after[:, k + 1] - after[:, k]) / (1 - after[:, k])
        np.testing.assert_array_equal(np.argsort(hazard), np.argsort(margins[:, k]))
    # a rate below what the earlier periods already hold cannot be reached: the shift stops
    assert level_shift(margins, 3, 0.0, 1.0) == -LEVEL_SHIFT_BOUND
