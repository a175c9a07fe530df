"""The forecast as of T: expected new customers and revenue per week from the leads open at
T, with 80% and 95% intervals, by group if asked, and apart from it what leads not yet
created should add at the recent inflow rate."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
from pydantic import BaseModel

from propensity.features import FeatureConfig
from propensity.forecast.forecaster import Forecaster, Progress, fit_forecaster, lead_outlook
from propensity.forecast.inflow import inflow_forecast
from propensity.forecast.simulate import SIMS, interval, simulate
from propensity.problems import PropensityError
from propensity.tables import CrmExport
from propensity.timestamps import utc


class ForecastUsageError(PropensityError):
    """A forecast option out of range: the command line is wrong (exit 2)."""

    exit_code = 2


class AfterTheExport(PropensityError):
    """A forecast time past the export's last known day: nothing is known then. The CLI says
    so about `--as-of`, the route as a 422 on `as_of`."""

    def __init__(self, t: pd.Timestamp, latest: pd.Timestamp) -> None:
        super().__init__(f"{t:%Y-%m-%d} is after the export's latest timestamp "
                         f"({latest:%Y-%m-%d %H:%M}); nothing is known then")


def forecast_time(as_of: datetime | None, latest: pd.Timestamp) -> pd.Timestamp:
    """When a forecast is made: `as_of` in UTC (naive means UTC), by default the day after the
    export's `latest` timestamp, its first whole day with nothing recorded. Later than that
    day nothing is known, so it is refused (`AfterTheExport`)."""
    t = latest.floor("D") + pd.Timedelta(days=1) if as_of is None else utc(as_of)
    if t > latest + pd.Timedelta(days=1):
        raise AfterTheExport(t, latest)
    return t


GROUPS: tuple[str, ...] = ("source", "campaign", "owner_id", "segment")
METHOD = (f"Monte Carlo, {SIMS} draws, fixed seed: each open lead's conversion week drawn "
          "from its calibrated P(converted by t) curve, every curve of a draw shifted by "
          "one normal log-odds error (the models' own, measured on the history's held-out "
          "leads), each won deal's amount from a log-normal with its expected amount and "
          "80% interval")


class Span(BaseModel):
    """An expected value and its central 80% and 95% intervals."""

    expected: float
    low80: float
    high80: float
    low95: float
    high95: float


class Week(BaseModel):
    week: int
    start: str
    customers: Span
    revenue: Span


class Group(BaseModel):
    group: str
    open_leads: int
    customers: Span
    revenue: Span


class NewLeads(BaseModel):
    """Leads created after T, at the inflow of the 13 weeks before it (not in the weeks)."""

    leads_per_day: float
    customers: list[float]
    revenue: list[float]
    total_customers: Span
    total_revenue: float


class ForecastResult(BaseModel):
    as_of: str
    weeks: int
    by: str | None
    open_leads: int
    method: str
    seed: int
    rows: list[Week]
    total: Week
    groups: list[Group]
    new_leads: NewLeads


def _span(expected: float, draws: np.ndarray) -> Span:
    lo80, hi80 = interval(draws, 0.8)
    lo95, hi95 = interval(draws, 0.95)
    return Span(expected=float(expected), low80=float(lo80), high80=float(hi80),
                low95=float(lo95), high95=float(hi95))


def group_labels(model: Forecaster, outlook: pd.DataFrame, by: str | None) -> pd.Series:
    if by is None:
        return pd.Series("all", index=outlook.index)
    if by == "segment":
        return outlook["segment"]
    if by not in GROUPS:
        raise ForecastUsageError(f"--by is one of {', '.join(GROUPS)}, not {by!r}")
    leads = model.export.leads
    if by not in leads:
        raise PropensityError(f"--by {by}: the export's leads have no {by} column")
    pos = model.export.lead_positions(outlook["lead_id"])
    values = leads[by].astype("str").where(leads[by].notna(), "(none)").to_numpy()[pos]
    return pd.Series(values, index=outlook.index)


def forecast_from(model: Forecaster, weeks: int = 13, by: str | None = None, *,
                  seed: int = 0, sims: int = SIMS, progress: Progress | None = None
                  ) -> tuple[ForecastResult, pd.DataFrame]:
    """The forecast of a fitted `Forecaster`, and the per-lead outlook it sums; `progress`
    hears how many leads the simulation has drawn (a 1M-lead export keeps it busy)."""
    if weeks < 1 or weeks > 52:
        raise ForecastUsageError(f"--weeks {weeks}: between 1 and 52")
    outlook, cumulative = lead_outlook(model, weeks)
    labels = group_labels(model, outlook, by)
    names, group = np.unique(labels.to_numpy(dtype="str"), return_inverse=True)
    sim = simulate(cumulative, outlook["expected_amount"].to_numpy(),
                   outlook["amount_low"].to_numpy(), outlook["amount_high"].to_numpy(),
                   group, len(names), sims=sims, seed=seed, level_sd=model.level_sd,
                   progress=(lambda done, n: progress(
                       f"simulating {sims:,} draws of {weeks} weeks: {done:,}/{n:,} leads"))
                   if progress else None)
    weekly_p = np.diff(cumulative, axis=1)
    amount = outlook["expected_amount"].to_numpy()
    rows = []
    for w in range(weeks):
        start = model.as_of + pd.Timedelta(days=7 * w)
        rows.append(Week(week=w + 1, start=f"{start:%Y-%m-%d}",
                         customers=_span(weekly_p[:, w].sum(), sim.counts[w]),
                         revenue=_span((weekly_p[:, w] * amount).sum(), sim.revenue[w])))
    total_p = cumulative[:, -1]
    total = Week(week=0, start=f"{model.as_of:%Y-%m-%d}",
                 customers=_span(total_p.sum(), sim.counts.sum(axis=0)),
                 revenue=_span((total_p * amount).sum(), sim.revenue.sum(axis=0)))
    groups = [Group(group=str(name), open_leads=int((group == g).sum()),
                    customers=_span(total_p[group == g].sum(), sim.group_counts[g]),
                    revenue=_span((total_p * amount)[group == g].sum(), sim.group_revenue[g]))
              for g, name in enumerate(names)] if by is not None else []
    inflow = inflow_forecast(model.journeys, model.as_of, weeks, model.mean_won_amount)
    total_new = float(inflow.customers.sum())
    from scipy.stats import poisson

    new = NewLeads(leads_per_day=inflow.leads_per_day, customers=inflow.customers.tolist(),
                   revenue=inflow.revenue.tolist(),
                   total_customers=Span(expected=total_new,
                                        low80=float(poisson.ppf(0.1, total_new)),
                                        high80=float(poisson.ppf(0.9, total_new)),
                                        low95=float(poisson.ppf(0.025, total_new)),
                                        high95=float(poisson.ppf(0.975, total_new))),
                   total_revenue=float(inflow.revenue.sum()))
    outlook["group"] = labels.to_numpy()
    result = ForecastResult(as_of=str(model.as_of), weeks=weeks, by=by,
                            open_leads=len(outlook), method=METHOD, seed=seed, rows=rows,
                            total=total, groups=groups, new_leads=new)
    return result, outlook


def forecast(export: CrmExport, as_of: pd.Timestamp, weeks: int = 13, by: str | None = None,
             *, seed: int = 0, sims: int = SIMS, features: FeatureConfig | None = None,
             progress: Progress | None = None) -> tuple[ForecastResult, pd.DataFrame]:
    """Fit the models on the export as it was at `as_of`, then forecast `weeks` ahead."""
    if by is not None and by not in GROUPS:
        raise ForecastUsageError(f"--by is one of {', '.join(GROUPS)}, not {by!r}")
    model = fit_forecaster(export, as_of, seed=seed, features=features, progress=progress)
    if progress:
        progress("each open lead's curve and amount")
    return forecast_from(model, weeks, by, seed=seed, sims=sims, progress=progress)
