"""The models' own error in the forecast's intervals: the estimate of the error shared by
every lead, the simulation that adds it, and the level-only calibration of a thin history."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit

from propensity.forecast.hazard import level_calibrator
from propensity.forecast.simulate import interval, simulate
from propensity.forecast.uncertainty import shared_error_sd


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


def test_a_thin_history_calibrates_only_the_level() -> None:
    rng = np.random.default_rng(3)
    margin = rng.normal(-3, 1.5, 2000)
    y = (rng.random(margin.size) < expit(margin + 0.7)).astype("float64")
    cal = level_calibrator(margin, y)
    p = cal(margin)
    assert p.mean() == pytest.approx(y.mean(), abs=1e-9)
    assert (np.diff(p[np.argsort(margin)]) > 0).all()  # the ranking is kept
    assert cal.a == 1.0 and 0.4 < cal.b < 1.0  # one shift, near the true 0.7
