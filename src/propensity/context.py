"""A lead's account context from a CRM export, for the scorer running beside one (`serve --data`).

A CRM posting one lead rarely sends the rest of the buying committee; when the scorer knows the
export, it fills in what a request leaves out: the account's attributes (industry, employees,
...: field by field, a field the request sends is the request's), the lead's opportunities and
the other contacts of its account with their engagement times. The online executor then cuts
everything at the request's `as_of`, exactly as the batch executor cuts the export, so a lead
scored over HTTP with its context from the data source gets its batch score.

Everything is indexed once (arrays sorted by lead and by account), so a lookup is a few slices,
not a scan of the export.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from propensity.coding import plain_value
from propensity.features.asof import SortedEvents
from propensity.features.definitions import persona_codes
from propensity.features.online import AccountContext, OpportunityRows
from propensity.tables import CrmExport
from propensity.timestamps import to_micros

ContextFrom = Literal["request", "data source", "none"]
"""Where a part of a lead's context came from ("none": neither the request nor the data source
has it, and the model reads it as missing)."""


def _slices(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions covered by [start, stop) ranges, and which range each came from."""
    counts = stops - starts
    owner = np.repeat(np.arange(counts.size), counts)
    offsets = np.cumsum(counts) - counts
    return np.arange(counts.sum()) - np.repeat(offsets, counts) + np.repeat(starts, counts), owner


def fill_account(requested: Mapping[str, Any] | None, known: Mapping[str, Any] | None,
                 fields: Sequence[str]) -> tuple[dict[str, Any] | None, dict[str, ContextFrom]]:
    """The account's attributes, field by field: the request's value where the request sends
    the field (null included: the CRM says it does not know), else the data source's; and,
    for each field the model reads, where its value came from. None when neither has the
    account (the model then reads every field as missing, as it would from an empty dict)."""
    if requested is None and known is None:
        return None, dict.fromkeys(fields, "none")
    sent = dict(requested or {})
    merged = {**(known or {}), **sent}
    where: dict[str, ContextFrom] = {}
    for name in fields:
        if name in sent:
            where[name] = "request"
        elif known is not None and known.get(name) is not None:
            where[name] = "data source"
        else:
            where[name] = "none"
    return merged, where


class ContextSource:
    """Account attributes, opportunities per lead and contacts per account, looked up by id."""

    def __init__(self, export: CrmExport) -> None:
        leads = export.leads.reset_index(drop=True)
        self.lead_index = pd.Index(leads["lead_id"].astype("str"))
        self.created = to_micros(leads["created_at"])
        self.persona = persona_codes(leads.get("persona"), len(leads))
        accounts = (leads["account_id"].astype("str").where(leads["account_id"].notna())
                    if "account_id" in leads else pd.Series(pd.NA, index=leads.index))
        codes, uniques = pd.factorize(accounts)
        self.account_index = pd.Index(uniques)
        self.members = SortedEvents.build(codes, np.arange(len(leads), dtype="int64"),
                                          len(uniques))
        n = len(leads)
        events = export.events
        if events is not None and len(events):
            self.events = SortedEvents.build(export.lead_positions(events["lead_id"]),
                                             to_micros(events["occurred_at"]), n)
        else:
            self.events = SortedEvents.build(np.zeros(0, "int64"), np.zeros(0, "int64"), n)
        opps = export.opportunities
        self.opps = None
        if opps is not None and len(opps):
            lead_of = export.lead_positions(opps["lead_id"])
            self.opps = SortedEvents.build(lead_of, to_micros(opps["created_at"]), n)
            self.opp_closed = to_micros(opps["closed_at"])
            self.opp_lost = (opps["status"].astype("str") == "lost").to_numpy()
            self.opp_amount = opps["amount"].to_numpy(dtype="float64", na_value=np.nan)
        # each account's row as the plain values a request would send (`rows.lead_rows` writes
        # the same values into the pyfunc's rows), so both executors code them alike
        self.accounts: dict[str, dict[str, Any]] = {}
        if export.accounts is not None and len(export.accounts):
            table = export.accounts.astype({"account_id": "str"})
            for row in table.to_dict("records"):
                self.accounts.setdefault(str(row["account_id"]), {
                    k: plain_value(v) for k, v in row.items() if k != "account_id"})

    def account(self, account_id: str) -> dict[str, Any] | None:
        """The account's attributes (None when the export has no such account)."""
        return self.accounts.get(account_id)

    def opportunities(self, lead_id: str) -> OpportunityRows | None:
        """The lead's opportunities (None when the export does not know the lead)."""
        pos = self.lead_index.get_indexer([lead_id])[0]
        if pos < 0:
            return None
        if self.opps is None:
            empty = np.zeros(0, dtype="int64")
            return OpportunityRows(empty, empty, np.zeros(0, bool), np.zeros(0))
        lo, hi = self.opps.start[pos], self.opps.start[pos + 1]
        src = self.opps.order[lo:hi]
        return OpportunityRows(created=self.opps.time[lo:hi], closed=self.opp_closed[src],
                               lost=self.opp_lost[src], amount=self.opp_amount[src])

    def contacts(self, account_id: str, lead_id: str) -> AccountContext | None:
        """The account's contacts other than the lead (None when the account is unknown)."""
        acc = self.account_index.get_indexer([account_id])[0]
        if acc < 0:
            return None
        members = self.members.order[self.members.start[acc]:self.members.start[acc + 1]]
        members = members[self.lead_index[members] != lead_id]
        ev, owner = _slices(self.events.start[members], self.events.start[members + 1])
        return AccountContext(created=self.created[members], persona=self.persona[members],
                              event_contact=owner.astype("int64"), event_time=self.events.time[ev])
