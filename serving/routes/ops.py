"""Health, readiness, metrics (no key needed) and the admin reload."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import APIRouter, Response, status
from starlette.concurrency import run_in_threadpool

from serving.deps import AdminKey, StateDep
from serving.routes.monitoring import update_gauges
from serving.schemas import Health

router = APIRouter(tags=["operations"])
log = logging.getLogger("propensity.serving")


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
async def readyz(state: StateDep, response: Response) -> Health:
    """Models loaded and the database reachable; 503 otherwise."""
    db = "ok"
    try:
        def ping() -> None:
            with state.log.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        await run_in_threadpool(ping)
    except Exception as exc:
        db = f"unreachable: {type(exc).__name__}"
    models = {n: m.version for n, m in state.store.models.items()}
    ready = db == "ok" and "lead-conversion" in models
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="ready" if ready else "not ready", models=models,
                  errors=dict(state.store.errors), database=db)


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep) -> Response:
    state.metrics.log_pending.set(state.log.pending)
    for name, m in state.store.models.items():
        state.metrics.model_version.labels(name, m.version).set(1)
    try:
        await run_in_threadpool(update_gauges, state)
    except Exception:  # the other metrics still go out
        log.exception("monitoring gauges could not be computed")
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


@router.post("/v1/admin/reload", response_model=Health, tags=["admin"])
async def reload(state: StateDep, key: AdminKey) -> Health:
    """Load any champion that moved in the registry now, instead of at the next poll."""
    versions = await run_in_threadpool(state.store.refresh)
    return Health(status="ok", models=versions, errors=dict(state.store.errors))
