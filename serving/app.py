"""`create_app(settings)`: the scorer. Nothing is loaded at import; the lifespan does it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from propensity import __version__
from propensity.api_keys import KeyRing
from propensity.context import ContextSource
from propensity.contract import TERMINAL_STAGES
from propensity.database import engine_for, migrate
from propensity.export_reader import load_export
from propensity.problems import PropensityError
from propensity.targets import LEAD_CONVERSION, import_targets
from propensity.threshold_store import ThresholdStore
from serving.completions import complete_blocked
from serving.config import ServingSettings, get_serving_settings
from serving.deps import BODY_MODELS, LIFESPAN_KEY, AppState
from serving.errors import (
    DATABASE_OUTAGES,
    database_handler,
    document_errors,
    http_handler,
    validation_handler,
)
from serving.export_answers import document_computing, stop_answers
from serving.fast_path import ScoreFastPath
from serving.limits import BodyLimitMiddleware
from serving.metrics import Metrics, MetricsMiddleware
from serving.model_store import Loaded, ModelStore
from serving.routes import (
    accounts,
    crm,
    docs,
    forecast,
    funnel,
    monitoring,
    ops,
    outcomes,
    score,
    targets,
    thresholds,
    ui,
)
from serving.schemas import WHEN_SCHEMA
from serving.scorelog import ScoreLog
from serving.target_scorer import name_targets, served_targets

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


def spool_dir(settings: ServingSettings) -> Path:
    """The spool folder of this database: a folder per database URL, so two scorers on two
    databases never replay each other's rows."""
    if settings.spool_dir is not None:
        return settings.spool_dir
    tag = hashlib.sha256(settings.db_url.encode()).hexdigest()[:12]
    return settings.models_dir / "spool" / tag


async def _follow_registry(store: ModelStore, seconds: float) -> None:
    """Reload the models the registry promotes, every `seconds`, for as long as the app runs;
    a failed poll is logged and the models in memory keep serving."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await run_in_threadpool(store.refresh)
        except Exception:
            log.exception("registry poll failed")


def _lifespan(settings: ServingSettings, metrics: Metrics,
              ) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, AppState]]]:
    """Start-up (schema, models, score log, thresholds, context) and shut-down (stop polling,
    flush the score log, close the pool) of the app's state."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        await run_in_threadpool(migrate, settings.db_url)
        engine = engine_for(settings.db_url)
        names = await run_in_threadpool(import_targets, settings.target_modules)
        store = ModelStore(settings, list(names if settings.models is None else settings.models))
        await run_in_threadpool(store.refresh)
        scorelog = ScoreLog(engine, settings.log_flush_seconds, spool_dir=spool_dir(settings),
                            max_spool_bytes=settings.spool_max_bytes,
                            durable=settings.log_durable,
                            max_memory_rows=settings.log_max_memory_rows,
                            synced=metrics.log_synced)
        scorelog.start()  # its first pass writes what an earlier run left spooled
        thresholds = ThresholdStore(engine)
        await run_in_threadpool(thresholds.active)  # the last known set, should the db go
        app.state.propensity = AppState(settings=settings, store=store,
                                        keys=KeyRing(engine, ttl=settings.key_cache_seconds),
                                        log=scorelog, metrics=metrics, thresholds=thresholds,
                                        context=await run_in_threadpool(_context, settings),
                                        own_auth=crm.OWN_AUTH)
        poller = asyncio.create_task(_follow_registry(store, settings.reload_seconds))
        completer = asyncio.create_task(complete_blocked(app.state.propensity,
                                                         settings.crm_complete_seconds))
        # the models, MLflow and pandas leave millions of long-lived objects; a full garbage
        # collection walking them all stalls every request in flight for ~100 ms. Freezing
        # them at start-up keeps collections to what requests allocate.
        gc.collect()
        gc.freeze()
        try:
            # the lifespan state reaches uvicorn's protocol too (serving.limits.EdgeProtocol)
            yield {LIFESPAN_KEY: app.state.propensity}
        finally:
            for task in (poller, completer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            stop_answers()
            await run_in_threadpool(scorelog.stop)
            engine.dispose()

    return lifespan


def _add_routes(app: FastAPI) -> None:
    """Every router, and the handlers that turn errors into the project's error bodies."""
    for router in (score.router, outcomes.router, monitoring.router, accounts.router,
                   funnel.router, thresholds.router, ops.router, ui.router, docs.router,
                   crm.router, forecast.router, targets.router):
        app.include_router(router)
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(StarletteHTTPException, http_handler)
    for outage in DATABASE_OUTAGES:
        app.add_exception_handler(outage, database_handler)


def _add_middleware(app: FastAPI, settings: ServingSettings, metrics: Metrics) -> None:
    """The fast path runs inside the limit (bodies arrive whole) and the metrics (its requests
    are counted); the limit runs inside the metrics, so refused bodies are counted too."""
    app.add_middleware(ScoreFastPath, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       timeout=settings.body_timeout_seconds,
                       other_media={crm.SALESFORCE_PATH: crm.XML_MEDIA})
    app.add_middleware(MetricsMiddleware, metrics=metrics)


def _require_champion_fields(components: dict[str, Any], loaded: Loaded) -> None:
    """An export champion dates every lead and knows its stages: the schema says so."""
    lead = components["LeadIn"]
    lead["required"] = sorted({*lead.get("required", []), "created_at"})
    lead["properties"]["created_at"] = {**WHEN_SCHEMA, "title": "Created At"}
    stages = [*loaded.bundle.plan.spec.stages, *TERMINAL_STAGES]
    for name in ("LeadIn", "AccountContactLeadIn"):
        components[name]["properties"]["stage"] = {
            "anyOf": [{"enum": stages}, {"type": "null"}], "title": "Stage"}
    components["StageIn"]["properties"]["stage"] = {"enum": stages, "title": "Stage"}


def _openapi_for(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The app's schema function, rebuilt whenever the champion's kind changes."""

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, plus the request models routes parse themselves, every status
        they answer, and what the loaded champion requires of a lead."""
        state = getattr(app.state, "propensity", None)
        loaded = None if state is None else state.store.get(LEAD_CONVERSION)
        kind = None if loaded is None else loaded.bundle.kind
        served = [] if state is None else served_targets(state.store)
        if app.openapi_schema is None or app.openapi_schema.get("x-champion-kind") != kind or (
                app.openapi_schema.get("x-served-targets") != served):
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, model in BODY_MODELS.items():
                extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(extra.pop("$defs", {}))
                components[name] = extra
            document_errors(schema)
            document_computing(schema)
            if loaded is not None and kind == "export":  # such a champion dates every lead
                _require_champion_fields(components, loaded)
            stage = components["OutcomeIn"]["properties"]["stage"]
            components["OutcomeIn"]["properties"]["stage"] = {
                "enum": list(outcomes.allowed_stages(loaded)),
                **{k: stage[k] for k in ("title", "description")}}
            name_targets(schema, served)
            schema["x-champion-kind"], schema["x-served-targets"] = kind, served
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The scoring service: routes, error handlers, limits and metrics around one state."""
    settings = settings or get_serving_settings()
    metrics = Metrics()
    # /docs and /redoc are served by routes.docs from installed files, not from a CDN
    app = FastAPI(title="propensity scorer", version=__version__,
                  lifespan=_lifespan(settings, metrics), docs_url=None, redoc_url=None,
                  description="Calibrated lead and account scores with reasons, and the "
                              "funnel metrics beside them.")
    _add_routes(app)
    _add_middleware(app, settings, metrics)
    app.openapi = _openapi_for(app)  # type: ignore[method-assign]
    return app
