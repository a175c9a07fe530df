"""`create_app(settings)`: the scorer. Nothing is loaded at import; the lifespan does it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from propensity import __version__
from propensity.thresholds import ThresholdSet
from serving.auth import KeyRing
from serving.config import ServingSettings, get_serving_settings
from serving.db import engine_for, migrate
from serving.deps import AppState
from serving.metrics import Metrics, MetricsMiddleware
from serving.model_store import ModelStore
from serving.routes import accounts, funnel, ops, score
from serving.scorelog import ScoreLog

log = logging.getLogger("propensity.serving")


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
                                        thresholds=ThresholdSet())

        async def follow_registry() -> None:
            while True:
                await asyncio.sleep(settings.reload_seconds)
                try:
                    await run_in_threadpool(store.refresh)
                except Exception:
                    log.exception("registry poll failed")

        poller = asyncio.create_task(follow_registry())
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
    for router in (score.router, accounts.router, funnel.router, ops.router):
        app.include_router(router)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
