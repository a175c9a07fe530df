"""GET /v1/funnel: the funnel metrics of the configured CRM export, cached until it changes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, status
from starlette.concurrency import run_in_threadpool

from propensity.export import SUFFIXES, load_export
from propensity.funnel import FunnelReport, funnel_report
from propensity.problems import PropensityError
from serving.deps import ScoreKey, StateDep

router = APIRouter(prefix="/v1", tags=["funnel"])
_cache: dict[tuple[object, ...], FunnelReport] = {}


def _signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and mtime of every table file: changes when the data does."""
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                        for p in path.iterdir() if p.suffix in SUFFIXES
                        or p.name == "manifest.json"))


@router.get("/funnel", response_model=FunnelReport)
async def funnel(state: StateDep, key: ScoreKey, by: str | None = None,
                 start: datetime | None = None, end: datetime | None = None,
                 mode: Literal["cohort", "period"] = Query("cohort"),
                 stale_days: int | None = Query(None, ge=1)) -> FunnelReport:
    """Stage-to-stage conversion, win rate, cycle times and deal metrics, by any lead column."""
    path = state.settings.data_path
    if path is None or not Path(path).is_dir():
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            "no CRM export configured: set PROPENSITY_DATA_PATH")
    cache_key = (str(path), _signature(Path(path)), by, start, end, mode, stale_days)
    if cache_key in _cache:
        return _cache[cache_key]

    def compute() -> FunnelReport:
        export = load_export(Path(path), drop_bad_rows=True)
        return funnel_report(export, by=by, start=start, end=end, mode=mode,
                             stale_days=stale_days)

    try:
        report = await run_in_threadpool(compute)
    except PropensityError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": ["query", "by"], "msg": str(exc),
                              "type": "value_error"}]) from None
    if len(_cache) > 64:
        _cache.clear()
    _cache[cache_key] = report
    return report
