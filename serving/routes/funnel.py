"""GET /v1/funnel: the funnel metrics of the configured CRM export, cached until it changes.

Reports are cached by their JSON size (least recently used out first), so varying `start`
cannot grow memory past `PROPENSITY_FUNNEL_CACHE_BYTES`; a `by` column with more distinct
values than `PROPENSITY_MAX_FUNNEL_GROUPS` (lead_id, ...) is refused before any report is
built. Rows the export's contract rejects are left out and counted in `data_problems`.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Query, status

from propensity.export_reader import load_export
from propensity.funnel import FunnelReport, funnel_report
from serving.deps import ScoreKey, StateDep
from serving.export_answers import COMPUTED, cached_json, export_dir
from serving.schemas import DataProblems, When, data_problems

router = APIRouter(prefix="/v1", tags=["funnel"])


class FunnelOut(FunnelReport):
    data_problems: DataProblems


@router.get("/funnel", response_model=FunnelOut, openapi_extra=COMPUTED)
async def funnel(state: StateDep, key: ScoreKey,
                 by: str | None = Query(None, max_length=100),
                 start: When | None = None, end: When | None = None,
                 mode: Literal["cohort", "period"] = Query("cohort"),
                 stale_days: int | None = Query(None, ge=1, le=36500)) -> object:
    """Stage-to-stage conversion, win rate, cycle times and deal metrics, by a lead column."""
    settings = state.settings
    path = export_dir(state)

    def compute() -> bytes:
        export = load_export(path, drop_bad_rows=True)
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

    return await cached_json(settings, path, ("funnel", by, start, end, mode, stale_days),
                             compute)
