"""GET /v1/monitoring: drift, realised performance, calibration, the verdict and the champion's
history; and the gauges /metrics exports from the same report."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, status
from starlette.concurrency import run_in_threadpool

from propensity.database import score_log
from propensity.models.registry import champion_history
from propensity.monitoring.report import Limits, MonitoringReport, build_report
from propensity.timestamps import as_utc
from serving.deps import AppState, ScoreKey, StateDep
from serving.schemas import When

router = APIRouter(prefix="/v1", tags=["monitoring"])
MODEL = "lead-conversion"


def _history(state: AppState) -> list[dict[str, Any]]:
    loaded = state.store.get(MODEL)
    if loaded is None:
        return []
    cached = loaded.cache.get("champions")
    if not isinstance(cached, list):
        cached = champion_history(MODEL, settings=state.settings)
        loaded.cache["champions"] = cached
    return cached


def default_window(state: AppState, end: datetime | None = None) -> tuple[datetime, datetime]:
    """The window a report covers when the caller names no start: `monitor_days` (28) up to
    `end`, by default the end of the newest day the score log holds for the model (as_of,
    else scored_at), not the wall clock: a scorer scoring as of other dates (a backfill, the
    demo's own) shows its latest scored period. With nothing logged yet: up to now."""
    if end is None:
        when = sa.func.coalesce(score_log.c.as_of, score_log.c.scored_at)
        with state.log.engine.connect() as conn:
            newest = conn.execute(sa.select(sa.func.max(when)).where(
                score_log.c.model_name == MODEL)).scalar()
        if newest is None:
            end = datetime.now(UTC)
        else:  # SQLite hands the time back without its zone; it was written in UTC
            day = as_utc(newest).replace(hour=0, minute=0, second=0, microsecond=0)
            end = day + timedelta(days=1)
    return end - timedelta(days=state.settings.monitor_days), end


def report_for(state: AppState, start: datetime, end: datetime) -> MonitoringReport:
    loaded = state.store.get(MODEL)
    bundle = None if loaded is None else loaded.bundle
    spec = None if bundle is None else bundle.spec
    kwargs: dict[str, Any] = {} if spec is None else {"stages": spec.stages}
    return build_report(
        state.log.engine, model=MODEL, version=None if loaded is None else loaded.version,
        reference=None if loaded is None else loaded.reference,
        horizon_days=(bundle.horizon_days if bundle is not None else None) or 90,
        mql=state.thresholds.active(MODEL).mql, start=start, end=end, limits=Limits(),
        champions=_history(state), **kwargs)


@router.get("/monitoring", response_model=MonitoringReport)
async def monitoring(state: StateDep, key: ScoreKey,
                     start: Annotated[When | None, Query(
                         description="first as_of included (default: end - 28 days)")] = None,
                     end: Annotated[When | None, Query(
                         description="as_of before this (default: the end of the newest day "
                                     "scored, as_of, in the score log; now when it is "
                                     "empty)")] = None,
                     ) -> MonitoringReport:
    """Drift and realised performance of the served champion over a window, with the verdict."""
    await run_in_threadpool(state.log.flush)  # what was served a moment ago counts
    if start is None:
        first, last = await run_in_threadpool(default_window, state,
                                              None if end is None else as_utc(end))
    else:
        first, last = as_utc(start), as_utc(end) if end else datetime.now(UTC)
    if first >= last:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
            "loc": ["query", "start"], "msg": "start must be before end",
            "type": "value_error"}])
    return await run_in_threadpool(report_for, state, first, last)


def update_gauges(state: AppState) -> None:
    """The gauges from the default window's report, computed at most every monitor_seconds."""
    last = state.metrics.cache.get("monitoring_at", 0.0)
    if time.monotonic() - float(last) < state.settings.monitor_seconds:  # type: ignore[arg-type]
        return
    report = report_for(state, *default_window(state))
    m = state.metrics
    m.cache["monitoring_at"] = time.monotonic()
    m.psi.clear()
    if report.window is not None:
        m.score_psi.set(report.window.score_psi)
        for f in report.window.features:
            m.psi.labels(f.feature).set(f.psi)
    perf = report.performance
    if perf is not None:
        gaps = [b.gap_points for b in perf.bands
                if b.leads >= report.limits.band_leads and b.gap_points is not None]
        m.calibration_gap.set(max(gaps) if gaps else float("nan"))
        precision = perf.overall.precision
        m.realised_precision.set(float("nan") if precision is None else precision)
