"""GET /v1/forecast: expected new customers and revenue per week from the configured CRM
export's open leads, with 80% and 95% intervals (the library's `propensity.forecast`), and
GET /v1/forecast/backtest: that forecast re-made at each past quarter start, against what
happened and beside the rule-based forecasts (`propensity.forecast.backtest`).

Fitting the forecast models takes seconds to minutes (the backtest fits them once per
quarter), so both answers are cached until the export's files change, keyed by their
parameters (bounded like the funnel's, by JSON size). The /ui forecast panel reads both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Literal

import pandas as pd
from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from propensity.export import load_export
from propensity.forecast import ForecastResult, forecast
from propensity.forecast.backtest import Period, backtest
from propensity.problems import PropensityError
from serving.deps import ScoreKey, StateDep
from serving.routes.funnel import ByteCache, _signature

router = APIRouter(prefix="/v1", tags=["forecast"])
_cache = ByteCache()


class BacktestAnswer(BaseModel):
    """The backtest's periods with its summary line (mean absolute percentage errors of the
    customer count for the model and both rules, interval coverage; an error over a period
    with no actual customer is infinite, shown as null)."""

    weeks: int
    periods: list[Period]
    skipped: list[str]
    summary: Mapping[str, float | None]


def _export_dir(state: StateDep) -> Path:
    path = state.settings.data_path
    if path is None or not Path(path).is_dir():
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            "no CRM export configured: set PROPENSITY_DATA_PATH")
    return Path(path)


async def _cached(cache_key: tuple[object, ...], state: StateDep,
                  compute: Callable[[], bytes]) -> Response:
    """The cached JSON for `cache_key`, else `compute` off the event loop (a library error
    is a 422), stored."""
    hit = _cache.get(cache_key)
    if hit is not None:
        return Response(hit, media_type="application/json")
    try:
        body = await run_in_threadpool(compute)
    except PropensityError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": ["query"], "msg": str(exc),
                              "type": "value_error"}]) from None
    _cache.put(cache_key, body, state.settings.funnel_cache_bytes)
    return Response(body, media_type="application/json")


@router.get("/forecast", response_model=ForecastResult)
async def get_forecast(state: StateDep, key: ScoreKey, as_of: datetime | None = None,
                       weeks: int = Query(13, ge=1, le=52),
                       by: Literal["source", "campaign", "owner_id", "segment"] | None = None,
                       seed: int = Query(0, ge=0, le=2**31 - 1)) -> object:
    """Expected new customers and revenue per week from the open leads, with intervals."""
    path = _export_dir(state)
    cache_key = ("forecast", str(path), _signature(path), as_of, weeks, by, seed)

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

    return await _cached(cache_key, state, compute)


@router.get("/forecast/backtest", response_model=BacktestAnswer)
async def get_backtest(state: StateDep, key: ScoreKey, weeks: int = Query(13, ge=1, le=52),
                       seed: int = Query(0, ge=0, le=2**31 - 1)) -> object:
    """The forecast at every past quarter start the history allows (models fitted on what was
    known then), against the actual count and revenue, beside the rule-based forecasts."""
    path = _export_dir(state)
    cache_key = ("backtest", str(path), _signature(path), weeks, seed)

    def compute() -> bytes:
        bt = backtest(load_export(path, drop_bad_rows=True), weeks=weeks, seed=seed)
        return BacktestAnswer(weeks=bt.weeks, periods=bt.periods, skipped=bt.skipped,
                              summary=bt.summary()).model_dump_json().encode()

    return await _cached(cache_key, state, compute)
