"""GET /v1/monitoring: drift, realised performance, calibration, the verdict and the champion's
history; and the gauges /metrics exports from the same report."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from starlette.concurrency import run_in_threadpool

from propensity.monitoring.report import (
    Limits,
    MonitoringReport,
    build_report,
    report_window,
    window_problem,
)
from propensity.registry import champion_history
from propensity.targets import LEAD_CONVERSION
from propensity.timestamps import as_utc
from serving.deps import AppState, MonitorKey, StateDep
from serving.model_store import Loaded
from serving.schemas import When

router = APIRouter(prefix="/v1", tags=["monitoring"])
ONE_AT_A_TIME = threading.Lock()
"""Reports are built one at a time per worker: the database does the counting, but what is
left (a few thousand cells, the drift of each day) holds the GIL, and clients looping on the
report must queue behind each other, not crowd out the scores."""
REUSE_SECONDS = 5.0
"""A report is answered again, as it was, to requests for the same window within this long:
dashboards polling the default window cost one report per worker every few seconds."""
PACE_SECONDS = 0.1
"""Reports leave a worker at most this often. Each is ~1 MB of JSON that the event loop,
which also answers the scores, writes out: three clients looping on the report were answered
84 times a second from the reuse above (1261 reports in 15 s), and a score's p99 went from
101 to 148 ms beside them (load 18). A request past its turn waits asleep, which costs the
loop nothing; a dashboard polling every few seconds never waits."""
_recent: dict[tuple[Any, ...], tuple[float, MonitoringReport]] = {}
_next_turn = [0.0]


async def _turn() -> None:
    """Wait for this request's turn (one event loop per worker: no await between the read and
    the write of the next turn, so no lock)."""
    now = time.monotonic()
    at = max(now, _next_turn[0])
    _next_turn[0] = at + PACE_SECONDS
    if at > now:
        await asyncio.sleep(at - now)
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


def _served(state: AppState) -> tuple[Loaded | None, float]:
    """The champion and the MQL threshold a report is built with, each read once: the report
    and the key it is kept under must come from the same reads (read twice, a champion swap or
    a threshold change between the reads kept a report under the other one's key)."""
    return state.store.get(LEAD_CONVERSION), state.thresholds.active(LEAD_CONVERSION).mql


def _key(served: tuple[Loaded | None, float], start: datetime, end: datetime,
         ) -> tuple[Any, ...]:
    loaded, mql = served
    return (id(loaded), start, end, mql)


def reused_json(state: AppState, start: datetime, end: datetime) -> bytes | None:
    """The JSON of a report of this window built less than REUSE_SECONDS ago, if any: such
    a request costs a look-up, not a pass of the score log's writer (clients looping on the
    report flushed it for every call, and took its time from the scores)."""
    key = _key(_served(state), start, end)
    with ONE_AT_A_TIME:
        hit = _recent.get(key)
        if hit is None or time.monotonic() - hit[0] >= REUSE_SECONDS:
            return None
        done = _json.get(id(hit[1]))
        return done[1] if done is not None and done[0] is hit[1] else None


def report_for(state: AppState, start: datetime, end: datetime) -> MonitoringReport:
    served = _served(state)
    loaded, mql = served
    bundle = None if loaded is None else loaded.bundle
    spec = None if bundle is None else bundle.spec
    kwargs: dict[str, Any] = {} if spec is None else {"stages": spec.stages}
    key = _key(served, start, end)
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
    await _turn()
    asked = (state.log.engine, LEAD_CONVERSION, state.settings.monitor_days,
             as_utc(start) if start else None, as_utc(end) if end else None)
    first, stop = await run_in_threadpool(report_window, *asked)
    if window_problem(first, stop) is None and (
            state.log.newest_at is None or first <= state.log.newest_at < stop):
        # nothing of this worker's that waits for the database lies outside the window: a
        # flush would not move it, and a report of it built a moment ago is the answer, as it
        # would be after the flush. (Rows before the window can move it too: an empty log's
        # default window is today's, and the first rows scored as of a past day move it to
        # theirs.) Clients looping on the report beside scores (this worker's log
        # never empty) flushed the log on every call, the served histograms' upsert with it
        # (~4 ms of the GIL each), only to be answered that same report.
        again = await run_in_threadpool(reused_json, state, first, stop)
        if again is not None:
            return Response(again, media_type="application/json")
    await run_in_threadpool(state.log.flush)  # what was served a moment ago counts
    first, stop = await run_in_threadpool(report_window, *asked)  # it may end later now
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
    report = report_for(state, *report_window(state.log.engine, LEAD_CONVERSION,
                                              state.settings.monitor_days))
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
