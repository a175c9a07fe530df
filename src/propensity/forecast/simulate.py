"""The spread of a forecast: Monte Carlo over leads, with a fixed seed.

The count of new customers in a week is a sum of independent Bernoulli trials with different
p (a Poisson-binomial); revenue adds each deal's amount, itself uncertain. Both are simulated
together: in each of `sims` draws, every lead gets one uniform number that places its
conversion in a week (or after the horizon) through its own curve, and each lead that
converts a log-normal amount whose mean is its expected amount and whose 10%-90% spread is
its amount interval. The same seed and leads give the same draws on any machine.

The chances themselves are estimates that err together (`uncertainty`): with `level_sd` > 0
each draw also shifts every lead's log-odds by one normal number of that sd, so a draw is a
world where the models were that much too high or too low. A lead converts by the end of a
week when logit(u) - shift < logit(F(week)), the same test as u < F with the shift applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SIMS = 2000
CHUNK = 2000
Z90 = 1.2815515655446004
"""The standard normal's 90% quantile: a log-normal's 10%-90% spread is 2 x Z90 x sigma."""


@dataclass
class Simulation:
    """Simulated totals: `counts[w, s]` and `revenue[w, s]` per week w and draw s, and the
    same over the whole horizon per group, `group_counts[g, s]`, `group_revenue[g, s]`."""

    counts: np.ndarray
    revenue: np.ndarray
    group_counts: np.ndarray
    group_revenue: np.ndarray


def simulate(cumulative: np.ndarray, expected_amount: np.ndarray, amount_low: np.ndarray,
             amount_high: np.ndarray, group: np.ndarray, n_groups: int, *, sims: int = SIMS,
             seed: int = 0, level_sd: float = 0.0,
             progress: Callable[[int, int], None] | None = None) -> Simulation:
    """`cumulative` (leads, weeks + 1): P(converted by the end of each week), column 0 = 0;
    `level_sd`: sd of the log-odds shift shared by every lead in a draw; `progress(done,
    total)` after each chunk of leads."""
    n, weeks = cumulative.shape[0], cumulative.shape[1] - 1
    rng = np.random.default_rng(seed)
    shift = level_sd * rng.standard_normal(sims) if level_sd > 0 else np.zeros(sims)
    counts = np.zeros(weeks * sims)
    revenue = np.zeros(weeks * sims)
    g_counts = np.zeros(n_groups * sims)
    g_revenue = np.zeros(n_groups * sims)
    sigma = np.maximum(np.log(np.maximum(amount_high, 1e-9) / np.maximum(amount_low, 1e-9)),
                       0) / (2 * Z90)
    mu = np.log(np.maximum(expected_amount, 1e-9)) - sigma ** 2 / 2
    for start in range(0, n, CHUNK):
        sl = slice(start, start + CHUNK)
        f = _logit(cumulative[sl, 1:])
        v = _logit(rng.random((f.shape[0], sims))) - shift
        # only a (lead, draw) that converts within the horizon needs its week: most do not
        lead, draw = np.nonzero(v < f[:, -1:])
        w = (v[lead, draw][:, None] >= f[lead]).sum(axis=1)  # weeks passed before it
        amount = np.exp(mu[sl][lead] + sigma[sl][lead] * rng.standard_normal(lead.size))
        cell = w * sims + draw
        counts += np.bincount(cell, minlength=weeks * sims)
        revenue += np.bincount(cell, weights=amount, minlength=weeks * sims)
        cell = group[sl][lead] * sims + draw
        g_counts += np.bincount(cell, minlength=n_groups * sims)
        g_revenue += np.bincount(cell, weights=amount, minlength=n_groups * sims)
        if progress:
            progress(min(start + CHUNK, n), n)
    return Simulation(counts.reshape(weeks, sims), revenue.reshape(weeks, sims),
                      g_counts.reshape(n_groups, sims), g_revenue.reshape(n_groups, sims))


def _logit(p: np.ndarray) -> np.ndarray:
    """Log-odds, -inf at 0 and +inf at 1 (order kept: the comparison stays exact)."""
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


def interval(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The central `level` interval of the draws along the last axis."""
    a = (1 - level) / 2
    return (np.quantile(draws, a, axis=-1, method="inverted_cdf"),
            np.quantile(draws, 1 - a, axis=-1, method="inverted_cdf"))
