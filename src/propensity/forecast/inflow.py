"""Leads not created yet: what the recent inflow should add to a forecast, shown apart.

The rate is the leads created per day over the `window_days` before T. How fast a new lead
converts is read from history: F(d), the share of the leads created in the year before
T - d that converted within d days of creation (only leads whose d days had passed by T).
A lead created s days after T then converts by T + D with probability F(D - s); summed over
the days of creation, the expected customers by each week's end. Arrivals are random at a
steady rate, so each week's count is Poisson: its intervals are the Poisson's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import poisson

from propensity.funnel.journeys import Journeys
from propensity.timestamps import DAY_US, to_micros


@dataclass
class Inflow:
    leads_per_day: float
    customers: np.ndarray
    """Expected customers per week from leads created after T."""
    revenue: np.ndarray
    low80: np.ndarray
    high80: np.ndarray
    low95: np.ndarray
    high95: np.ndarray


def conversion_by_age(journeys: Journeys, as_of: pd.Timestamp, days: int,
                      lookback_days: int = 365) -> np.ndarray:
    """F(d) for d = 0..days: P(a new lead converts within d days of creation)."""
    t = int(to_micros(pd.Series([as_of]))[0])
    created = journeys.reached[:, 0]
    converted = journeys.reached[:, -1]
    age_to_convert = (converted - created) / DAY_US
    out = np.zeros(days + 1)
    for d in range(1, days + 1):
        cohort = (created < t - d * DAY_US) & (created >= t - (d + lookback_days) * DAY_US)
        if cohort.any():
            done = cohort & (converted < t) & (age_to_convert <= d)
            out[d] = done.sum() / cohort.sum()
    return np.maximum.accumulate(out)


def inflow_forecast(journeys: Journeys, as_of: pd.Timestamp, weeks: int, mean_amount: float,
                    window_days: int = 91) -> Inflow:
    t = int(to_micros(pd.Series([as_of]))[0])
    created = journeys.reached[:, 0]
    rate = float(((created < t) & (created >= t - window_days * DAY_US)).sum() / window_days)
    days = weeks * 7
    f = conversion_by_age(journeys, as_of, days)
    # leads created on day s (0..D-1, mid-day) convert by day D with F(D - s - 0.5)
    by_day = np.array([rate * np.interp(np.arange(d) + 0.5, np.arange(days + 1), f).sum()
                       for d in range(days + 1)])
    by_week = by_day[::7]
    customers = np.diff(by_week)
    lo80, hi80 = poisson.ppf(0.1, customers), poisson.ppf(0.9, customers)
    lo95, hi95 = poisson.ppf(0.025, customers), poisson.ppf(0.975, customers)
    return Inflow(rate, customers, customers * mean_amount, lo80, hi80, lo95, hi95)
