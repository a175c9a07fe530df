"""POST /v1/score: calibrated probabilities, scores, grades and reasons for CRM leads."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from starlette.concurrency import run_in_threadpool

from propensity.context import ContextFrom, ContextSource, fill_account
from propensity.features.online import (
    AccountContext,
    LeadInputError,
    LeadRows,
    OnlineLead,
    OpportunityRows,
)
from propensity.models.bundle import ModelBundle
from propensity.models.reasons import explain
from propensity.scoring import Scored, score_matrix
from propensity.thresholds import ThresholdSet, to_score
from propensity.timestamps import as_utc, micros
from serving.deps import AppState, body_doc, json_body
from serving.limits import check_score_request
from serving.model_store import Loaded
from serving.schemas import (
    ContextUsed,
    LeadIn,
    LeadScore,
    ModelRef,
    ReasonOut,
    Reasons,
    ScoreRequest,
    ScoreResponse,
)

router = APIRouter(prefix="/v1", tags=["score"])
MAIN, NEXT = "lead-conversion", "stage-advancement"


def _invalid(loc: list[Any], msg: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                         [{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


def check_stages(lead: LeadIn, loc: list[Any], stages: list[str]) -> None:
    """A lead's stages are the champion's funnel stages (or an end: disqualified, lost)."""
    allowed = [*stages, "disqualified", "lost"]
    if lead.stage is not None and lead.stage not in allowed:
        raise _invalid([*loc, "stage"],
                       f"unknown stage {lead.stage!r}; stages are {', '.join(stages)}")
    for j, row in enumerate(lead.stage_history):
        if row.stage not in allowed:
            raise _invalid([*loc, "stage_history", j, "stage"],
                           f"unknown stage {row.stage!r}; stages are {', '.join(stages)}")


def online_lead(lead: LeadIn, i: int, now: datetime, stages: list[str],
                source: ContextSource | None, account_fields: Sequence[str] = (),
                ) -> tuple[OnlineLead, ContextUsed]:
    """A request's lead as the online executor's input; what it leaves out of its account
    context (the account's attributes, field by field, its other contacts, the lead's
    opportunities) comes from the data source when that knows the lead (or its account)."""
    if lead.created_at is None:
        raise _invalid(["leads", i, "created_at"], "Field required: the champion was trained "
                       "on an export and needs when each lead was created")
    check_stages(lead, ["leads", i], stages)
    history = [(row.stage, row.entered_at) for row in lead.stage_history]
    stage = None  # a stage without its entry time counts from creation
    if lead.stage is not None:
        stage = (lead.stage, lead.stage_entered_at or lead.created_at)
    attributes = lead.attributes()
    account = lead.account
    known = None
    if source is not None and lead.account_id is not None:
        known = source.account(lead.account_id)
    account_attributes, used_account = fill_account(
        None if account is None else account.model_extra, known, account_fields)
    if lead.account_id is None:  # without an account the model reads none of it
        used_account = {}
    contacts: AccountContext | None = None
    used_contacts: ContextFrom = "none"
    used_opps: ContextFrom = "none"
    if account is not None and account.contacts is not None:
        contacts = AccountContext.of([
            (c.created_at, c.persona, [e["occurred_at"] for e in c.events])
            for c in account.contacts if c.lead_id != lead.lead_id])
        used_contacts = "request"
    elif source is not None and lead.account_id is not None:
        contacts = source.contacts(lead.account_id, lead.lead_id)
        used_contacts = "none" if contacts is None else "data source"
    opportunities: OpportunityRows | None = None
    if lead.opportunities is not None:
        opportunities = OpportunityRows.of([o.model_dump() for o in lead.opportunities])
        used_opps = "request"
    elif source is not None:
        opportunities = source.opportunities(lead.lead_id)
        used_opps = "none" if opportunities is None else "data source"
    return OnlineLead(
        lead_id=lead.lead_id, created_at=lead.created_at, as_of=lead.as_of or now,
        attributes=attributes, events=lead.events, stage_history=history, stage=stage,
        account=account_attributes, opportunities=opportunities, contacts=contacts,
    ), ContextUsed(account=used_account, contacts=used_contacts, opportunities=used_opps)


def input_hash(lead_id: str, as_of: datetime, row: np.ndarray) -> str:
    """SHA-256 of what the model saw: the lead's id, the time it was scored as of and its
    feature vector. Inputs the model cannot tell apart hash alike whatever their JSON looks
    like (key order, spacing, events at or after `as_of`, unused attributes), and hashing the
    vector costs a few microseconds where re-serialising a lead with 50 events cost 35."""
    text = f"{lead_id}\x1f{as_of.isoformat()}\x1f".encode()
    return hashlib.sha256(text + np.ascontiguousarray(row, dtype="float64").tobytes()).hexdigest()


ScoreBody = Annotated[ScoreRequest, Depends(json_body(ScoreRequest, "score"))]


@router.post("/score", response_model=ScoreResponse, openapi_extra=body_doc(ScoreRequest))
async def score(body: ScoreBody, request: Request) -> Response:
    """Score 1 to 1,000 leads: probability, score, grade, MQL flag and the reasons."""
    return Response(await scored_json(request.app.state.propensity, body),
                    media_type="application/json")


async def scored_json(state: AppState, body: ScoreRequest) -> bytes:
    """The answer to a parsed score request, as JSON: the route's (the fast path runs the
    same `accept` and `answers`, for several requests at once)."""
    return (await answers(state, [accept(state, body)]))[0]


@dataclass
class Accepted:
    """A score request every check has passed: what is left to do cannot refuse it."""

    body: ScoreRequest
    loaded: Loaded
    now: datetime
    leads: list[OnlineLead]
    """Export models: the leads as the online executor reads them."""
    inputs: list[LeadRows]
    """Export models: each lead's feature inputs, read and checked."""
    X: np.ndarray | None
    """Single-table models: the request's matrix."""
    used: list[ContextUsed | None]

    @property
    def n(self) -> int:
        return len(self.body.leads)


def accept(state: AppState, body: ScoreRequest) -> Accepted:
    """Every check of a score request, and the work that can refuse it (reading its leads):
    an HTTPException for each refusal, raised before any side effect, so a caller may run a
    refused request again and change nothing."""
    check_score_request(body.leads, state.settings)
    if not state.log.accepting:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "the database is unreachable and the score log's local spool is "
                            "full: no score is served that could not be kept",
                            headers={"Retry-After": "30"})
    loaded = state.store.get(MAIN)
    if loaded is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"no {MAIN} champion is loaded: train and promote one")
    now = datetime.now(UTC)
    bundle = loaded.bundle
    leads: list[OnlineLead] = []
    used: list[ContextUsed | None] = []
    if bundle.kind != "export":
        try:  # text where a number is read
            X = bundle.features_for_records([lead.attributes() for lead in body.leads])
        except LeadInputError as exc:
            raise _invalid(["leads", *exc.loc], str(exc)) from None
        return Accepted(body, loaded, now, leads, [], X, [None] * len(body.leads))
    stages = list(bundle.plan.spec.stages)
    source = state.context
    fields = [name for name, _ in bundle.online.account_columns]
    seen: dict[tuple[str, int | None], int] = {}
    for i, lead in enumerate(body.leads):
        # a lead may be scored as of several times in one request (a backfill), but
        # twice as of the same time is two answers to one question
        key = (lead.lead_id, None if lead.as_of is None else micros(lead.as_of))
        if (first := seen.setdefault(key, i)) != i:
            raise _invalid(["leads", i, "lead_id"], f"lead {lead.lead_id!r} is also "
                           f"leads[{first}], as of the same time: one score per lead, "
                           "time and request")
        try:  # the opportunities' rows are read here
            x, context = online_lead(lead, i, now, stages, source, fields)
        except LeadInputError as exc:
            raise _invalid(["leads", i, *exc.loc], str(exc)) from None
        leads.append(x)
        used.append(context)
    try:  # what the contract refuses in an export's rows
        inputs = bundle.online.read_all(leads)
    except LeadInputError as exc:
        at, *where = exc.loc
        ctx = used[int(at)]
        if where[:1] == ["opportunities"] and ctx is not None and (
                ctx.opportunities == "data source"):
            # not a field of the request: its created_at is what disagrees with them
            raise _invalid(["leads", at, "created_at"], f"{exc}: an opportunity the data "
                           "source holds for this lead") from None
        raise _invalid(["leads", *exc.loc], str(exc)) from None
    return Accepted(body, loaded, now, leads, inputs, None, used)


def _scored(bundle: ModelBundle, X: np.ndarray, group: Sequence[Accepted]) -> list[Scored]:
    """Each request's share of one matrix: contributions for the rows of the requests that
    asked for reasons (and only for them), probabilities for all."""
    spans = list(itertools.pairwise(np.cumsum([0, *(a.n for a in group)]).tolist()))
    out: list[Scored | None] = [None] * len(group)
    for flag in {a.body.explain for a in group}:
        mine = [k for k, a in enumerate(group) if a.body.explain == flag]
        rows = slice(None) if len(mine) == len(group) else np.concatenate(
            [np.arange(*spans[k]) for k in mine])
        part = score_matrix(bundle, X[rows], explain=flag)
        at = 0
        for k in mine:
            end = at + group[k].n
            out[k] = Scored(part.X[at:end], part.probability[at:end],
                            None if part.contributions is None else part.contributions[at:end])
            at = end
    return [s for s in out if s is not None]


async def answers(state: AppState, accepted: Sequence[Accepted]) -> list[bytes]:
    """The answers to accepted requests, as JSON, scored together: their leads' features in
    one pass of the definitions and one call of each model, which costs little more than one
    lead's (the fast path gathers the requests that arrive together, `serving.batching`)."""
    thresholds = state.thresholds.fresh(MAIN)
    if thresholds is None:  # a query, perhaps to a database that hangs: off the event loop
        thresholds = await run_in_threadpool(state.thresholds.active, MAIN)
    next_model = state.store.get(NEXT)
    groups: dict[int, list[int]] = {}  # one group unless a new champion came in between
    for k, acc in enumerate(accepted):
        groups.setdefault(id(acc.loaded), []).append(k)
    scored: list[Scored] = [None] * len(accepted)  # type: ignore[list-item]
    p_next: list[np.ndarray | None] = [None] * len(accepted)
    for members in groups.values():
        group = [accepted[k] for k in members]
        bundle = group[0].loaded.bundle
        if bundle.kind == "export":
            X = bundle.online.matrix_of([x for acc in group for x in acc.inputs])
        else:
            X = np.vstack([acc.X for acc in group if acc.X is not None])
        nxt = None
        if next_model is not None and bundle.kind == "export" and (
                next_model.bundle.kind == "export"):
            nb = next_model.bundle
            nxt = nb.predict(X) if nb.matrix_key == bundle.matrix_key else nb.predict(
                nb.online.matrix([x for acc in group for x in acc.leads]))
        start = 0
        for k, part in zip(members, _scored(bundle, X, group), strict=True):
            scored[k] = part
            p_next[k] = None if nxt is None else nxt[start:start + accepted[k].n]
            start += accepted[k].n
    payloads, log_rows = [], []
    for acc, part, nxt in zip(accepted, scored, p_next, strict=True):
        payload, rows = _answer(acc, part, nxt, thresholds, next_model)
        payloads.append(payload)
        log_rows.append(rows)
    # the side effects, after the last thing that can fail: the log rows first, on local disk
    # before anything is answered (one append and fdatasync for the requests answered
    # together); a disk that refuses them refuses the requests, nothing else done yet
    try:
        await state.log.commit([row for rows in log_rows for row in rows])
    except OSError:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "the score log cannot be kept on local disk: no score is served "
                            "that could not be kept", headers={"Retry-After": "30"}) from None
    grades = Counter(row["grade"] for rows in log_rows for row in rows)
    for grade, n in grades.items():
        state.metrics.scores.labels(MAIN, grade).inc(n)
    for acc, part in zip(accepted, scored, strict=True):
        loaded = acc.loaded
        if loaded.binning is None:
            continue
        # drift's counters: one add per request and as_of day
        days = [as_utc(x.as_of).date() for x in acc.leads] or [acc.now.date()] * acc.n
        distinct = sorted(set(days))
        for d in distinct:
            which = slice(None) if len(distinct) == 1 else [
                i for i, day in enumerate(days) if day == d]
            state.log.counters.add((MAIN, loaded.version, d), loaded.binning, part.X[which],
                                   part.probability[which])
    return payloads


def _answer(acc: Accepted, scored: Scored, p_next: np.ndarray | None, thresholds: ThresholdSet,
            next_model: Loaded | None) -> tuple[bytes, list[dict[str, Any]]]:
    """One request's JSON and its score log rows."""
    loaded, now, bundle = acc.loaded, acc.now, acc.loaded.bundle
    p = scored.probability
    names, cats = bundle.feature_names, bundle.categories
    results, log_rows = [], []
    for i, lead in enumerate(acc.body.leads):
        reasons = None
        if scored.contributions is not None:
            pos, neg = explain(names, scored.X[i], scored.contributions[i, :-1], cats)
            reasons = Reasons(positive=[ReasonOut(**r.__dict__) for r in pos],
                              negative=[ReasonOut(**r.__dict__) for r in neg])
        s = to_score(float(p[i]))
        grade = thresholds.grade(s)
        results.append(LeadScore(
            lead_id=lead.lead_id, probability=float(p[i]), score=s, grade=grade,  # type: ignore[arg-type]
            mql=thresholds.is_mql(s), reasons=reasons, context=acc.used[i],
            next_stage=None if p_next is None else float(p_next[i])))
        as_of = as_utc(lead.as_of) if lead.as_of else now
        log_rows.append({"scored_at": now, "lead_id": lead.lead_id, "probability": float(p[i]),
                         "score": s, "grade": grade, "mql": thresholds.is_mql(s),
                         "model_name": MAIN, "model_version": loaded.version,
                         "threshold_version": thresholds.version,
                         "input_hash": input_hash(lead.lead_id, as_of, scored.X[i]),
                         "as_of": as_of})
    out = ScoreResponse(
        model=ModelRef(name=MAIN, version=loaded.version, horizon_days=bundle.horizon_days,
                       fallback="fallback" in bundle.info),
        threshold_version=thresholds.version,
        next_stage_model=None if next_model is None or p_next is None else ModelRef(
            name=NEXT, version=next_model.version, horizon_days=next_model.bundle.horizon_days,
            fallback="fallback" in next_model.bundle.info),
        scores=results)
    # built and checked above: serialised once instead of FastAPI validating it again
    return out.model_dump_json().encode(), log_rows
