"""GET /v1/forecast: expected new customers and revenue per week from the configured CRM
export's open leads, with 80% and 95% intervals (the library's `propensity.forecast`).

Fitting the forecast models takes seconds to minutes, so a forecast is cached until the
export's files change, keyed by its parameters (bounded like the funnel's, by JSON size).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

import pandas as pd
from fastapi import APIRouter, HTTPException, Query, status
from starlette.concurrency import run_in_threadpool

from propensity.export import load_export
from propensity.forecast import ForecastResult, forecast
from propensity.problems import PropensityError
from serving.deps import ScoreKey, StateDep
from serving.routes.funnel import ByteCache, _signature

router = APIRouter(prefix="/v1", tags=["forecast"])
_cache = ByteCache()


@router.get("/forecast", response_model=ForecastResult)
async def get_forecast(state: StateDep, key: ScoreKey, as_of: datetime | None = None,
                       weeks: int = Query(13, ge=1, le=52),
                       by: Literal["source", "campaign", "owner_id", "segment"] | None = None,
                       seed: int = Query(0, ge=0, le=2**31 - 1)) -> object:
    """Expected new customers and revenue per week from the open leads, with intervals."""
    from fastapi.responses import Response

    path = state.settings.data_path
    if path is None or not Path(path).is_dir():
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            "no CRM export configured: set PROPENSITY_DATA_PATH")
    cache_key = (str(path), _signature(Path(path)), as_of, weeks, by, seed)
    hit = _cache.get(cache_key)
    if hit is not None:
        return Response(hit, media_type="application/json")

    def compute() -> bytes:
        export = load_export(Path(path), drop_bad_rows=True)
        latest = export.latest_time()
        if as_of is None:
            t = latest.floor("D") + pd.Timedelta(days=1)
        else:
            t = pd.Timestamp(as_of)
            t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        if t > latest + pd.Timedelta(days=1):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
                "loc": ["query", "as_of"], "type": "value_error",
                "msg": f"{t:%Y-%m-%d} is after the export's latest timestamp "
                       f"({latest:%Y-%m-%d %H:%M}); nothing is known then"}])
        result, _ = forecast(export, t, weeks, by, seed=seed)
        return result.model_dump_json().encode()

    try:
        body = await run_in_threadpool(compute)
    except PropensityError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": ["query"], "msg": str(exc),
                              "type": "value_error"}]) from None
    _cache.put(cache_key, body, state.settings.funnel_cache_bytes)
    return Response(body, media_type="application/json")
