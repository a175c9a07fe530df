"""The online executor: feature inputs for one lead as a CRM describes it, in microseconds.

A request carries a lead, its events and stage history, and optionally its opportunities and
its account's other contacts; a pandas DataFrame per request would cost 20-40 ms, so this
gathers the same `FeatureInputs` the batch executor builds, with a few small numpy arrays,
and the same definitions compute the features. `tests/model/test_features.py` checks the two
executors agree on every column, and the scorer's parity test checks it over HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any

import numpy as np

from propensity import lead_rules as rules
from propensity.coding import Vocabulary, category_text, number
from propensity.contract import UNKNOWN_WHEN_MISSING, stage_rank
from propensity.features.definitions import (
    FeaturePlan,
    account_attribute_columns,
    lead_attribute_columns,
    persona_code,
)
from propensity.features.inputs import FeatureInputs
from propensity.problems import PropensityError
from propensity.timestamps import DAY_US, NEVER, micros


class LeadInputError(PropensityError):
    """A lead the contract refuses, as validation refuses an export's rows: times that cannot
    be (scored anyway, it got "created -2147 days ago" as a reason and a confident
    probability), text where the model reads a number. `loc` is where, from the lead on."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def finite_number(value: Any, loc: tuple[str | int, ...]) -> float:
    """`number(value)`, refused when it is infinite (text such as "inf" or "1e999"): a model
    has no answer for it (a logistic term of +inf beside one of -inf is NaN, and a 500)."""
    x = number(value)
    if math.isinf(x):
        raise LeadInputError(loc, f"{value!r} is not a finite number")
    return x


def _code_or_none(code: Callable[[str, int], int], text: str | None, unseen: int) -> int:
    """-1 for a missing value, else its code (`unseen` for one the spec does not know)."""
    return -1 if text is None else int(code(text, unseen))


@dataclass(frozen=True)
class AccountContext:
    """The other contacts of a lead's account: who they are and when each of them engaged."""

    created: np.ndarray
    """int64 microseconds, one per contact."""
    persona: np.ndarray
    """index into PERSONA_GROUPS, -1 for any other."""
    event_contact: np.ndarray
    """index into the contacts, one per event."""
    event_time: np.ndarray

    @classmethod
    def of(cls, contacts: Sequence[tuple[datetime, Any, Sequence[datetime]]]) -> AccountContext:
        """From (created_at, persona, event times) per contact."""
        times = [micros(t) for _, _, events in contacts for t in events]
        owner = [i for i, (_, _, events) in enumerate(contacts) for _ in events]
        return cls(created=np.array([micros(c[0]) for c in contacts], dtype="int64"),
                   persona=np.array([persona_code(c[1]) for c in contacts], dtype="int64"),
                   event_contact=np.array(owner, dtype="int64"),
                   event_time=np.array(times, dtype="int64"))


@dataclass(frozen=True)
class OpportunityRows:
    """A lead's opportunities, as in the opportunities table (without lead_id)."""

    created: np.ndarray
    closed: np.ndarray
    """NEVER while open."""
    lost: np.ndarray
    amount: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[Mapping[str, Any]]) -> OpportunityRows:
        for k, r in enumerate(rows):  # what validation refuses in an export's rows
            if rules.open_with_close_date(category_text(r.get("status")) == "open",
                                          r.get("closed_at") is not None):
                raise LeadInputError(("opportunities", k, "closed_at"),
                                     rules.OPEN_WITH_CLOSE_DATE.refusal())
        return cls(
            created=np.array([micros(r["created_at"]) for r in rows], dtype="int64"),
            closed=np.array([NEVER if r.get("closed_at") is None else micros(r["closed_at"])
                             for r in rows], dtype="int64"),
            lost=np.array([category_text(r.get("status")) == "lost" for r in rows], dtype=bool),
            amount=np.array([number(r.get("amount")) for r in rows], dtype="float64"))


@dataclass
class OnlineLead:
    """One lead as a request describes it. Events are mappings with `occurred_at` (a datetime),
    `event_type`, and optionally `channel` and `value` (the events table without lead_id)."""

    lead_id: str
    created_at: datetime
    as_of: datetime
    attributes: Mapping[str, Any]
    """source, campaign, persona, owner_id, product, account_id and any other lead column."""
    events: Sequence[Mapping[str, Any]] = ()
    stage_history: Sequence[tuple[str, datetime]] = ()
    """Rows of the stage history (the stage_history table without lead_id)."""
    stage: tuple[str, datetime] | None = None
    """The lead's current stage and when it entered it (from creation when the CRM does not
    say): one more entry of its history, but not a row of it."""
    account: Mapping[str, Any] | None = None
    """The account's attributes."""
    opportunities: OpportunityRows | None = None
    contacts: AccountContext | None = None
    """The account's other contacts (the lead itself is added by the executor)."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LeadRows:
    """One lead's feature inputs as plain values, read and checked (`OnlineFeatures.read`):
    what `OnlineFeatures.gather` turns into the arrays of any number of leads at once."""

    as_of: int
    created: int
    lead_attributes: list[float]
    account_attributes: list[float]
    has_account: bool
    event_time: list[int]
    event_type: list[int]
    event_channel: list[int]
    event_value: list[float]
    stage_rank: list[int] = field(default_factory=list)
    stage_time: list[int] = field(default_factory=list)
    opportunity_closed: list[int] = field(default_factory=list)
    opportunity_lost: list[bool] = field(default_factory=list)
    opportunity_amount: list[float] = field(default_factory=list)
    contacts: int = 0
    """The account's contacts created before as_of, the lead included (0 without one)."""
    account_event_time: list[int] = field(default_factory=list)
    account_event_contact: list[int] = field(default_factory=list)
    account_event_persona: list[int] = field(default_factory=list)


class OnlineFeatures:
    """The online executor of one feature plan: everything that can be prepared once is."""

    def __init__(self, plan: FeaturePlan) -> None:
        spec = plan.spec
        self.plan = plan
        self.lead_columns = [(c.name, None if c.categories is None else Vocabulary(c.categories))
                             for c in lead_attribute_columns(spec)]
        self.account_columns = [(c.name, None if c.categories is None else Vocabulary(
            c.categories)) for c in account_attribute_columns(spec)]
        self.types = {t: i for i, t in enumerate(spec.event_types)}
        self.channels = {c: i for i, c in enumerate(spec.channels)}
        self.ranks = stage_rank(spec.stages)
        self.final_stage = spec.stages[-1]
        self.committee = spec.has_accounts

    @staticmethod
    def _attributes(values: Mapping[str, Any] | None, columns: list[tuple[str, Vocabulary | None]],
                    fill_unknown: bool, where: tuple[str, ...] = ()) -> list[float]:
        if values is None:
            return [np.nan] * len(columns)
        out = []
        for name, vocabulary in columns:
            value = values.get(name)
            if fill_unknown and name in UNKNOWN_WHEN_MISSING and category_text(value) is None:
                value = "unknown"
            out.append(finite_number(value, (*where, name)) if vocabulary is None
                       else float(vocabulary.code(value)))
        return out

    def read(self, lead: OnlineLead) -> LeadRows:
        """The lead's inputs as plain values, checked as validation checks an export's rows
        (LeadInputError, located from the lead on). Only what happened before `as_of` is kept."""
        t = micros(lead.as_of)
        created = micros(lead.created_at)
        if rules.too_early(t, created):  # the contract's clock skew: a CRM's clock runs ahead
            raise LeadInputError(("as_of",), f"as_of {lead.as_of.isoformat()} is more than a "
                                 "day before the lead was created "
                                 f"({lead.created_at.isoformat()}): a lead is scored from its "
                                 "creation on (without as_of: created_at is in the future)")
        attrs = lead.attributes
        has_account = category_text(attrs.get("account_id")) is not None
        rows = LeadRows(
            as_of=t, created=created,
            lead_attributes=self._attributes(attrs, self.lead_columns, True),
            account_attributes=self._attributes(lead.account if has_account else None,
                                                self.account_columns, False, ("account",)),
            has_account=has_account, event_time=[], event_type=[], event_channel=[],
            event_value=[])
        self._events(rows, lead.events)
        for s, w in self._stage_entries(lead, created - rules.SKEW_US):
            if s in self.ranks and w < t:
                rows.stage_rank.append(self.ranks[s])
                rows.stage_time.append(w)
        if lead.opportunities is not None:
            self._opportunities(rows, lead.opportunities)
        if self.committee and has_account:
            self._committee(rows, lead, t, created)
        return rows

    def _events(self, rows: LeadRows, events: Sequence[Mapping[str, Any]]) -> None:
        """The events before as_of, coded (comprehensions, not a loop: ~half the cost)."""
        t = rows.as_of
        when = [micros(e["occurred_at"]) for e in events]
        if when and rules.too_early(first := min(when), rows.created):
            raise LeadInputError(("events", when.index(first), "occurred_at"),
                                 rules.EVENT_BEFORE_LEAD_CREATED.refusal())
        if when and max(when) >= t:  # only events before as_of go further, and only they are read
            past = [w < t for w in when]
            events = [e for e, keep in zip(events, past, strict=True) if keep]
            when = [w for w in when if w < t]
        rows.event_time = when
        self._code_events(rows, events)

    def _code_events(self, rows: LeadRows, events: Sequence[Mapping[str, Any]]) -> None:
        n_types, n_channels = len(self.types), len(self.channels)
        type_code, channel_code = self.types.get, self.channels.get
        rows.event_type = [type_code(e["event_type"], n_types) for e in events]
        rows.event_channel = [  # the common case (a non-empty text) skips category_text
            channel_code(c, n_channels) if type(c := e.get("channel")) is str and c
            else _code_or_none(channel_code, category_text(c), n_channels) for e in events]
        rows.event_value = [v if type(v := e.get("value")) is float else number(v)
                            for e in events]

    @staticmethod
    def _opportunities(rows: LeadRows, opps: OpportunityRows) -> None:
        """The opportunities opened before as_of (a win too early is refused)."""
        closed, lost = opps.closed.tolist(), opps.lost.tolist()
        for k, (c, gone) in enumerate(zip(closed, lost, strict=True)):
            if rules.won_too_early(c != NEVER and not gone, c, rows.created):
                raise LeadInputError(("opportunities", k, "closed_at"),
                                     rules.CONVERSION_BEFORE_LEAD_CREATED.refusal(
                                         "won more than one day before the lead was created"))
        amount = opps.amount.tolist()
        for k, c in enumerate(opps.created.tolist()):
            if c < rows.as_of:
                rows.opportunity_closed.append(closed[k])
                rows.opportunity_lost.append(lost[k])
                rows.opportunity_amount.append(amount[k])

    @staticmethod
    def _committee(rows: LeadRows, lead: OnlineLead, t: int, created: int) -> None:
        """The lead is contact 0 of its account; the context's contacts follow it."""
        own = persona_code(lead.attributes.get("persona"))
        rows.contacts = int(created < t)
        rows.account_event_time = list(rows.event_time)
        rows.account_event_contact = [0] * len(rows.event_time)
        rows.account_event_persona = [own] * len(rows.event_time)
        ctx = lead.contacts
        if ctx is None:
            return
        rows.contacts += sum(c < t for c in ctx.created.tolist())
        persona = ctx.persona.tolist()
        for when, who in zip(ctx.event_time.tolist(), ctx.event_contact.tolist(), strict=True):
            if when < t:
                rows.account_event_time.append(when)
                rows.account_event_contact.append(who + 1)
                rows.account_event_persona.append(persona[who])

    def gather(self, leads: Sequence[LeadRows]) -> FeatureInputs:
        """The feature inputs of leads read by `read`, rows in order: each array is made once
        for all of them (a numpy call costs about a microsecond whatever its size)."""
        n = len(leads)
        as_of = np.array([r.as_of for r in leads], dtype="int64")

        def flat(name: str, dtype: str) -> np.ndarray:
            if n == 1:
                return np.array(getattr(leads[0], name), dtype=dtype)
            return np.array(list(chain.from_iterable(getattr(r, name) for r in leads)),
                            dtype=dtype)

        def owner(counts: list[int]) -> np.ndarray:
            """The entity row of each item, from the items per lead."""
            if n == 1:
                return np.zeros(counts[0], dtype="int64")
            return np.repeat(np.arange(n, dtype="int64"), counts)

        def items(name: str) -> np.ndarray:
            return owner([len(getattr(r, name)) for r in leads])

        def age(rows: np.ndarray, times: np.ndarray) -> np.ndarray:
            return (as_of[rows] - times) / DAY_US

        event_row = items("event_time")
        account_event_row = items("account_event_time")
        return FeatureInputs(
            n=n, as_of=as_of, created=np.array([r.created for r in leads], dtype="int64"),
            lead_attributes=np.array([r.lead_attributes for r in leads],
                                     dtype="float64").reshape(n, len(self.lead_columns)),
            account_attributes=np.array([r.account_attributes for r in leads],
                                        dtype="float64").reshape(n, len(self.account_columns)),
            has_account=np.array([r.has_account for r in leads], dtype=bool),
            event_row=event_row, event_age=age(event_row, flat("event_time", "int64")),
            event_type=flat("event_type", "int64"), event_channel=flat("event_channel", "int64"),
            event_value=flat("event_value", "float64"),
            stage_row=items("stage_rank"), stage_rank=flat("stage_rank", "int64"),
            stage_time=flat("stage_time", "int64"),
            opportunity_row=items("opportunity_closed"),
            opportunity_closed=flat("opportunity_closed", "int64"),
            opportunity_lost=flat("opportunity_lost", "bool"),
            opportunity_amount=flat("opportunity_amount", "float64"),
            contact_row=owner([r.contacts for r in leads]),
            account_event_row=account_event_row,
            account_event_age=age(account_event_row, flat("account_event_time", "int64")),
            account_event_contact=flat("account_event_contact", "int64"),
            account_event_persona=flat("account_event_persona", "int64"),
        )

    def _stage_entries(self, lead: OnlineLead, earliest: int) -> list[tuple[str, int]]:
        """The lead's stage entries (history rows, then its current stage), in microseconds;
        what validation refuses in an export's stage_history is refused here: an entry before
        `earliest` (more than a day before the lead was created), a stage entered before a
        lower one."""
        rows = [(s, micros(w)) for s, w in lead.stage_history]
        current = [] if lead.stage is None else [(lead.stage[0], micros(lead.stage[1]))]
        for j, (s, w) in enumerate(rows + current):
            if w < earliest:
                loc: tuple[str | int, ...] = (("stage_history", j, "entered_at") if j < len(rows)
                                              else ("stage_entered_at",))
                raise LeadInputError(loc, rules.stage_entry_rule(s, self.final_stage).refusal(
                    f"entered {s} more than one day before the lead was created"))
        ranked = sorted((self.ranks[s], w, j) for j, (s, w) in enumerate(rows)
                        if s in self.ranks)
        latest: int | None = None  # the latest entry of the lower ranks so far
        previous_rank = None
        for rank, w, j in ranked:
            if rank != previous_rank and latest is not None and w < latest:
                raise LeadInputError(("stage_history", j, "entered_at"),
                                     rules.STAGES_OUT_OF_ORDER.refusal())
            latest = w if latest is None else max(latest, w)
            previous_rank = rank
        return rows + current

    def read_all(self, leads: Sequence[OnlineLead]) -> list[LeadRows]:
        """Each lead read (`read`); a lead the contract refuses raises LeadInputError located
        at its position (`(i, *field)`)."""
        out = []
        for i, lead in enumerate(leads):
            try:
                out.append(self.read(lead))
            except LeadInputError as exc:  # the pyfunc's caller sees the message alone
                raise LeadInputError((i, *exc.loc), f"lead {lead.lead_id!r}: {exc}") from None
        return out

    def matrix_of(self, leads: Sequence[LeadRows]) -> np.ndarray:
        """The rows of read leads, in order, in one pass of the definitions: leads scored
        together (a request's, or requests' that arrived together) pay the definitions' fixed
        cost once."""
        if not leads:
            return np.zeros((0, len(self.plan.columns)))
        return self.plan.matrix(self.gather(leads))

    def matrix(self, leads: Sequence[OnlineLead]) -> np.ndarray:
        """The leads' rows (see `read_all` for a lead the contract refuses)."""
        return self.matrix_of(self.read_all(leads))
