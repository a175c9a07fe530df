"""The batch executor: feature inputs for a whole entity frame of an export, vectorised.

Each table is joined to the entity rows once, backward in time (`asof.before`), so only rows
dated strictly before each row's own `as_of` reach the definitions. A lead's features depend
only on its own rows and on those of its account's leads, so building on any partition of
accounts gives the same numbers as building on the whole export (Spark relies on it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from propensity.coding import encode
from propensity.contract import stage_rank
from propensity.features.asof import SortedEvents, before
from propensity.features.definitions import (
    FeaturePlan,
    account_attribute_columns,
    lead_attribute_columns,
    persona_codes,
)
from propensity.features.inputs import FeatureInputs, empty
from propensity.features.spec import FeatureSpec
from propensity.positions import positions
from propensity.tables import CrmExport, ExportIndex, index_export
from propensity.timestamps import DAY_US


def _vocabulary_codes(values: pd.Series, vocabulary: list[str], rows: np.ndarray) -> np.ndarray:
    """Event types / channels at `rows`: index in the vocabulary, len(vocabulary) for any
    other, -1 for missing. A dictionary column is coded once per category, not per row."""
    index = pd.Index(vocabulary)
    if isinstance(values.dtype, pd.CategoricalDtype):
        per_category = index.get_indexer(values.cat.categories.astype("str"))
        per_category = np.where(per_category < 0, len(vocabulary), per_category)
        codes = values.cat.codes.to_numpy()[rows]
        return np.where(codes >= 0, per_category[np.maximum(codes, 0)], -1)
    picked = values.iloc[rows]
    idx = index.get_indexer(picked.astype("str").to_numpy())
    idx = np.where(idx < 0, len(vocabulary), idx)
    return np.where(picked.isna().to_numpy(), -1, idx)


def _at(values: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """`values` (an index's column) at `rows`, all of them when None."""
    return values if rows is None else values[rows]


def _wanted_rows(lead_all: np.ndarray,
                 wanted: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """A table's rows (`lead_all`: each one's lead position, from the export's index) that
    belong to a wanted lead (None when that is almost every row, so a full build skips the
    copy), and their leads' positions. Scoring the few leads open at T then touches only their
    rows."""
    ok = lead_all >= 0
    ok[ok] = wanted[lead_all[ok]]
    if ok.mean() > 0.8:
        return None, lead_all
    keep = np.flatnonzero(ok)
    return keep, lead_all[keep]


def _attributes(frame: pd.DataFrame | None, columns: list, rows: np.ndarray) -> np.ndarray:
    """Coded attribute columns of `frame`, picked at `rows` (-1: no such row -> NaN)."""
    out = np.full((rows.size, len(columns)), np.nan)
    if frame is None or not len(frame):
        return out
    ok = rows >= 0
    for i, col in enumerate(columns):
        if col.name in frame:
            out[ok, i] = encode(frame[col.name], col.categories)[rows[ok]]
    return out


@dataclass
class _Scope:
    """What every table's join needs: the export's leads, each entity row's lead position and
    time, the leads' account codes (-1: none) and which leads can reach a feature."""
    leads: pd.DataFrame
    pos: np.ndarray
    as_of: np.ndarray
    acc_codes: np.ndarray
    n_accounts: int
    wanted: np.ndarray
    contacts: SortedEvents
    """The leads of each account (by creation): an account's contacts are one block."""


def _wanted_leads(n_leads: int, pos: np.ndarray, acc_codes: np.ndarray, n_accounts: int,
                  has_accounts: bool) -> np.ndarray:
    """Only the rows of the entities' leads and of their accounts' leads can reach a
    feature."""
    wanted = np.zeros(n_leads, dtype=bool)
    wanted[pos] = True
    if has_accounts:
        accounts_wanted = np.zeros(n_accounts, dtype=bool)
        own = acc_codes[pos]
        accounts_wanted[own[own >= 0]] = True
        if n_accounts:  # else no lead has an account
            wanted |= (acc_codes >= 0) & accounts_wanted[np.maximum(acc_codes, 0)]
    return wanted


def _gather_events(x: FeatureInputs, ix: ExportIndex, spec: FeatureSpec,
                   scope: _Scope) -> None:
    """Events before each row's time: the lead's own, and (with accounts) those of every
    lead of its account with who and which persona."""
    events = ix.export.events
    if events is None or not len(events):
        return
    leads, pos, as_of = scope.leads, scope.pos, scope.as_of
    keep, lead_of = _wanted_rows(ix.event_lead, scope.wanted)
    sorted_ = SortedEvents.build(lead_of, _at(ix.event_time, keep), len(leads))
    rows, ev, age_us = before(sorted_, pos, as_of)
    src = sorted_.order[ev]
    src_all = src if keep is None else keep[src]
    x.event_row, x.event_age = rows, age_us / DAY_US
    x.event_type = _vocabulary_codes(events["event_type"], spec.event_types, src_all)
    x.event_channel = _vocabulary_codes(events["channel"], spec.channels, src_all)
    x.event_value = events["value"].iloc[src_all].to_numpy(dtype="float64",
                                                           na_value=np.nan)
    if spec.has_accounts:
        rows, who, age_us = _account_events(sorted_, scope)
        persona = persona_codes(leads.get("persona"), len(leads))
        x.account_event_row, x.account_event_age = rows, age_us / DAY_US
        x.account_event_contact, x.account_event_persona = who, persona[who]


def _account_events(by_lead: SortedEvents, scope: _Scope) -> tuple[np.ndarray, ...]:
    """(entity row, contact, age) of every event of every lead of the row's account before
    the row's time: the row is paired with each lead of its account and each pair read from
    the events sorted by lead (the features count and take minima, so the order of a row's
    events does not matter; sorting all the events by account again cost seconds)."""
    members = scope.contacts
    account = scope.acc_codes[scope.pos]
    if not scope.n_accounts:  # no lead has an account
        return empty(), empty(), empty()
    first = members.start[np.maximum(account, 0)]
    size = np.where(account >= 0, members.start[np.maximum(account, 0) + 1] - first, 0)
    pair_row = np.repeat(np.arange(account.size), size)
    offsets = np.cumsum(size) - size
    within = np.arange(pair_row.size) - np.repeat(offsets, size)
    contact = members.order[np.repeat(first, size) + within]
    pair, _, age_us = before(by_lead, contact, scope.as_of[pair_row])
    return pair_row[pair], contact[pair], age_us


def _gather_stages(x: FeatureInputs, ix: ExportIndex, spec: FeatureSpec,
                   scope: _Scope) -> None:
    """The latest funnel stage entered before each row's time (terminal rows never set it)."""
    sh = ix.export.stage_history
    if sh is None or not len(sh):
        return
    keep, lead_of = _wanted_rows(ix.stage_lead, scope.wanted)
    stages = sh["stage"] if keep is None else sh["stage"].iloc[keep]
    rank = stages.astype("str").map(stage_rank(spec.stages)).to_numpy(
        dtype="float64", na_value=np.nan)
    funnel = (lead_of >= 0) & ~np.isnan(rank)  # terminal rows never set the stage
    sorted_ = SortedEvents.build(np.where(funnel, lead_of, -1),
                                 _at(ix.stage_time, keep), len(scope.leads))
    rows, ev, _ = before(sorted_, scope.pos, scope.as_of)
    x.stage_row, x.stage_time = rows, sorted_.time[ev]
    x.stage_rank = rank[sorted_.order[ev]].astype("int64")


def _gather_opportunities(x: FeatureInputs, ix: ExportIndex, scope: _Scope) -> None:
    """Opportunities created before each row's time, with when they closed, whether lost
    and their amount."""
    opps = ix.export.opportunities
    if opps is None or not len(opps):
        return
    keep, lead_of = _wanted_rows(ix.opportunity_lead, scope.wanted)
    sorted_ = SortedEvents.build(lead_of, _at(ix.opportunity_created, keep),
                                 len(scope.leads))
    rows, ev, _ = before(sorted_, scope.pos, scope.as_of)
    src = sorted_.order[ev]
    src_all = src if keep is None else keep[src]
    x.opportunity_row = rows
    x.opportunity_closed = ix.opportunity_closed[src_all]
    x.opportunity_lost = (opps["status"].iloc[src_all].astype("str") == "lost").to_numpy()
    x.opportunity_amount = opps["amount"].iloc[src_all].to_numpy(dtype="float64",
                                                                 na_value=np.nan)


def gather(export: CrmExport | ExportIndex, spec: FeatureSpec,
           entities: pd.DataFrame) -> FeatureInputs:
    """Feature inputs of every entity row (`lead_id`, `as_of`), in the frame's order: the
    entity rows are looked up in the export's index first (`tables.index_export`: the
    caller's, when it holds one), then read as `gather_at` reads rows already looked up. A
    lead the export lacks is a KeyError."""
    ix = index_export(export)
    pos, as_of = ix.entity_rows(entities)
    if (pos < 0).any():
        raise KeyError(f"lead {entities['lead_id'][pos < 0].iloc[0]!r} is not in the export")
    return gather_at(ix, spec, pos, as_of)


def gather_at(ix: ExportIndex, spec: FeatureSpec, pos: np.ndarray,
              as_of: np.ndarray) -> FeatureInputs:
    """Feature inputs of entity rows given as their leads' positions in the index and their
    times in microseconds (a caller that built the rows from the journeys has both: it does
    not look its own leads up again); every table's join reads the index, and the
    attributes are coded last."""
    lead_columns, account_columns = lead_attribute_columns(spec), account_attribute_columns(spec)
    leads, n = ix.leads, len(pos)
    account_ids = (leads["account_id"].astype("str").where(leads["account_id"].notna())
                   if "account_id" in leads else pd.Series(pd.NA, index=leads.index))
    acc_codes, acc_uniques = pd.factorize(account_ids)
    if ix.export.accounts is not None:
        accounts = ix.export.accounts.reset_index(drop=True)
        account_rows = positions(account_ids, accounts["account_id"])[pos]
    else:
        accounts, account_rows = None, np.full(n, -1)
    x = FeatureInputs(
        n=n, as_of=as_of, created=ix.created[pos], lead_attributes=np.empty((n, 0)),
        account_attributes=np.empty((n, 0)), has_account=acc_codes[pos] >= 0,
        event_row=empty(), event_age=empty("float64"), event_type=empty(),
        event_channel=empty(), event_value=empty("float64"),
        stage_row=empty(), stage_rank=empty(), stage_time=empty(),
        opportunity_row=empty(), opportunity_closed=empty(), opportunity_lost=empty("bool"),
        opportunity_amount=empty("float64"),
        contact_row=empty(), account_event_row=empty(), account_event_age=empty("float64"),
        account_event_contact=empty(), account_event_persona=empty(),
    )
    scope = _Scope(leads, pos, as_of, acc_codes, len(acc_uniques),
                   _wanted_leads(len(leads), pos, acc_codes, len(acc_uniques),
                                 spec.has_accounts),
                   SortedEvents.build(acc_codes, ix.created, len(acc_uniques)))
    _gather_events(x, ix, spec, scope)
    _gather_stages(x, ix, spec, scope)
    _gather_opportunities(x, ix, scope)
    if spec.has_accounts:
        x.contact_row, _, _ = before(scope.contacts, acc_codes[pos], as_of)
    x.lead_attributes = _attributes(leads, lead_columns, pos)
    x.account_attributes = _attributes(accounts, account_columns, account_rows)
    return x


def lead_feature_matrix(export: CrmExport | ExportIndex, plan: FeaturePlan,
                        entities: pd.DataFrame) -> np.ndarray:
    """(rows, features) float64 in the plan's column order."""
    return plan.matrix(gather(export, plan.spec, entities))


def lead_matrix_at(ix: ExportIndex, plan: FeaturePlan, pos: np.ndarray,
                   as_of: np.ndarray) -> np.ndarray:
    """`lead_feature_matrix` of rows given by lead position and time (`gather_at`)."""
    return plan.matrix(gather_at(ix, plan.spec, pos, as_of))


def build_lead_features(export: CrmExport | ExportIndex, spec: FeatureSpec, entities: pd.DataFrame,
                        plan: FeaturePlan | None = None) -> pd.DataFrame:
    """One feature row per entity row (`lead_id`, `as_of`), categoricals as pandas categoricals."""
    from propensity.coding import as_frame

    plan = plan or FeaturePlan(spec)
    return as_frame(lead_feature_matrix(export, plan, entities), plan.columns, entities.index)
