"""The backtest: the forecast as it would have been made at each past quarter start (models
fitted on the export cut there), against what happened in the 13 weeks after, beside the two
rule-based forecasts made with the same knowledge."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from pydantic import BaseModel

from propensity.forecast.forecaster import Progress, fit_forecaster
from propensity.forecast.report import forecast_from
from propensity.forecast.rules import stage_rate_forecast, weighted_pipeline
from propensity.funnel.journeys import build_journeys
from propensity.problems import PropensityError
from propensity.snapshot_rows import TooLittleHistory
from propensity.tables import CrmExport
from propensity.timestamps import to_micros

MIN_HISTORY_DAYS = 90
"""Quarters whose start has less history than this before it are not forecast."""


class Period(BaseModel):
    start: str
    open_leads: int
    actual: int
    forecast: float
    low80: float
    high80: float
    low95: float
    high95: float
    stage_rates: float
    pipeline: float
    actual_revenue: float
    forecast_revenue: float
    revenue_low80: float
    revenue_high80: float
    stage_rates_revenue: float
    pipeline_revenue: float

    def ape(self, value: float) -> float:
        """Absolute percentage error of `value` against the actual count (inf if it is 0)."""
        return abs(value - self.actual) / self.actual if self.actual else float("inf")


class Backtest(BaseModel):
    weeks: int
    periods: list[Period]
    skipped: list[str] = []
    """Quarter starts whose history could not teach the models, each with the reason."""

    def summary(self) -> dict[str, float]:
        p = self.periods

        def mape(values: list[float]) -> float:
            return float(np.mean([x.ape(v) for x, v in zip(p, values, strict=True)]))

        return {
            "periods": len(p),
            "mape_model": mape([x.forecast for x in p]),
            "mape_stage_rates": mape([x.stage_rates for x in p]),
            "mape_pipeline": mape([x.pipeline for x in p]),
            "coverage80": float(np.mean([x.low80 <= x.actual <= x.high80 for x in p])),
            "coverage95": float(np.mean([x.low95 <= x.actual <= x.high95 for x in p])),
            "revenue_coverage80": float(np.mean(
                [x.revenue_low80 <= x.actual_revenue <= x.revenue_high80 for x in p])),
        }


def quarter_starts(export: CrmExport, weeks: int,
                   min_history_days: int = MIN_HISTORY_DAYS) -> list[pd.Timestamp]:
    """Quarter starts with `min_history_days` of leads before them and `weeks` of history
    after them."""
    first = export.leads["created_at"].min() + pd.Timedelta(days=min_history_days)
    last = export.latest_time() - pd.Timedelta(days=7 * weeks)
    starts = pd.date_range(first.floor("D"), last, freq="QS")
    return [pd.Timestamp(t) for t in starts if first <= t <= last]


def actuals(export: CrmExport, at: pd.Timestamp, weeks: int,
            journeys_lead_ids: pd.Series) -> tuple[int, float]:
    """How many of the leads open at `at` converted in the `weeks` after it, and the amount
    their won opportunities closed for (from the full export)."""
    j = build_journeys(export)
    pos = export.lead_positions(journeys_lead_ids)
    t = int(to_micros(pd.Series([at]))[0])
    end = t + weeks * 7 * 86_400 * 1_000_000
    conv = j.reached[pos, -1]
    hit = (conv > t) & (conv <= end)
    revenue = 0.0
    opps = export.opportunities
    if opps is not None and len(opps):
        won = opps[opps["status"].astype("str") == "won"]
        ids = set(journeys_lead_ids.to_numpy()[hit].astype("str"))
        closed = to_micros(won["closed_at"])
        mine = won["lead_id"].astype("str").isin(ids).to_numpy() & (closed > t) & (closed <= end)
        revenue = float(won["amount"].fillna(0).to_numpy()[mine].sum())
    return int(hit.sum()), revenue


def backtest(export: CrmExport, *, weeks: int = 13, seed: int = 0, sims: int = 1000,
             min_history_days: int = MIN_HISTORY_DAYS, progress: Progress | None = None,
             on_period: Callable[[Period], None] | None = None) -> Backtest:
    """The forecast at every past quarter start the history allows, against the actuals."""
    starts = quarter_starts(export, weeks, min_history_days)
    if not starts:
        raise PropensityError(
            f"no quarter start has {min_history_days} days of history before it and "
            f"{weeks} weeks after it in this export "
            f"({export.leads['created_at'].min():%Y-%m-%d}..{export.latest_time():%Y-%m-%d})")
    periods: list[Period] = []
    skipped: list[str] = []
    for i, at in enumerate(starts, start=1):
        note = (lambda text, i=i, at=at: progress(
            f"quarter {i}/{len(starts)} ({at:%Y-%m-%d}): {text}")) if progress else None
        try:
            model = fit_forecaster(export, at, seed=seed, progress=note)
        except TooLittleHistory as exc:
            skipped.append(f"{at:%Y-%m-%d}: {exc}")
            continue
        if model.hazard.max_days_ < 7 * weeks:
            # past its longest observed window the curve is held flat: it would count
            # only the conversions of its first days (realistic profile, first quarter:
            # 19.8 forecast for 42 actual on a 30-day window)
            skipped.append(f"{at:%Y-%m-%d}: the history before it observed leads for "
                           f"{model.hazard.max_days_} days, fewer than the {7 * weeks} "
                           "the forecast covers")
            continue
        if note:
            note("forecast")
        result, outlook = forecast_from(model, weeks, seed=seed, sims=sims)
        actual, actual_revenue = actuals(export, at, weeks, outlook["lead_id"])
        rules = stage_rate_forecast(model.rates, outlook["stage_index"].to_numpy(),
                                    outlook["segment_amount"].to_numpy())
        pipe = weighted_pipeline(model.export, outlook["lead_id"])
        c, r = result.total.customers, result.total.revenue
        period = Period(start=f"{at:%Y-%m-%d}", open_leads=result.open_leads, actual=actual,
                        forecast=c.expected, low80=c.low80, high80=c.high80, low95=c.low95,
                        high95=c.high95, stage_rates=rules.count, pipeline=pipe.count,
                        actual_revenue=actual_revenue, forecast_revenue=r.expected,
                        revenue_low80=r.low80, revenue_high80=r.high80,
                        stage_rates_revenue=rules.revenue, pipeline_revenue=pipe.revenue)
        periods.append(period)
        if on_period:
            on_period(period)
    if not periods:
        raise PropensityError("no past quarter could be forecast: " + "; ".join(skipped))
    return Backtest(weeks=weeks, periods=periods, skipped=skipped)

