"""Dependencies as `Annotated` aliases: the app state a route needs, and who is calling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from propensity.api_keys import KeyInfo, KeyRing
from propensity.context import ContextSource
from propensity.threshold_store import ThresholdStore
from serving.config import ServingSettings
from serving.metrics import Metrics
from serving.model_store import ModelStore
from serving.schemas import ScoreRequest
from serving.scorelog import ScoreLog

bearer = HTTPBearer(auto_error=False)


@dataclass
class AppState:
    settings: ServingSettings
    store: ModelStore
    keys: KeyRing
    log: ScoreLog
    metrics: Metrics
    thresholds: ThresholdStore
    context: ContextSource | None = None
    """The data source's account context (`serve --data`), when one is configured."""


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.propensity
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def _caller(state: StateDep,
                  creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                  ) -> KeyInfo:
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key: send "
                            "'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    info = state.keys.cached(creds.credentials) or await run_in_threadpool(
        state.keys.lookup, creds.credentials)
    if info is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key",
                            headers={"WWW-Authenticate": "Bearer"})
    return info


def _require(scope: str) -> Callable[[KeyInfo], Awaitable[KeyInfo]]:
    async def check(info: Annotated[KeyInfo, Depends(_caller)]) -> KeyInfo:
        if not info.allows(scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"key {info.name!r} lacks the {scope!r} scope")
        return info
    return check


ScoreKey = Annotated[KeyInfo, Depends(_require("score"))]


async def _score_body(request: Request) -> ScoreRequest:
    """The body parsed by pydantic straight from the JSON bytes (Rust, not json.loads + dicts):
    a 1,000-lead batch with 50,000 events validates in a fifth of the time."""
    try:
        return ScoreRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


ScoreBody = Annotated[ScoreRequest, Depends(_score_body)]
SCORE_BODY_DOC = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ScoreRequest"}}}}}
AdminKey = Annotated[KeyInfo, Depends(_require("admin"))]
