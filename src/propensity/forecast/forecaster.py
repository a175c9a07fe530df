"""The fitted forecast models as of a time T, and what they say about each lead open at T.

`fit_forecaster` cuts the export at T first (`truncate_export`), so every model, vocabulary,
rate and median here is what could have been known at T; the backtest relies on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from propensity.features import FeatureConfig, FeaturePlan, fit_feature_spec
from propensity.forecast.amount import AmountModel, SegmentMedians, lead_segments
from propensity.forecast.hazard import HORIZONS, HazardModel
from propensity.forecast.rules import stage_rates
from propensity.forecast.uncertainty import level_sd
from propensity.funnel.journeys import Journeys, build_journeys
from propensity.models.bundle import ModelBundle
from propensity.models.outlook import REVENUE_DAYS, Outlook
from propensity.snapshot_rows import SnapshotRows, TooLittleHistory, snapshot_rows
from propensity.tables import CrmExport, index_export, truncate_export

Progress = Callable[[str], None]
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
    open_entities: pd.DataFrame
    """The leads open at `as_of` (lead_id, as_of, stage_index; `SnapshotRows.open_entities`)
    and their matrix: the hazard model's levels are anchored on them (`HazardModel.anchor`),
    and the forecast scores them with the trees' margins the anchoring read."""
    open_X: np.ndarray
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
    ix = index_export(cut)
    journeys = build_journeys(ix)
    note(f"point-in-time snapshot rows before {as_of:%Y-%m-%d}")
    spec = fit_feature_spec(cut, features or FeatureConfig())
    rows = snapshot_rows(ix, as_of, spec, max_rows=max_rows, seed=seed, journeys=journeys)
    fit = calibration_mask(rows.entities["lead_id"], seed)
    hazard, amount_model, amount = fit_models(rows, fit, seed, note)
    if not amount_model.boosters_ and np.isnan(amount_model.fallback_):
        # the bundle's outlook ships null amounts then; a forecast of revenue has nothing
        raise TooLittleHistory("no won opportunity with an amount before the forecast time: "
                               "revenue cannot be forecast")
    level = level_sd(hazard, rows, ~fit, RULE_DAYS)
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
            won_rows & latest).any() else 0.0, level_sd=level, open_entities=rows.open_entities,
        open_X=rows.open_X)


def fit_models(rows: SnapshotRows, fit: np.ndarray, seed: int,
               note: Progress) -> tuple[HazardModel, AmountModel, np.ndarray]:
    """The hazard and amount models on snapshot rows of an export cut at their as-of time
    (the forecast's and the shipped bundle's outlook alike), and each row's won amount;
    the leads open at that time (`rows.open_X`) anchor the hazard's levels.
    Without a won amount in the history there is no amount to learn: the amounts are then
    missing (null in a score), not made up."""
    note(f"hazard model on {len(rows.entities):,} snapshot rows")
    hazard = HazardModel(seed=seed).fit(rows, fit, rows.open_X)
    amount = rows.amount
    if not (~np.isnan(amount) & (amount > 0)).any():
        return hazard, AmountModel(fallback_=float("nan")), amount
    note("amount model on won opportunities")
    return hazard, AmountModel(seed=seed).fit(rows, amount, fit, rows.plan.columns), amount


def fit_outlook(rows: SnapshotRows, *, seed: int = 0,
                progress: Progress | None = None) -> Outlook:
    """The outlook a lead-conversion bundle ships: the forecast's hazard and amount models,
    fitted at training time on `snapshot_rows.outlook_rows` (the whole export as of the day
    after its latest timestamp, read with the bundle's own feature spec), so that they read
    the matrix the probability is scored from and a request builds its features once."""
    note = progress or (lambda _text: None)
    fit = calibration_mask(rows.entities["lead_id"], seed)
    hazard, amount_model, amount = fit_models(rows, fit, seed, note)
    hazard.held_curve_ = hazard.scored_trees_ = None  # the bundle ships the model alone
    won = ~np.isnan(amount) & (amount > 0)
    return Outlook(hazard, amount_model, REVENUE_DAYS, info={
        "as_of": str(rows.as_of), "rows": len(rows.entities),
        "leads": int(rows.entities["lead_id"].nunique()),
        "won_leads": int(rows.entities["lead_id"][won].nunique()),
        "edges": list(hazard.edges), "trees": hazard.booster_.num_trees() if
        hazard.booster_ is not None else 0,
        "amount_model": bool(amount_model.boosters_),
        "interval_widen": round(amount_model.widen_, 6)})


def attach_outlook(bundle: ModelBundle, rows: SnapshotRows | str, seed: int,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Fit the outlook a trained bundle ships from its rows (`outlook_rows`, read with the
    bundle's own feature spec) and attach it; what the training report says of it. An export
    too short (`rows` is then the reason) or with too few conversions to learn when leads
    convert ships without one (a score's outlook fields are then null), and the report says
    why: the probability model is no less good for it."""
    if bundle.spec is None:
        return {"shipped": False, "why": "a single table has no history to learn time from"}
    if isinstance(rows, str):
        bundle.outlook = None
        return {"shipped": False, "why": rows}
    try:
        bundle.outlook = fit_outlook(rows, seed=seed, progress=progress)
    except TooLittleHistory as exc:
        bundle.outlook = None
        return {"shipped": False, "why": str(exc)}
    return {"shipped": True, **bundle.outlook.info}


def lead_outlook(model: Forecaster, weeks: int = 13) -> tuple[pd.DataFrame, np.ndarray]:
    """Every lead open at T: P(converted by 30/60/90/180 days), P(ever within the longest
    observed window), median days to convert among converters, the amount (10%, median, 90%,
    mean), expected revenue within `REVENUE_DAYS`, the rule-based segment amount; and the
    (leads, weeks + 1) cumulative P(converted by the end of each week)."""
    entities, X = model.open_entities, model.open_X
    seen = Outlook(model.hazard, model.amount, REVENUE_DAYS).predict(
        X, trees=model.hazard.scored_trees_)  # the trees' margins the anchoring read
    out = entities[["lead_id", "stage_index"]].copy()
    for j, h in enumerate(HORIZONS):
        out[f"p_by_{h}"] = seen.horizons[:, j]
    out["p_ever"] = seen.curve[:, -1]
    out["ever_within_days"] = model.hazard.max_days_
    out["median_days"] = seen.expected_days
    out["amount_low"], out["amount_median"] = seen.amount_low, seen.amount_median
    out["amount_high"], out["expected_amount"] = seen.amount_high, seen.expected_amount
    out["expected_revenue"] = seen.expected_revenue
    segments = lead_segments(model.export, entities["lead_id"])
    out["segment"] = segments["segment"].to_numpy()
    out["segment_amount"] = model.medians.predict(segments)
    out["rule_probability"] = model.rates[entities["stage_index"].to_numpy()]
    weekly = model.hazard.by_days(seen.curve, np.arange(weeks + 1) * 7.0)
    return out.reset_index(drop=True), weekly
