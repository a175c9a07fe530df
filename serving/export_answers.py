"""Answers computed from the configured CRM export (funnel, forecast, backtest), cached
until the export's files change.

Building one takes from a second (a funnel) to minutes (a backtest fits models once per
quarter), so each JSON answer is kept, keyed by the export's file signature and the request's
parameters, in one LRU bounded by total JSON size (`PROPENSITY_FUNNEL_CACHE_BYTES`): varying
a parameter cannot grow memory past it. Every route that answers from the export goes
through `cached_json`, so the cache, the 404 without an export and the 422 for a library
error are one behaviour.

A request waits at most `PROPENSITY_ANSWER_WAIT_SECONDS` for an answer not cached yet; past it
the answer is 202 with `Retry-After`, and the computation goes on: asking again later gets it
(from the cache, or the error it ended with). Answers are computed one at a time per worker,
with a few more waiting their turn (the oldest waiting one is dropped past that): a client
varying `seed` cannot queue an hour of backtests, nor hold a connection for minutes (the
long schemathesis run timed out at 10 s on each new backtest seed).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import HTTPException, status
from fastapi.responses import JSONResponse, Response

from propensity.export_reader import SUFFIXES
from propensity.problems import PropensityError
from serving.config import ServingSettings
from serving.deps import AppState
from serving.links import operation_ref


class ByteCache:
    """An LRU of JSON payloads bounded by their total size."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.size = 0

    def get(self, key: tuple[object, ...]) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[object, ...], value: bytes, limit: int) -> bool:
        """Keep `value` (False: larger than `limit`, not kept)."""
        if len(value) > limit:
            return False
        with self._lock:
            old = self._items.pop(key, None)
            self.size -= 0 if old is None else len(old)
            self._items[key] = value
            self.size += len(value)
            while self.size > limit:
                _, dropped = self._items.popitem(last=False)
                self.size -= len(dropped)
        return True


Key = tuple[object, ...]
WAITING = 4
"""Computations waiting their turn per worker, past the one running."""
FINISHED = 64
"""Finished computations kept until a request collects them (their answer or error)."""


class _Dropped(Exception):
    """A waiting computation dropped for a newer one before its turn came."""


class Jobs:
    """Answers being computed: one at a time, at most `WAITING` waiting. An answer goes to
    the cache as it is done; an error is kept until a request for it collects it (answered
    once, then forgotten: the next request computes again)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: OrderedDict[Key, Future[bytes]] = OrderedDict()
        self._started: set[int] = set()
        self._lock = threading.RLock()  # a done callback may run inside `submit`

    def submit(self, key: Key, compute: Callable[[], bytes],
               done: Callable[[bytes], bool]) -> Future[bytes]:
        """The computation of `key`: the one under way or waiting, else a new one."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None:
                return job
            if self._pool is None:  # made at the first use: nothing runs at import
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="export-answer")
            holder: list[Future[bytes]] = []
            job = self._pool.submit(self._run, key, holder, compute)
            holder.append(job)
            job.add_done_callback(lambda f: self._finished(key, f, done))
            self._jobs[key] = job
            self._bound()
            return job

    def _finished(self, key: Key, job: Future[bytes], done: Callable[[bytes], bool]) -> None:
        """An answer goes to the cache, and the computation is forgotten; an error, or an
        answer the cache did not keep (larger than it), is kept for the request that collects
        it (else that answer would be computed again at each ask, and a 202 never end)."""
        if job.exception() is None and done(job.result()):
            self.collect(key, job)

    def shutdown(self) -> None:
        """At the server's shut-down: the waiting computations are dropped, the running one
        is not waited for (a restart must not wait for a backtest)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            self._jobs.clear()

    def _run(self, key: Key, holder: list[Future[bytes]], compute: Callable[[], bytes]) -> bytes:
        with self._lock:
            if not holder or self._jobs.get(key) is not holder[0]:
                raise _Dropped(key)
            self._started.add(id(holder[0]))
        return compute()

    def _bound(self) -> None:
        """Drop the oldest waiting computations past `WAITING`, and the oldest finished past
        `FINISHED` (called with the lock held)."""
        waiting = [k for k, f in self._jobs.items()
                   if not f.done() and id(f) not in self._started]
        for k in waiting[:max(0, len(waiting) - WAITING)]:
            del self._jobs[k]
        finished = [k for k, f in self._jobs.items() if f.done()]
        for k in finished[:max(0, len(finished) - FINISHED)]:
            self._started.discard(id(self._jobs.pop(k)))

    def collect(self, key: Key, job: Future[bytes]) -> None:
        """Forget a finished computation once a request has its outcome."""
        with self._lock:
            if self._jobs.get(key) is job:
                del self._jobs[key]
            self._started.discard(id(job))


_cache = ByteCache()
_jobs = Jobs()
COMPUTING_SCHEMA = {"title": "Computing", "type": "object", "required": ["detail"],
                    "properties": {"detail": {"type": "string"}}}


def computing(seconds: float) -> JSONResponse:
    """202: the answer is being computed; the same request later gets it."""
    wait = max(1, round(seconds))
    return JSONResponse({"detail": f"the answer is being computed (it fits models on the "
                                   f"export); ask again in {wait} s"},
                        status_code=status.HTTP_202_ACCEPTED,
                        headers={"Retry-After": str(wait)})


def stop_answers() -> None:
    """Stop computing export answers (the lifespan's shut-down)."""
    _jobs.shutdown()


def signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and mtime of every table file: changes when the data does."""
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                        for p in path.iterdir() if p.suffix in SUFFIXES
                        or p.name == "manifest.json"))


def export_dir(state: AppState) -> Path:
    """The configured export's folder; a 404 naming the setting when there is none."""
    path = state.settings.data_path
    if path is None or not Path(path).is_dir():
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            "no CRM export configured: set PROPENSITY_DATA_PATH")
    return Path(path)


async def cached_json(settings: ServingSettings, path: Path, params: tuple[object, ...],
                      compute: Callable[[], bytes]) -> Response:
    """The JSON answer for (`path`'s current files, `params`): from the cache, else
    `compute` off the event loop (a library error is a 422), then kept; 202 when it takes
    longer than `answer_wait_seconds` (see the module's docstring)."""
    key = (str(path), signature(path), *params)
    hit = _cache.get(key)
    if hit is not None:
        return Response(hit, media_type="application/json")
    limit, wait = settings.funnel_cache_bytes, settings.answer_wait_seconds
    job = _jobs.submit(key, compute, lambda body: _cache.put(key, body, limit))
    waited = asyncio.wrap_future(job)
    # a request that stopped waiting never reads the outcome: read here, so that asyncio does
    # not log "exception was never retrieved" when the future is collected
    waited.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        body = await asyncio.wait_for(asyncio.shield(waited), wait)
    except TimeoutError:
        if job.done():  # the computation's own TimeoutError, not the wait's: a server fault
            raise
        return computing(wait)
    except _Dropped:
        return computing(wait)
    except PropensityError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": ["query"], "msg": str(exc),
                              "type": "value_error"}]) from None
    finally:
        if job.done():
            _jobs.collect(key, job)
    return Response(body, media_type="application/json")


COMPUTED = {"x-computed": True}
"""`openapi_extra` of a route answered by `cached_json`: `document_computing` adds its 202."""


def document_computing(schema: dict[str, Any]) -> None:
    """The 202 of every operation answered by `cached_json`, in the OpenAPI schema, with a
    link back to itself (the same request, asked again, gets the answer): schemathesis's
    stateful phase follows it."""
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if operation.get("x-computed"):
                _document_202(operation, operation_ref(path, method))


def _document_202(operation: dict[str, Any], ref: str) -> None:
    params = {f"query.{p['name']}": f"$request.query.{p['name']}"
              for p in operation.get("parameters", []) if p.get("in") == "query"}
    operation.setdefault("responses", {})["202"] = {
        "description": "being computed: the same request after `Retry-After` seconds gets it",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        "content": {"application/json": {"schema": COMPUTING_SCHEMA}},
        "links": {"AskAgain": {"operationRef": ref, "parameters": params,
                               "description": "the same request, once computed"}}}
