"""How a request that is wrong is answered: a 4xx with a sentence per field, never a 500.

FastAPI's own 422 echoes each error's `input` whole: a malformed 50 MB body came back as a
50 MB answer, and a NaN in it made the answer itself unserialisable (a 500). Here an error
keeps where (`loc`), what (`msg`) and the kind (`type`), with the offending value only when
it is a short scalar, shown as text.
"""

from __future__ import annotations

import math
import re
from typing import Any

import sqlalchemy as sa
from fastapi import Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

MAX_ERRORS = 20
DATABASE_OUTAGES: tuple[type[Exception], ...] = (
    sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
"""Errors that mean the database is unreachable: a 503 (`database_handler`), not a 500."""
MAX_INPUT = 80


def _shown(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None if value is None else str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (int, float)):
        text = str(value)
    elif isinstance(value, str):
        text = value
    elif isinstance(value, bytes):
        text = value[:MAX_INPUT].decode("utf-8", "replace")
    else:
        return None  # an object or a list: the location says which
    return text if len(text) <= MAX_INPUT else text[:MAX_INPUT - 3] + "..."


def clean(errors: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for e in errors[:MAX_ERRORS]:
        item = {"loc": [p if isinstance(p, (int, str)) else str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "invalid"))[:500], "type": str(e.get("type", ""))}
        shown = _shown(e.get("input"))
        if shown is not None:
            item["input"] = shown
        out.append(item)
    if len(errors) > MAX_ERRORS:
        out.append({"loc": [], "msg": f"and {len(errors) - MAX_ERRORS} more errors",
                    "type": "too_many_errors"})
    return out


async def validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": clean(list(exc.errors()))}, status_code=422)


ERROR_SCHEMA = {"title": "Error", "type": "object", "required": ["detail"], "properties": {
    "detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": {
        "type": "object", "required": ["loc", "msg", "type"], "properties": {
            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"},
                                                         {"type": "integer"}]}},
            "msg": {"type": "string"}, "type": {"type": "string"},
            "input": {"type": "string"}}}}, {"type": "object"}]}}}
WHY = {
    "400": "the request is malformed (a Content-Length that is not a number)",
    "401": "no key, or an unknown, revoked or expired one",
    "403": "the key lacks the scope",
    "404": "nothing configured or found (no export, no such version)",
    "408": "the body did not arrive within PROPENSITY_BODY_TIMEOUT_SECONDS",
    "409": "the thresholds changed since the version the change is based on",
    "413": "the body, or one of its lists, is over its limit",
    "415": "the body is not application/json",
    "422": "a field is wrong: `loc` says which, `msg` why",
    "428": "the change does not name the version it is based on",
    "503": "no champion loaded, or the database is needed and unreachable",
}


def document_errors(schema: dict[str, Any]) -> None:
    """Every status the server can answer, in the schema it publishes."""
    schema["components"]["schemas"]["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            codes: set[str] = set()
            if path.startswith("/v1/"):
                codes |= {"401", "403", "404", "503"}
            if "requestBody" in op:
                codes |= {"400", "408", "413", "415", "422"}
            if op.get("parameters"):
                codes.add("422")
            if method == "put" and path == "/v1/thresholds":
                codes |= {"409", "428"}
            if path == "/readyz":
                codes.add("503")
            responses = op.setdefault("responses", {})
            for code in sorted(codes):
                responses.setdefault(code, {"description": WHY[code],
                                            "content": {"application/json": {"schema": ref}}})
            if "422" in responses:  # FastAPI's own 422 schema promises `input` of any type
                responses["422"] = {"description": WHY["422"],
                                    "content": {"application/json": {"schema": ref}}}


async def http_handler(request: Request, exc: Exception) -> Response:
    """FastAPI's answer, except that a 405 lists every method of the path in `Allow`:
    GET and PUT /v1/thresholds are two routes, and Starlette names only the first. No HEAD:
    FastAPI's GET routes do not take it (HEAD /v1/thresholds is a 405 itself)."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code != 405:
        return await http_exception_handler(request, exc)
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations}
    return JSONResponse({"detail": exc.detail}, status_code=405,
                        headers={"Allow": ", ".join(sorted(methods))})


async def database_handler(request: Request, exc: Exception) -> Response:
    """The database is down or busy: a 503 to retry, not a 500. Scoring itself does not get
    here (it works from memory through an outage); reading history or changing thresholds
    does."""
    return JSONResponse({"detail": "the database is unreachable; try again shortly"},
                        status_code=503, headers={"Retry-After": "5"})
