"""POST /v1/score: calibrated probabilities, scores, grades and reasons for CRM leads.

A shell: `serving.scorer` checks the request and keeps the score log around the library's
pipeline (`propensity.lead_scoring`), which reads, checks and scores the leads.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from serving.deps import AppState, body_doc, json_body
from serving.links import link, links
from serving.schemas import ScoreRequest, ScoreResponse
from serving.scorer import accept, answers

router = APIRouter(prefix="/v1", tags=["score"])
ScoreBody = Annotated[ScoreRequest, Depends(json_body(ScoreRequest, "score"))]


REPORT_OUTCOME = link("/v1/outcomes", "post", "report the first lead scored as lost", body={
    "outcomes": [{"lead_id": "$response.body#/scores/0/lead_id", "stage": "lost",
                  "at": "2025-06-01T00:00:00Z"}]})
MONITOR = link("/v1/monitoring", "get", "the monitoring report, the score just logged in it")


@router.post("/score", response_model=ScoreResponse, openapi_extra={
    **body_doc(ScoreRequest), **links("200", ReportOutcome=REPORT_OUTCOME, Monitor=MONITOR)})
async def score(body: ScoreBody, request: Request) -> Response:
    """Score 1 to 1,000 leads: probability, score, grade, MQL flag and the reasons."""
    return Response(await scored_json(request.app.state.propensity, body),
                    media_type="application/json")


async def scored_json(state: AppState, body: ScoreRequest) -> bytes:
    """The answer to a parsed score request, as JSON (the fast path runs the same `accept`
    and `answers`, for several requests at once)."""
    return (await answers(state, [accept(state, body)]))[0]
