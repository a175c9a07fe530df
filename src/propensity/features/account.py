"""Features of an account as of t: its firmographics, its buying committee, its leads summed up.

Built from the lead features of every lead of the account created before t, so an account's
numbers obey the same point-in-time rule as its leads' and need no second implementation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from propensity.features.asof import SortedEvents, before
from propensity.features.lead import build_lead_features
from propensity.features.spec import FeatureSpec
from propensity.funnel.journeys import to_micros
from propensity.tables import CrmExport


def build_account_features(export: CrmExport, spec: FeatureSpec,
                           entities: pd.DataFrame) -> pd.DataFrame:
    leads = export.leads.reset_index(drop=True)
    accounts = leads["account_id"].astype("str").where(leads["account_id"].notna())
    codes, uniques = pd.factorize(accounts)
    ent_acc = pd.Index(uniques).get_indexer(entities["account_id"].astype("str").to_numpy())
    as_of = to_micros(entities["as_of"])
    contacts = SortedEvents.build(codes, to_micros(leads["created_at"]), len(uniques))
    rows, ev, _ = before(contacts, ent_acc, as_of)
    lead_rows = contacts.order[ev]
    per_lead = build_lead_features(export, spec, pd.DataFrame({
        "lead_id": leads["lead_id"].to_numpy()[lead_rows],
        "as_of": entities["as_of"].to_numpy()[rows],
    }))
    per_lead["current_stage"] = per_lead["current_stage"].cat.codes.astype("float64")
    numeric = [c for c in per_lead.columns if pd.api.types.is_numeric_dtype(per_lead[c])]
    agg: dict[str, str] = {}
    for col in numeric:
        if col.startswith("account_"):
            agg[col] = "first"
        elif col.startswith(("n_", "decayed", "value_sum", "open_opp", "lost_opp")):
            agg[col] = "sum"
        elif col.startswith("days_since"):
            agg[col] = "min"
        else:
            agg[col] = "max"
    per_lead["_row"] = rows
    grouped = per_lead.groupby("_row")
    extra = {"n_leads": grouped.size()}
    for col in spec.account_categorical:
        extra[f"account_{col}"] = grouped[f"account_{col}"].first()
    out = pd.concat([grouped.agg(agg), pd.DataFrame(extra)], axis=1)
    out = out.rename(columns={"current_stage": "max_stage_index"})
    out = out.reindex(np.arange(len(entities)))
    out.index = entities.index
    return out
