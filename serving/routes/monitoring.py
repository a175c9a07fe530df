"""GET /v1/monitoring: drift, realised performance, calibration, the verdict and the champion's
history; and the gauges /metrics exports from the same report."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, Response, status
from starlette.concurrency import run_in_threadpool

from propensity.database import score_log
from propensity.monitoring.report import (
    Limits,
    MonitoringReport,
    build_report,
    default_window,
    window_problem,
)
from propensity.registry import champion_history
from propensity.targets import LEAD_CONVERSION
from propensity.timestamps import as_utc
from serving.deps import AppState, MonitorKey, StateDep
from serving.schemas import When

router = APIRouter(prefix="/v1", tags=["monitoring"])
ONE_AT_A_TIME = threading.Lock()
"""Reports are built one at a time per worker: the database does the counting, but what is
left (a few thousand cells, the drift of each day) holds the GIL, and clients looping on the
report must queue behind each other, not crowd out the scores."""
REUSE_SECONDS = 5.0
"""A report is answered again, as it was, to requests for the same window within this long:
dashboards polling the default window cost one report per worker every few seconds."""
_recent: dict[tuple[Any, ...], tuple[float, MonitoringReport]] = {}
_json: dict[int, tuple[MonitoringReport, bytes]] = {}


def _history(state: AppState) -> list[dict[str, Any]]:
    loaded = state.store.get(LEAD_CONVERSION)
    if loaded is None:
        return []
    cached = loaded.cache.get("champions")
    if not isinstance(cached, list):
        cached = champion_history(LEAD_CONVERSION, settings=state.settings)
        loaded.cache["champions"] = cached
    return cached


def newest_end(state: AppState) -> datetime | None:
    """The end of the newest day the score log holds for the model (as_of, else scored_at),
    or None when it holds nothing: a report's default window ends there, not at the wall
    clock, so a scorer scoring as of other dates (a backfill, the demo's own) shows its latest
    scored period. One look-up on the index of migration 0006."""
    when = sa.func.coalesce(score_log.c.as_of, score_log.c.scored_at)
    with state.log.engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(when)).where(
            score_log.c.model_name == LEAD_CONVERSION)).scalar()
    if newest is None:
        return None
    # SQLite hands the time back without its zone; it was written in UTC
    day = as_utc(newest).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def report_for(state: AppState, start: datetime, end: datetime) -> MonitoringReport:
    loaded = state.store.get(LEAD_CONVERSION)
    bundle = None if loaded is None else loaded.bundle
    spec = None if bundle is None else bundle.spec
    kwargs: dict[str, Any] = {} if spec is None else {"stages": spec.stages}
    mql = state.thresholds.active(LEAD_CONVERSION).mql
    key = (id(loaded), start, end, mql)
    with ONE_AT_A_TIME:  # a request for the window being built waits, then reuses it
        hit = _recent.get(key)
        if hit is not None and time.monotonic() - hit[0] < REUSE_SECONDS:
            return hit[1]
        report = build_report(
            state.log.engine, model=LEAD_CONVERSION,
            version=None if loaded is None else loaded.version,
            reference=None if loaded is None else loaded.reference,
            horizon_days=(bundle.horizon_days if bundle is not None else None) or 90,
            mql=mql, start=start, end=end, limits=Limits(), champions=_history(state),
            **kwargs)
        _recent.clear()  # one window kept: bounded, whatever windows clients ask for
        _recent[key] = (time.monotonic(), report)
        return report


def report_json(state: AppState, start: datetime, end: datetime) -> bytes:
    """`report_for` as JSON, serialised once per report (a report is ~1 MB of JSON with a
    month of daily drift; serialising it again for every reuse held the GIL for nothing)."""
    report = report_for(state, start, end)
    with ONE_AT_A_TIME:
        hit = _json.get(id(report))
        if hit is None or hit[0] is not report:
            _json.clear()
            hit = _json[id(report)] = (report, report.model_dump_json().encode())
    return hit[1]


@router.get("/monitoring", response_model=MonitoringReport)
async def monitoring(state: StateDep, key: MonitorKey,
                     start: Annotated[When | None, Query(
                         description="first as_of included (default: end - 28 days)")] = None,
                     end: Annotated[When | None, Query(
                         description="as_of before this (default: the end of the newest day "
                                     "scored, as_of, in the score log; the end of today when it "
                                     "is empty); at most 366 days after start")] = None,
                     ) -> Response:
    """Drift and realised performance of the served champion over a window, with the verdict."""
    await run_in_threadpool(state.log.flush)  # what was served a moment ago counts
    last = as_utc(end) if end else await run_in_threadpool(newest_end, state)
    first, stop = default_window(state.settings.monitor_days, last)
    first = as_utc(start) if start else first
    problem = window_problem(first, stop)
    if problem is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
            "loc": ["query", problem[0]], "msg": problem[1], "type": "value_error"}])
    return Response(await run_in_threadpool(report_json, state, first, stop),
                    media_type="application/json")


def update_gauges(state: AppState) -> None:
    """The gauges from the default window's report, computed at most every monitor_seconds."""
    last = state.metrics.cache.get("monitoring_at", 0.0)
    if time.monotonic() - float(last) < state.settings.monitor_seconds:  # type: ignore[arg-type]
        return
    report = report_for(state, *default_window(state.settings.monitor_days, newest_end(state)))
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
