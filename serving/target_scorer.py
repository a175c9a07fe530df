"""Scoring leads on any defined target's champion (`POST /v1/targets/{name}/score`): a model
the library does not name (`propensity.targets.define`, perhaps in a deployment's own module,
`PROPENSITY_TARGET_MODULES`) is served the moment its champion is promoted.

The leads are read and scored by the library's one pipeline (`propensity.lead_scoring`), as
`POST /v1/score` reads them; what differs is what a target's answer cannot have: grades and an
MQL flag (the thresholds are the lead-conversion model's), the next stage, and a row in the
score log (its outcomes, maturity and monitoring are lead conversion's: a target's score logged
there would be judged against conversions).
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status
from starlette.concurrency import run_in_threadpool

from propensity.lead_scoring import score_read
from propensity.targets import LEAD, UnknownTarget, target_named, target_names
from propensity.thresholds import ThresholdSet
from serving.deps import AppState
from serving.model_store import Loaded, ModelStore
from serving.schemas import (
    ScoreRequest,
    TargetLeadScore,
    TargetScoreResponse,
)
from serving.scorer import accept, model_ref, reasons_out

PREFIX = "/v1/targets"
"""Where the route lives (`serving.routes.targets`): the schema's path is named from it."""
_UNGRADED = ThresholdSet()
"""Grades the pipeline computes and a target's answer leaves out."""


def served_targets(store: ModelStore) -> list[str]:
    """The targets this route answers now: lead targets with a champion loaded."""
    return [name for name in store.names if store.get(name) is not None
            and name in target_names() and target_named(name).entity is LEAD]


def name_targets(schema: dict[str, Any], targets: list[str]) -> None:
    """The route's `name` in the OpenAPI schema: one of the targets served (a client, and a
    fuzzer, can then reach a model; any other name is a 404)."""
    operation = schema.get("paths", {}).get(f"{PREFIX}/{{name}}/score", {}).get("post")
    if not targets or operation is None:
        return
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "path" and parameter.get("name") == "name":
            parameter["schema"] = {"type": "string", "enum": targets, "title": "Name"}


def served(state: AppState, name: str) -> Loaded:
    """The champion serving target `name`: 404 for a target this scorer does not know or was
    told not to load, 422 for one whose entity it cannot build from a request (accounts have
    their own route), 503 while no champion of it is loaded."""
    try:
        target = target_named(name)
    except UnknownTarget as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    if name not in state.store.names:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"the target {name!r} is not served "
                            f"here: this scorer loads {', '.join(state.store.names)}")
    if target.entity is not LEAD:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
            "loc": ["path", "name"], "type": "value_error",
            "msg": f"the target {name!r} scores {target.entity.name}s, which this route "
                   f"cannot build from leads (accounts: POST /v1/accounts/score)"}])
    loaded = state.store.get(name)
    if loaded is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"no {name} champion is loaded: train and promote one")
    return loaded


async def score_target(state: AppState, name: str, body: ScoreRequest) -> TargetScoreResponse:
    """A score request answered by target `name`'s champion; a lead the contract refuses is a
    422 naming its field, as `POST /v1/score` names it."""
    accepted = accept(state, body, model=served(state, name), logged=False)
    scored = (await run_in_threadpool(score_read, [accepted.read], _UNGRADED))[0]
    return TargetScoreResponse(
        model=model_ref(name, accepted.loaded),
        scores=[TargetLeadScore(
            lead_id=s.lead_id, probability=s.probability, score=s.score,
            reasons=reasons_out(s.reasons))
            for s in scored.scores])
