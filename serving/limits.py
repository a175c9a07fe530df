"""Limits applied before any work: body size and media type at the door, list caps per request.

The body is read by this middleware, up to `max_body_bytes`, before a route (or FastAPI's
parser) sees it: a client that sends more gets a 413 while the server has buffered at most the
limit, so eight 50 MB posts cost eight times the limit, not 400 MB of parsed JSON. A body that
is not `application/json` gets a 415 before anything reads it. The list caps live here too, in
one place, so the routes and the documentation name the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException, status

from serving.config import ServingSettings

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _reply(status_code: int, detail: str) -> tuple[dict[str, Any], dict[str, Any]]:
    body = json.dumps({"detail": detail}).encode()
    start = {"type": "http.response.start", "status": status_code,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]}
    return start, {"type": "http.response.body", "body": body}


def replaying(first: dict[str, Any], receive: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI `receive` that gives `first` (a body already read), then what `receive`
    gives (after the body: the disconnect, as uvicorn sends it)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replay


class BodyLimitMiddleware:
    """Pure ASGI: 415 for a body that is not JSON, 413 past `max_bytes` (read, never parsed)."""

    def __init__(self, app: Any, max_bytes: int,
                 other_media: dict[str, frozenset[bytes]] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.other_media = other_media or {}
        """Paths that take another media type (a SOAP endpoint takes text/xml)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        has_body = chunked or (length is not None and length.strip() not in (b"", b"0"))
        if has_body:
            media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if media != b"application/json" and media not in self.other_media.get(
                    scope["path"], ()):
                shown = media.decode("latin-1")[:100] or "none"
                await self._send(send, status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                                 f"the body must be application/json, not {shown}")
                return
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await self._send(send, status.HTTP_400_BAD_REQUEST,
                                 "Content-Length is not a number")
                return
            if declared > self.max_bytes:
                await self._send(send, status.HTTP_413_CONTENT_TOO_LARGE, self._too_large())
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._send(send, status.HTTP_413_CONTENT_TOO_LARGE, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, replaying(body, receive), send)

    def _too_large(self) -> str:
        return (f"the body is larger than {self.max_bytes:,} bytes (PROPENSITY_MAX_BODY_BYTES): "
                "split the batch")

    @staticmethod
    async def _send(send: Any, code: int, detail: str) -> None:
        start, body = _reply(code, detail)
        await send(start)
        await send(body)


def too_many(where: str, count: int, noun: str, cap: int, setting: str,
             advice: str) -> HTTPException:
    """The one message for a list over its cap: where, how many, the cap and its setting."""
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                         f"{where} has {count} {noun}; at most {cap} ({setting}): {advice}")


def check_score_request(leads: list[Any], settings: ServingSettings) -> None:
    """Leads per request, events per lead, contacts per account and events per contact."""
    if len(leads) > settings.max_leads:
        raise too_many("the request", len(leads), "leads", settings.max_leads,
                       "PROPENSITY_MAX_LEADS", "split the batch")
    for i, lead in enumerate(leads):
        if len(lead.events) > settings.max_events:
            raise too_many(f"leads[{i}]", len(lead.events), "events", settings.max_events,
                           "PROPENSITY_MAX_EVENTS", "send the recent ones")
        account = lead.account
        if account is not None and account.contacts is not None:
            _check_contacts(f"leads[{i}].account.contacts", account.contacts, settings)


def _check_contacts(where: str, contacts: list[Any], settings: ServingSettings) -> None:
    if len(contacts) > settings.max_contacts:
        raise too_many(where, len(contacts), "contacts", settings.max_contacts,
                       "PROPENSITY_MAX_CONTACTS", "send the most recently active ones")
    total = 0
    for j, contact in enumerate(contacts):
        n = len(contact.events)
        if n > settings.max_contact_events:
            raise too_many(f"{where}[{j}]", n, "events", settings.max_contact_events,
                           "PROPENSITY_MAX_CONTACT_EVENTS", "send the recent ones")
        total += n
    if total > settings.max_account_events:
        raise too_many(where, total, "events in all", settings.max_account_events,
                       "PROPENSITY_MAX_ACCOUNT_EVENTS", "send the recent ones")


def check_account_request(contacts: list[Any], settings: ServingSettings) -> None:
    """Contacts per account, events per contact and events per account."""
    _check_contacts("contacts", contacts, settings)
