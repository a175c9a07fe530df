"""The scorer's side of scoring leads: what `POST /v1/score`, its fast path and batcher, and
the CRMs' callbacks share around the library's pipeline (`propensity.lead_scoring`).

The library reads and scores the leads; this adds what only a server has: its limits, the
champion it has loaded and its thresholds, the score log (a score is answered once its row is
kept), the metrics and drift's counters. `admit` (`accept` for a request body) raises every
refusal before any side effect, so a caller may run a refused request again and change nothing;
`answers` cannot refuse a request any more, and scores accepted requests together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException, status
from starlette.concurrency import run_in_threadpool

from propensity.features.online import LeadInputError
from propensity.lead_scoring import (
    LeadOutlook,
    LeadScore,
    ReadLeads,
    ScoredLeads,
    logged_outlook,
    read_records,
    score_read,
)
from propensity.models.bundle import learner_name
from propensity.models.reasons import Reason
from propensity.targets import LEAD_CONVERSION, STAGE_ADVANCEMENT
from propensity.thresholds import ThresholdSet
from serving.deps import AppState
from serving.limits import check_score_request
from serving.model_store import Loaded
from serving.schemas import (
    ContextUsed,
    ModelRef,
    ReasonOut,
    Reasons,
    ScoreRequest,
    ScoreResponse,
)
from serving.schemas import (
    LeadScore as LeadScoreOut,
)

MAIN, NEXT = LEAD_CONVERSION, STAGE_ADVANCEMENT


def invalid(loc: Sequence[Any], msg: str) -> HTTPException:
    """A 422 naming the field, as FastAPI names the fields its validation refuses."""
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                         [{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


def unkept() -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the score log cannot be kept "
                         "on local disk: no score is served that could not be kept",
                         headers={"Retry-After": "30"})


@dataclass
class Accepted:
    """Leads every check has passed: what is left to do cannot refuse them."""

    loaded: Loaded
    now: datetime
    read: ReadLeads

    @property
    def n(self) -> int:
        return self.read.n


def admit(state: AppState, leads: Sequence[Any], explain: bool, outlook: bool = False, *,
          model: Loaded | None = None, logged: bool = True) -> Accepted:
    """Every check of leads to score, and the work that can refuse them (reading them): an
    HTTPException for the server's refusals (413 over a limit, 503 when no score could be
    kept or no champion is loaded), `LeadInputError` for a lead the contract refuses.
    `model`: the champion that reads them (lead conversion's when None); `logged`: whether
    the answer keeps score-log rows, so that a full spool refuses it (a target's keeps none)."""
    check_score_request(leads, state.settings)
    if logged and not state.log.accepting:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "the database is unreachable and the score log's local spool is "
                            "full: no score is served that could not be kept",
                            headers={"Retry-After": "30"})
    loaded = state.store.get(MAIN) if model is None else model
    if loaded is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"no {MAIN} champion is loaded: train and promote one")
    now = datetime.now(UTC)
    read = read_records(loaded.bundle, leads, now, explain=explain, source=state.context,
                        outlook=outlook)
    return Accepted(loaded, now, read)


def accept(state: AppState, body: ScoreRequest, *, model: Loaded | None = None,
           logged: bool = True) -> Accepted:
    """`admit` for a score request: a lead the contract refuses is a 422 naming its field."""
    try:
        return admit(state, body.leads, body.explain, body.outlook, model=model, logged=logged)
    except LeadInputError as exc:
        raise invalid(["leads", *exc.loc], str(exc)) from None


async def answers(state: AppState, accepted: Sequence[Accepted]) -> list[bytes]:
    """The answers to accepted requests, as JSON, scored together (`score_read`); their log
    rows kept, the metrics and drift's counters counted, after the last thing that can fail."""
    thresholds = state.thresholds.fresh(MAIN)
    if thresholds is None:  # a query, perhaps to a database that hangs: off the event loop
        thresholds = await run_in_threadpool(state.thresholds.active, MAIN)
    next_model = state.store.get(NEXT)
    scored = score_read([a.read for a in accepted], thresholds,
                        None if next_model is None else next_model.bundle)
    rows = [row for acc, s in zip(accepted, scored, strict=True)
            for row in _log_rows(acc, s.scores, thresholds)]
    # the log rows first, on local disk before anything is answered (one append and its
    # fdatasync for the requests scored together); a disk that refuses them refuses the
    # requests
    try:
        await state.log.commit(rows, len(accepted))
    except OSError:
        raise unkept() from None
    for grade, n in Counter(row["grade"] for row in rows).items():
        state.metrics.scores.labels(MAIN, grade).inc(n)
    for acc, s in zip(accepted, scored, strict=True):
        _count_drift(state, acc, s)
    return [_response(acc, s.scores, thresholds, next_model)
            for acc, s in zip(accepted, scored, strict=True)]


def _count_drift(state: AppState, acc: Accepted, scored: ScoredLeads) -> None:
    """Drift's counters: one add per request and as_of day."""
    loaded = acc.loaded
    if loaded.binning is None:
        return
    days = [t.date() for t in acc.read.as_of]
    distinct = sorted(set(days))
    for d in distinct:
        which = slice(None) if len(distinct) == 1 else [
            i for i, day in enumerate(days) if day == d]
        state.log.counters.add((MAIN, loaded.version, d), loaded.binning, scored.X[which],
                               scored.probability[which])


def _log_rows(acc: Accepted, scores: list[LeadScore], thresholds: ThresholdSet,
              ) -> list[dict[str, Any]]:
    return [{"scored_at": acc.now, "lead_id": s.lead_id, "probability": s.probability,
             "score": s.score, "grade": s.grade, "mql": s.mql, "model_name": MAIN,
             "model_version": acc.loaded.version, "threshold_version": thresholds.version,
             "input_hash": s.input_hash, "as_of": s.as_of, **logged_outlook(s.outlook)}
            for s in scores]


def reasons_out(pair: tuple[list[Reason], list[Reason]] | None) -> Reasons | None:
    """Reasons in the wire shape (None when the request asked for none)."""
    if pair is None:
        return None
    pos, neg = pair
    return Reasons(positive=[ReasonOut(**r.__dict__) for r in pos],
                   negative=[ReasonOut(**r.__dict__) for r in neg])


def _outlook(o: LeadOutlook | None) -> dict[str, Any]:
    """A lead's outlook fields of its score (none: they stay null)."""
    if o is None:
        return {}
    return {"horizons": {str(d): p for d, p in o.horizons.items()},
            "expected_days": o.expected_days, "expected_amount": o.expected_amount,
            "amount_low": o.amount_low, "amount_high": o.amount_high,
            "expected_revenue": o.expected_revenue,
            "amount_reasons": reasons_out(o.amount_reasons)}


def model_ref(name: str, loaded: Loaded) -> ModelRef:
    """Which model answered, as every score response names it."""
    return ModelRef(name=name, version=loaded.version, horizon_days=loaded.bundle.horizon_days,
                    fallback="fallback" in loaded.bundle.info,
                    learner=learner_name(loaded.bundle.learner))


def _response(acc: Accepted, scores: list[LeadScore], thresholds: ThresholdSet,
              next_model: Loaded | None) -> bytes:
    """One request's JSON."""
    out = ScoreResponse(
        model=model_ref(MAIN, acc.loaded), threshold_version=thresholds.version,
        next_stage_model=None if next_model is None or not scores or scores[0].next_stage is None
        else model_ref(NEXT, next_model),
        scores=[LeadScoreOut(
            lead_id=s.lead_id, probability=s.probability, score=s.score,
            grade=s.grade, mql=s.mql, reasons=reasons_out(s.reasons),  # type: ignore[arg-type]
            context=None if s.context is None else ContextUsed(
                account=s.context.account, contacts=s.context.contacts,
                opportunities=s.context.opportunities),
            next_stage=s.next_stage, **_outlook(s.outlook)) for s in scores])
    # built and checked above: serialised once instead of FastAPI validating it again
    return out.model_dump_json().encode()
