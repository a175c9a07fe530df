"""Limits applied before any work: connections, headers, key, body, then list caps per request.

In the order a request meets them:
- `EdgeProtocol` (uvicorn's httptools protocol, `propensity serve` runs it): past
  `max_connections` open connections a worker answers 503 + `Retry-After` to each new one as
  soon as its headers end, without parsing them; headers must end within
  `header_timeout_seconds` (408, closed) and stay under `max_header_bytes` (431, closed).
  Without it, 3,000 connections that sent half a request were all still open after 30 s.
  An upload certainly refused on its headers (no key, or a key refused within the key ring's
  ttl) is answered 401 here, before uvicorn builds a request: no task, no middleware, none of
  its body parsed (1,000 keyless stalled uploads through the app kept the event loop up to
  62 ms of CPU between two ticks of a 1 ms timer, answered here 13 ms: bench_hostile.py).
- `BodyLimitMiddleware`: under /v1 the key is checked from the headers before a byte of the
  body is read (401 and the connection closed: a stranger's upload costs nothing). A body that
  is not `application/json` gets a 415; the body is then read up to `max_body_bytes` (413
  past it, with at most the limit buffered) and within `body_timeout_seconds` (408, closed),
  before a route (or FastAPI's parser) sees it. A client gone before its body arrived is
  counted as a 499 in /metrics (nginx's "client closed request"), not as a 5xx.
The list caps live here too, in one place, so the routes and the documentation name the same
numbers.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import cached_property
from http import HTTPStatus
from typing import Any

import httptools
from fastapi import HTTPException, status
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.config import ServingSettings, get_serving_settings
from serving.deps import LIFESPAN_KEY, AppState, bearer_token, certain_refusal, key_of
from serving.metrics import UNMATCHED

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
CLIENT_GONE = 499
"""The status /metrics counts a request under when its client left before sending its body."""


def _reply(status_code: int, detail: str, headers: Mapping[str, str] | None = None,
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    body = json.dumps({"detail": detail}).encode()
    start = {"type": "http.response.start", "status": status_code,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close"),
                         *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())]}
    return start, {"type": "http.response.body", "body": body}


def _raw(status_code: int, detail: str, headers: Mapping[str, str] | None = None,
         defaults: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole HTTP/1.1 answer as bytes, for the protocol (no ASGI app involved): the bytes
    uvicorn sends for the same ASGI answer (`_reply`), `defaults` being its default headers
    (date, server)."""
    line, rest = _encoded(status_code, detail, tuple((headers or {}).items()))
    return line + b"".join(k + b": " + v + b"\r\n" for k, v in defaults) + rest


@functools.lru_cache(maxsize=32)
def _encoded(status_code: int, detail: str, headers: tuple[tuple[str, str], ...],
             ) -> tuple[bytes, bytes]:
    """An answer's status line, and its own headers and body (a few distinct answers, encoded
    once each)."""
    start, body = _reply(status_code, detail, dict(headers))
    own = b"".join(k + b": " + v + b"\r\n" for k, v in start["headers"])
    line = f"HTTP/1.1 {status_code} {HTTPStatus(status_code).phrase}\r\n"
    return line.encode(), own + b"\r\n" + body["body"]


def key_first(state: AppState, method: str, path: str) -> bool:
    """True for a request whose key is checked from its headers before a byte of its body is
    read: a body method under /v1 (`path` as the router matches it), unless its route checks
    the caller itself. The middleware and the protocol both ask this."""
    return method in BODY_METHODS and path.startswith("/v1/") and path not in state.own_auth


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
    """Pure ASGI: the key before the body under /v1; 415 for a body that is not JSON, 413 past
    `max_bytes` (read, never parsed), 408 when it has not all arrived within `timeout`."""

    def __init__(self, app: Any, max_bytes: int, timeout: float,
                 other_media: dict[str, frozenset[bytes]] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.other_media = other_media or {}
        """Paths that take another media type (a SOAP endpoint takes text/xml)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        state = self._guarded(scope)
        if state is None:
            await self.app(scope, receive, send)
            return
        try:  # the scope is the route's to check; a key that is not one never sends a byte
            if key_first(state, scope["method"], _route_path(scope)):
                await key_of(state.keys, bearer_token(scope["headers"]))
        except HTTPException as exc:
            await self._send(send, exc.status_code, str(exc.detail), exc.headers)
            return
        refusal = self._header_refusal(scope)
        if refusal is not None:
            await self._send(send, *refusal)
            return
        body = await self._read_in_time(receive, send)
        if body is not None:
            await self.app(scope, replaying(body, receive), send)

    @staticmethod
    def _guarded(scope: Any) -> AppState | None:
        """The app's state when this request's body is ours to check: a body method on a /v1
        route of a started app. No route outside /v1 takes a body: the app answers (404, 405)
        without reading it."""
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            return None
        state: AppState | None = getattr(scope["app"].state, "propensity", None)
        if state is None or not _route_path(scope).startswith("/v1/"):
            return None
        return state

    def _header_refusal(self, scope: Any) -> tuple[int, str] | None:
        """The answer the headers alone earn (415 media type, 400 bad or 413 too large a
        Content-Length), before a byte of the body is read; None when they pass."""
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        has_body = chunked or (length is not None and length.strip() not in (b"", b"0"))
        if has_body:
            media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if media != b"application/json" and media not in self.other_media.get(
                    scope["path"], ()):
                shown = media.decode("latin-1")[:100] or "none"
                return (status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                        f"the body must be application/json, not {shown}")
        return None if length is None else self._length_refusal(length)

    def _length_refusal(self, length: bytes) -> tuple[int, str] | None:
        """A declared Content-Length that is not a number, or over the limit."""
        try:
            declared = int(length)
        except ValueError:
            return status.HTTP_400_BAD_REQUEST, "Content-Length is not a number"
        if declared > self.max_bytes:
            return status.HTTP_413_CONTENT_TOO_LARGE, self._too_large()
        return None

    async def _read_in_time(self, receive: Any, send: Any) -> dict[str, Any] | None:
        """The body read within the timeout (a slow client must not hold a worker), or None
        once the answer (408, 413, or the client gone) is sent."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._read(receive, send)
        except TimeoutError:
            await self._send(send, status.HTTP_408_REQUEST_TIMEOUT,
                             f"the body did not arrive within {self.timeout:g} s "
                             "(PROPENSITY_BODY_TIMEOUT_SECONDS)")
            return None

    async def _read(self, receive: Any, send: Any) -> dict[str, Any] | None:
        """The whole body as one message, or None once the answer is sent (413, or the
        client gone)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # nobody reads this answer; /metrics counts it apart from the server's faults
                await self._send(send, CLIENT_GONE, "the client left before its body arrived")
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._send(send, status.HTTP_413_CONTENT_TOO_LARGE, self._too_large())
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

    def _too_large(self) -> str:
        return (f"the body is larger than {self.max_bytes:,} bytes (PROPENSITY_MAX_BODY_BYTES): "
                "split the batch")

    @staticmethod
    async def _send(send: Any, code: int, detail: str,
                    headers: Mapping[str, str] | None = None) -> None:
        start, body = _reply(code, detail, headers)
        await send(start)
        await send(body)


def _route_path(scope: Any) -> str:
    """The path the router matches: without the root path a proxy mounts the app under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits it lacks for connections and headers (it
    has a keep-alive timeout between requests, and nothing before or during the first one),
    and the 401 to an upload that is certainly refused, answered on its headers.

    Its settings are the worker's `ServingSettings` (read from the environment, as the app
    reads them): uvicorn builds the protocol itself, with its own arguments."""

    _refused = False
    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes = 0
    _tail = b""

    @cached_property
    def _settings(self) -> ServingSettings:
        return get_serving_settings()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._refused = len(self.connections) > self._settings.max_connections
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        end = -1 if self._header_timer is None else data.find(b"\r\n\r\n")
        if self._header_timer is not None and end < 0:
            # headers still on their way (llhttp would buffer them without end)
            self._header_bytes += len(data)
            if self._header_bytes > self._settings.max_header_bytes:
                self._close_with(status.HTTP_431_REQUEST_HEADER_FIELDS_TOO_LARGE,
                                 f"the request's headers are over "
                                 f"{self._settings.max_header_bytes} bytes "
                                 "(PROPENSITY_MAX_HEADER_BYTES)")
                return
        if not self._refused:
            self._parse(data, end)
            return
        # over the cap: the request is not parsed, only waited for, to be answered
        ended = b"\r\n\r\n" in self._tail + data[:3] or b"\r\n\r\n" in data
        self._tail = (self._tail + data[-3:])[-3:]
        if ended:
            self._close_with(status.HTTP_503_SERVICE_UNAVAILABLE,
                             f"this worker has {self._settings.max_connections} connections "
                             "open (PROPENSITY_MAX_CONNECTIONS): try again shortly",
                             {"Retry-After": "1"})

    def _parse(self, data: bytes, end: int) -> None:
        """Feed the parser: when headers end at `end` inside `data`, what comes up to their end
        first, so that an upload refused on them (`_refused_early`) has nothing of its body
        parsed or copied (a read brings up to 256 KB). Only a connection's first request is
        split so (a later one on a kept-alive connection is fed whole: still refused early,
        its read's body copied by httptools first). Fed in two parts, llhttp parses the same
        as in one; what follows an upgrade uvicorn made is dropped, as uvicorn drops it."""
        if end < 0 or end + 4 >= len(data):
            super().data_received(data)
            return
        super().data_received(data[:end + 4])  # the headers: a small copy
        if not self.transport.is_closing() and self.transport.get_protocol() is self:
            # the rest without a copy: uvicorn hands it to httptools, which reads any buffer
            super().data_received(memoryview(data)[end + 4:])  # type: ignore[arg-type]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._header_bytes = 0
        if self.transport.is_closing() or self._refused_early():
            return  # answered: nothing more is read, and no request is built
        super().on_headers_complete()
        # nothing more is read until the app asks for the body (uvicorn's `receive` resumes
        # reading): an upload refused on its headers (401, 413) never fills a buffer
        if not self.transport.is_closing():
            self.flow.pause_reading()

    def on_body(self, body: bytes) -> None:
        if self.cycle is not None:  # None: refused on its headers, by `_refused_early`
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.cycle is not None:
            super().on_message_complete()

    def _refused_early(self) -> bool:
        """Answer an upload the app would certainly refuse on its headers (no key, or one
        refused within the key ring's ttl: `key_first`, `certain_refusal`) here, before uvicorn
        builds a request and runs the app: the app's 401, byte for byte, counted in /metrics
        as the app counts it, then closed. An attack of keyless uploads then costs a parse of
        headers each; through the app it cost a task, the middleware stack and an ASGI answer,
        while a keyed request read in the same turn waited behind them."""
        state: AppState | None = self.app_state.get(LIFESPAN_KEY)
        if state is None or (self.cycle is not None and not self.cycle.response_complete):
            return False  # not started, or an answer in progress on this connection goes first
        start = time.perf_counter()
        path = _path_of(self.url)
        if path is None or not key_first(state, self.parser.get_method().decode(), path):
            return False
        refusal = certain_refusal(state.keys, bearer_token(self.headers))
        if refusal is None:
            return False
        self._close_with(refusal.status_code, str(refusal.detail), refusal.headers)
        # counted as the app counts its own 401 to an upload (answered before routing)
        state.metrics.count(UNMATCHED, refusal.status_code, time.perf_counter() - start)
        return True

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._settings.header_timeout_seconds,
                                                      self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._refused:
            self.transport.close()
            return
        self._close_with(status.HTTP_408_REQUEST_TIMEOUT,
                         f"the request's headers did not arrive within "
                         f"{self._settings.header_timeout_seconds:g} s "
                         "(PROPENSITY_HEADER_TIMEOUT_SECONDS)")

    def _close_with(self, status_code: int, detail: str,
                    headers: Mapping[str, str] | None = None) -> None:
        """Answer and close: the protocol's own answers, counted by status in /metrics."""
        if not self.transport.is_closing():
            self.transport.write(_raw(status_code, detail, headers,
                                      self.server_state.default_headers))
            self.transport.close()
            state: AppState | None = self.app_state.get(LIFESPAN_KEY)
            if state is not None:
                state.metrics.answered_at_edge(status_code)


def _path_of(url: bytes) -> str | None:
    """The path of a request target as uvicorn puts it in the scope (so as the router matches
    it), or None when uvicorn would refuse it."""
    try:
        raw = httptools.parse_url(url).path
        path = None if raw is None else raw.decode("ascii")
    except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
        return None
    return urllib.parse.unquote(path) if path is not None and "%" in path else path


def too_many(where: str, count: int, noun: str, cap: int, setting: str,
             advice: str) -> HTTPException:
    """The one message for a list over its cap: where, how many, the cap and its setting."""
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                         f"{where} has {count} {noun}; at most {cap} ({setting}): {advice}")


def check_score_request(leads: Sequence[Any], settings: ServingSettings) -> None:
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
