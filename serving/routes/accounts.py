"""POST /v1/accounts/score: an account and its contacts -> propensity to buy, committee, reasons."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
from fastapi import APIRouter, HTTPException, status
from starlette.concurrency import run_in_threadpool

from propensity.features.lead import PERSONA_GROUPS
from propensity.models.online import rows_to_export
from propensity.models.reasons import explain
from propensity.thresholds import to_score
from serving.deps import ScoreKey, StateDep
from serving.schemas import AccountIn, AccountScore, ModelRef, ReasonOut, Reasons

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])
NAME = "account-propensity"


@router.post("/score", response_model=AccountScore)
async def score_account(body: AccountIn, state: StateDep, key: ScoreKey) -> AccountScore:
    """Propensity of an account to buy, which personas are engaged, and why."""
    loaded = state.store.get(NAME)
    if loaded is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"no {NAME} champion is loaded: train and promote one")
    if len(body.contacts) > state.settings.max_leads:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            f"at most {state.settings.max_leads} contacts per account")
    as_of = body.as_of or datetime.now(UTC)
    rows = []
    for i, c in enumerate(body.contacts):
        if c.created_at is None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
                "loc": ["body", "contacts", i, "created_at"], "msg": "Field required",
                "type": "missing"}])
        rows.append({**c.attributes(), "lead_id": c.lead_id, "created_at": c.created_at,
                     "account_id": body.account_id, "as_of": as_of,
                     "events": [dict(e) for e in c.events],
                     "account": body.attributes})
    frame = pd.DataFrame(rows)

    def compute() -> tuple[float, pd.DataFrame, np.ndarray]:
        export, _ = rows_to_export(frame)
        entities = pd.DataFrame({"account_id": [body.account_id],
                                 "as_of": pd.Series([as_of]).astype("datetime64[us, UTC]")})
        X = loaded.bundle.features_for_export(export, entities)
        p = loaded.bundle.predict_features(X, threads=1)
        contrib = loaded.bundle.contributions(X, threads=1)
        return float(p[0]), X, contrib

    p, X, contrib = await run_in_threadpool(compute)
    names = loaded.bundle.feature_names
    values = np.array([float(X[n].cat.codes.iloc[0]) if isinstance(X[n].dtype, pd.CategoricalDtype)
                       else float(X[n].iloc[0]) for n in names])
    pos, neg = explain(names, values, contrib[0, :-1], loaded.bundle.categories)
    window = loaded.bundle.spec.config.committee_window_days if loaded.bundle.spec else 90
    engaged = [p_ for p_ in PERSONA_GROUPS
               if (X.get(f"account_events_{p_}_{window}d", pd.Series([0])).iloc[0] or 0) > 0]
    return AccountScore(
        account_id=body.account_id, probability=p, score=to_score(p),
        model=ModelRef(name=NAME, version=loaded.version, horizon_days=loaded.bundle.horizon_days),
        engaged_personas=engaged, missing_personas=[x for x in PERSONA_GROUPS if x not in engaged],
        reasons=Reasons(positive=[ReasonOut(**r.__dict__) for r in pos],
                        negative=[ReasonOut(**r.__dict__) for r in neg]))
