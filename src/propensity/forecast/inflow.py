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
    """F(d) for d = 0..days: P(a new lead converts within d days of creation). Leads created
    c before T are in the cohort of day d when d < c <= d + `lookback_days` (whole days,
    compared in microseconds); a buyer also needs d >= its days to convert. Each lead's days
    form a range, counted for every d at once with a difference array (one pass over a 1M-lead
    export instead of one per day)."""
    t = int(to_micros(pd.Series([as_of]))[0])
    created = journeys.reached[:, 0]
    converted = journeys.reached[:, -1]
    before = created < t
    age_us = t - created[before]
    last = (age_us - 1) // DAY_US  # the largest d with d * DAY_US < age
    first = -(-age_us // DAY_US) - lookback_days  # the smallest d with d + lookback >= age
    n = _day_counts(np.maximum(first, 1), last, days)
    conv = converted[before]
    bought = conv < t
    to_convert = np.ceil((conv[bought] - created[before][bought]) / DAY_US).astype("int64")
    k = _day_counts(np.maximum(np.maximum(first[bought], to_convert), 1), last[bought], days)
    out = np.zeros(days + 1)
    out[1:] = np.where(n[1:] > 0, k[1:] / np.maximum(n[1:], 1), 0.0)
    return np.maximum.accumulate(out)


def _day_counts(first: np.ndarray, last: np.ndarray, days: int) -> np.ndarray:
    """For d = 0..days: how many of the ranges [first, last] hold d."""
    lo = np.clip(first, 0, days + 1)
    hi = np.clip(last + 1, 0, days + 1)
    keep = lo < hi
    diff = np.bincount(lo[keep], minlength=days + 2) - np.bincount(hi[keep],
                                                                    minlength=days + 2)
    return np.cumsum(diff)[:days + 1]


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
