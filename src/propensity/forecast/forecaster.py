"""The fitted forecast models as of a time T, and what they say about each lead open at T.

`fit_forecaster` cuts the export at T first (`truncate_export`), so every model, vocabulary,
rate and median here is what could have been known at T; the backtest relies on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from propensity.features import FeatureConfig, FeaturePlan
from propensity.forecast.amount import AmountModel, SegmentMedians, lead_segments, won_amounts
from propensity.forecast.hazard import HORIZONS, HazardModel, median_days
from propensity.forecast.rows import open_leads, snapshot_rows
from propensity.forecast.rules import stage_rates
from propensity.forecast.uncertainty import level_sd
from propensity.funnel.journeys import Journeys, build_journeys
from propensity.tables import CrmExport, truncate_export

Progress = Callable[[str], None]
REVENUE_DAYS = 90
"""The window of a lead's expected revenue: P(converted within it) x expected amount."""
RULE_DAYS = 91
"""The window of the stage-rate rule: the 13 weeks a quarter's forecast covers."""


@dataclass
class Forecaster:
    as_of: pd.Timestamp
    export: CrmExport
    """The export cut at `as_of`: all the forecast may read."""
    journeys: Journeys
    plan: FeaturePlan
    hazard: HazardModel
    amount: AmountModel
    medians: SegmentMedians
    rates: np.ndarray
    """Per stage: historical share of open leads converting within `RULE_DAYS`."""
    mean_won_amount: float
    level_sd: float = 0.0
    """Sd of the log-odds error shared by every lead's curve over `RULE_DAYS`
    (`uncertainty.level_sd`): the models' own error, which the intervals add."""


def calibration_mask(lead_ids: pd.Series, seed: int, share: float = 0.25) -> np.ndarray:
    """True for rows of leads the models learn from, False for the `share` held out to
    calibrate them; whole leads, by a seeded shuffle of the distinct ids (sorted first, so
    the row order does not matter)."""
    ids = np.sort(lead_ids.astype("str").unique())
    held = np.random.default_rng(seed).random(ids.size) < share
    return ~pd.Series(held, index=ids).reindex(lead_ids.astype("str").to_numpy()).to_numpy()


def fit_forecaster(export: CrmExport, as_of: pd.Timestamp, *, seed: int = 0,
                   features: FeatureConfig | None = None, max_rows: int = 60_000,
                   progress: Progress | None = None) -> Forecaster:
    """Every forecast model fitted on the export as it was at `as_of`."""
    note = progress or (lambda _text: None)
    cut = truncate_export(export, as_of)
    journeys = build_journeys(cut)
    note(f"point-in-time snapshot rows before {as_of:%Y-%m-%d}")
    rows = snapshot_rows(cut, as_of, max_rows=max_rows, seed=seed, features=features,
                         journeys=journeys)
    fit = calibration_mask(rows.entities["lead_id"], seed)
    note(f"hazard model on {len(rows.entities):,} snapshot rows")
    hazard = HazardModel(seed=seed).fit(rows, fit)
    level = level_sd(hazard, rows, ~fit, RULE_DAYS)
    note("amount model on won opportunities")
    amount = won_amounts(cut, rows.entities["lead_id"])
    # a lead's amount is known only once it was won before the data's end: as it is here
    amount_model = AmountModel(seed=seed).fit(rows, amount, fit, rows.plan.columns)
    won_rows = ~np.isnan(amount)
    segments = lead_segments(cut, rows.entities["lead_id"])
    latest = ~rows.entities.duplicated("lead_id", keep="last").to_numpy()
    medians = SegmentMedians().fit(segments[latest].reset_index(drop=True),
                                   amount[latest])
    return Forecaster(
        as_of=as_of, export=cut, journeys=journeys, plan=rows.plan, hazard=hazard,
        amount=amount_model, medians=medians,
        rates=stage_rates(rows, RULE_DAYS, len(cut.stages)),
        mean_won_amount=float(np.nanmean(amount[won_rows & latest])) if (
            won_rows & latest).any() else 0.0, level_sd=level)


def lead_outlook(model: Forecaster, weeks: int = 13) -> tuple[pd.DataFrame, np.ndarray]:
    """Every lead open at T: P(converted by 30/60/90/180 days), P(ever within the longest
    observed window), median days to convert among converters, the amount (10%, median, 90%,
    mean), expected revenue within `REVENUE_DAYS`, the rule-based segment amount; and the
    (leads, weeks + 1) cumulative P(converted by the end of each week)."""
    entities, X = open_leads(model.export, model.as_of, model.plan, model.journeys)
    curve = model.hazard.curve(X)
    out = entities[["lead_id", "stage_index"]].copy()
    at = model.hazard.by_days(curve, [*HORIZONS, REVENUE_DAYS])
    for j, h in enumerate(HORIZONS):
        out[f"p_by_{h}"] = at[:, j]
    out["p_ever"] = curve[:, -1]
    out["ever_within_days"] = model.hazard.max_days_
    out["median_days"] = median_days(curve, model.hazard.edges)
    amounts = model.amount.predict(X)
    for col in amounts:
        out[col] = amounts[col].to_numpy()
    out["expected_revenue"] = at[:, -1] * out["expected_amount"]
    segments = lead_segments(model.export, entities["lead_id"])
    out["segment"] = segments["segment"].to_numpy()
    out["segment_amount"] = model.medians.predict(segments)
    out["rule_probability"] = model.rates[entities["stage_index"].to_numpy()]
    weekly = model.hazard.by_days(curve, np.arange(weeks + 1) * 7.0)
    return out.reset_index(drop=True), weekly
