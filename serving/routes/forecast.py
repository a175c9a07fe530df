"""GET /v1/forecast: expected new customers and revenue per week from the configured CRM
export's open leads, with 80% and 95% intervals (the library's `propensity.forecast`), and
GET /v1/forecast/backtest: that forecast re-made at each past quarter start, against what
happened and beside the rule-based forecasts (`propensity.forecast.backtest`).

Fitting the forecast models takes seconds to minutes (the backtest fits them once per
quarter), so both answers are cached until the export's files change, keyed by their
parameters (bounded like the funnel's, by JSON size). The /ui forecast panel reads both.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from propensity.export_reader import load_export
from propensity.forecast import ForecastResult, forecast
from propensity.forecast.backtest import Period, backtest
from propensity.forecast.report import AfterTheExport, forecast_time
from serving.deps import ScoreKey, StateDep
from serving.export_answers import COMPUTED, cached_json, export_dir
from serving.links import link, links
from serving.schemas import When

router = APIRouter(prefix="/v1", tags=["forecast"])

class BacktestAnswer(BaseModel):
    """The backtest's periods with its summary line (mean absolute percentage errors of the
    customer count for the model and both rules, interval coverage; an error over a period
    with no actual customer is infinite, shown as null)."""

    weeks: int
    periods: list[Period]
    skipped: list[str]
    summary: Mapping[str, float | None]


@router.get("/forecast", response_model=ForecastResult, openapi_extra={**COMPUTED, **links(
    "200", Backtest=link("/v1/forecast/backtest", "get", "the backtest of this forecast's "
                         "horizon and seed", parameters={"query.weeks": "$response.body#/weeks",
                                                         "query.seed": "$response.body#/seed"}))})
async def get_forecast(state: StateDep, key: ScoreKey, as_of: When | None = None,
                       weeks: int = Query(13, ge=1, le=52),
                       by: Literal["source", "campaign", "owner_id", "segment"] | None = None,
                       seed: int = Query(0, ge=0, le=2**31 - 1)) -> object:
    """Expected new customers and revenue per week from the open leads, with intervals."""
    path = export_dir(state)

    def compute() -> bytes:
        export = load_export(Path(path), drop_bad_rows=True)
        try:
            t = forecast_time(as_of, export.latest_time())
        except AfterTheExport as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
                "loc": ["query", "as_of"], "type": "value_error", "msg": str(exc)}]) from None
        result, _ = forecast(export, t, weeks, by, seed=seed)
        return result.model_dump_json().encode()

    return await cached_json(state.settings, path, ("forecast", as_of, weeks, by, seed), compute)


@router.get("/forecast/backtest", response_model=BacktestAnswer, openapi_extra=COMPUTED)
async def get_backtest(state: StateDep, key: ScoreKey, weeks: int = Query(13, ge=1, le=52),
                       seed: int = Query(0, ge=0, le=2**31 - 1)) -> object:
    """The forecast at every past quarter start the history allows (models fitted on what was
    known then), against the actual count and revenue, beside the rule-based forecasts."""
    path = export_dir(state)

    def compute() -> bytes:
        bt = backtest(load_export(path, drop_bad_rows=True), weeks=weeks, seed=seed)
        return BacktestAnswer(weeks=bt.weeks, periods=bt.periods, skipped=bt.skipped,
                              summary=bt.summary()).model_dump_json().encode()

    return await cached_json(state.settings, path, ("backtest", weeks, seed), compute)
