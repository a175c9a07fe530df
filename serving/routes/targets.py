"""POST /v1/targets/{name}/score: leads scored by any defined target's champion.

A shell: `serving.target_scorer` finds the champion (or the 404/422/503 saying why there is
none) and runs the library's lead-scoring pipeline. The named routes (`/v1/score`,
`/v1/accounts/score`) stay as they are.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from serving.deps import StateDep, body_doc, json_body
from serving.schemas import ScoreRequest, TargetScoreResponse
from serving.target_scorer import PREFIX, score_target

router = APIRouter(prefix=PREFIX, tags=["targets"])
ScoreBody = Annotated[ScoreRequest, Depends(json_body(ScoreRequest, "score"))]


@router.post("/{name}/score", response_model=TargetScoreResponse,
             openapi_extra=body_doc(ScoreRequest))
async def score(name: str, body: ScoreBody, state: StateDep) -> TargetScoreResponse:
    """Score 1 to 1,000 leads on a target's model: probability, score and the reasons."""
    return await score_target(state, name, body)
