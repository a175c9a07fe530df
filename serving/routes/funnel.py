"""GET /v1/funnel: the funnel metrics of the configured CRM export, cached until it changes.

Reports are cached by their JSON size (least recently used out first), so varying `start`
cannot grow memory past `PROPENSITY_FUNNEL_CACHE_BYTES`; a `by` column with more distinct
values than `PROPENSITY_MAX_FUNNEL_GROUPS` (lead_id, ...) is refused before any report is
built. Rows the export's contract rejects are left out and counted in `data_problems`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, status
from starlette.concurrency import run_in_threadpool

from propensity.export import SUFFIXES, load_export
from propensity.funnel import FunnelReport, funnel_report
from propensity.problems import PropensityError
from serving.deps import ScoreKey, StateDep
from serving.schemas import DataProblems, When, data_problems

router = APIRouter(prefix="/v1", tags=["funnel"])


class FunnelOut(FunnelReport):
    data_problems: DataProblems


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


def _signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and mtime of every table file: changes when the data does."""
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                        for p in path.iterdir() if p.suffix in SUFFIXES
                        or p.name == "manifest.json"))


@router.get("/funnel", response_model=FunnelOut)
async def funnel(state: StateDep, key: ScoreKey,
                 by: str | None = Query(None, max_length=100),
                 start: When | None = None, end: When | None = None,
                 mode: Literal["cohort", "period"] = Query("cohort"),
                 stale_days: int | None = Query(None, ge=1, le=36500)) -> object:
    """Stage-to-stage conversion, win rate, cycle times and deal metrics, by a lead column."""
    from fastapi.responses import Response

    settings = state.settings
    path = settings.data_path
    if path is None or not Path(path).is_dir():
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            "no CRM export configured: set PROPENSITY_DATA_PATH")
    cache_key = (str(path), _signature(Path(path)), by, start, end, mode, stale_days)
    hit = _cache.get(cache_key)
    if hit is not None:
        return Response(hit, media_type="application/json")

    def compute() -> bytes:
        export = load_export(Path(path), drop_bad_rows=True)
        if by is not None and by in export.leads.columns:
            groups = int(export.leads[by].nunique())
            if groups > settings.max_funnel_groups:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
                    "loc": ["query", "by"], "type": "value_error",
                    "msg": f"{by} has {groups} distinct values; at most "
                           f"{settings.max_funnel_groups} groups (PROPENSITY_MAX_FUNNEL_GROUPS)"
                           ": group by a column with fewer values"}])
        report = funnel_report(export, by=by, start=start, end=end, mode=mode,
                               stale_days=stale_days)
        out = FunnelOut(**report.model_dump(), data_problems=data_problems(export.report))
        return out.model_dump_json().encode()

    try:
        body = await run_in_threadpool(compute)
    except PropensityError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": ["query"], "msg": str(exc),
                              "type": "value_error"}]) from None
    _cache.put(cache_key, body, settings.funnel_cache_bytes)
    return Response(body, media_type="application/json")
