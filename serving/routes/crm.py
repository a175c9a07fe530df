"""CRMs calling the scorer: a HubSpot custom workflow action, a Salesforce Outbound Message.

Neither carries an API key: HubSpot signs each request with the app's client secret, and a
Salesforce message names its organisation, which must be allow-listed. Both score through
the library's pipeline as `POST /v1/score` does (`serving.scorer`: `admit`, then `answers`:
the same checks, model, log rows and metrics) and store outcomes as `POST /v1/outcomes`
does. What each call was answered is kept in the database (`propensity.crm_inbound.store`),
so a retry, on any worker, is answered alike and stores no second answer. A HubSpot call is
scored first and its answer stored by one statement after (no look-up before: one round trip
a call); a retry of a call answered already is thus scored again and that score logged, then
answered the stored first answer. An action that opted in is answered BLOCK when this worker
cannot score it now, and completed later (`serving.completions`).

HubSpot retries a 5xx or a 429, never another 4xx: a lead that cannot be scored is a 200
with `hs_execution_state` FAIL_CONTINUE and the reason (a retry would fail alike), a bad
signature a 401, a saturated worker a 429 with Retry-After. Salesforce retries until it
gets `<Ack>true</Ack>`, which is sent only once every notification is recorded.
"""

from __future__ import annotations

import functools
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from propensity.adapters.crm_mapping import CrmMapping
from propensity.crm_inbound import callbacks, records, signatures, soap, store
from propensity.features.online import LeadInputError
from propensity.monitoring.outcomes import Outcome, record
from propensity.problems import PropensityError
from serving.batching import Batcher
from serving.deps import BODY_MODELS, AppState
from serving.schemas import LeadIn, LeadScore, ScoreResponse
from serving.scorer import Accepted, admit, answers

router = APIRouter(prefix="/v1/crm", tags=["crm"])
SALESFORCE_PATH = "/v1/crm/salesforce/outbound"
XML_MEDIA = frozenset({b"text/xml", b"application/soap+xml"})
HUBSPOT_PATH = "/v1/crm/hubspot/action"
OWN_AUTH = frozenset({HUBSPOT_PATH, SALESFORCE_PATH})
"""Routes that authenticate the CRM from the request itself (HubSpot's signature, Salesforce's
organisation id), not with an API key."""
REFUSALS = (status.HTTP_413_CONTENT_TOO_LARGE,)
"""What `admit` raises over a limit: the CRM's data, not a fault (a lead the contract refuses
is a `LeadInputError`)."""
WHEN_BUSY = "propensity_when_busy"
"""The action's input field that opts in to BLOCK (a static value in the action's definition:
BLOCK, or RETRY for the 429 HubSpot retries); not a property of the lead."""
OUTLOOK = "propensity_outlook"
"""An input field: "true" adds the lead's outlook to the output fields (`_outlook_output`)."""
_in_flight = 0
ERROR_BODY = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _batcher(state: AppState) -> Batcher:
    """The worker's batcher for actions: those that arrive together are scored in one pass
    and their log rows kept with one fdatasync, as the fast path does for /v1/score."""
    if state.crm_batcher is None:
        state.crm_batcher = Batcher(state.metrics)
    return state.crm_batcher


class Origin(BaseModel):
    portalId: int | str


class ActionObject(BaseModel):
    objectId: int | str
    objectType: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class ActionIn(BaseModel):
    """What HubSpot POSTs when a workflow runs the action (fields it adds are ignored)."""

    model_config = ConfigDict(extra="ignore")
    callbackId: str = Field(min_length=1, max_length=200)
    origin: Origin
    object: ActionObject
    inputFields: dict[str, Any] = Field(default_factory=dict)


BODY_MODELS[ActionIn.__name__] = ActionIn  # the route reads its body itself (the signature)


@functools.cache
def _mapping(crm: str, path: Path | None) -> CrmMapping:
    return (records.hubspot_mapping if crm == "hubspot" else records.salesforce_mapping)(path)


def _mapping_or_500(crm: str, path: Path | None) -> CrmMapping:
    try:
        return _mapping(crm, path)
    except PropensityError as exc:  # the server's configuration, not the CRM's data
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR,
                            f"PROPENSITY_CRM_MAPPING_FILE: {exc}") from None


def _refusal(exc: HTTPException | LeadInputError) -> str:
    """A refusal as one line: the field and why."""
    if isinstance(exc, LeadInputError):
        field = ".".join(str(p) for p in exc.loc[1:])
        return f"{field}: {exc}" if field else str(exc)
    return str(exc.detail)


def _invalid(exc: ValidationError) -> str:
    return "; ".join(".".join(map(str, e["loc"])) + f": {e['msg']}"
                     for e in exc.errors(include_url=False))


def _output(response: ScoreResponse) -> dict[str, Any]:
    lead = response.scores[0]
    top = ""
    if lead.reasons is not None:
        reasons = lead.reasons.positive or lead.reasons.negative
        top = reasons[0].text if reasons else ""
    return {"hs_execution_state": "SUCCESS", "propensity_probability": lead.probability,
            "propensity_score": lead.score, "propensity_grade": lead.grade,
            "propensity_mql": lead.mql, "propensity_top_reason": top,
            "propensity_model_version": response.model.version, **_outlook_output(lead)}


def _outlook_output(lead: LeadScore) -> dict[str, Any]:
    """The outlook's output fields, when the action asked for it (`propensity_outlook`) and
    the model ships one: P(converted within 90 days), median days to convert, expected
    amount and revenue (a field the model has no answer for is left out: HubSpot leaves the
    workflow's value unset rather than take a null)."""
    if lead.horizons is None:
        return {}
    values = {"propensity_p_by_90": lead.horizons.get("90"),
              "propensity_expected_days": lead.expected_days,
              "propensity_expected_amount": lead.expected_amount,
              "propensity_expected_revenue": lead.expected_revenue}
    return {k: v for k, v in values.items() if v is not None}


def _failed(message: str) -> dict[str, Any]:
    return {"hs_execution_state": "FAIL_CONTINUE", "propensity_error": message[:1000]}


async def score_action(state: AppState, action: ActionIn, as_of: datetime | None = None
                       ) -> dict[str, Any]:
    """The action's outputFields: the lead's score (as of `as_of`, default now), or
    FAIL_CONTINUE and why."""
    mapping = _mapping_or_500("hubspot", state.settings.crm_mapping_file)
    try:
        inputs = {k: v for k, v in action.inputFields.items() if k not in (WHEN_BUSY, OUTLOOK)}
        outlook = str(action.inputFields.get(OUTLOOK, "")).strip().lower() == "true"
        body = records.hubspot_lead(str(action.object.objectId), action.object.properties,
                                    inputs, mapping)
        if as_of is not None:
            body["as_of"] = as_of.isoformat()
        accepted = admit(state, [LeadIn.model_validate(body)], explain=True, outlook=outlook)
    except LeadInputError as exc:
        return _failed(_refusal(exc))
    except records.RecordError as exc:
        return _failed(str(exc))
    except ValidationError as exc:
        return _failed(_invalid(exc))
    except PropensityError as exc:
        return _failed(str(exc))
    except HTTPException as exc:
        if exc.status_code in REFUSALS:
            return _failed(_refusal(exc))
        raise  # 503: no champion, or the score log cannot keep a score; HubSpot retries
    answer = await _batcher(state).answer(state, accepted)
    return _output(ScoreResponse.model_validate_json(answer))


def _signed_uri(request: Request, public_url: str | None) -> str:
    if not public_url:
        return str(request.url)
    query = request.url.query
    return public_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


def _verified(request: Request, state: AppState, body: bytes) -> ActionIn:
    """The action, once its signature is HubSpot's (401 otherwise; 400 for a body that is
    not an action)."""
    settings = state.settings
    if settings.hubspot_client_secret is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "no HubSpot client secret is "
                            "configured (PROPENSITY_HUBSPOT_CLIENT_SECRET): nothing is signed")
    try:
        signatures.check(settings.hubspot_client_secret.get_secret_value(), request.method,
                         _signed_uri(request, settings.crm_public_url), body, request.headers,
                         int(time.time() * 1000))
    except signatures.SignatureError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    try:
        return ActionIn.model_validate_json(body)
    except ValidationError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            f"not a workflow action request: {_invalid(exc)}") from None


def may_block(state: AppState, action: ActionIn) -> bool:
    """The action opted in to BLOCK (input field `propensity_when_busy` = BLOCK), and this
    scorer can complete it later (it has a HubSpot access token)."""
    wanted = str(action.inputFields.get(WHEN_BUSY, "")).strip().upper() == "BLOCK"
    return wanted and state.settings.hubspot_access_token is not None


async def _block(state: AppState, action: ActionIn, body: bytes, reason: str
                 ) -> dict[str, Any]:
    return await run_in_threadpool(
        callbacks.block, state.log.engine, action.callbackId, str(action.origin.portalId),
        str(action.object.objectId), body, reason, datetime.now(UTC),
        state.settings.crm_block_hours)


async def _answer_action(state: AppState, action: ActionIn, body: bytes) -> dict[str, Any]:
    """Scored now, or BLOCKed for later (opted in, and the scorer cannot score it now)."""
    try:
        output = await score_action(state, action)
    except HTTPException as exc:  # 503: no champion yet, or no score can be kept
        if exc.status_code != status.HTTP_503_SERVICE_UNAVAILABLE or \
                not may_block(state, action):
            raise
        return await _block(state, action, body, str(exc.detail))
    # one round trip stores the answer unless one is stored (a retry): the stored one wins,
    # so a retry is answered alike (its own score is only logged)
    return await run_in_threadpool(
        store.keep_answer, state.log.engine, action.callbackId,
        str(action.origin.portalId), str(action.object.objectId), output)


@router.post(HUBSPOT_PATH.removeprefix("/v1/crm"), responses={
    400: {"description": "the body is not a workflow action request", **ERROR_BODY},
    429: {"description": "PROPENSITY_CRM_MAX_IN_FLIGHT actions in flight on this worker "
                         "(Retry-After)", **ERROR_BODY}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{ActionIn.__name__}"}}}}})
async def hubspot_action(request: Request) -> Response:
    """A HubSpot custom workflow action: the contact scored, as outputFields (or BLOCK, to be
    completed later, when the action opted in and the scorer cannot score it now)."""
    global _in_flight
    state: AppState = request.app.state.propensity
    body = await request.body()
    action = _verified(request, state, body)
    if _in_flight >= state.settings.crm_max_in_flight:
        if may_block(state, action):
            output = await _block(state, action, body, f"{_in_flight} actions in flight")
            return Response(json.dumps({"outputFields": output}),
                            media_type="application/json")
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            f"{_in_flight} actions in flight on this worker "
                            "(PROPENSITY_CRM_MAX_IN_FLIGHT)", headers={"Retry-After": "1"})
    _in_flight += 1
    try:
        output = await _answer_action(state, action, body)
    finally:
        _in_flight -= 1
    return Response(json.dumps({"outputFields": output}), media_type="application/json")


def _note(state: AppState, note: soap.Notification, mapping: CrmMapping,
          ) -> tuple[str, Accepted | None, Outcome | None]:
    """What became of one notification (so far), its lead accepted for scoring, its outcome."""
    try:
        if note.object_type == "Lead":
            body, outcome = records.salesforce_lead(note.fields, mapping)
            accepted = admit(state, [LeadIn.model_validate(body)], explain=False)
            return "scored" + (f"; entered {outcome.stage}" if outcome else ""), accepted, outcome
        if note.object_type == "Opportunity":
            outcome = records.salesforce_outcome(note.fields, mapping,
                                                 state.settings.salesforce_lead_field)
            return ("open: nothing to record" if outcome is None else
                    f"outcome {outcome.stage} of lead {outcome.lead_id}"), None, outcome
        return f"ignored: {note.object_type} notifications are not read", None, None
    except LeadInputError as exc:
        return f"refused: {_refusal(exc)}", None, None
    except (records.RecordError, PropensityError) as exc:
        return f"refused: {exc}", None, None
    except ValidationError as exc:
        return f"refused: {_invalid(exc)}", None, None
    except HTTPException as exc:
        if exc.status_code not in REFUSALS:
            raise  # 503: no Ack, Salesforce delivers again later
        return f"refused: {_refusal(exc)}", None, None


async def _notifications(state: AppState, message: soap.OutboundMessage,
                         new: list[soap.Notification]) -> list[dict[str, Any]]:
    """Score the Lead notifications together, store every outcome, and say of each
    notification what became of it."""
    mapping = _mapping_or_500("salesforce", state.settings.crm_mapping_file)
    rows: list[dict[str, Any]] = []
    outcomes: list[Outcome] = []
    scored: list[tuple[dict[str, Any], Accepted]] = []
    for note in new:
        result, accepted, outcome = _note(state, note, mapping)
        rows.append({"notification_id": note.id, "organization_id": message.organization_id,
                     "object_type": note.object_type, "record_id": note.fields.get("Id") or "",
                     "result": result})
        outcomes += [outcome] if outcome is not None else []
        if accepted is not None:
            scored.append((rows[-1], accepted))
    if scored:
        for (row, _), answer in zip(scored, await answers(state, [a for _, a in scored]),
                                    strict=True):
            lead = json.loads(answer)["scores"][0]
            row["result"] += f": score {lead['score']} ({lead['grade']})"
    await run_in_threadpool(record, state.log.engine, outcomes)
    return rows


@router.post(SALESFORCE_PATH.removeprefix("/v1/crm"), responses={
    400: {"description": "the body is not a Salesforce notifications envelope (not "
                         "well-formed XML, a DTD or an entity, too large)"}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "text/xml": {"schema": {"type": "string",
                                "description": "a SOAP notifications envelope"}}}}})
async def salesforce_outbound(request: Request) -> Response:
    """A Salesforce Outbound Message: Leads scored, won and lost Opportunities stored as
    outcomes, acknowledged once every notification is recorded."""
    state: AppState = request.app.state.propensity
    settings = state.settings
    try:
        message = soap.parse(await request.body(), settings.salesforce_max_bytes)
    except soap.EnvelopeError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    if not soap.same_org(message.organization_id, settings.salesforce_org_ids):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"organisation "
                            f"{message.organization_id} is not in PROPENSITY_SALESFORCE_ORG_IDS")
    engine = state.log.engine
    seen = await run_in_threadpool(store.known, engine, [n.id for n in message.notifications])
    new = list({n.id: n for n in message.notifications if n.id not in seen}.values())
    rows = await _notifications(state, message, new)
    await run_in_threadpool(store.record_notifications, engine, rows)
    return Response(soap.ACK, media_type="text/xml")
