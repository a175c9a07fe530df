"""Scoring rows that arrive one lead at a time (pyfunc input, API bodies) rather than an export.

Each row carries a lead, its `as_of` (default now) and optionally its events and current
stage; the rows become a small export so that the very same feature code runs. Events at or
after `as_of` are dropped before anything is computed.
"""

from __future__ import annotations

import json

import pandas as pd

from propensity.contract import TIMESTAMP_DTYPE
from propensity.export import to_utc
from propensity.models.bundle import ModelBundle
from propensity.tables import CrmExport

ROW_EXTRAS = ("as_of", "events", "stage", "stage_entered_at", "account", "stage_history")


def _events(value: object) -> list[dict[str, object]]:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    return list(value)  # type: ignore[call-overload]


def _mapping(value: object) -> dict[str, object]:
    if isinstance(value, str):
        return dict(json.loads(value)) if value.strip() else {}
    return dict(value) if isinstance(value, dict) else {}


def rows_to_export(frame: pd.DataFrame) -> tuple[CrmExport, pd.DataFrame]:
    """A small export and its entity frame from lead rows with nested events."""
    frame = frame.reset_index(drop=True)
    now = pd.Timestamp.now(tz="UTC")
    as_of = to_utc(frame["as_of"]) if "as_of" in frame else pd.Series(now, index=frame.index)
    as_of = as_of.fillna(now).astype(TIMESTAMP_DTYPE)
    leads = frame[[c for c in frame.columns if c not in ROW_EXTRAS]].copy()
    leads["lead_id"] = leads["lead_id"].astype("str")
    leads["created_at"] = to_utc(leads["created_at"])
    for col in ("source", "persona"):
        if col not in leads:
            leads[col] = "unknown"
        leads[col] = leads[col].fillna("unknown")
    for col in ("campaign", "account_id", "owner_id", "product"):
        if col not in leads:
            leads[col] = pd.Series(pd.NA, index=leads.index, dtype="str")
    rows = []
    for lead_id, events, t in zip(leads["lead_id"], frame.get("events", [None] * len(frame)),
                                  as_of, strict=True):
        for ev in _events(events):
            rows.append({**ev, "lead_id": lead_id, "_as_of": t})
    ev = pd.DataFrame(rows, columns=["lead_id", "occurred_at", "event_type", "channel", "value",
                                     "_as_of"])
    ev["occurred_at"] = to_utc(ev["occurred_at"])
    ev = ev[ev["occurred_at"] < ev["_as_of"]].drop(columns="_as_of")  # never the future
    ev["value"] = pd.to_numeric(ev["value"], errors="coerce")
    parts = []
    if "stage_history" in frame:
        listed = [{**r, "lead_id": lead_id} for lead_id, rows_ in zip(
            leads["lead_id"], frame["stage_history"], strict=True) for r in _events(rows_)]
        if listed:
            sh = pd.DataFrame(listed, columns=["lead_id", "stage", "entered_at"])
            parts.append(sh.assign(entered_at=to_utc(sh["entered_at"])))
    if "stage" in frame and frame["stage"].notna().any():
        # a stage without its entry time counts from the lead's creation
        entered = to_utc(frame["stage_entered_at"]) if "stage_entered_at" in frame else (
            pd.Series(pd.NaT, index=frame.index, dtype=TIMESTAMP_DTYPE))
        sh = pd.DataFrame({"lead_id": leads["lead_id"], "stage": frame["stage"],
                           "entered_at": entered.fillna(leads["created_at"])})
        parts.append(sh.dropna(subset=["stage"]))
    stage_history = pd.concat(parts, ignore_index=True) if parts else None
    accounts = None
    if "account" in frame and frame["account"].notna().any():
        records = [{**_mapping(a), "account_id": acc} for a, acc in
                   zip(frame["account"], leads["account_id"], strict=True)
                   if acc is not None and not pd.isna(acc) and a is not None]
        if records:
            accounts = pd.DataFrame(records).drop_duplicates("account_id")
    export = CrmExport(leads=leads, events=ev.reset_index(drop=True),
                       stage_history=stage_history, accounts=accounts)
    entities = pd.DataFrame({"lead_id": leads["lead_id"], "as_of": as_of})
    return export, entities


def score_rows(model: ModelBundle, frame: pd.DataFrame) -> pd.DataFrame:
    """Probability per input row, for either kind of model."""
    if model.kind == "table":
        p = model.predict_features(model.features_for_table(frame.reset_index(drop=True)))
        out = pd.DataFrame({"probability": p})
        if model.id_column and model.id_column in frame:
            out.insert(0, "lead_id", frame[model.id_column].astype("str").to_numpy())
        return out
    export, entities = rows_to_export(frame)
    if model.target == "account-propensity":
        # rows are the account's contacts; one score per (account, as_of)
        accounts = entities.assign(account_id=export.leads["account_id"].to_numpy()).dropna(
            subset=["account_id"]).groupby("account_id", as_index=False)["as_of"].max()
        p = model.predict_features(model.features_for_export(export, accounts))
        return pd.DataFrame({"account_id": accounts["account_id"].to_numpy(), "probability": p})
    p = model.predict_features(model.features_for_export(export, entities))
    return pd.DataFrame({"lead_id": entities["lead_id"].to_numpy(), "probability": p})


def account_example_rows(export: CrmExport, accounts: pd.DataFrame,
                         limit: int = 2) -> pd.DataFrame:
    """Contacts of a few accounts, as of the account row's time, as pyfunc input rows."""
    picked = accounts.head(limit)
    leads = export.leads
    parts = []
    for account_id, t in zip(picked["account_id"].astype("str"), picked["as_of"], strict=True):
        mine = leads[(leads["account_id"].astype("str") == account_id)
                     & (leads["created_at"] < t)]
        parts.append(pd.DataFrame({"lead_id": mine["lead_id"].astype("str"), "as_of": t}))
    entities = pd.concat(parts, ignore_index=True)
    return example_rows(export, entities, limit=len(entities))


def example_rows(export: CrmExport, entities: pd.DataFrame, limit: int = 3) -> pd.DataFrame:
    """Input-example rows for the pyfunc signature: a few leads with their events as JSON."""
    picked = entities.head(limit)
    leads = export.leads.set_index("lead_id").loc[picked["lead_id"].astype("str")].reset_index()
    leads = leads.astype({c: "str" for c in leads.columns
                          if not pd.api.types.is_numeric_dtype(leads[c])})
    leads["as_of"] = picked["as_of"].astype("str").to_numpy()
    events = export.events
    blobs = []
    for lead_id, t in zip(picked["lead_id"].astype("str"), picked["as_of"], strict=True):
        if events is None:
            blobs.append("[]")
            continue
        mine = events[(events["lead_id"].astype("str") == lead_id) & (events["occurred_at"] < t)]
        mine = mine.drop(columns="lead_id").astype({"occurred_at": "str"})
        blobs.append(json.dumps([{k: (None if pd.isna(v) else (str(v) if not isinstance(
            v, int | float) else v)) for k, v in r.items()} for r in mine.to_dict("records")]))
    leads["events"] = blobs
    stages = export.stage_history
    history = []
    for lead_id, t in zip(picked["lead_id"].astype("str"), picked["as_of"], strict=True):
        mine = pd.DataFrame(columns=["stage", "entered_at"]) if stages is None else stages[
            (stages["lead_id"].astype("str") == lead_id) & (stages["entered_at"] < t)]
        history.append(json.dumps([{"stage": str(r.stage), "entered_at": str(r.entered_at)}
                                   for r in mine.itertuples()]))
    leads["stage_history"] = history
    accounts = export.accounts
    if accounts is not None:
        by_id = accounts.astype({"account_id": "str"}).set_index("account_id")
        leads["account"] = [json.dumps({k: (None if pd.isna(v) else (
            v.item() if hasattr(v, "item") else str(v))) for k, v in by_id.loc[a].items()})
            if a in by_id.index else "{}" for a in leads["account_id"]]
    return leads

