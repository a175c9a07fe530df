"""`create_app(settings)`: the scorer. Nothing is loaded at import; the lifespan does it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool

from propensity import __version__
from propensity.api_keys import KeyRing
from propensity.context import ContextSource
from propensity.database import engine_for, migrate
from propensity.export import load_export
from propensity.problems import PropensityError
from propensity.threshold_store import ThresholdStore
from serving.config import ServingSettings, get_serving_settings
from serving.deps import AppState
from serving.metrics import Metrics, MetricsMiddleware
from serving.model_store import ModelStore
from serving.routes import (
    accounts,
    funnel,
    monitoring,
    ops,
    outcomes,
    score,
    thresholds,
    ui,
)
from serving.schemas import ScoreRequest
from serving.scorelog import ScoreLog

log = logging.getLogger("propensity.serving")


def _context(settings: ServingSettings) -> ContextSource | None:
    """The data source's account context, indexed once at start-up (None without one)."""
    path = settings.data_path
    if path is None or not str(path) or not path.is_dir():
        return None
    try:
        return ContextSource(load_export(path, drop_bad_rows=True))
    except PropensityError:
        log.exception("the data source %s cannot be read: scoring without its context", path)
        return None


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or get_serving_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(migrate, settings.db_url)
        engine = engine_for(settings.db_url)
        store = ModelStore(settings, list(settings.models))
        await run_in_threadpool(store.refresh)
        scorelog = ScoreLog(engine, settings.log_flush_seconds)
        scorelog.start()
        app.state.propensity = AppState(settings=settings, store=store, keys=KeyRing(engine),
                                        log=scorelog, metrics=metrics,
                                        thresholds=ThresholdStore(engine),
                                        context=await run_in_threadpool(_context, settings))

        async def follow_registry() -> None:
            while True:
                await asyncio.sleep(settings.reload_seconds)
                try:
                    await run_in_threadpool(store.refresh)
                except Exception:
                    log.exception("registry poll failed")

        poller = asyncio.create_task(follow_registry())
        # the models, MLflow and pandas leave millions of long-lived objects; a full garbage
        # collection walking them all stalls every request in flight for ~100 ms. Freezing
        # them at start-up keeps collections to what requests allocate.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await run_in_threadpool(scorelog.stop)
            engine.dispose()

    app = FastAPI(title="propensity scorer", version=__version__, lifespan=lifespan,
                  description="Calibrated lead and account scores with reasons, and the "
                              "funnel metrics beside them.")
    for router in (score.router, outcomes.router, monitoring.router, accounts.router,
                   funnel.router, thresholds.router, ops.router, ui.router):
        app.include_router(router)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, plus the request models that routes parse themselves."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            extra = ScoreRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(extra.pop("$defs", {}))
            components["ScoreRequest"] = extra
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
