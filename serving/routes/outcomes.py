"""POST /v1/outcomes: stage changes and won / lost deals reported back by the CRM."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from propensity.contract import DEFAULT_STAGES
from propensity.monitoring.outcomes import outcome_stages, record
from propensity.targets import LEAD_CONVERSION
from serving.deps import StateDep, body_doc, json_body
from serving.model_store import Loaded
from serving.schemas import OutcomeIn

router = APIRouter(prefix="/v1", tags=["outcomes"])
MAX_OUTCOMES = 10_000


class OutcomesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcomes: list[OutcomeIn] = Field(min_length=1, max_length=MAX_OUTCOMES)


class OutcomesOut(BaseModel):
    received: int
    stored: int = Field(description="new outcomes")
    duplicates: int = Field(description="outcomes stored before (the same lead, stage, time "
                                        "and opportunity): nothing changed")


def allowed_stages(loaded: Loaded | None) -> tuple[str, ...]:
    """What an outcome's `stage` may be with this champion loaded (its stages, or the
    contract's when it has none): the route checks it and the OpenAPI schema states it as an
    enum, so a generated outcome with a stage the server refuses is not schema-valid."""
    spec = None if loaded is None else loaded.bundle.spec
    return outcome_stages(spec.stages if spec is not None else DEFAULT_STAGES)


OutcomesBody = Annotated[OutcomesIn, Depends(json_body(OutcomesIn, "outcomes", "score"))]
"""A CRM that already scores may report outcomes with the same key; `outcomes` alone is for
a webhook that should not read scores. The key is checked before the body is read."""


@router.post("/outcomes", response_model=OutcomesOut, openapi_extra=body_doc(OutcomesIn))
async def post_outcomes(body: OutcomesBody, state: StateDep) -> OutcomesOut:
    """Report outcomes (idempotent: the same outcome twice is stored once)."""
    allowed = allowed_stages(state.store.get(LEAD_CONVERSION))
    bad = [{"loc": ["body", "outcomes", i, "stage"], "type": "value_error",
            "msg": f"unknown stage {o.stage!r}; stages are {', '.join(allowed)}"}
           for i, o in enumerate(body.outcomes) if o.stage not in allowed]
    if bad:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, bad)
    stored = await run_in_threadpool(record, state.log.engine, body.outcomes)
    return OutcomesOut(received=len(body.outcomes), stored=stored,
                       duplicates=len(body.outcomes) - stored)
