"""Answers computed from the configured CRM export (funnel, forecast, backtest), cached
until the export's files change.

Building one takes from a second (a funnel) to minutes (a backtest fits models once per
quarter), so each JSON answer is kept, keyed by the export's file signature and the request's
parameters, in one LRU bounded by total JSON size (`PROPENSITY_FUNNEL_CACHE_BYTES`): varying
a parameter cannot grow memory past it. Every route that answers from the export goes
through `cached_json`, so the cache, the 404 without an export and the 422 for a library
error are one behaviour.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from fastapi import HTTPException, status
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from propensity.export_reader import SUFFIXES
from propensity.problems import PropensityError
from serving.deps import AppState


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

    def put(self, key: tuple[object, ...], value: bytes, limit: int) -> None:
        if len(value) > limit:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self.size -= 0 if old is None else len(old)
            self._items[key] = value
            self.size += len(value)
            while self.size > limit:
                _, dropped = self._items.popitem(last=False)
                self.size -= len(dropped)


_cache = ByteCache()


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


async def cached_json(state: AppState, path: Path, params: tuple[object, ...],
                      compute: Callable[[], bytes]) -> Response:
    """The JSON answer for (`path`'s current files, `params`): from the cache, else
    `compute` off the event loop (a library error is a 422), then kept."""
    key = (str(path), signature(path), *params)
    hit = _cache.get(key)
    if hit is not None:
        return Response(hit, media_type="application/json")
    try:
        body = await run_in_threadpool(compute)
    except PropensityError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": ["query"], "msg": str(exc),
                              "type": "value_error"}]) from None
    _cache.put(key, body, state.settings.funnel_cache_bytes)
    return Response(body, media_type="application/json")
