"""POST /v1/score: calibrated probabilities, scores, grades and reasons for CRM leads."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Response, status

from propensity.models.fast import FastScorer, LeadInput
from propensity.models.reasons import explain
from propensity.thresholds import to_score
from serving.deps import SCORE_BODY_DOC, ScoreBody, ScoreKey, StateDep
from serving.model_store import Loaded
from serving.schemas import (
    LeadIn,
    LeadScore,
    ModelRef,
    ReasonOut,
    Reasons,
    ScoreResponse,
)

router = APIRouter(prefix="/v1", tags=["score"])
MAIN, NEXT = "lead-conversion", "stage-advancement"


def _invalid(loc: list[Any], msg: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                         [{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


def lead_input(lead: LeadIn, i: int, now: datetime, stages: list[str]) -> LeadInput:
    if lead.created_at is None:
        raise _invalid(["leads", i, "created_at"], "Field required")
    allowed = [*stages, "disqualified", "lost"]
    if lead.stage is not None and lead.stage not in allowed:
        raise _invalid(["leads", i, "stage"],
                       f"unknown stage {lead.stage!r}; stages are {', '.join(stages)}")
    for j, row in enumerate(lead.stage_history):
        if row.stage not in allowed:
            raise _invalid(["leads", i, "stage_history", j, "stage"],
                           f"unknown stage {row.stage!r}; stages are {', '.join(stages)}")
    return LeadInput(
        lead_id=lead.lead_id, created_at=lead.created_at, as_of=lead.as_of or now,
        attributes=lead.attributes(),
        events=[(e["occurred_at"], e["event_type"], e.get("channel"), e.get("value"))
                for e in lead.events],
        stage=lead.stage, stage_entered_at=lead.stage_entered_at, account=lead.account,
        stage_history=[(r.stage, r.entered_at) for r in lead.stage_history])


def _table_rows(loaded: Loaded, leads: list[LeadIn]) -> np.ndarray:
    """Feature rows of a single-table model: its columns, categories as codes."""
    bundle = loaded.bundle
    X = np.full((len(leads), len(bundle.feature_names)), np.nan)
    codes = {k: {v: i for i, v in enumerate(c)} for k, c in bundle.categories.items()}
    for r, lead in enumerate(leads):
        attrs = lead.attributes()
        for c, name in enumerate(bundle.feature_names):
            value = attrs.get(name)
            if value is None:
                continue
            if name in codes:
                code = codes[name].get(str(value))
                X[r, c] = np.nan if code is None else code
            else:
                try:
                    X[r, c] = float(value)
                except (TypeError, ValueError):
                    X[r, c] = np.nan
    return X


def _threads(rows: int) -> int:
    """One thread for a few leads (OpenMP start-up costs more than it saves), all for a batch."""
    return 1 if rows < 64 else 0


def _predict(loaded: Loaded, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    booster = loaded.bundle.booster
    threads = _threads(len(X))
    raw = np.asarray(booster.predict(X, num_threads=threads))
    p = np.interp(raw, loaded.bundle.calibration_x, loaded.bundle.calibration_y)
    contrib = np.asarray(booster.predict(X, pred_contrib=True, num_threads=threads))
    return p, contrib


def _hash(lead: LeadIn) -> str:
    return hashlib.sha256(lead.model_dump_json().encode()).hexdigest()


@router.post("/score", response_model=ScoreResponse, openapi_extra=SCORE_BODY_DOC)
async def score(body: ScoreBody, state: StateDep, key: ScoreKey) -> Response:
    """Score 1 to 1,000 leads: probability, score, grade, MQL flag and the reasons."""
    settings = state.settings
    if len(body.leads) > settings.max_leads:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            f"{len(body.leads)} leads in one request; at most "
                            f"{settings.max_leads}: split the batch")
    for i, lead in enumerate(body.leads):
        if len(lead.events) > settings.max_events:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                                f"leads[{i}] ({lead.lead_id}) has {len(lead.events)} events; at "
                                f"most {settings.max_events} per lead: send the recent ones")
    loaded = state.store.get(MAIN)
    if loaded is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"no {MAIN} champion is loaded: train and promote one")
    now = datetime.now(UTC)
    fast = loaded.fast
    if fast is not None:
        stages = list(fast.spec.stages)
        inputs = [lead_input(lead, i, now, stages) for i, lead in enumerate(body.leads)]
        X = np.vstack([fast.features(x) for x in inputs])
    else:
        inputs = []
        X = _table_rows(loaded, body.leads)
    p, contrib = _predict(loaded, X)
    next_model = state.store.get(NEXT)
    p_next = None
    if next_model is not None and next_model.fast is not None and inputs:
        next_fast: FastScorer = next_model.fast
        same = fast is not None and next_fast.spec == fast.spec and next_fast.names == fast.names
        X_next = X if same else np.vstack([next_fast.features(x) for x in inputs])
        p_next = next_fast.predict(X_next)
    thresholds = state.thresholds.active(MAIN)
    names = loaded.bundle.feature_names
    cats = loaded.bundle.categories
    results, log_rows = [], []
    for i, lead in enumerate(body.leads):
        pos, neg = explain(names, X[i], contrib[i, :-1], cats)
        s = to_score(float(p[i]))
        grade = thresholds.grade(s)
        results.append(LeadScore(
            lead_id=lead.lead_id, probability=float(p[i]), score=s, grade=grade,  # type: ignore[arg-type]
            mql=thresholds.is_mql(s),
            reasons=Reasons(positive=[ReasonOut(**r.__dict__) for r in pos],
                            negative=[ReasonOut(**r.__dict__) for r in neg]),
            next_stage=None if p_next is None else float(p_next[i])))
        log_rows.append({"scored_at": now, "lead_id": lead.lead_id, "probability": float(p[i]),
                         "score": s, "grade": grade, "mql": thresholds.is_mql(s),
                         "model_name": MAIN, "model_version": loaded.version,
                         "threshold_version": thresholds.version, "input_hash": _hash(lead)})
        state.metrics.scores.labels(MAIN, grade).inc()
    state.log.append(log_rows)
    out = ScoreResponse(
        model=ModelRef(name=MAIN, version=loaded.version,
                       horizon_days=loaded.bundle.horizon_days),
        threshold_version=thresholds.version,
        next_stage_model=None if next_model is None or p_next is None else ModelRef(
            name=NEXT, version=next_model.version, horizon_days=next_model.bundle.horizon_days),
        scores=results)
    # built and checked above: serialise once instead of FastAPI validating it again
    return Response(out.model_dump_json(), media_type="application/json")
