"""POST /v1/accounts/score: an account and its contacts -> propensity to buy, committee, reasons."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, status
from starlette.concurrency import run_in_threadpool

from propensity.features.definitions import PERSONA_GROUPS
from propensity.features.online import LeadInputError
from propensity.lead_input import check_stages
from propensity.models.bundle import learner_name
from propensity.models.reasons import explain
from propensity.scoring import score_account_rows
from propensity.targets import ACCOUNT_PROPENSITY
from propensity.thresholds import to_score
from serving.deps import AppState, StateDep, body_doc, json_body
from serving.limits import check_account_request
from serving.schemas import AccountIn, AccountScore, ModelRef, ReasonOut, Reasons
from serving.scorer import MAIN, invalid

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])


def account_attributes(body: AccountIn) -> dict[str, Any]:
    """The account's attributes: its own fields, and those under `attributes` (the older
    shape); a field given both ways with two values is a 422 naming it."""
    extra = body.model_extra or {}
    for name, value in body.attributes.items():
        if name in extra and extra[name] != value:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
                "loc": ["body", "attributes", name], "type": "value_error",
                "msg": f"{name!r} is also a field of the account, with another value: give "
                       "it once"}])
    return {**body.attributes, **extra}


def _check_stages(state: AppState, body: AccountIn) -> None:
    """The contacts' stages are the lead model's funnel's, as the schema says."""
    leads = state.store.get(MAIN)
    if leads is None or leads.bundle.kind != "export":
        return
    for i, c in enumerate(body.contacts):
        try:
            check_stages(c.stage, [h.stage for h in c.stage_history],
                         leads.bundle.plan.spec.stages)
        except LeadInputError as exc:
            raise invalid(["contacts", i, *exc.loc], str(exc)) from None


AccountBody = Annotated[AccountIn, Depends(json_body(AccountIn, "score"))]


@router.post("/score", response_model=AccountScore, openapi_extra=body_doc(AccountIn))
async def score_account(body: AccountBody, state: StateDep) -> AccountScore:
    """Propensity of an account to buy, which personas are engaged, and why."""
    check_account_request(body.contacts, state.settings)
    attributes = account_attributes(body)
    loaded = state.store.get(ACCOUNT_PROPENSITY)
    if loaded is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"no {ACCOUNT_PROPENSITY} champion is loaded: train and promote one")
    _check_stages(state, body)
    as_of = body.as_of or datetime.now(UTC)
    rows = [{**c.attributes(), "lead_id": c.lead_id, "created_at": c.created_at,
             "account_id": body.account_id, "as_of": as_of,
             "events": [dict(e) for e in c.events], "account": attributes}
            for c in body.contacts]
    frame = pd.DataFrame(rows)
    bundle = loaded.bundle
    _, scored = await run_in_threadpool(score_account_rows, bundle, frame)
    assert scored.contributions is not None
    p = float(scored.probability[0])
    names = bundle.feature_names
    x = scored.X[0]
    pos, neg = explain(names, x, scored.contributions[0, :-1], bundle.categories)
    window = bundle.spec.config.committee_window_days if bundle.spec else 90
    per_persona = {name: x[i] for i, name in enumerate(names)}
    engaged = [p_ for p_ in PERSONA_GROUPS
               if (per_persona.get(f"account_events_{p_}_{window}d") or 0) > 0]
    return AccountScore(
        account_id=body.account_id, probability=p, score=to_score(p),
        model=ModelRef(name=ACCOUNT_PROPENSITY, version=loaded.version,
                       horizon_days=bundle.horizon_days, fallback="fallback" in bundle.info,
                       learner=learner_name(bundle.learner)),
        engaged_personas=engaged, missing_personas=[x for x in PERSONA_GROUPS if x not in engaged],
        reasons=Reasons(positive=[ReasonOut(**r.__dict__) for r in pos],
                        negative=[ReasonOut(**r.__dict__) for r in neg]))
