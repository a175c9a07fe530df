"""Scoring leads as a CRM sends them: the one pipeline the scorer's route, its fast path and
batcher, the CRMs' callbacks and the MLflow pyfunc all run.

Leads in (`OnlineLead`, or records read by `propensity.lead_input`), a model and its
thresholds, scored leads out: probability, score, grade, MQL flag, reasons, the next stage's
probability, where the context came from, and the hash of what the model saw. It runs in two
steps so that callers can score several requests together: `read_*` does every check and
all that can refuse a lead (a `LeadInputError` located at the lead and field, before anything
is scored), `score_read` scores any number of read batches in one pass of the feature
definitions and one call of each model (a numpy call costs about a microsecond whatever its
size, so leads scored together pay the fixed costs once).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from propensity.context import ContextSource
from propensity.features.online import LeadInputError, LeadRows, OnlineLead
from propensity.lead_input import (
    NOT_ATTRIBUTES,
    ContextOrigin,
    fields_of,
    maybe_time,
    online_lead,
)
from propensity.models.bundle import ModelBundle
from propensity.models.outlook import HORIZONS, Predicted
from propensity.models.reasons import Reason, explain
from propensity.thresholds import ThresholdSet, to_score
from propensity.timestamps import as_utc, micros


@dataclass
class Scored:
    """Leads scored one by one: their matrix, probabilities, and contributions when asked."""

    X: np.ndarray
    probability: np.ndarray
    contributions: np.ndarray | None


def score_matrix(bundle: ModelBundle, X: np.ndarray, explain: bool) -> Scored:
    """Probabilities of a model matrix's rows, and their contributions when asked (the
    probability is then calibrated from the contributions' sum: one pass of the trees)."""
    if not len(X):
        return Scored(X, np.zeros(0), None)
    if explain:
        p, contrib = bundle.predict_with_contributions(X)
        return Scored(X, p, contrib)
    return Scored(X, bundle.predict(X), None)


@dataclass
class ReadLeads:
    """Leads every check has passed, for one model: what is left to do cannot refuse them."""

    bundle: ModelBundle
    lead_ids: list[str]
    as_of: list[datetime]
    """UTC, one per lead: when each is scored as of."""
    explain: bool
    leads: list[OnlineLead]
    """Export models: the leads as the online executor reads them."""
    inputs: list[LeadRows]
    """Export models: each lead's feature inputs, read and checked."""
    X: np.ndarray | None
    """Single-table models: the leads' matrix."""
    context: list[ContextOrigin | None]
    outlook: bool = True
    """Give each lead its outlook (when the model ships one): `LeadOutlook`."""

    @property
    def n(self) -> int:
        return len(self.lead_ids)


@dataclass
class LeadOutlook:
    """How much and when, for one lead, from the model's outlook (`models.outlook`); None
    where the model has no answer (no won amount in its history)."""

    horizons: dict[int, float]
    """Days -> P(converted within them of as_of), non-decreasing in the days."""
    expected_days: float | None
    """Median days to convert, among the leads like it that will."""
    expected_amount: float | None
    amount_low: float | None
    """The 80% interval of the amount its deal would be won for: 10% below low..."""
    amount_high: float | None
    """...and 10% above high."""
    expected_revenue: float | None
    """P(converted within the outlook's revenue window) x expected_amount."""
    amount_reasons: tuple[list[Reason], list[Reason]] | None
    """(positive, negative) top features of the amount (impact in log amount), when asked."""


def logged_outlook(outlook: LeadOutlook | None) -> dict[str, float | None]:
    """The outlook's part of a score log row (`score_log`, migration 0010): what monitoring
    sets beside the amounts won and the days taken; every key present, None without one (a
    batch of rows is inserted as one statement)."""
    if outlook is None:
        return {"p_by_90": None, "expected_days": None, "expected_amount": None}
    return {"p_by_90": outlook.horizons.get(90), "expected_days": outlook.expected_days,
            "expected_amount": outlook.expected_amount}


def _number(x: float) -> float | None:
    return None if math.isnan(x) else x


def outlooks(bundle: ModelBundle, X: np.ndarray, with_reasons: bool | np.ndarray
             ) -> list[LeadOutlook] | None:
    """Each row's outlook from the model matrix the probability was scored from (None when
    the model ships none); the amount's reasons for the rows `with_reasons` marks. The
    figures leave numpy as lists of Python floats, one `tolist` each (reading them one numpy
    scalar at a time cost a one-lead request ~20 us)."""
    if bundle.outlook is None or not len(X):
        return None
    asked = np.broadcast_to(np.asarray(with_reasons, dtype=bool), (len(X),))
    seen: Predicted = bundle.outlook.predict(X, explain=asked)
    names, cats = bundle.feature_names, bundle.categories
    horizons = seen.horizons.tolist()
    figures = np.column_stack([seen.expected_days, seen.expected_amount, seen.amount_low,
                               seen.amount_high, seen.expected_revenue]).tolist()
    out = []
    for i, (days, amount, low, high, revenue) in enumerate(figures):
        reasons = None
        if seen.contributions is not None and asked[i]:
            reasons = explain(names, X[i], seen.contributions[i, :-1], cats)
        out.append(LeadOutlook(
            horizons=dict(zip(HORIZONS, horizons[i], strict=True)),
            expected_days=_number(days), expected_amount=_number(amount),
            amount_low=_number(low), amount_high=_number(high),
            expected_revenue=_number(revenue), amount_reasons=reasons))
    return out


@dataclass
class LeadScore:
    """One lead scored."""

    lead_id: str
    as_of: datetime
    probability: float
    score: int
    grade: str
    mql: bool
    reasons: tuple[list[Reason], list[Reason]] | None
    """(positive, negative), when asked for."""
    next_stage: float | None
    context: ContextOrigin | None
    input_hash: str
    outlook: LeadOutlook | None = None
    """When the request asked for it and the model ships one."""


@dataclass
class ScoredLeads:
    """A read batch scored: each lead's answer, and the matrix and probabilities (drift's
    counters bin them)."""

    scores: list[LeadScore]
    X: np.ndarray
    probability: np.ndarray


def input_hash(lead_id: str, as_of: datetime, row: np.ndarray) -> str:
    """SHA-256 of what the model saw: the lead's id, the time it was scored as of and its
    feature vector. Inputs the model cannot tell apart hash alike whatever their JSON looks
    like (key order, spacing, events at or after `as_of`, unused attributes), and hashing the
    vector costs a few microseconds where re-serialising a lead with 50 events cost 35."""
    text = f"{lead_id}\x1f{as_of.isoformat()}\x1f".encode()
    return hashlib.sha256(text + np.ascontiguousarray(row, dtype="float64").tobytes()).hexdigest()


def read_leads(bundle: ModelBundle, leads: Sequence[OnlineLead], *, explain: bool = True,
               context: Sequence[ContextOrigin | None] | None = None,
               outlook: bool = True) -> ReadLeads:
    """Leads of a model trained on an export, read and checked as validation checks an
    export's rows: `LeadInputError` located at `(position, *field)` for the first refused."""
    used: list[ContextOrigin | None] = [None] * len(leads) if context is None else list(context)
    try:
        inputs = bundle.online.read_all(leads)
    except LeadInputError as exc:
        at, *where = exc.loc
        origin = used[int(at)]
        if where[:1] == ["opportunities"] and origin is not None and (
                origin.opportunities == "data source"):
            # not a field the caller sent: its created_at is what disagrees with them
            raise LeadInputError((at, "created_at"), f"{exc}: an opportunity the data "
                                 "source holds for this lead") from None
        raise
    return ReadLeads(bundle, [x.lead_id for x in leads], [as_utc(x.as_of) for x in leads],
                     explain, list(leads), inputs, None, used, outlook)


def _one_answer_each(records: Sequence[Mapping[str, Any]]) -> None:
    """A lead may be scored as of several times in one call (a backfill), but twice as of the
    same time is two answers to one question."""
    seen: dict[tuple[str, int | None], int] = {}
    for i, lead in enumerate(records):
        as_of = maybe_time(lead.get("as_of"))
        key = (str(lead["lead_id"]), None if as_of is None else micros(as_of))
        if (first := seen.setdefault(key, i)) != i:
            raise LeadInputError((i, "lead_id"), f"lead {lead['lead_id']!r} is also "
                                 f"leads[{first}], as of the same time: one score per lead, "
                                 "time and request")


def read_records(bundle: ModelBundle, records: Sequence[Any], now: datetime, *,
                 explain: bool = True, source: ContextSource | None = None,
                 outlook: bool = True) -> ReadLeads:
    """Leads as a CRM describes them (mappings, or a parsed request's leads), read for the
    model and checked: `LeadInputError` at `(position, *field)`. An export's model reads them
    through the online executor, with what they leave out of their context from `source`; a
    single-table model reads their attributes."""
    rows = [fields_of(r) for r in records]
    if bundle.kind != "export":
        X = bundle.features_for_records(  # text where a number is read: LeadInputError
            [{k: v for k, v in r.items() if k not in NOT_ATTRIBUTES} for r in rows])
        as_of = [as_utc(maybe_time(r.get("as_of")) or now) for r in rows]
        return ReadLeads(bundle, [str(r["lead_id"]) for r in rows], as_of, explain, [], [], X,
                         [None] * len(rows))
    _one_answer_each(rows)
    stages = list(bundle.plan.spec.stages)
    fields = [name for name, _ in bundle.online.account_columns]
    leads, used = [], []
    for i, row in enumerate(rows):
        try:
            lead, origin = online_lead(row, now, source=source, account_fields=fields,
                                       stages=stages)
        except LeadInputError as exc:  # named as `OnlineFeatures.read_all` names a lead
            raise LeadInputError((i, *exc.loc), f"lead {row['lead_id']!r}: {exc}") from None
        leads.append(lead)
        used.append(origin)
    return read_leads(bundle, leads, explain=explain, context=used, outlook=outlook)


def _parts(bundle: ModelBundle, X: np.ndarray, group: Sequence[ReadLeads]) -> list[Scored]:
    """Each batch's share of one matrix: contributions for the rows of the batches that asked
    for reasons (and only for them), probabilities for all."""
    spans = list(itertools.pairwise(np.cumsum([0, *(r.n for r in group)]).tolist()))
    out: list[Scored | None] = [None] * len(group)
    for flag in {r.explain for r in group}:
        mine = [k for k, r in enumerate(group) if r.explain == flag]
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


def _outlook_parts(bundle: ModelBundle, X: np.ndarray, group: Sequence[ReadLeads]
                   ) -> list[list[LeadOutlook] | None]:
    """Each batch's outlooks (for the batches that asked), from one matrix and one call of
    each outlook model; the amount's reasons only for the batches that asked for reasons."""
    wanted = [k for k, r in enumerate(group) if r.outlook]
    out: list[list[LeadOutlook] | None] = [None] * len(group)
    if bundle.outlook is None or not wanted:
        return out
    spans = list(itertools.pairwise(np.cumsum([0, *(r.n for r in group)]).tolist()))
    rows = slice(None) if len(wanted) == len(group) else np.concatenate(
        [np.arange(*spans[k]) for k in wanted])
    asked = np.concatenate([np.full(group[k].n, group[k].explain) for k in wanted])
    every = outlooks(bundle, X[rows], asked) or []
    at = 0
    for k in wanted:
        out[k] = every[at:at + group[k].n]
        at += group[k].n
    return out


def _next_stage(group: Sequence[ReadLeads], X: np.ndarray,
                next_bundle: ModelBundle | None) -> np.ndarray | None:
    """The next stage's probabilities of a group's leads (export models only): from the same
    matrix when both models read the same one."""
    bundle = group[0].bundle
    if next_bundle is None or bundle.kind != "export" or next_bundle.kind != "export":
        return None
    if next_bundle.matrix_key == bundle.matrix_key:
        return next_bundle.predict(X)
    return next_bundle.predict(next_bundle.online.matrix([x for r in group for x in r.leads]))


def _answers(read: ReadLeads, scored: Scored, p_next: np.ndarray | None,
             thresholds: ThresholdSet, views: list[LeadOutlook] | None) -> list[LeadScore]:
    bundle = read.bundle
    names, cats = bundle.feature_names, bundle.categories
    out = []
    for i, (lead_id, as_of) in enumerate(zip(read.lead_ids, read.as_of, strict=True)):
        p = float(scored.probability[i])
        reasons = None
        if scored.contributions is not None:
            reasons = explain(names, scored.X[i], scored.contributions[i, :-1], cats)
        s = to_score(p)
        out.append(LeadScore(
            lead_id=lead_id, as_of=as_of, probability=p, score=s, grade=thresholds.grade(s),
            mql=thresholds.is_mql(s), reasons=reasons,
            next_stage=None if p_next is None else float(p_next[i]), context=read.context[i],
            input_hash=input_hash(lead_id, as_of, scored.X[i]),
            outlook=None if views is None else views[i]))
    return out


def score_read(batches: Sequence[ReadLeads], thresholds: ThresholdSet,
               next_bundle: ModelBundle | None = None) -> list[ScoredLeads]:
    """Read batches scored together, each batch's answers in order: one matrix and one call
    of each model per model (one unless a new champion came in between their reads)."""
    groups: dict[int, list[int]] = {}
    for k, read in enumerate(batches):
        groups.setdefault(id(read.bundle), []).append(k)
    out: list[ScoredLeads | None] = [None] * len(batches)
    for members in groups.values():
        group = [batches[k] for k in members]
        bundle = group[0].bundle
        if bundle.kind == "export":
            X = bundle.online.matrix_of([x for r in group for x in r.inputs])
        else:
            X = np.vstack([r.X for r in group if r.X is not None])
        p_next = _next_stage(group, X, next_bundle)
        start = 0
        for k, read, part, views in zip(members, group, _parts(bundle, X, group),
                                        _outlook_parts(bundle, X, group), strict=True):
            mine = None if p_next is None else p_next[start:start + read.n]
            out[k] = ScoredLeads(_answers(read, part, mine, thresholds, views), part.X,
                                 part.probability)
            start += read.n
    return [s for s in out if s is not None]


def score_leads(bundle: ModelBundle, leads: Sequence[OnlineLead], thresholds: ThresholdSet,
                *, explain: bool = True, next_bundle: ModelBundle | None = None,
                ) -> list[LeadScore]:
    """Leads of a model trained on an export, scored: the entry point for one call (see
    `read_records` for leads as a CRM describes them, `score_read` for several calls)."""
    return score_read([read_leads(bundle, leads, explain=explain)], thresholds,
                      next_bundle)[0].scores
