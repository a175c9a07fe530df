"""A lead as a CRM describes it, read into the online executor's `OnlineLead`: once, for every
caller. The scorer's request body and the MLflow pyfunc's rows describe a lead the same way
(a `leads` row plus `as_of`, its events, stage history, opportunities and account); the
pyfunc's nested parts arrive as JSON text and its times as text, the request's as parsed
values. Both come through `online_lead`, so they cannot drift apart.

What a request leaves out of the account context (the account's attributes, field by field,
its other contacts, the lead's opportunities) comes from the data source (`serve --data`)
when that knows the lead or its account, and `ContextOrigin` says where each part came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from propensity.coding import category_text
from propensity.context import ContextFrom, ContextSource, fill_account
from propensity.contract import TERMINAL_STAGES
from propensity.features.online import AccountContext, LeadInputError, OnlineLead, OpportunityRows
from propensity.timestamps import parse_utc

NESTED = ("events", "stage_history", "opportunities", "account")
ROW_EXTRAS = ("as_of", "stage", "stage_entered_at", *NESTED)
"""A row's columns that are not the lead's attributes."""
NOT_ATTRIBUTES = frozenset({*ROW_EXTRAS, "lead_id", "created_at"})


@dataclass(frozen=True)
class ContextOrigin:
    """Where a lead's account context came from: the request, the data source for what the
    request left out, or neither ("none": the model reads it as missing)."""

    contacts: ContextFrom = "none"
    opportunities: ContextFrom = "none"
    account: dict[str, ContextFrom] = field(default_factory=dict)
    """Each account attribute the model reads; empty for a lead without an account_id."""


def fields_of(value: Any) -> Mapping[str, Any]:
    """A record's fields: a mapping as it is, or an object's attributes (a parsed request's
    models, whose undeclared fields are their `model_extra`), without copying it deeply: a
    lead with 50 events would cost more to dump than to score."""
    if type(value) is dict or isinstance(value, Mapping):  # a dict: no ABC check (hot path)
        return value
    return {**vars(value), **(getattr(value, "model_extra", None) or {})}


def nested_json(value: object, empty: Any) -> Any:
    """A nested part: JSON text (a pyfunc row) or the parsed value; missing -> `empty`."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return empty
    if isinstance(value, str):
        return json.loads(value) if value.strip() else empty
    return value


def to_time(value: Any) -> datetime:
    """A time as given (a parsed request's datetime: as it is; text: parsed, UTC)."""
    return value if type(value) is datetime else parse_utc(value)


def maybe_time(value: Any) -> datetime | None:
    if type(value) is datetime:
        return value
    return None if category_text(value) is None else parse_utc(value)


def check_stages(stage: Any, history: Sequence[str], stages: Sequence[str]) -> None:
    """A lead's stages (its current one, its history's) are the model's funnel stages (or an
    end: disqualified, lost): `LeadInputError` located from the lead on."""
    allowed = {*stages, *TERMINAL_STAGES}
    named = ", ".join(stages)
    if stage is not None and stage not in allowed:
        raise LeadInputError(("stage",), f"unknown stage {stage!r}; stages are {named}")
    for j, s in enumerate(history):
        if s not in allowed:
            raise LeadInputError(("stage_history", j, "stage"),
                                 f"unknown stage {s!r}; stages are {named}")


def _parsed(times: list[Any]) -> list[datetime]:
    """Times as datetimes: a parsed request's as they are (one set, not a call per time)."""
    return times if {type(t) for t in times} <= {datetime} else [to_time(t) for t in times]


def _events(raw: Any) -> list[Mapping[str, Any]]:
    events = nested_json(raw, [])
    if {type(e["occurred_at"]) for e in events} <= {datetime}:
        return events  # a parsed request's: used as they are
    return [{**e, "occurred_at": to_time(e["occurred_at"])} for e in events]


def _contacts(listed: Sequence[Any], lead_id: str) -> AccountContext:
    """The account's other contacts (a contact with the lead's own id is the lead: skipped)."""
    rows = [fields_of(c) for c in listed]
    return AccountContext.of([
        (to_time(c["created_at"]), c.get("persona"), _parsed(
            [e["occurred_at"] if type(e) is dict else fields_of(e)["occurred_at"]
             for e in c.get("events") or ()]))
        for c in rows if c.get("lead_id") is None or str(c["lead_id"]) != lead_id])


def _opportunities(listed: Sequence[Any]) -> OpportunityRows:
    rows = [fields_of(o) for o in listed]
    return OpportunityRows.of([{**o, "created_at": to_time(o["created_at"]),
                                "closed_at": maybe_time(o.get("closed_at"))} for o in rows])


def _account(lead: Mapping[str, Any], lead_id: str, account_id: str | None,
             source: ContextSource | None, account_fields: Sequence[str],
             ) -> tuple[Mapping[str, Any] | None, AccountContext | None, ContextOrigin]:
    """The account's attributes and other contacts, and where they came from."""
    raw = nested_json(lead.get("account"), None)
    sent: dict[str, Any] | None = None
    listed = None
    if raw is not None:
        sent = dict(fields_of(raw))
        listed = sent.pop("contacts", None)
    known = source.account(account_id) if source is not None and account_id else None
    attributes, used = fill_account(sent, known, account_fields)
    contacts: AccountContext | None = None
    contacts_from: ContextFrom = "none"
    if listed is not None:
        contacts, contacts_from = _contacts(listed, lead_id), "request"
    elif source is not None and account_id is not None:
        contacts = source.contacts(account_id, lead_id)
        contacts_from = "none" if contacts is None else "data source"
    return attributes, contacts, ContextOrigin(
        contacts=contacts_from, account=used if account_id is not None else {})


def online_lead(record: Any, now: datetime, *, source: ContextSource | None = None,
                account_fields: Sequence[str] = (), stages: Sequence[str] | None = None,
                ) -> tuple[OnlineLead, ContextOrigin]:
    """One lead (a mapping or a parsed request's lead) as the online executor's input, and
    where its context came from. Refused with `LeadInputError`, located from the lead on:
    no created_at (a model trained on an export counts from it), a stage the model's funnel
    does not have (`stages`; None skips the check), an open opportunity with a close date."""
    lead = fields_of(record)
    lead_id = str(lead["lead_id"])
    created = maybe_time(lead.get("created_at"))
    if created is None:
        raise LeadInputError(("created_at",), "Field required: the champion was trained on an "
                             "export and needs when each lead was created")
    history = [(str(h["stage"]), to_time(h["entered_at"]))
               for h in map(fields_of, nested_json(lead.get("stage_history"), []))]
    if stages is not None:
        raw = lead.get("stage")  # text is checked, even empty; NaN in a row is no stage
        check_stages(raw if isinstance(raw, str) else category_text(raw),
                     [s for s, _ in history], stages)
    stage = None  # a stage without its entry time counts from creation
    if category_text(lead.get("stage")) is not None:
        stage = (str(lead["stage"]), maybe_time(lead.get("stage_entered_at")) or created)
    attributes = {k: v for k, v in lead.items() if k not in NOT_ATTRIBUTES}
    account_id = category_text(attributes.get("account_id"))
    account, contacts, origin = _account(lead, lead_id, account_id, source, account_fields)
    listed = nested_json(lead.get("opportunities"), None)
    opportunities: OpportunityRows | None = None
    opportunities_from: ContextFrom = "none"
    if listed is not None:
        opportunities, opportunities_from = _opportunities(listed), "request"
    elif source is not None:
        opportunities = source.opportunities(lead_id)
        opportunities_from = "none" if opportunities is None else "data source"
    return OnlineLead(
        lead_id=lead_id, created_at=created, as_of=maybe_time(lead.get("as_of")) or now,
        attributes=attributes, events=_events(lead.get("events")), stage_history=history,
        stage=stage, account=account, opportunities=opportunities, contacts=contacts,
    ), ContextOrigin(contacts=origin.contacts, opportunities=opportunities_from,
                     account=origin.account)
