"""Features of a lead as of t, for a whole entity frame at once.

Only rows dated strictly before each row's own `as_of` are used (events.occurred_at,
stage_history.entered_at, opportunities.created_at / closed_at); attributes are taken as they
are in the export, post-outcome columns excluded. A lead's features depend only on its own rows
and on those of its account's leads, so building on any partition of accounts gives the same
numbers as building on the whole export.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from propensity.contract import stage_rank
from propensity.features.asof import SortedEvents, before
from propensity.features.spec import FeatureSpec
from propensity.funnel.journeys import to_micros
from propensity.positions import positions
from propensity.tables import CrmExport

DAY_US = 86_400_000_000
PERSONA_GROUPS = ("end_user", "champion", "executive")


def as_categories(values: pd.Series, categories: list[str]) -> pd.Categorical:
    """Values as a categorical over a fixed list (anything else is missing): the codes a model
    was trained with."""
    text = values.astype("str").where(values.notna())
    return pd.Categorical(text.where(text.isin(categories)), categories=categories)


def _codes(values: pd.Series, vocabulary: list[str]) -> np.ndarray:
    """Index in vocabulary per row; unknown -> len(vocabulary) ('other'); missing -> -1."""
    text = values.astype("str")
    idx = pd.Index(vocabulary).get_indexer(text.to_numpy())
    idx = np.where(idx < 0, len(vocabulary), idx)
    return np.where(values.isna().to_numpy(), -1, idx)


def build_lead_features(export: CrmExport, spec: FeatureSpec,
                        entities: pd.DataFrame) -> pd.DataFrame:
    """One feature row per entity row (`lead_id`, `as_of`), in the entity frame's order."""
    leads = export.leads.reset_index(drop=True)
    pos = positions(entities["lead_id"], leads["lead_id"])
    if (pos < 0).any():
        missing = entities["lead_id"][pos < 0].iloc[0]
        raise KeyError(f"lead {missing!r} is not in the export")
    as_of = to_micros(entities["as_of"])
    n = len(entities)
    out: dict[str, object] = {}
    created = to_micros(leads["created_at"])[pos]
    out["lead_age_days"] = (as_of - created) / DAY_US
    for col, cats in spec.lead_categorical.items():
        values = leads[col] if col in leads else pd.Series(pd.NA, index=leads.index)
        out[col] = as_categories(values.iloc[pos].reset_index(drop=True), cats)
    for col in spec.lead_numeric:
        values = leads[col] if col in leads else pd.Series(np.nan, index=leads.index)
        out[col] = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64",
                                                                   na_value=np.nan)[pos]
    out.update(_account_attributes(export, spec, leads, pos))
    out.update(_stage_features(export, spec, leads, pos, as_of))
    out.update(_opportunity_features(export, leads, pos, as_of))
    out.update(_engagement(export, spec, leads, pos, as_of))
    if spec.has_accounts:
        out.update(_committee(export, spec, leads, pos, as_of))
    frame = pd.DataFrame(out, index=range(n))
    frame.index = entities.index
    return frame


def _account_attributes(export: CrmExport, spec: FeatureSpec, leads: pd.DataFrame,
                        pos: np.ndarray) -> dict[str, object]:
    out: dict[str, object] = {}
    if not spec.account_numeric and not spec.account_categorical:
        return out
    accounts = export.accounts if export.accounts is not None else pd.DataFrame(
        {"account_id": pd.Series(dtype="str")})
    accounts = accounts.reset_index(drop=True)
    acc = positions(leads["account_id"], accounts["account_id"])[pos]
    for col in spec.account_numeric:
        vals = pd.to_numeric(accounts[col], errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan) if col in accounts else np.full(len(accounts),
                                                                               np.nan)
        out[f"account_{col}"] = np.where(acc >= 0, vals[np.maximum(acc, 0)] if len(vals) else
                                         np.nan, np.nan)
    for col, cats in spec.account_categorical.items():
        vals = accounts[col] if col in accounts else pd.Series(pd.NA, index=accounts.index)
        picked = vals.iloc[np.maximum(acc, 0)].reset_index(drop=True) if len(vals) else (
            pd.Series(pd.NA, index=range(acc.size)))
        out[f"account_{col}"] = as_categories(picked.where(pd.Series(acc >= 0)), cats)
    return out


def _stage_features(export: CrmExport, spec: FeatureSpec, leads: pd.DataFrame, pos: np.ndarray,
                    as_of: np.ndarray) -> dict[str, object]:
    """Current stage at as_of (highest stage entered before it) and time spent in it."""
    n = pos.size
    current = np.zeros(n, dtype="int64")
    since = to_micros(leads["created_at"])[pos].copy()
    changes = np.zeros(n, dtype="float64")
    sh = export.stage_history
    if sh is not None and len(sh):
        rank_of = stage_rank(spec.stages)
        lead_of = positions(sh["lead_id"], leads["lead_id"])
        text = sh["stage"].astype("str")
        rank = text.map(rank_of).to_numpy(dtype="float64", na_value=np.nan)
        funnel = (lead_of >= 0) & ~np.isnan(rank)  # terminal rows never set the stage
        events = SortedEvents.build(np.where(funnel, lead_of, -1), to_micros(sh["entered_at"]),
                                    len(leads))
        rows, ev, _ = before(events, pos, as_of)
        r = rank[events.order[ev]].astype("int64")
        t = events.time[ev]
        # highest rank reached; its first entry time
        best = np.zeros(n, dtype="int64")
        np.maximum.at(best, rows, r)
        current = best
        at_best = r == best[rows]
        first = np.full(n, np.iinfo("int64").max)
        np.minimum.at(first, rows[at_best], t[at_best])
        since = np.where(first != np.iinfo("int64").max, first, since)
        changes = np.bincount(rows, minlength=n).astype("float64")
    cats = list(spec.stages)
    return {
        "current_stage": pd.Categorical.from_codes(current, categories=cats),
        "days_in_stage": (as_of - since) / DAY_US,
        "stage_changes": changes,
    }


def _opportunity_features(export: CrmExport, leads: pd.DataFrame, pos: np.ndarray,
                          as_of: np.ndarray) -> dict[str, object]:
    n = pos.size
    opps = export.opportunities
    has_open = np.zeros(n)
    open_amount = np.full(n, np.nan)
    lost_before = np.zeros(n)
    if opps is not None and len(opps):
        lead_of = positions(opps["lead_id"], leads["lead_id"])
        created = to_micros(opps["created_at"])
        closed = to_micros(opps["closed_at"])
        lost = (opps["status"].astype("str") == "lost").to_numpy()
        amount = opps["amount"].to_numpy(dtype="float64", na_value=np.nan)
        events = SortedEvents.build(lead_of, created, len(leads))
        rows, ev, _ = before(events, pos, as_of)
        src = events.order[ev]
        still_open = closed[src] >= as_of[rows]  # NEVER for open ones is the int64 max
        np.add.at(has_open, rows[still_open], 1)
        amt = np.where(np.isnan(amount[src]), 0.0, amount[src])
        totals = np.zeros(n)
        np.add.at(totals, rows[still_open], amt[still_open])
        open_amount = np.where(has_open > 0, totals, np.nan)
        closed_lost = ~still_open & lost[src]
        np.add.at(lost_before, rows[closed_lost], 1)
    return {"open_opportunities": has_open, "open_opportunity_amount": open_amount,
            "lost_opportunities": lost_before}


def _engagement(export: CrmExport, spec: FeatureSpec, leads: pd.DataFrame, pos: np.ndarray,
                as_of: np.ndarray) -> dict[str, object]:
    """Counts per event type and channel over windows, recency, decay and trend."""
    n = pos.size
    cfg = spec.config
    types = [*spec.event_types, "other"]
    out: dict[str, object] = {}
    ev_tab = export.events
    if ev_tab is None or not len(ev_tab):
        ev_tab = pd.DataFrame({"lead_id": pd.Series(dtype="str"),
                               "occurred_at": pd.Series(dtype="datetime64[us, UTC]"),
                               "event_type": pd.Series(dtype="str"),
                               "channel": pd.Series(dtype="str"),
                               "value": pd.Series(dtype="float64")})
    lead_of = positions(ev_tab["lead_id"], leads["lead_id"])
    events = SortedEvents.build(lead_of, to_micros(ev_tab["occurred_at"]), len(leads))
    rows, ev, age_us = before(events, pos, as_of)
    age = age_us / DAY_US
    src = events.order[ev]
    tcode = _codes(ev_tab["event_type"], spec.event_types)[src]
    ccode = _codes(ev_tab["channel"], spec.channels)[src]
    value = ev_tab["value"].to_numpy(dtype="float64", na_value=np.nan)[src]
    windows = [*cfg.windows_days, None]
    n_types = len(types)
    for w in windows:
        sel = np.ones(age.size, bool) if w is None else age <= w
        suffix = "all" if w is None else f"{w}d"
        grid = np.bincount(rows[sel] * n_types + tcode[sel], minlength=n * n_types).reshape(
            n, n_types)
        for i, t in enumerate(types):
            out[f"n_{t}_{suffix}"] = grid[:, i].astype("float64")
        out[f"n_events_{suffix}"] = grid.sum(axis=1).astype("float64")
    n_ch = len(spec.channels) + 1
    for w in (30, None):
        sel = (ccode >= 0) & (np.ones(age.size, bool) if w is None else age <= w)
        grid = np.bincount(rows[sel] * n_ch + ccode[sel], minlength=n * n_ch).reshape(n, n_ch)
        suffix = "all" if w is None else f"{w}d"
        for i, c in enumerate([*spec.channels, "other"]):
            out[f"n_channel_{c}_{suffix}"] = grid[:, i].astype("float64")
    last = np.full(n, np.inf)
    np.minimum.at(last, rows, age)
    out["days_since_last_event"] = np.where(np.isinf(last), np.nan, last)
    flat = np.full(n * n_types, np.inf)
    np.minimum.at(flat, rows * n_types + tcode, age)
    recency = flat.reshape(n, n_types)
    for i, t in enumerate(types):
        out[f"days_since_{t}"] = np.where(np.isinf(recency[:, i]), np.nan, recency[:, i])
    decay = np.exp(-np.log(2) * age / cfg.half_life_days)
    out["decayed_engagement"] = np.bincount(rows, weights=decay, minlength=n)
    lead_age = (as_of - to_micros(leads["created_at"])[pos]) / DAY_US
    out["events_per_day"] = out["n_events_all"] / np.maximum(lead_age, 1.0)
    recent = np.bincount(rows, weights=(age <= cfg.trend_recent_days).astype(float), minlength=n)
    earlier = np.bincount(
        rows, weights=((age > cfg.trend_recent_days)
                       & (age <= cfg.trend_recent_days + cfg.trend_before_days)).astype(float),
        minlength=n)
    per_recent = cfg.trend_before_days / cfg.trend_recent_days
    out["engagement_trend"] = (recent + 1) / (earlier / per_recent + 1)
    has_value = ~np.isnan(value) & (age <= 30)
    out["value_sum_30d"] = np.bincount(rows[has_value], weights=value[has_value], minlength=n)
    return out


def _committee(export: CrmExport, spec: FeatureSpec, leads: pd.DataFrame, pos: np.ndarray,
               as_of: np.ndarray) -> dict[str, object]:
    """The buying committee of the lead's account as of t: who is engaged, by persona."""
    n = pos.size
    window = spec.config.committee_window_days
    acc_ids = leads["account_id"].astype("str").where(leads["account_id"].notna())
    acc_codes, acc_uniques = pd.factorize(acc_ids)
    lead_acc = acc_codes  # -1 for leads without an account
    ent_acc = lead_acc[pos]
    n_acc = len(acc_uniques)
    persona = leads["persona"].astype("str").to_numpy() if "persona" in leads else np.full(
        len(leads), "unknown")
    out: dict[str, object] = {}
    # contacts of the account created before t
    contacts = SortedEvents.build(lead_acc, to_micros(leads["created_at"]), n_acc)
    c_rows, _, _ = before(contacts, ent_acc, as_of)
    out["account_contacts"] = np.where(ent_acc >= 0, np.bincount(c_rows, minlength=n), np.nan)
    ev_tab = export.events
    if ev_tab is None or not len(ev_tab):
        for name in ("account_engaged_contacts", "account_events_30d",
                     "account_days_since_last_event",
                     *(f"account_events_{p}_{window}d" for p in PERSONA_GROUPS),
                     "account_executive_engaged", "account_champion_engaged"):
            out[name] = np.where(ent_acc >= 0, 0.0, np.nan)
        return out
    ev_lead = positions(ev_tab["lead_id"], leads["lead_id"])
    ev_acc = np.where(ev_lead >= 0, lead_acc[np.maximum(ev_lead, 0)], -1)
    events = SortedEvents.build(ev_acc, to_micros(ev_tab["occurred_at"]), n_acc)
    rows, ev, age_us = before(events, ent_acc, as_of)
    age = age_us / DAY_US
    who = ev_lead[events.order[ev]]
    recent = age <= window
    # distinct engaged contacts: unique (row, lead) pairs among recent events
    pairs = np.unique(rows[recent].astype("int64") * (len(leads) + 1) + who[recent])
    engaged = np.bincount(pairs // (len(leads) + 1), minlength=n)
    out["account_engaged_contacts"] = np.where(ent_acc >= 0, engaged, np.nan)
    out["account_events_30d"] = np.where(
        ent_acc >= 0, np.bincount(rows[age <= 30], minlength=n), np.nan)
    last = np.full(n, np.inf)
    np.minimum.at(last, rows, age)
    out["account_days_since_last_event"] = np.where(np.isinf(last), np.nan, last)
    p_of = persona[who]
    for p in PERSONA_GROUPS:
        counts = np.bincount(rows[recent & (p_of == p)], minlength=n)
        out[f"account_events_{p}_{window}d"] = np.where(ent_acc >= 0, counts, np.nan)
        if p in ("executive", "champion"):
            out[f"account_{p}_engaged"] = np.where(ent_acc >= 0, (counts > 0).astype(float),
                                                   np.nan)
    return out
