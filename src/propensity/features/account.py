"""Features of an account as of t: its firmographics, its buying committee, its leads summed up.

Built from the lead features of every lead of the account created before t, so an account's
numbers obey the same point-in-time rule as its leads' and need no second implementation: each
lead column is summed, minimised or maximised over the account's leads by the rule below.
Beside them, the leads still in play at t (not disqualified or lost before t) and the highest
stage among them: an account whose only SQL lead was disqualified last month is not an account
with an SQL lead (without them the account model ranked below Odoo's lead scores aggregated
per account on 3 of 4 generated exports).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from propensity.coding import Column, as_frame
from propensity.contract import TERMINAL_STAGES
from propensity.features.asof import SortedEvents, before
from propensity.features.batch import lead_feature_matrix
from propensity.features.definitions import FeaturePlan
from propensity.tables import CrmExport, ExportIndex, index_export
from propensity.timestamps import NEVER, to_micros


def _rule(name: str) -> str:
    """How a lead column adds up over an account's leads."""
    if name.startswith("account_"):
        return "first"  # the account's own attributes and committee: the same on every lead
    if name.startswith(("n_", "decayed", "value_sum", "open_opp", "lost_opp")):
        return "sum"
    if name.startswith("days_since"):
        return "min"
    return "max"


def account_columns(plan: FeaturePlan) -> list[Column]:
    """Aggregated numeric lead columns (the stage as its index), the lead count, then the
    account's categorical attributes."""
    out = [Column("max_stage_index" if c.name == "current_stage" else c.name)
           for c in plan.columns
           if c.categories is None or c.name == "current_stage"]
    out += [Column("n_leads"), Column("n_open_leads"), Column("max_open_stage_index")]
    out += [c for c in plan.columns if c.categories is not None and c.name.startswith("account_")]
    return out


def _ended_at(export: CrmExport, leads: pd.DataFrame) -> np.ndarray:
    """Per lead row, when it first entered a terminal stage (disqualified, lost), NEVER if it
    has not: a lead ended before t is no longer in play at t, whatever stage it had reached."""
    out = np.full(len(leads), NEVER, dtype="int64")
    history = export.stage_history
    if history is None or history.empty:
        return out
    terminal = history[history["stage"].isin(TERMINAL_STAGES)]
    if terminal.empty:
        return out
    row = pd.Index(leads["lead_id"].astype("str")).get_indexer(
        terminal["lead_id"].astype("str").to_numpy())
    known = row >= 0
    np.minimum.at(out, row[known], to_micros(terminal["entered_at"])[known])
    return out


def build_account_features(export: CrmExport | ExportIndex, plan: FeaturePlan,
                           entities: pd.DataFrame) -> pd.DataFrame:
    """One row per entity row (`account_id`, `as_of`), in `account_columns` order (`export`:
    its index, when the caller holds one)."""
    ix = index_export(export)
    leads = ix.leads
    accounts = leads["account_id"].astype("str").where(leads["account_id"].notna())
    codes, uniques = pd.factorize(accounts)
    ent_acc = pd.Index(uniques).get_indexer(entities["account_id"].astype("str").to_numpy())
    as_of = to_micros(entities["as_of"])
    contacts = SortedEvents.build(codes, ix.created, len(uniques))
    rows, ev, _ = before(contacts, ent_acc, as_of)
    lead_rows = contacts.order[ev]
    per_lead = lead_feature_matrix(ix, plan, pd.DataFrame({
        "lead_id": leads["lead_id"].to_numpy()[lead_rows],
        "as_of": entities["as_of"].to_numpy()[rows],
    }))
    columns = account_columns(plan)
    frame = pd.DataFrame(per_lead, columns=plan.names)
    numeric = [c.name for c in plan.columns if c.categories is None or c.name == "current_stage"]
    frame = frame[numeric].rename(columns={"current_stage": "max_stage_index"})
    still_open = _ended_at(ix.export, leads)[lead_rows] >= as_of[rows]  # ended at t: not before
    frame["_row"] = rows
    grouped = frame.groupby("_row")
    agg = {c: _rule(c) for c in frame.columns if c != "_row"}
    open_rows = pd.Series(still_open.astype("float64")).groupby(rows)
    extra = {"n_leads": grouped.size(), "n_open_leads": open_rows.sum(),
             "max_open_stage_index": frame["max_stage_index"].where(still_open).groupby(
                 rows).max()}
    for col in columns:
        if col.categories is not None:
            extra[col.name] = pd.Series(per_lead[:, plan.index[col.name]]).groupby(rows).first()
    out = pd.concat([grouped.agg(agg), pd.DataFrame(extra)], axis=1)
    out = out.reindex(np.arange(len(entities)))
    matrix = out[[c.name for c in columns]].to_numpy(dtype="float64", na_value=np.nan)
    return as_frame(matrix, columns, entities.index)
