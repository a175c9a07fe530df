"""Thresholds: read (score scope), change and restore (admin scope), curve, recommendation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool

from propensity.targets import LEAD_CONVERSION
from propensity.threshold_store import StaleVersion, ThresholdStore
from propensity.thresholds import Curve, Recommendation, ThresholdSet, recommend, threshold_curve
from serving.deps import AdminKey, ScoreKey, StateDep, body_doc, json_body
from serving.links import link, links
from serving.schemas import DataProblems, data_problems

router = APIRouter(prefix="/v1/thresholds", tags=["thresholds"])


class ThresholdsOut(ThresholdSet):
    changed_by: str | None
    changed_at: datetime | None
    reason: str


VERSION_MAX = 2**31 - 1  # the version column is a 32-bit integer on every database


class ThresholdsIn(BaseModel):
    """New values, or `restore_version` to bring an earlier version back (as a new version)."""

    # "50" is not a number, 1 is not true, a misspelt field is an error
    model_config = ConfigDict(strict=True, extra="forbid")

    mql: float | None = Field(None, ge=0, le=100)
    grade_a: float | None = Field(None, ge=0, le=100)
    grade_b: float | None = Field(None, ge=0, le=100)
    grade_c: float | None = Field(None, ge=0, le=100)
    restore_version: int | None = Field(None, ge=1, le=VERSION_MAX)
    base_version: int | None = Field(
        None, ge=0, le=VERSION_MAX, description="the active version this change is based on "
        "(as read from GET /v1/thresholds); or send it as `If-Match`. A change made since is "
        "a 409, so two admins never silently undo each other")
    reason: str = Field(min_length=3, max_length=2000, description="why: kept in the history")

    @model_validator(mode="after")
    def _one_kind(self) -> ThresholdsIn:
        values = [self.mql, self.grade_a, self.grade_b, self.grade_c]
        if self.restore_version is not None and any(v is not None for v in values):
            raise ValueError("give new values or restore_version, not both")
        if self.restore_version is None and all(v is None for v in values):
            raise ValueError("give at least one of mql, grade_a, grade_b, grade_c")
        return self


MAX_WEEKLY = 1_000_000


class RecommendIn(BaseModel):
    """Sales capacity (reps x leads a rep works a week, or leads a week), or a target."""

    model_config = ConfigDict(strict=True, extra="forbid")

    # bounded so their product is a finite float (1 followed by 400 zeros reps overflowed it,
    # and 1e309 is infinity); a million MQLs a week is past any sales team
    reps: int | None = Field(None, ge=1, le=MAX_WEEKLY)
    leads_per_rep_per_week: float | None = Field(None, gt=0, le=MAX_WEEKLY,
                                                 allow_inf_nan=False)
    capacity_per_week: float | None = Field(None, gt=0, le=MAX_WEEKLY, allow_inf_nan=False)
    min_precision: float | None = Field(None, gt=0, le=1)
    min_recall: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _capacity(self) -> RecommendIn:
        if (self.reps is None) != (self.leads_per_rep_per_week is None):
            raise ValueError("reps and leads_per_rep_per_week go together")
        if self.reps is not None and self.leads_per_rep_per_week is not None:
            if self.capacity_per_week is not None:
                raise ValueError("give reps x leads_per_rep_per_week or capacity_per_week")
            self.capacity_per_week = self.reps * self.leads_per_rep_per_week
        return self


class RecommendOut(Recommendation):
    capacity_per_week: float | None
    current: ThresholdSet


PATH = "/v1/thresholds"
CHANGE_IT = link(PATH, "put", "change the version just read (its number as If-Match)",
                 # embedded in a string (an ETag's quotes): a header's value is text, and a
                 # bare `$response.body#/version` is the number (schemathesis cannot send it)
                 parameters={"header.if-match": '"{$response.body#/version}"'})


@router.get("", response_model=ThresholdsOut, openapi_extra=links("200", ChangeIt=CHANGE_IT))
async def get_thresholds(state: StateDep, key: ScoreKey) -> ThresholdsOut:
    """The active MQL threshold and grade bands, with who set them, when and why."""
    details = await run_in_threadpool(state.thresholds.details, LEAD_CONVERSION)
    return ThresholdsOut(**details)


def _base(body: ThresholdsIn, if_match: str | None) -> int:
    """The version the change is based on: `base_version`, or the `If-Match` header."""
    if body.base_version is not None:
        return body.base_version
    if if_match is not None:
        text = if_match.strip().removeprefix("W/").strip('"')
        # ASCII digits only: "²".isdigit() is true and int("²") fails
        if text.isascii() and text.isdigit() and int(text) <= VERSION_MAX:
            return int(text)
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
            "loc": ["header", "if-match"], "msg": "If-Match is the version number the change "
            "is based on, e.g. \"3\"", "type": "value_error"}])
    raise HTTPException(status.HTTP_428_PRECONDITION_REQUIRED,
                        "name the version this change is based on: base_version in the body "
                        "or If-Match, as read from GET /v1/thresholds")


def _conflict(store: ThresholdStore, base: int) -> dict[str, object]:
    current = store.active(LEAD_CONVERSION).version
    return {"msg": f"version {base} is not a version of the {LEAD_CONVERSION} thresholds; version "
                   f"{current} is active", "base_version": base, "current_version": current}


ThresholdsBody = Annotated[ThresholdsIn, Depends(json_body(ThresholdsIn, "admin"))]
RecommendBody = Annotated[RecommendIn, Depends(json_body(RecommendIn, "score"))]


@router.put("", response_model=ThresholdsOut,
            openapi_extra={**body_doc(ThresholdsIn, key_dependency=True), **links(
                "200", ChangeAgain=CHANGE_IT,
                ReadBack=link(PATH, "get", "the version just written is the active one"))})
async def put_thresholds(body: ThresholdsBody, state: StateDep, key: AdminKey,
                         if_match: Annotated[str | None, Header(max_length=40)] = None,
                         ) -> ThresholdsOut:
    """Set new values (a new version); every score after this carries the new version.

    The change names the version it is based on; when another change came first, the answer
    is 409 with the active version, and nothing is written."""
    store = state.thresholds
    base = _base(body, if_match)
    if body.restore_version is not None:
        old = await run_in_threadpool(store.get, body.restore_version)
        if old is None or old.model != LEAD_CONVERSION:
            raise HTTPException(status.HTTP_404_NOT_FOUND,
                                f"no threshold version {body.restore_version}")
        values = old
        reason = f"restore v{old.version}: {body.reason}"
    else:
        current = await run_in_threadpool(store.get, base) if base else ThresholdSet()
        if current is None or current.model != LEAD_CONVERSION:
            raise HTTPException(status.HTTP_409_CONFLICT,
                                await run_in_threadpool(_conflict, store, base))
        merged = {**current.model_dump(), **body.model_dump(
            exclude_none=True, exclude={"reason", "restore_version", "base_version"})}
        try:
            values = ThresholdSet(**merged)
        except ValidationError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
                "loc": ["body"], "msg": e["msg"].removeprefix("Value error, "),
                "type": "value_error"} for e in exc.errors(include_url=False)]) from None
        reason = body.reason
    try:
        saved = await run_in_threadpool(store.set, values, key.name, reason, base)
    except StaleVersion as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, {
            "msg": str(exc), "base_version": exc.base, "current_version": exc.current}
        ) from None
    details = await run_in_threadpool(store.details, LEAD_CONVERSION, saved.version)
    return ThresholdsOut(**details)


@router.get("/history", response_model=list[ThresholdsOut], openapi_extra=links(
    "200", Restore=link(PATH, "put", "bring the newest version back (a new version)", body={
        "restore_version": "$response.body#/0/version",
        "base_version": "$response.body#/0/version", "reason": "restored from the history"})))
async def history(state: StateDep, key: ScoreKey) -> list[ThresholdsOut]:
    """Every version, newest first."""
    rows = await run_in_threadpool(state.thresholds.history, LEAD_CONVERSION)
    return [ThresholdsOut(**r) for r in rows]


class CurveOut(Curve):
    data_problems: DataProblems | None = Field(
        None, description="for source=score_log: rows of the export its contract rejected "
                          "(left out of the outcomes)")


def _score_log_curve(state: StateDep) -> CurveOut:
    """Scores served, joined with the conversions the configured export has seen since."""
    import pandas as pd
    import sqlalchemy as sa

    from propensity.database import score_log
    from propensity.export_reader import load_export
    from propensity.thresholds import outcomes_of_scores

    path = state.settings.data_path
    loaded = state.store.get(LEAD_CONVERSION)
    if path is None or loaded is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "the score-log curve needs PROPENSITY_DATA_PATH and a champion")
    with state.log.engine.connect() as conn:
        rows = pd.DataFrame(conn.execute(sa.select(
            score_log.c.lead_id, score_log.c.scored_at, score_log.c.probability).where(
            score_log.c.model_name == LEAD_CONVERSION)).all(), columns=["lead_id", "scored_at",
                                                             "probability"])
    export = load_export(path, drop_bad_rows=True)
    joined = outcomes_of_scores(rows, export, loaded.bundle.horizon_days or 90)
    if joined.empty:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            "no served score has a known outcome yet (its horizon must have "
                            "passed in the export)")
    curve = threshold_curve(joined, source="score log joined with later conversions")
    return CurveOut(**curve.model_dump(), data_problems=data_problems(export.report))


def _curve(state: StateDep) -> Curve:
    loaded = state.store.get(LEAD_CONVERSION)
    if loaded is None or loaded.holdout is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "no champion with holdout predictions is loaded")
    curve = loaded.cache.get("curve")
    if not isinstance(curve, Curve):
        curve = threshold_curve(loaded.holdout,
                                source=f"{LEAD_CONVERSION} v{loaded.version} holdout")
        loaded.cache["curve"] = curve
    return curve


@router.get("/curve", response_model=CurveOut, openapi_extra=links(
    "200", Recommend=link(f"{PATH}/recommend", "post", "the threshold for the capacity that "
                          "threshold 50 flags", body={
                              "capacity_per_week": "$response.body#/points/50/flagged_per_week"})))
async def curve(state: StateDep, key: ScoreKey,
                source: Literal["holdout", "score_log"] = "holdout") -> Curve:
    """For every threshold 0-100: MQLs a week, precision, recall, expected customers, lift.

    `holdout`: the champion's out-of-time holdout; `score_log`: scores actually served,
    joined with later conversions in the configured export.
    """
    if source == "score_log":
        return await run_in_threadpool(_score_log_curve, state)
    return await run_in_threadpool(_curve, state)


@router.post("/recommend", response_model=RecommendOut, openapi_extra=body_doc(RecommendIn))
async def recommend_threshold(body: RecommendBody, state: StateDep) -> RecommendOut:
    """The threshold that maximises expected customers within capacity or a target."""
    c = await run_in_threadpool(_curve, state)
    try:
        rec = recommend(c, capacity_per_week=body.capacity_per_week,
                        min_precision=body.min_precision, min_recall=body.min_recall)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
            "loc": ["body"], "msg": str(exc), "type": "value_error"}]) from None
    return RecommendOut(**rec.model_dump(), capacity_per_week=body.capacity_per_week,
                        current=await run_in_threadpool(state.thresholds.active, LEAD_CONVERSION))
