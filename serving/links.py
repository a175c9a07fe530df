"""OpenAPI links: where a response feeds the next request (a version read then changed, a lead
scored then its outcome reported, a forecast then its backtest).

They document the API's flows for a client, and they are what schemathesis's stateful phase
follows: without them it had nothing to chain ("not applicable"). A route adds its links to its
`openapi_extra` (FastAPI merges it into the operation); targets are named by `operationRef`, a
pointer into the document's paths, so they do not depend on FastAPI's generated operation ids.
"""

from __future__ import annotations

from typing import Any


def operation_ref(path: str, method: str) -> str:
    """The JSON pointer of an operation in this document (`/` in a path is `~1`)."""
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method.lower()


def link(path: str, method: str, description: str, *, parameters: dict[str, str] | None = None,
         body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A link to `method path`, its parameters (`header.if-match`, `query.weeks`) and body
    taken from runtime expressions (`$response.body#/version`, `$request.query.seed`)."""
    out: dict[str, Any] = {"operationRef": operation_ref(path, method),
                           "description": description}
    if parameters:
        out["parameters"] = parameters
    if body is not None:
        out["requestBody"] = body
    return out


def links(code: str, **named: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` adding the named links to the operation's `code` response."""
    return {"responses": {code: {"links": named}}}
