"""MQL threshold and grade bands: what turns a probability into a decision.

Scores are probabilities x 100, rounded. A lead is an MQL when its score reaches the MQL
threshold; its grade is the first band whose lower bound it reaches (A, then B, then C), else D.
Until marketing ops set their own, version 0 holds the defaults below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, model_validator

from propensity.targets import LEAD_CONVERSION

if TYPE_CHECKING:
    from propensity.tables import CrmExport


class ThresholdSet(BaseModel):
    version: int = 0
    model: str = LEAD_CONVERSION
    mql: float = Field(default=50.0, ge=0, le=100,
                       description="score at or above which a lead is an MQL")
    grade_a: float = Field(default=75.0, ge=0, le=100)
    grade_b: float = Field(default=50.0, ge=0, le=100)
    grade_c: float = Field(default=25.0, ge=0, le=100)

    @model_validator(mode="after")
    def _bands_ordered(self) -> ThresholdSet:
        if not self.grade_a >= self.grade_b >= self.grade_c:
            raise ValueError("grade bands must be ordered: grade_a >= grade_b >= grade_c")
        return self

    def grade(self, score: float) -> str:
        if score >= self.grade_a:
            return "A"
        if score >= self.grade_b:
            return "B"
        if score >= self.grade_c:
            return "C"
        return "D"

    def is_mql(self, score: float) -> bool:
        return score >= self.mql

    def same_values(self, other: ThresholdSet) -> bool:
        """The same threshold and bands (version and model aside)."""
        return all(getattr(self, b) == getattr(other, b) for b in BANDS)

    def warnings(self) -> list[str]:
        """Allowed but probably not meant: an MQL threshold below grade C's start makes
        leads graded D (the lowest) marketing-qualified."""
        if self.mql < self.grade_c:
            return [f"MQL at {self.mql:g} is below grade C's start ({self.grade_c:g}): leads "
                    f"scoring at least {self.mql:g} and under {self.grade_c:g} are MQLs graded D"]
        return []


BANDS = ("mql", "grade_a", "grade_b", "grade_c")
"""The values a version holds."""


def to_score(probability: float) -> int:
    """0-100, half away from zero (so 0.125 -> 13, as a person would round it)."""
    return int(min(100, max(0, int(probability * 100 + 0.5))))


# --- what a threshold means ---------------------------------------------------------------

class CurvePoint(BaseModel):
    threshold: int = Field(description="MQL threshold on the 0-100 score")
    flagged: int = Field(description="distinct leads that reach it")
    flagged_per_week: float | None
    converted_flagged: int
    precision: float | None = Field(description="share of flagged leads that converted")
    recall: float | None = Field(description="share of converting leads that were flagged")
    expected_customers: float = Field(description="sum of the flagged leads' probabilities")
    expected_customers_per_week: float | None
    rate_above: float | None
    rate_below: float | None = Field(description="conversion rate of leads never flagged")
    lift: float | None = Field(description="precision / base rate")


class Curve(BaseModel):
    source: str
    leads: int
    converted: int
    base_rate: float | None
    weeks: float | None
    points: list[CurvePoint]
    distribution: list[int] = Field(description="leads per score 0..100 (highest score seen)")

    def at(self, threshold: int) -> CurvePoint:
        return self.points[max(0, min(100, threshold))]


class Recommendation(BaseModel):
    threshold: int
    reason: str
    point: CurvePoint


def _weeks(frame: pd.DataFrame) -> tuple[pd.DataFrame, float | None]:
    """The frame in time order and the weeks it spans (one snapshot step past its last time,
    7 days when there is one time); unsorted and None without `as_of` on every row."""
    has_time = "as_of" in frame and frame["as_of"].notna().all() and len(frame)
    if not has_time:
        return frame, None
    frame = frame.sort_values(["as_of", "lead_id"], kind="stable")
    times = pd.to_datetime(frame["as_of"], utc=True)
    step = times.drop_duplicates().sort_values().diff().median()
    step_days = step / pd.Timedelta(days=1) if pd.notna(step) else 7.0
    return frame, ((times.max() - times.min()) / pd.Timedelta(days=1) + step_days) / 7


@dataclass
class _Scorings:
    """The scorings in time order, coded by lead, with each lead's one outcome."""
    scores: np.ndarray
    probs: np.ndarray
    codes: np.ndarray
    conv_of_lead: np.ndarray
    n_leads: int
    n_conv: int
    base: float | None
    weeks: float | None


def _curve_point(s: int, d: _Scorings) -> CurvePoint:
    """Threshold `s`: each lead flagged at its first scoring that reaches it, counted once."""
    hit = d.scores >= s
    first = np.zeros(len(d.scores), dtype=bool)
    seen = np.zeros(d.n_leads, dtype=bool)
    idx = np.flatnonzero(hit)
    _, first_pos = np.unique(d.codes[idx], return_index=True)
    first[idx[first_pos]] = True
    seen[d.codes[idx[first_pos]]] = True
    flagged = int(first.sum())
    conv_flagged = int(d.conv_of_lead[seen].sum())
    expected = float(d.probs[first].sum())
    never = ~seen
    below_n = int(never.sum())
    below_conv = int(d.conv_of_lead[never].sum())
    precision = conv_flagged / flagged if flagged else None
    weeks = d.weeks
    return CurvePoint(
        threshold=s, flagged=flagged,
        flagged_per_week=None if weeks is None else flagged / weeks,
        converted_flagged=conv_flagged, precision=precision,
        recall=conv_flagged / d.n_conv if d.n_conv else None,
        expected_customers=expected,
        expected_customers_per_week=None if weeks is None else expected / weeks,
        rate_above=precision, rate_below=below_conv / below_n if below_n else None,
        lift=None if precision is None or not d.base else precision / d.base)


def threshold_curve(rows: pd.DataFrame, source: str = "holdout") -> Curve:
    """Every threshold 0..100 over scored rows (`lead_id`, `probability`, `label`, `as_of`?).

    A lead can be scored many times (every snapshot, every CRM call): it becomes an MQL the
    first time its score reaches the threshold, and counts once. Its outcome is one for every
    figure: it bought when any of its scorings is labelled converted (it bought within the
    horizon of one of them), so the header's "N bought", the base rate, the precision at
    threshold 0 and the recall's denominator are the same count. (Judging each lead by the
    label of the scoring that flags it made the precision at 0 the rate at the first scoring,
    below the header's, and let recall pass 1.) Expected customers are the flagged scorings'
    probabilities: a forecast made at the flag. Per-week figures need `as_of`; without it
    (a single table) they are left out.
    """
    frame = rows.copy()
    if "lead_id" not in frame:
        frame["lead_id"] = np.arange(len(frame)).astype(str)
    frame["score"] = [to_score(p) for p in frame["probability"].to_numpy(dtype="float64")]
    frame, weeks = _weeks(frame)
    per_lead = frame.groupby("lead_id", sort=False)
    best = per_lead["score"].max()
    ever = per_lead["label"].max()
    n_leads, n_conv = len(best), int(ever.sum())
    base = n_conv / n_leads if n_leads else None  # = precision at 0: flagging all, lift 1
    codes, order = pd.factorize(frame["lead_id"])
    scorings = _Scorings(scores=frame["score"].to_numpy(),
                         probs=frame["probability"].to_numpy(dtype="float64"), codes=codes,
                         conv_of_lead=ever.reindex(order).to_numpy(), n_leads=n_leads,
                         n_conv=n_conv, base=base, weeks=weeks)
    points = [_curve_point(s, scorings) for s in range(101)]
    distribution = np.bincount(best.to_numpy(dtype="int64"), minlength=101)[:101]
    return Curve(source=source, leads=n_leads, converted=n_conv, base_rate=base,
                 weeks=weeks, points=points, distribution=distribution.tolist())


_MOST_EXPECTED: dict[str, tuple[Callable[[CurvePoint, float], bool], Callable[[float], str]]] = {
    "capacity_per_week": (
        lambda p, limit: (p.flagged_per_week or 0) <= limit,
        lambda limit: f"most expected customers with at most {limit:g} MQLs a week"),
    "capacity": (
        lambda p, limit: p.flagged <= limit,
        lambda limit: f"most expected customers with at most {limit:g} MQLs"),
    "min_precision": (
        lambda p, limit: p.precision is not None and p.precision >= limit,
        lambda limit: f"most expected customers with MQLs converting at {limit:.0%} or more"),
}
"""The constraints under which the most expected customers are sought: which thresholds
fit the limit, and how the recommendation reads."""


def _highest_reaching_recall(curve: Curve, min_recall: float) -> Recommendation:
    """The highest threshold whose flagged leads still include `min_recall` of the buyers."""
    fits = [p for p in curve.points if p.recall is not None and p.recall >= min_recall]
    if not fits:
        raise ValueError(f"no threshold reaches a recall of {min_recall:.0%}")
    best = max(fits, key=lambda p: p.threshold)
    return Recommendation(threshold=best.threshold, point=best,
                          reason=f"the highest threshold that still flags "
                                 f"{min_recall:.0%} of the buyers")


def recommend(curve: Curve, *, capacity_per_week: float | None = None,
              capacity: float | None = None, min_precision: float | None = None,
              min_recall: float | None = None) -> Recommendation:
    """The threshold that maximises expected customers within the constraint.

    Among the thresholds that fit the weekly capacity (leads a team can work) or reach the
    precision asked for, the one with the most expected customers (ties: the lower); for a
    recall target, the highest threshold that still reaches it.
    """
    given = {"capacity_per_week": capacity_per_week, "capacity": capacity,
             "min_precision": min_precision, "min_recall": min_recall}
    if sum(v is not None for v in given.values()) != 1:
        raise ValueError("give exactly one of capacity_per_week, capacity, min_precision, "
                         "min_recall")
    if min_recall is not None:
        return _highest_reaching_recall(curve, min_recall)
    name, limit = next((k, v) for k, v in given.items() if v is not None)
    assert limit is not None
    if name == "capacity_per_week" and curve.weeks is None:
        raise ValueError("this holdout has no dates: give a total capacity instead")
    keep, why = _MOST_EXPECTED[name]
    fits = [p for p in curve.points if keep(p, limit)]
    if not fits:
        raise ValueError("no threshold satisfies that: even 100 flags too many leads, or the "
                         "precision is out of reach")
    # a lead flagged later (at a higher threshold) may be flagged when it is likelier to buy,
    # so expected customers need not fall monotonically: take the best that fits
    best = max(fits, key=lambda p: (round(p.expected_customers, 9), -p.threshold))
    return Recommendation(threshold=best.threshold, point=best, reason=why(limit))


def outcomes_of_scores(scores: pd.DataFrame, export: CrmExport,
                       horizon_days: int) -> pd.DataFrame:
    """Served scores (`lead_id`, `scored_at`, `probability`) joined with what happened next.

    A score's label is whether its lead converted within the horizon after it was served;
    scores whose horizon has not ended in the export yet, or whose lead the export does not
    know, are left out (their outcome is not known).
    """
    from propensity.funnel.journeys import build_journeys
    from propensity.positions import positions
    from propensity.timestamps import DAY_US

    journeys = build_journeys(export)
    pos = positions(scores["lead_id"].astype("str"), journeys.leads["lead_id"].astype("str"))
    served = pd.to_datetime(scores["scored_at"], utc=True)
    end = export.latest_time()
    horizon = pd.Timedelta(days=horizon_days)
    known = (pos >= 0) & (served + horizon <= end).to_numpy()
    converted = journeys.reached[:, -1]
    at = served.astype("datetime64[us, UTC]").dt.tz_localize(None).to_numpy().view("int64")
    conv = np.where(pos >= 0, converted[np.maximum(pos, 0)], np.iinfo("int64").max)
    h = horizon_days * DAY_US
    label = (conv > at) & (conv <= at + h)
    out = pd.DataFrame({"lead_id": scores["lead_id"].astype("str").to_numpy(),
                        "as_of": served.to_numpy(), "probability": scores["probability"],
                        "label": label.astype("int8")})
    return out[known].reset_index(drop=True)
