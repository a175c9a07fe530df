"""The monitoring report and its verdict: retrain, recalibrate, or review the threshold, and why.

Limits (defaults from the issue that asked for this): PSI above 0.2 on the score or on any of
the model's ten most important features means the leads have changed: retrain on recent data.
A calibration band of 200 or more matured leads whose realised conversion rate is more than 5
points from its predicted one means the probabilities are off: recalibrate (retraining also
recalibrates). MQLs converting more than 5 points below or above what was expected means the
threshold no longer keeps its promise: review it. Drift is judged on the whole window, and
only with `min_served` leads or more in it: weekly figures are for the charts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal

import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, Field

from propensity.contract import DEFAULT_STAGES
from propensity.database import score_log
from propensity.monitoring.aggregates import converted_cells, served_cells
from propensity.monitoring.drift import (
    FeatureDrift,
    PeriodDrift,
    drift_over_time,
    served_counts,
    window_drift,
)
from propensity.monitoring.outcomes import conversion_stages
from propensity.monitoring.outlook import OutlookBand, outlook_bands
from propensity.monitoring.performance import Performance, performance_of_cells
from propensity.monitoring.reference import Reference
from propensity.timestamps import as_utc, utc

Action = Literal["retrain", "recalibrate", "review threshold"]
MAX_WINDOW_DAYS = 366
"""The longest window a report covers: its cost grows with the window's days (a cell per day,
score and probability bucket), so one call cannot be asked for the whole history at once."""


DEFAULT_DAYS = 28
"""A report's window when none is asked for: this many whole days (`PROPENSITY_MONITOR_DAYS`
for the server)."""


def default_window(days: int, end: datetime | None = None) -> tuple[datetime, datetime]:
    """`days` whole days ending with today (UTC) included, unless `end` is given: whole days
    are what the daily aggregates answer without reading a score."""
    stop = end if end is not None else datetime.combine(
        datetime.now(UTC).date() + timedelta(days=1), time(0), tzinfo=UTC)
    return stop - timedelta(days=days), stop


def newest_end(engine: sa.Engine, model: str) -> datetime | None:
    """The end of the newest day the score log holds for the model (as_of, else scored_at),
    or None when it holds nothing. One look-up on the index of migration 0006."""
    when = sa.func.coalesce(score_log.c.as_of, score_log.c.scored_at)
    with engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(when)).where(
            score_log.c.model_name == model)).scalar()
    if newest is None:
        return None
    # SQLite hands the time back without its zone; it was written in UTC
    day = as_utc(newest).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def report_window(engine: sa.Engine, model: str, days: int = DEFAULT_DAYS,
                  start: datetime | None = None, end: datetime | None = None
                  ) -> tuple[datetime, datetime]:
    """The window a report covers, for `GET /v1/monitoring`, the gauges and `propensity
    monitor` alike: [start, end) as given; without `end`, up to the end of the newest day
    scored (so a scorer scoring as of other dates than today, a backfill or the demo's,
    shows them), the end of today (UTC) while the log is empty; without `start`, `days`
    whole days before the end."""
    stop = end if end is not None else newest_end(engine, model)
    first, stop = default_window(days, stop)
    return (start if start is not None else first), stop


def window_problem(start: datetime, end: datetime) -> tuple[str, str] | None:
    """(the field at fault, why) when [start, end) is not a window a report covers."""
    if start >= end:
        return ("start", "start must be before end")
    if end - start > timedelta(days=MAX_WINDOW_DAYS):
        return "start", (f"the window is at most {MAX_WINDOW_DAYS} days: start must be on or "
                         f"after {end - timedelta(days=MAX_WINDOW_DAYS):%Y-%m-%dT%H:%M:%SZ}")
    return None


class Limits(BaseModel):
    psi: float = Field(default=0.2, gt=0)
    top_features: int = Field(default=10, ge=0)
    calibration_points: float = Field(default=5.0, gt=0)
    band_leads: int = Field(default=200, ge=1)
    min_served: int = Field(default=200, ge=1)


class Verdict(BaseModel):
    drift: bool
    calibration: bool
    threshold: bool
    drift_judged: bool = False
    """Whether the window could be judged for drift: a reference for this version and
    `min_served` leads served in it. `drift` false with this false means "not known", not
    "fine" (`propensity monitor --fail-on drift` exits 3)."""
    calibration_judged: bool = False
    """Whether a calibration band had `band_leads` matured leads (outcomes known)."""
    actions: list[Action]
    reasons: list[str]
    drifted: list[str]
    """Every feature over the PSI limit, top ones or not (the score first when it is)."""


class MonitoringReport(BaseModel):
    model: str
    version: str | None
    start: datetime
    end: datetime
    limits: Limits
    window: PeriodDrift | None
    days: list[PeriodDrift]
    weeks: list[PeriodDrift]
    performance: Performance | None
    verdict: Verdict
    champions: list[dict[str, Any]] = Field(default_factory=list)
    """The champion's history, newest first: version, when, why."""
    outlook: list[OutlookBand] = Field(default_factory=list)
    """Per score band, the outlook's expected amount and timing against what happened, for
    the scores served with one (`monitoring.outlook`); empty when none was."""


class _Finding(BaseModel):
    """One check's outcome: whether it fired, whether it could be judged, and the sentences
    that explain it (in the order the report shows them)."""

    fired: bool = False
    judged: bool = False
    reasons: list[str] = Field(default_factory=list)
    drifted: list[str] = Field(default_factory=list)


def _listed(items: list[str], limit: int = 8) -> str:
    """Name at most `limit` items and count the rest, so a wide drift stays one readable line."""
    extra = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + extra


def _drift_finding(window: PeriodDrift | None, reference: Reference | None,
                   limits: Limits) -> _Finding:
    """Drift on the score or a top feature means retrain; other features are only mentioned.

    Not judged without a reference or with fewer than `min_served` leads: a small window's PSI
    is noise, and saying "fine" there would hide that nothing was measured."""
    if window is None or reference is None:
        return _Finding(reasons=[
            "drift not measured: no reference for this version, or nothing served"])
    if window.served < limits.min_served:
        return _Finding(reasons=[f"drift not judged: {window.served} leads served in the window, "
                                 f"fewer than {limits.min_served}"])
    top = set(reference.top(limits.top_features))
    over = [f for f in window.features if f.psi > limits.psi]
    score_moved = window.score_psi > limits.psi
    alarms = [f for f in over if f.feature in top]
    return _Finding(fired=score_moved or bool(alarms), judged=True,
                    reasons=_drift_reasons(window, over, top, limits),
                    drifted=([reference.score.name] if score_moved else [])
                    + [f.feature for f in over])


def _drift_reasons(window: PeriodDrift, over: list[FeatureDrift], top: set[str],
                   limits: Limits) -> list[str]:
    """The score first, then the top features that moved (the alarms), then the rest."""
    alarms = [f for f in over if f.feature in top]
    others = [f for f in over if f.feature not in top]
    reasons: list[str] = []
    if window.score_psi > limits.psi:
        reasons.append(f"the score's distribution moved: PSI {window.score_psi:.2f} > "
                       f"{limits.psi:g}")
    if alarms:
        reasons.append("top features moved: " + ", ".join(
            f"{f.feature} (#{f.importance_rank}, PSI {f.psi:.2f})" for f in alarms))
    if others:
        reasons.append(f"also moved (outside the top {limits.top_features}): "
                       + _listed([f"{f.feature} ({f.psi:.2f})" for f in others]))
    return reasons


def _calibration_finding(perf: Performance, limits: Limits) -> _Finding:
    """A band with enough matured leads whose realised rate is too far from its predicted one
    means the probabilities are off: recalibrate."""
    counted = [b for b in perf.bands if b.leads >= limits.band_leads]
    off = [b for b in counted
           if b.gap_points is not None and b.gap_points > limits.calibration_points]
    reasons = ["calibration is off: " + ", ".join(
        f"scores {b.band}: predicted {b.predicted:.0%}, realised {b.realised:.0%} "
        f"({b.leads} leads)" for b in off)] if off else []
    return _Finding(fired=bool(off), judged=bool(counted), reasons=reasons)


def _threshold_finding(perf: Performance, limits: Limits) -> _Finding:
    """MQLs converting too far from the precision promised when the threshold was chosen mean
    the threshold no longer keeps its promise: review it."""
    o = perf.overall
    if (o.precision is None or o.expected_precision is None
            or o.matured < limits.band_leads):
        return _Finding()
    gap = (o.precision - o.expected_precision) * 100
    if abs(gap) <= limits.calibration_points:
        return _Finding()
    return _Finding(fired=True, reasons=[
        f"MQLs at {perf.mql_threshold:g} convert at {o.precision:.0%}, "
        f"{gap:+.0f} points from the {o.expected_precision:.0%} expected"])


def _actions(drift: bool, calibration: bool, threshold: bool) -> list[Action]:
    """Retraining also recalibrates, so recalibrate is only asked for without drift."""
    actions: list[Action] = []
    if drift:
        actions.append("retrain")
    elif calibration:
        actions.append("recalibrate")
    if threshold:
        actions.append("review threshold")
    return actions


def verdict(window: PeriodDrift | None, perf: Performance | None, reference: Reference | None,
            limits: Limits) -> Verdict:
    """What to do about the window (retrain, recalibrate, review the threshold) and why, with
    what could not be judged said as such rather than passed off as "fine"."""
    drift = _drift_finding(window, reference, limits)
    calibration = _calibration_finding(perf, limits) if perf is not None else _Finding()
    threshold = _threshold_finding(perf, limits) if perf is not None else _Finding()
    actions = _actions(drift.fired, calibration.fired, threshold.fired)
    reasons = drift.reasons + calibration.reasons + threshold.reasons
    if not actions:
        reasons.insert(0, "nothing crossed a limit: keep serving")
    if not calibration.judged:
        reasons.append(f"calibration not judged: no score band with {limits.band_leads} or more "
                       "matured leads (outcomes known) in the window")
    return Verdict(drift=drift.fired, calibration=calibration.fired, threshold=threshold.fired,
                   drift_judged=drift.judged, calibration_judged=calibration.judged,
                   actions=actions, reasons=reasons, drifted=drift.drifted)


def build_report(engine: sa.Engine, *, model: str, version: str | None,
                 reference: Reference | None, horizon_days: int, mql: float,
                 start: datetime, end: datetime, now: datetime | None = None,
                 limits: Limits | None = None,
                 champions: list[dict[str, Any]] | None = None,
                 stages: Sequence[str] = DEFAULT_STAGES) -> MonitoringReport:
    """Everything the JSON, the gauges, the panel and `propensity monitor` show."""
    limits = limits or Limits()
    now_ts = utc(now) if now is not None else pd.Timestamp.now(tz="UTC")
    last_day = end.date() if end.time() == time(0) else (end + timedelta(days=1)).date()
    days: list[PeriodDrift] = []
    weeks: list[PeriodDrift] = []
    window = None
    if reference is not None and version is not None:
        counts = served_counts(engine, model, version, start.date(), last_day, reference)
        days = drift_over_time(reference, counts, "day")
        weeks = drift_over_time(reference, counts, "week")
        window = window_drift(reference, counts)
    matured_by = (now_ts - pd.Timedelta(days=horizon_days)).to_pydatetime()
    cells = served_cells(engine, model, start, end, matured_by)
    perf = None
    if len(cells):
        converted = converted_cells(engine, model, start, end, matured_by, horizon_days,
                                    conversion_stages(stages))
        perf = performance_of_cells(cells, converted, model=model, horizon_days=horizon_days,
                                    mql=mql)
    return MonitoringReport(model=model, version=version, start=start, end=end, limits=limits,
                            window=window, days=days, weeks=weeks, performance=perf,
                            verdict=verdict(window, perf, reference, limits),
                            champions=champions or [],
                            outlook=outlook_bands(engine, model, start, end, now_ts, stages))
