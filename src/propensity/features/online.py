"""The online executor: feature inputs for one lead as a CRM describes it, in microseconds.

A request carries a lead, its events and stage history, and optionally its opportunities and
its account's other contacts; a pandas DataFrame per request would cost 20-40 ms, so this
gathers the same `FeatureInputs` the batch executor builds, with a few small numpy arrays,
and the same definitions compute the features. `tests/model/test_features.py` checks the two
executors agree on every column, and the scorer's parity test checks it over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from propensity.coding import Vocabulary, category_text, number
from propensity.contract import CLOCK_SKEW, UNKNOWN_WHEN_MISSING, stage_rank
from propensity.features.definitions import (
    PERSONA_GROUPS,
    FeaturePlan,
    account_attribute_columns,
    lead_attribute_columns,
)
from propensity.features.inputs import FeatureInputs, concat, empty
from propensity.problems import PropensityError
from propensity.timestamps import DAY_US, NEVER, micros

_PERSONA = {p: i for i, p in enumerate(PERSONA_GROUPS)}
_SKEW_US = CLOCK_SKEW.value // 1_000  # nanoseconds -> microseconds


class LeadInputError(PropensityError):
    """A lead the contract refuses, as validation refuses an export's rows: times that cannot
    be (scored anyway, it got "created -2147 days ago" as a reason and a confident
    probability), text where the model reads a number. `loc` is where, from the lead on."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _code_or_none(code: Callable[[str, int], int], text: str | None, unseen: int) -> int:
    """-1 for a missing value, else its code (`unseen` for one the spec does not know)."""
    return -1 if text is None else int(code(text, unseen))


def persona_code(value: Any) -> int:
    return _PERSONA.get(category_text(value) or "unknown", -1)


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
            if category_text(r.get("status")) == "open" and r.get("closed_at") is not None:
                raise LeadInputError(("opportunities", k, "closed_at"), "an open opportunity "
                                     "has no closed_at (the contract's open_with_close_date)")
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
                    fill_unknown: bool) -> np.ndarray:
        out = np.full((1, len(columns)), np.nan)
        if values is None:
            return out
        for i, (name, vocabulary) in enumerate(columns):
            value = values.get(name)
            if fill_unknown and name in UNKNOWN_WHEN_MISSING and category_text(value) is None:
                value = "unknown"
            out[0, i] = number(value) if vocabulary is None else vocabulary.code(value)
        return out

    def inputs(self, lead: OnlineLead) -> FeatureInputs:
        t = micros(lead.as_of)
        created = micros(lead.created_at)
        earliest = created - _SKEW_US  # the contract's clock skew: a CRM's clock runs ahead
        if t < earliest:
            raise LeadInputError(("as_of",), f"as_of {lead.as_of.isoformat()} is more than a "
                                 "day before the lead was created "
                                 f"({lead.created_at.isoformat()}): a lead is scored from its "
                                 "creation on (without as_of: created_at is in the future)")
        attrs = lead.attributes
        has_account = category_text(attrs.get("account_id")) is not None
        n_types, n_channels = len(self.types), len(self.channels)
        type_code, channel_code = self.types.get, self.channels.get
        events = lead.events  # comprehensions, not a loop: ~half the cost
        when = np.array([micros(e["occurred_at"]) for e in events], dtype="int64")
        if when.size and when.min() < earliest:
            raise LeadInputError(("events", int(when.argmin()), "occurred_at"),
                                 "more than one day before the lead was created (the "
                                 "contract's event_before_lead_created)")
        past = when < t  # only events before as_of go further, and only they are read
        if not past.all():
            events = [e for e, keep in zip(events, past.tolist(), strict=True) if keep]
            when = when[past]
        types = np.array([type_code(e["event_type"], n_types) for e in events], dtype="int64")
        channels = np.array([  # the common case (a non-empty text) skips category_text
            channel_code(c, n_channels) if type(c := e.get("channel")) is str and c
            else _code_or_none(channel_code, category_text(c), n_channels) for e in events],
            dtype="int64")
        values = np.array([v if type(v := e.get("value")) is float else number(v)
                           for e in events], dtype="float64")
        age = (t - when) / DAY_US
        entries = self._stage_entries(lead, earliest)
        stage_rows = [(self.ranks[s], w) for s, w in entries if s in self.ranks and w < t]
        opps = lead.opportunities
        if opps is not None:
            won = (opps.closed != NEVER) & ~opps.lost
            early = np.flatnonzero(won & (opps.closed < earliest))
            if early.size:
                raise LeadInputError(("opportunities", int(early[0]), "closed_at"),
                                     "won more than one day before the lead was created (the "
                                     "contract's conversion_before_lead_created)")
        o = np.flatnonzero(opps.created < t) if opps is not None else empty()
        x = FeatureInputs(
            n=1, as_of=np.array([t], dtype="int64"), created=np.array([created], dtype="int64"),
            lead_attributes=self._attributes(attrs, self.lead_columns, True),
            account_attributes=self._attributes(lead.account if has_account else None,
                                                self.account_columns, False),
            has_account=np.array([has_account]),
            event_row=np.zeros(age.size, dtype="int64"), event_age=age, event_type=types,
            event_channel=channels, event_value=values,
            stage_row=np.zeros(len(stage_rows), dtype="int64"),
            stage_rank=np.array([r for r, _ in stage_rows], dtype="int64"),
            stage_time=np.array([w for _, w in stage_rows], dtype="int64"),
            opportunity_row=np.zeros(o.size, dtype="int64"),
            opportunity_closed=opps.closed[o] if opps is not None else empty(),
            opportunity_lost=opps.lost[o] if opps is not None else empty("bool"),
            opportunity_amount=opps.amount[o] if opps is not None else empty("float64"),
            contact_row=empty(), account_event_row=empty(), account_event_age=empty("float64"),
            account_event_contact=empty(), account_event_persona=empty(),
        )
        if self.committee and has_account:
            self._committee(x, lead, t, created, age)
        return x

    def _stage_entries(self, lead: OnlineLead, earliest: int) -> list[tuple[str, int]]:
        """The lead's stage entries (history rows, then its current stage), in microseconds;
        what validation refuses in an export's stage_history is refused here: an entry before
        `earliest` (more than a day before the lead was created), a stage entered before a
        lower one."""
        rows = [(s, micros(w)) for s, w in lead.stage_history]
        current = [] if lead.stage is None else [(lead.stage[0], micros(lead.stage[1]))]
        for j, (s, w) in enumerate(rows + current):
            if w < earliest:
                rule = ("conversion_before_lead_created" if s == self.final_stage
                        else "stage_before_lead_created")
                loc: tuple[str | int, ...] = (("stage_history", j, "entered_at") if j < len(rows)
                                              else ("stage_entered_at",))
                raise LeadInputError(loc, f"entered {s} more than one day before the lead was "
                                     f"created (the contract's {rule})")
        ranked = sorted((self.ranks[s], w, j) for j, (s, w) in enumerate(rows)
                        if s in self.ranks)
        latest: int | None = None  # the latest entry of the lower ranks so far
        previous_rank = None
        for rank, w, j in ranked:
            if rank != previous_rank and latest is not None and w < latest:
                raise LeadInputError(("stage_history", j, "entered_at"), "entered before a "
                                     "lower stage of the same lead (the contract's "
                                     "stages_out_of_order)")
            latest = w if latest is None else max(latest, w)
            previous_rank = rank
        return rows + current

    @staticmethod
    def _committee(x: FeatureInputs, lead: OnlineLead, t: int, created: int,
                   own_age: np.ndarray) -> None:
        """The lead is contact 0 of its account; the context's contacts follow it."""
        ctx = lead.contacts
        own_persona = persona_code(lead.attributes.get("persona"))
        if ctx is None:
            x.contact_row = np.zeros(int(created < t), dtype="int64")
            x.account_event_row = np.zeros(own_age.size, dtype="int64")
            x.account_event_age = own_age
            x.account_event_contact = np.zeros(own_age.size, dtype="int64")
            x.account_event_persona = np.full(own_age.size, own_persona, dtype="int64")
            return
        x.contact_row = np.zeros(int(created < t) + int((ctx.created < t).sum()), dtype="int64")
        past = ctx.event_time < t
        other_age = (t - ctx.event_time[past]) / DAY_US
        who = ctx.event_contact[past]
        x.account_event_age = np.concatenate([own_age, other_age])
        x.account_event_row = np.zeros(x.account_event_age.size, dtype="int64")
        x.account_event_contact = np.concatenate([np.zeros(own_age.size, dtype="int64"),
                                                  who + 1])
        x.account_event_persona = np.concatenate([
            np.full(own_age.size, own_persona, dtype="int64"), ctx.persona[who]])

    def row(self, lead: OnlineLead) -> np.ndarray:
        """The lead's feature vector, in the plan's column order."""
        return self.plan.matrix(self.inputs(lead))[0]

    def inputs_of(self, leads: Sequence[OnlineLead]) -> list[FeatureInputs]:
        """Each lead's inputs; a lead the contract refuses raises LeadInputError located at
        its position (`(i, *field)`)."""
        parts = []
        for i, lead in enumerate(leads):
            try:
                parts.append(self.inputs(lead))
            except LeadInputError as exc:  # the pyfunc's caller sees the message alone
                raise LeadInputError((i, *exc.loc), f"lead {lead.lead_id!r}: {exc}") from None
        return parts

    def matrix_of(self, parts: Sequence[FeatureInputs]) -> np.ndarray:
        """The rows of leads' inputs, in order, computed in one pass of the definitions:
        leads scored together (a request's, or requests' that arrived together) pay the
        definitions' fixed cost once."""
        if not parts:
            return np.zeros((0, len(self.plan.columns)))
        return self.plan.matrix(concat(parts))

    def matrix(self, leads: Sequence[OnlineLead]) -> np.ndarray:
        """The leads' rows (see `inputs_of` for a lead the contract refuses)."""
        return self.matrix_of(self.inputs_of(leads))
