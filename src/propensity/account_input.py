"""An account's contact rows as a small export: what an account model reads, from the MLflow
pyfunc's rows or `POST /v1/accounts/score`'s contacts, so an account is scored by the same batch
code that trained it (`propensity.scoring.score_account_rows`). `propensity.lead_input` is the
same step for one lead and the online executor; `propensity.rows` goes the other way (an
export's rows written out as pyfunc input)."""

from __future__ import annotations

import pandas as pd

from propensity.coding import category_text
from propensity.contract import TIMESTAMP_DTYPE
from propensity.lead_input import ROW_EXTRAS, nested_json
from propensity.tables import CrmExport
from propensity.timestamps import to_utc


def _leads_of(frame: pd.DataFrame) -> pd.DataFrame:
    leads = frame[[c for c in frame.columns if c not in ROW_EXTRAS]].copy()
    leads["lead_id"] = leads["lead_id"].astype("str")
    leads["created_at"] = to_utc(leads["created_at"])
    for col in ("source", "persona"):
        leads[col] = leads[col].fillna("unknown") if col in leads else "unknown"
    for col in ("campaign", "account_id", "owner_id", "product"):
        if col not in leads:
            leads[col] = pd.Series(pd.NA, index=leads.index, dtype="str")
    return leads


def _nested(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column] if column in frame else pd.Series([None] * len(frame))


def _events_of(frame: pd.DataFrame, leads: pd.DataFrame, as_of: pd.Series) -> pd.DataFrame:
    """The rows' events before their as_of (never the future)."""
    events = [{**e, "lead_id": lead_id, "_as_of": t}
              for lead_id, blob, t in zip(leads["lead_id"], _nested(frame, "events"), as_of,
                                          strict=True)
              for e in nested_json(blob, [])]
    ev = pd.DataFrame(events, columns=["lead_id", "occurred_at", "event_type", "channel",
                                       "value", "_as_of"])
    ev["occurred_at"] = to_utc(ev["occurred_at"])
    ev = ev[ev["occurred_at"] < ev["_as_of"]].drop(columns="_as_of")
    ev["value"] = pd.to_numeric(ev["value"], errors="coerce")
    return ev.reset_index(drop=True)


def _history_of(frame: pd.DataFrame, leads: pd.DataFrame) -> pd.DataFrame | None:
    history = [{**h, "lead_id": lead_id}
               for lead_id, blob in zip(leads["lead_id"], _nested(frame, "stage_history"),
                                        strict=True)
               for h in nested_json(blob, [])]
    if not history:
        return None
    sh = pd.DataFrame(history, columns=["lead_id", "stage", "entered_at"])
    return sh.assign(entered_at=to_utc(sh["entered_at"]))


def _accounts_of(frame: pd.DataFrame, leads: pd.DataFrame) -> pd.DataFrame | None:
    if "account" not in frame:
        return None
    records = [{**{k: v for k, v in nested_json(a, {}).items() if k != "contacts"},
                "account_id": acc}
               for a, acc in zip(frame["account"], leads["account_id"], strict=True)
               if category_text(acc) is not None and a is not None]
    return pd.DataFrame(records).drop_duplicates("account_id") if records else None


def rows_to_export(frame: pd.DataFrame) -> tuple[CrmExport, pd.DataFrame]:
    """Contact rows (one per lead of an account) as a small export and its entity frame, so an
    account is scored by the same batch code that trained it."""
    frame = frame.reset_index(drop=True)
    now = pd.Timestamp.now(tz="UTC")
    as_of = to_utc(frame["as_of"]) if "as_of" in frame else pd.Series(now, index=frame.index)
    as_of = as_of.fillna(now).astype(TIMESTAMP_DTYPE)
    leads = _leads_of(frame)
    export = CrmExport(leads=leads, events=_events_of(frame, leads, as_of),
                       stage_history=_history_of(frame, leads),
                       accounts=_accounts_of(frame, leads))
    return export, pd.DataFrame({"lead_id": leads["lead_id"], "as_of": as_of})
