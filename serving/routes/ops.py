"""Health, readiness, metrics (no key needed) and the admin reload."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import APIRouter, Response, status
from starlette.concurrency import run_in_threadpool

from propensity.targets import LEAD_CONVERSION
from serving.deps import AdminKey, AnyKey, StateDep
from serving.links import link, links
from serving.routes.monitoring import update_gauges
from serving.schemas import Health, KeyOut, ScoreLogHealth

router = APIRouter(tags=["operations"])
log = logging.getLogger("propensity.serving")


@router.get("/healthz", response_model=Health)
async def healthz(state: StateDep) -> Health:
    """The process is up, and the champions it has in memory (as /readyz lists them)."""
    return Health(status="ok", models={n: m.version for n, m in state.store.models.items()})


@router.get("/v1/key", response_model=KeyOut)
async def key(info: AnyKey) -> KeyOut:
    """The calling key's name, scopes and expiry: what a client (the /ui page) may call."""
    return KeyOut(name=info.name, scopes=sorted(info.scopes), expires_at=info.expires_at)


@router.get("/readyz", response_model=Health)
async def readyz(state: StateDep, response: Response) -> Health:
    """Ready (200): models loaded, database reachable, score log clean.

    Degraded (still 200, status "degraded"): scores are served, but the database is
    unreachable (scores wait in the local spool, thresholds are the last known), acknowledged
    rows pile up past their bound, records were quarantined (a count every worker reads from
    the shared spool folder), or a champion failed to load and the last good one serves in
    its place; `reasons` says which. A balancer keeps sending traffic, which is the point:
    the models are in memory. Not ready (503): no lead-conversion champion loaded, or the
    spool is full while the database is down (new scores are refused).
    """
    db = "ok"
    try:
        def ping() -> None:
            with state.log.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        await run_in_threadpool(ping)
    except Exception as exc:
        db = f"unreachable: {type(exc).__name__}"
    log = state.log
    spooled = await run_in_threadpool(lambda: log.spooled_bytes)
    models = {n: m.version for n, m in state.store.models.items()}
    reasons = []
    if LEAD_CONVERSION not in models:
        reasons.append(f"no {LEAD_CONVERSION} champion is loaded")
    if not log.accepting:
        reasons.append("the database is down and the score log spool is full")
    ready = not reasons
    if db != "ok":
        reasons.append("the database is unreachable: scores are spooled locally, thresholds "
                       "are the last known")
    if spooled:
        reasons.append(f"{spooled} bytes of score log rows wait in the local spool")
    bound = state.settings.log_backlog_degraded
    if log.pending > bound:
        reasons.append(f"{log.pending} acknowledged score log rows wait for the database "
                       f"(more than PROPENSITY_LOG_BACKLOG_DEGRADED={bound})")
    quarantined = await run_in_threadpool(lambda: log.quarantined)
    if quarantined:
        reasons.append(f"{quarantined} score log records were quarantined (refused by the "
                       f"database, or unreadable in the spool); see "
                       f"{log.spool_dir}/quarantine.jsonl")
    for name, (serving, failed, why) in sorted(state.store.fallbacks.items()):
        reasons.append(f"{name}: serving v{serving}, champion v{failed} failed: {why}")
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="not ready" if not ready else "degraded" if reasons else "ready",
                  models=models, errors=dict(state.store.errors), database=db,
                  score_log=ScoreLogHealth(pending=log.pending, spooled_bytes=spooled,
                                           quarantined=quarantined),
                  reasons=reasons)


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep) -> Response:
    scorelog = state.log
    state.metrics.log_pending.set(scorelog.pending)
    state.metrics.log_spooled.set(await run_in_threadpool(lambda: scorelog.spooled_bytes))
    state.metrics.log_quarantined.set(await run_in_threadpool(lambda: scorelog.quarantined))
    state.metrics.database_up.set(0 if scorelog.outage else 1)
    for name, m in state.store.models.items():
        state.metrics.model_version.labels(name, m.version).set(1)
    try:
        await run_in_threadpool(update_gauges, state)
    except Exception:  # the other metrics still go out
        log.exception("monitoring gauges could not be computed")
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


@router.post("/v1/admin/reload", response_model=Health, tags=["admin"], openapi_extra=links(
    "200", Ready=link("/readyz", "get", "whether what was reloaded serves")))
async def reload(state: StateDep, key: AdminKey) -> Health:
    """Load any champion that moved in the registry now, instead of at the next poll."""
    versions = await run_in_threadpool(state.store.refresh)
    return Health(status="ok", models=versions, errors=dict(state.store.errors))
