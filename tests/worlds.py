"""Generated CRM worlds for parity tests: accounts with buying committees, events, stage
histories and opportunities around a scoring time T, ties at T included.

Every world obeys the data contract (it is also written to files and read back by the CLI), and
worlds drawn with different `tag`s share no id, so several can be merged into one export.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from hypothesis import strategies as st

from propensity.contract import DEFAULT_STAGES
from propensity.tables import CrmExport

T = pd.Timestamp("2025-06-01", tz="UTC")
PERSONAS = ["end_user", "champion", "executive", "unknown"]
SOURCES = ["referral", "paid_search", "organic_search", "event", "a_source_never_seen"]
EVENT_TYPES = ["page_view", "pricing_page_view", "demo_request", "email_open", "meeting",
               "webinar_attended", "a_type_never_seen"]
CHANNELS = ["web", "email", "sales", None, "fax"]
INDUSTRIES = ["software", "retail", "finance", None]


def _seconds(draw: st.DrawFn, low: float, high: float) -> pd.Timedelta:
    return pd.Timedelta(seconds=draw(st.integers(int(low), int(high))))


@st.composite
def worlds(draw: st.DrawFn, tag: str = "W") -> dict[str, list[dict[str, Any]]]:
    """Tables (as row dicts) of one world: 1-2 accounts of 1-5 contacts, and a lone lead."""
    day = 86_400
    tables: dict[str, list[dict[str, Any]]] = {k: [] for k in (
        "leads", "accounts", "events", "stage_history", "opportunities")}
    n_accounts = draw(st.integers(1, 2))
    members: list[str | None] = []
    for a in range(n_accounts):
        account_id = f"{tag}-A{a}"
        tables["accounts"].append({"account_id": account_id,
                                   "industry": draw(st.sampled_from(INDUSTRIES)),
                                   "employees": draw(st.one_of(st.none(), st.integers(1, 5000)))})
        members += [account_id] * draw(st.integers(1, 5))
    members.append(None)  # a lead without an account
    opp = 0
    for i, account_id in enumerate(members):
        lead_id = f"{tag}-L{i}"
        created = T - _seconds(draw, 1, 400 * day)
        tables["leads"].append({
            "lead_id": lead_id, "created_at": created, "account_id": account_id,
            "persona": draw(st.sampled_from(PERSONAS)),
            "source": draw(st.sampled_from(SOURCES)),
            "owner_id": draw(st.sampled_from(["rep_01", "rep_02", "rep_99"]))})
        span = (T - created).total_seconds()
        for _ in range(draw(st.integers(0, 10))):
            at = draw(st.one_of(st.just(T), st.builds(
                lambda s, c=created: c + pd.Timedelta(seconds=s),
                st.integers(-day // 2, int(span + 20 * day)))))
            tables["events"].append({
                "lead_id": lead_id, "occurred_at": at,
                "event_type": draw(st.sampled_from(EVENT_TYPES)),
                "channel": draw(st.sampled_from(CHANNELS)),
                "value": draw(st.one_of(st.none(), st.floats(0, 500, allow_nan=False)))})
        at = created
        stages = draw(st.lists(st.sampled_from(DEFAULT_STAGES[1:4]), max_size=3, unique=True))
        for stage in sorted(stages, key=DEFAULT_STAGES.index):  # funnel order, in time
            at = at + _seconds(draw, 0, 60 * day)
            tables["stage_history"].append({"lead_id": lead_id, "stage": stage,
                                            "entered_at": at})
        if draw(st.integers(0, 3)) == 0:
            tables["stage_history"].append({"lead_id": lead_id, "stage": "disqualified",
                                            "entered_at": at + _seconds(draw, 0, 90 * day)})
        for _ in range(draw(st.integers(0, 2))):
            opened = created + _seconds(draw, 0, span + 10 * day)
            status = draw(st.sampled_from(["open", "won", "lost"]))
            closed = None if status == "open" else draw(st.one_of(
                st.just(max(T, opened)),
                st.builds(lambda s, o=opened: o + pd.Timedelta(seconds=s),
                          st.integers(0, 120 * day))))
            tables["opportunities"].append({
                "opportunity_id": f"{tag}-O{opp}", "lead_id": lead_id,
                "account_id": account_id, "created_at": opened, "closed_at": closed,
                "amount": draw(st.one_of(st.none(), st.floats(0, 1e5, allow_nan=False))),
                "status": status})
            opp += 1
    return tables


def to_export(tables: dict[str, list[dict[str, Any]]]) -> CrmExport:
    """A world as validated tables, typed as `load_export` types a written export."""
    from propensity.export_reader import fill_unknown
    from propensity.timestamps import to_utc

    frames = {k: pd.DataFrame(v) for k, v in tables.items()}
    leads = frames["leads"]
    leads["created_at"] = to_utc(leads["created_at"])
    for col in ("persona", "source"):
        leads[col] = fill_unknown(leads[col].astype("str"))
    for col in ("account_id", "owner_id"):
        leads[col] = leads[col].astype("str").where(leads[col].notna())
    events = frames["events"].reindex(columns=["lead_id", "occurred_at", "event_type",
                                               "channel", "value"])
    events["occurred_at"] = to_utc(events["occurred_at"])
    events["value"] = events["value"].astype("float64")
    events["channel"] = events["channel"].astype("str").where(events["channel"].notna())
    stages = frames["stage_history"].reindex(columns=["lead_id", "stage", "entered_at"])
    stages["entered_at"] = to_utc(stages["entered_at"])
    opps = frames["opportunities"].reindex(columns=["opportunity_id", "lead_id", "account_id",
                                                    "created_at", "closed_at", "amount",
                                                    "status"])
    opps["created_at"] = to_utc(opps["created_at"])
    opps["closed_at"] = to_utc(opps["closed_at"])
    opps["amount"] = opps["amount"].astype("float64")
    accounts = frames["accounts"]
    accounts["employees"] = accounts["employees"].astype("float64")
    return CrmExport(leads=leads, events=events, stage_history=stages, opportunities=opps,
                     accounts=accounts)


def write_world(tables: dict[str, list[dict[str, Any]]], directory: Any) -> None:
    """The world as CSV files, timestamps in ISO 8601."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        frame = pd.DataFrame(rows)
        for col in frame.columns:
            if col.endswith("_at"):
                frame[col] = [None if v is None or pd.isna(v) else pd.Timestamp(v).isoformat()
                              for v in frame[col]]
        frame.to_csv(directory / f"{name}.csv", index=False)


def request_lead(row: dict[str, Any]) -> dict[str, Any]:
    """A pyfunc row (`propensity.rows.lead_rows`) as a lead in a /v1/score request body."""
    lead = {k: v for k, v in row.items()
            if k not in ("events", "stage_history", "account", "opportunities")
            and v is not None and not (isinstance(v, float) and pd.isna(v))}
    lead["events"] = json.loads(row["events"])
    lead["stage_history"] = json.loads(row["stage_history"])
    lead["opportunities"] = json.loads(row["opportunities"])
    if isinstance(row.get("account"), str):
        lead["account"] = json.loads(row["account"])
    return lead
