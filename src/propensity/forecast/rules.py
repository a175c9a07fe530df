"""The rule-based forecasts users have today, for the backtest to compare with.

- **Stage rates** (the seed formula): each open lead counts its stage's historical rate of
  converting within the forecast window (over past snapshots whose window had closed); its
  revenue is that rate x its segment's median won amount.
- **Weighted pipeline** (HubSpot, Twenty, Odoo): each open opportunity counts the historical
  win rate of opportunities (won / closed) and its amount times that rate; leads without an
  opportunity count nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from propensity.snapshot_rows import SnapshotRows
from propensity.tables import CrmExport


@dataclass
class RuleForecast:
    count: float
    revenue: float


def stage_rates(rows: SnapshotRows, days: int, n_stages: int) -> np.ndarray:
    """Per stage: share of past open leads in it that converted within `days`."""
    seen = rows.observed(days)
    stage = rows.entities["stage_index"].to_numpy()[seen]
    y = rows.converted_within(days)[seen]
    n = np.bincount(stage, minlength=n_stages).astype("float64")
    k = np.bincount(stage, weights=y, minlength=n_stages)
    overall = y.mean() if y.size else 0.0
    return np.where(n > 0, k / np.maximum(n, 1), overall)


def stage_rate_forecast(rates: np.ndarray, open_stage: np.ndarray,
                        segment_amount: np.ndarray) -> RuleForecast:
    p = rates[open_stage]
    return RuleForecast(float(p.sum()), float((p * segment_amount).sum()))


def weighted_pipeline(export: CrmExport, open_leads: pd.Series) -> RuleForecast:
    """Open opportunities of the open leads x the historical win rate (and their amounts)."""
    opps = export.opportunities
    if opps is None or not len(opps):
        return RuleForecast(0.0, 0.0)
    status = opps["status"].astype("str")
    closed = status.isin(["won", "lost"])
    rate = float((status == "won").sum() / closed.sum()) if closed.any() else 0.0
    mine = opps[(status == "open") & opps["lead_id"].astype("str").isin(
        set(open_leads.astype("str")))]
    return RuleForecast(rate * len(mine), rate * float(mine["amount"].fillna(0).sum()))
