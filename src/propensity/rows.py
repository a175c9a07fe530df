"""Leads as flat rows: the MLflow pyfunc's input, and the examples logged with a model.
`propensity.lead_input` reads a row (or a request's lead) into the online executor's input.

A row is a `leads` row plus `as_of` and JSON columns for what a CRM sends with a lead:
`events`, `stage_history`, `opportunities` (rows without lead_id), and `account` (the
account's attributes, with its other `contacts`: persona, created_at, events). It is the
scorer's request body flattened into a table, so the pyfunc and `POST /v1/score` describe a
lead the same way and score it through the same online executor.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from propensity.coding import plain_value
from propensity.tables import CrmExport

# --- rows from an export: examples for a model's signature, and test fixtures -----------------

class _ByKey:
    """A table's rows grouped by a key column once, so taking one lead's rows is a lookup, not
    a scan of the whole table (a few hundred leads took a minute otherwise)."""

    def __init__(self, frame: pd.DataFrame | None, key: str) -> None:
        self.frame, self.key = frame, key
        self.rows: dict[str, np.ndarray] = {}
        if frame is not None:
            self.rows = {str(k): v for k, v in pd.Series(
                np.arange(len(frame))).groupby(frame[key].astype("str").to_numpy()).indices.items()}

    def records(self, value: str, t: pd.Timestamp | None, time_col: str
                ) -> list[dict[str, Any]]:
        """The key's rows dated before `t` (all of them when `t` is None)."""
        if self.frame is None or value not in self.rows:
            return []
        part = self.frame.iloc[self.rows[value]]
        mine = part if t is None else part[part[time_col] < t]
        return [{k: plain_value(v) for k, v in r.items() if k != self.key}
                for r in mine.to_dict("records")]


class _Rows:
    """An export's tables indexed once, to write one lead's row as of a time at a time."""

    def __init__(self, export: CrmExport, context: bool, cut: bool) -> None:
        self.leads = export.leads.astype({"lead_id": "str"}).set_index("lead_id", drop=False)
        self.accounts = (export.accounts.astype({"account_id": "str"}).set_index("account_id")
                         if export.accounts is not None else None)
        self.events = _ByKey(export.events, "lead_id")
        self.history = _ByKey(export.stage_history, "lead_id")
        self.opportunities = _ByKey(export.opportunities, "lead_id") if context else None
        self.by_account = _ByKey(self.leads.reset_index(drop=True), "account_id")
        self.context, self.cut = context, cut

    def row(self, lead_id: str, t: pd.Timestamp) -> dict[str, Any]:
        row = {k: plain_value(v) for k, v in self.leads.loc[lead_id].items()}
        row["as_of"] = pd.Timestamp(t).isoformat()
        until = t if self.cut else None
        row["events"] = json.dumps(self.events.records(lead_id, until, "occurred_at"))
        row["stage_history"] = json.dumps(self.history.records(lead_id, until, "entered_at"))
        if self.opportunities is not None:
            row["opportunities"] = json.dumps(self._opportunities(lead_id, t))
        account = self._account(row.get("account_id"), lead_id, t)
        row["account"] = None if account is None else json.dumps(account)
        return row

    def _opportunities(self, lead_id: str, t: pd.Timestamp) -> list[dict[str, Any]]:
        assert self.opportunities is not None
        opps = self.opportunities.records(lead_id, t if self.cut else None, "created_at")
        for o in opps if self.cut else ():  # a close after as_of has not happened yet
            if o.get("closed_at") is not None and pd.Timestamp(o["closed_at"]) >= t:
                o["closed_at"], o["status"] = None, "open"
        return opps

    def _account(self, account_id: str | None, lead_id: str, t: pd.Timestamp
                 ) -> dict[str, Any] | None:
        """The account's attributes and, with context, its other contacts."""
        if account_id is None:
            return None
        known = self.accounts is not None and account_id in self.accounts.index
        account = ({k: plain_value(v) for k, v in self.accounts.loc[account_id].items()}
                   if known and self.accounts is not None else {})
        if self.context:
            mates = self.by_account.rows.get(str(account_id), np.zeros(0, dtype="int64"))
            others = self.leads.iloc[mates]
            account["contacts"] = [self._contact(c, t) for c in others[
                others["lead_id"] != lead_id].to_dict("records")]
        return account

    def _contact(self, c: dict[str, Any], t: pd.Timestamp) -> dict[str, Any]:
        until = t if self.cut else None
        return {"lead_id": c["lead_id"], "persona": plain_value(c.get("persona")),
                "created_at": pd.Timestamp(c["created_at"]).isoformat(),
                "events": [{"occurred_at": e["occurred_at"], "event_type": e["event_type"]}
                           for e in self.events.records(c["lead_id"], until, "occurred_at")]}


def lead_rows(export: CrmExport, entities: pd.DataFrame, *, context: bool = True,
              cut: bool = True) -> pd.DataFrame:
    """Entity rows (`lead_id`, `as_of`) as pyfunc input rows with everything before `as_of`:
    events, stage history and, with `context`, opportunities and the account's contacts.
    `cut=False` keeps the rows at and after `as_of` too (as a CRM sends a lead it scores as of
    an earlier time): the online executor must cut them itself."""
    writer = _Rows(export, context, cut)
    return pd.DataFrame([writer.row(lead_id, t) for lead_id, t in zip(
        entities["lead_id"].astype("str"), entities["as_of"], strict=True)])


# --- account models: their example rows -----------------------------------------------------

def account_rows(export: CrmExport, accounts: pd.DataFrame, limit: int = 2) -> pd.DataFrame:
    """Contacts of a few accounts, as of each account row's time, as pyfunc input rows."""
    parts = []
    for account_id, t in zip(accounts["account_id"].astype("str").head(limit),
                             accounts["as_of"].head(limit), strict=True):
        leads = export.leads
        mine = leads[(leads["account_id"].astype("str") == account_id)
                     & (leads["created_at"] < t)]
        parts.append(pd.DataFrame({"lead_id": mine["lead_id"].astype("str"), "as_of": t}))
    return lead_rows(export, pd.concat(parts, ignore_index=True), context=False)
