"""Dependencies as `Annotated` aliases: the app state a route needs, who is calling, the body.

Order matters and is kept by construction: the key is checked from the headers before a byte
of the body is read (`serving.limits.BodyLimitMiddleware`, with `key_of` below), and a body
dependency (`json_body`) checks it again (from the key ring's cache) before parsing. A request
without a key gets a 401, never a 422 that describes the schema to a stranger.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, ValidationError

from propensity.api_keys import KeyInfo, KeyRing, KeyUnavailable
from propensity.context import ContextSource
from propensity.threshold_store import ThresholdStore
from serving.config import ServingSettings
from serving.metrics import Metrics
from serving.model_store import ModelStore
from serving.schemas import json_problem
from serving.scorelog import ScoreLog

if TYPE_CHECKING:  # batching needs AppState: imported for the type only
    from serving.batching import Batcher

bearer = HTTPBearer(auto_error=False)
M = TypeVar("M", bound=BaseModel)
BODY_MODELS: dict[str, type[BaseModel]] = {}
"""Request models routes parse themselves: the OpenAPI schema lists them (see app.py)."""


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
    crm_batcher: Batcher | None = None
    """The batcher of HubSpot actions (`serving.routes.crm`), made at the first one."""
    own_auth: frozenset[str] = frozenset()
    """Paths under /v1 whose route checks the caller itself, from the body (a CRM's signature
    over it, an org allow-list inside it): no API key is asked of them."""


LIFESPAN_KEY = "propensity"
"""The AppState's name in the lifespan state (ASGI's `state`, which uvicorn hands to its
protocol as `app_state`): how `serving.limits.EdgeProtocol` reaches the keys and metrics."""


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.propensity
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The bearer token of raw ASGI headers, read as FastAPI's HTTPBearer reads it (its own
    helper): for the layers that run before FastAPI does."""
    for name, value in headers:
        if name == b"authorization":
            scheme, token = get_authorization_scheme_param(value.decode("latin-1"))
            return token or None if scheme.lower() == "bearer" else None
    return None


UNKNOWN_KEY = "unknown, revoked or expired API key"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail,
                         headers={"WWW-Authenticate": "Bearer"})


def certain_refusal(keys: KeyRing, token: str | None) -> HTTPException | None:
    """The 401 a token earns without asking the database (no token, or one this worker found
    unknown, revoked or expired within the key ring's ttl), or None when only the database can
    tell. `key_of` starts with it, and `serving.limits.EdgeProtocol` answers it before uvicorn
    builds a request: one definition of what is refused on the headers alone."""
    if token is None:
        return _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    if keys.refused(token):
        return _unauthorized(UNKNOWN_KEY)
    return None


async def key_of(keys: KeyRing, token: str | None) -> KeyInfo:
    """The caller's key, checked: 401 without a valid one, 503 when it cannot be checked."""
    refused = certain_refusal(keys, token)
    if refused is not None:
        raise refused
    assert token is not None  # a missing one is refused above
    try:  # a key checked within the ttl costs no query (and no thread hop)
        info = keys.cached(token) or await run_in_threadpool(keys.lookup, token)
    except KeyUnavailable:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the key cannot be checked: "
                            "the database is unreachable; try again shortly",
                            headers={"Retry-After": "5"}) from None
    if info is None:
        raise _unauthorized(UNKNOWN_KEY)
    return info


async def _key_of(state: AppState, creds: HTTPAuthorizationCredentials | None) -> KeyInfo:
    token = None if creds is None or creds.scheme.lower() != "bearer" else creds.credentials
    return await key_of(state.keys, token)


def allowed(info: KeyInfo, scopes: tuple[str, ...]) -> KeyInfo:
    if not any(info.allows(s) for s in scopes):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"key {info.name!r} lacks the {scopes[0]!r} scope")
    return info


async def _caller(state: StateDep,
                  creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                  ) -> KeyInfo:
    return await _key_of(state, creds)


@functools.cache
def _require(scope: str, *also: str) -> Callable[[KeyInfo], Awaitable[KeyInfo]]:
    async def check(info: Annotated[KeyInfo, Depends(_caller)]) -> KeyInfo:
        return allowed(info, (scope, *also))
    return check


AnyKey = Annotated[KeyInfo, Depends(_caller)]
ScoreKey = Annotated[KeyInfo, Depends(_require("score"))]
AdminKey = Annotated[KeyInfo, Depends(_require("admin"))]
MonitorKey = Annotated[KeyInfo, Depends(_require("monitor"))]


def validation_error(exc: ValidationError) -> RequestValidationError:
    return RequestValidationError(
        [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)])


def parse_json(model: type[M], body: bytes) -> M:
    """A request body as `model`: a key given twice or a NUL anywhere is a 422 like any
    other field's (`json_problem`); then pydantic, straight from the JSON bytes."""
    problem = json_problem(body)
    if problem is not None:
        raise RequestValidationError([{**problem, "loc": ("body", *problem["loc"])}])
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def json_body(model: type[M], scope: str, *also: str) -> Callable[..., Coroutine[Any, Any, M]]:
    """A dependency that checks the key for `scope` (or one of `also`), then parses the body
    with pydantic straight from the JSON bytes (Rust, not json.loads + dicts: a 1,000-lead
    batch with 50,000 events validates in a fifth of the time).

    One flat dependency, not a chain (state -> bearer -> key -> scope -> body): FastAPI's
    resolution of each link cost more than parsing a one-lead request. The operation's
    security requirement is declared by `body_doc` instead of by the chain."""
    BODY_MODELS[model.__name__] = model
    scopes = (scope, *also)

    async def parse(request: Request) -> M:
        info = await _key_of(request.app.state.propensity, await bearer(request))
        allowed(info, scopes)
        return parse_json(model, await request.body())

    return parse


def body_doc(model: type[BaseModel], *, key_dependency: bool = False) -> dict[str, Any]:
    """The OpenAPI request body of a route that parses `model` itself, and its key (declared
    here, as `json_body` checks it outside FastAPI's dependency tree, unless the route also
    takes a key dependency, which declares it)."""
    doc: dict[str, Any] = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}
    return doc if key_dependency else {**doc, "security": [{bearer.scheme_name: []}]}
