"""Odoo's predictive lead scoring (addons/crm, `crm.lead` `_pls_*`), written from its rules.

Users compare us with Odoo by the number Odoo shows, so this is that algorithm and not a
generic naive Bayes:

- closed leads fill a frequency table, one cell per (sales team, field, value) with a won and
  a lost count, each starting at +0.1 when the cell is created;
- stages count cumulatively: a won lead increments every stage, a lost lead its own stage and
  every stage below it; the first stage's cell therefore counts every closed lead and gives
  the class priors;
- P(value | class) = the cell's count / the field's total for that class, except for the
  stage, which divides by the prior's count;
- a value never seen (no cell) and an empty field are skipped, except email and phone state,
  where empty is the value "False"; a tag counts only when its cell holds 50 closed leads;
- each team has its own table; a lead with no team, or whose team has none, uses the pool of
  every team's cells;
- the probability is rounded to 2 decimals and kept within [0.01, 99.99]; a lead with no
  stage gets 0, one in the won stage 100.

Its reasons are Odoo's tooltip: the top 3 and bottom 3 criteria by their score (stage:
1 - P(stage | lost); other fields: P(value | won) / (P(value | won) + P(value | lost))).
`docs/training.md` maps our lead attributes onto Odoo's fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from propensity.coding import Column
from propensity.funnel.journeys import Journeys
from propensity.odoo_history import STAGE, TAG, OdooPlsConfig, closed_leads, lead_values
from propensity.tables import CrmExport

EMPTY_IS_A_VALUE = ("email_state", "phone_state")
SMOOTHING = 0.1
"""Each cell's start on both counts (Odoo: +1 'weights too much on small recordsets')."""
MIN_TAG_LEADS = 50
NO_PRIOR = 0.0
"""What a lead gets when its table has no first-stage cell: Odoo's 'not computable'."""


@dataclass(frozen=True)
class PlsTable:
    """Odoo's `crm.lead.scoring.frequency`: what scoring needs, fitted once."""

    stages: tuple[str, ...]
    """In sequence: the first gives the priors, the last is the won stage."""
    cells: pd.DataFrame
    """team (None: no team), field, value, won, lost (each from +0.1)."""


def _cells(team: pd.Series, field: str, value: pd.Series, won: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"team": team.to_numpy(dtype=object), "field": field,
                          "value": value.to_numpy(dtype=object), "won": won.astype("float64"),
                          "lost": (~won).astype("float64")})
    out = frame.groupby(["team", "field", "value"], dropna=False, sort=True)[
        ["won", "lost"]].sum().reset_index()
    out[["won", "lost"]] += SMOOTHING
    return out


def _present(values: pd.Series, field: str) -> pd.Series:
    """A field's values as text, empty ones dropped (email / phone state: "False")."""
    text = values.astype("object").where(values.notna(), None)
    text = text.map(lambda v: None if v is None or v == "" else str(v))
    if field in EMPTY_IS_A_VALUE:
        return text.fillna("False")
    return text.dropna()


def fit_table(history: pd.DataFrame, stages: tuple[str, ...]) -> PlsTable:
    """Frequencies of closed leads: columns team, stage_id, won, each field, tag_id (lists)."""
    history = history.reset_index(drop=True)
    won = history["won"].to_numpy(dtype=bool)
    parts = []
    rank = history[STAGE].map({s: i for i, s in enumerate(stages)})
    staged = np.flatnonzero(rank.notna().to_numpy())
    top = np.where(won[staged], len(stages) - 1, rank.to_numpy()[staged]).astype("int64")
    lead = np.repeat(staged, top + 1)  # stages 0..top: every stage if won
    level = np.arange(lead.size) - np.repeat(np.cumsum(top + 1) - (top + 1), top + 1)
    parts.append(_cells(history["team"].iloc[lead], STAGE,
                        pd.Series(np.array(stages, dtype=object)[level]), won[lead]))
    for field in history.columns.difference(["team", STAGE, "won", TAG], sort=False):
        values = _present(history[field], field)
        parts.append(_cells(history["team"].loc[values.index], field, values,
                            won[history.index.get_indexer(values.index)]))
    if TAG in history:
        tags = history[TAG].explode().dropna()
        parts.append(_cells(history["team"].loc[tags.index], TAG, tags.astype("str"),
                            won[history.index.get_indexer(tags.index)]))
    return PlsTable(tuple(stages), pd.concat(parts, ignore_index=True))


def _scopes(table: PlsTable) -> tuple[pd.DataFrame, dict[str, int]]:
    """Per-team tables and the pool (scope -1), tags under 50 closed leads left out."""
    teams = sorted(table.cells["team"].dropna().unique())  # a team with cells has a table
    cells = table.cells
    cells = cells[(cells["field"] != TAG) | (cells["won"] + cells["lost"] >= MIN_TAG_LEADS)]
    scope_of = {t: i for i, t in enumerate(teams)}
    own = cells[cells["team"].notna()].assign(scope=lambda f: f["team"].map(scope_of))
    pool = cells.groupby(["field", "value"], sort=True)[["won", "lost"]].sum().reset_index()
    scoped = pd.concat([own.drop(columns="team"), pool.assign(scope=-1)], ignore_index=True)
    totals = scoped.groupby(["scope", "field"])[["won", "lost"]].transform("sum")
    scoped[["won_total", "lost_total"]] = totals.to_numpy()
    prior = scoped[(scoped["field"] == STAGE) & (scoped["value"] == table.stages[0])]
    scoped = scoped.merge(prior[["scope", "won", "lost"]].rename(
        columns={"won": "prior_won", "lost": "prior_lost"}), on="scope", how="left")
    stage = scoped["field"] == STAGE
    scoped.loc[stage, "won_total"] = scoped.loc[stage, "prior_won"]
    scoped.loc[stage, "lost_total"] = scoped.loc[stage, "prior_lost"]
    return scoped, scope_of


def criteria(table: PlsTable, leads: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(each lead's counted criteria: lead, field, value, p_won, p_lost; each lead's scope
    prior: lead, prior_won, prior_lost). Leads: columns team, stage_id, fields, tag_id."""
    leads = leads.reset_index(drop=True)
    scoped, scope_of = _scopes(table)
    scope = leads["team"].map(scope_of).fillna(-1).astype("int64").to_numpy()
    rows = []
    for field in leads.columns.difference(["team", "won", TAG], sort=False):
        values = _present(leads[field], field) if field != STAGE else leads[field].dropna()
        rows.append(pd.DataFrame({"lead": leads.index.get_indexer(values.index),
                                  "field": field, "value": values.astype("str").to_numpy()}))
    if TAG in leads:
        tags = leads[TAG].explode().dropna()
        rows.append(pd.DataFrame({"lead": leads.index.get_indexer(tags.index), "field": TAG,
                                  "value": tags.astype("str").to_numpy()}))
    long = pd.concat(rows, ignore_index=True)
    long["scope"] = scope[long["lead"].to_numpy()]
    hit = long.merge(scoped, on=["scope", "field", "value"], how="inner")  # unseen: skipped
    hit = hit[(hit["won_total"] > 0) & (hit["lost_total"] > 0)]
    hit = hit.assign(p_won=hit["won"] / hit["won_total"], p_lost=hit["lost"] / hit["lost_total"])
    priors = scoped.drop_duplicates("scope").set_index("scope")[["prior_won", "prior_lost"]]
    prior = priors.reindex(scope).set_axis(range(len(leads))).rename_axis("lead").reset_index()
    return hit[["lead", "field", "value", "p_won", "p_lost"]].sort_values(
        ["lead"], kind="stable"), prior


def probability(table: PlsTable, leads: pd.DataFrame) -> np.ndarray:
    """Odoo's probability in percent, one per lead (row order)."""
    hit, prior = criteria(table, leads)
    p_won, p_lost = prior["prior_won"].to_numpy(), prior["prior_lost"].to_numpy()
    ok = (p_won > 0) & (p_lost > 0)  # NaN (no first-stage cell) fails both
    s_won, s_lost = p_won / (p_won + p_lost), p_lost / (p_won + p_lost)
    at = hit["lead"].to_numpy()
    np.multiply.at(s_won, at, hit["p_won"].to_numpy())  # in Odoo's order: stage, fields, tags
    np.multiply.at(s_lost, at, hit["p_lost"].to_numpy())
    share = np.where(ok, s_won / np.where(ok, s_won + s_lost, 1.0), 0.0)
    out = np.array([min(max(round(100 * float(s), 2), 0.01), 99.99) for s in share])
    out[~ok] = NO_PRIOR
    stage = leads[STAGE].to_numpy(dtype=object)
    out[pd.isna(stage)] = 0.0
    out[stage == table.stages[-1]] = 100.0
    return out


def reasons(table: PlsTable, leads: pd.DataFrame) -> list[dict[str, list[tuple[str, str]]]]:
    """Odoo's tooltip per lead: `top` (highest first) and `low` (lowest first), 3 each, as
    (field, value); email / phone state only where it says what its value means."""
    hit, _ = criteria(table, leads)
    stage = hit["field"] == STAGE
    hit = hit.assign(score=np.where(stage, 1 - hit["p_lost"],
                                    hit["p_won"] / (hit["p_won"] + hit["p_lost"])))
    side = np.round(hit["score"].to_numpy() - 0.5, 2)
    state = hit["field"].isin(EMPTY_IS_A_VALUE).to_numpy()
    bad = hit["value"].isin(["False", "incorrect"]).to_numpy()
    nonsense = state & ((bad & (side > 0)) | ((hit["value"] == "correct").to_numpy() & (side < 0)))
    hit = hit.assign(side=side)[~nonsense].sort_values(["lead", "score", "field", "value"])
    out: list[dict[str, list[tuple[str, str]]]] = [{"top": [], "low": []} for _ in range(
        len(leads))]
    for lead, part in hit.groupby("lead", sort=False):
        pairs = list(zip(part["field"], part["value"], part["side"], strict=True))
        out[int(lead)] = {"top": [(f, v) for f, v, s in pairs[::-1][:3] if s > 0],
                          "low": [(f, v) for f, v, s in pairs[:3] if s < 0]}
    return out


def fit_as_of(export: CrmExport, t: pd.Timestamp, config: OdooPlsConfig | None = None, *,
              stale_days: int | None = None, journeys: Journeys) -> PlsTable:
    """The frequency table Odoo's nightly rebuild would have held at t."""
    cfg = config or OdooPlsConfig()
    return fit_table(closed_leads(export, t, cfg, stale_days=stale_days, journeys=journeys),
                     export.stages)


# --- shipping it: the table as JSON, scores from the model matrix, exact log-odds -----------

def table_to_dict(table: PlsTable) -> dict[str, Any]:
    """The table as plain JSON (a model file holds it; nothing pickled)."""
    cells = table.cells
    return {"stages": list(table.stages),
            "cells": {c: [None if pd.isna(v) else v for v in cells[c]] for c in cells.columns}}


def table_from_dict(data: dict[str, Any]) -> PlsTable:
    cells = pd.DataFrame({c: pd.Series(v, dtype="float64" if c in ("won", "lost") else "object")
                          for c, v in data["cells"].items()})
    return PlsTable(tuple(data["stages"]), cells)


def matrix_leads(X: np.ndarray, columns: Sequence[Column], config: OdooPlsConfig) -> pd.DataFrame:
    """Odoo's fields from a lead model matrix (what a shipped model scores): the stage from
    `current_stage`, the fields from the coded columns that play them. A level the vocabulary
    folded into `__other__` has no cell and is skipped, as a value never seen."""
    decoded = {}
    for i, col in enumerate(columns):
        if col.categories is not None:
            levels = np.array(col.categories, dtype=object)
            codes = X[:, i]
            seen = ~np.isnan(codes)
            decoded[col.name] = np.where(seen, levels[np.where(seen, codes, 0).astype("int64")],
                                         None)
    frame = pd.DataFrame(decoded, index=range(len(X)), dtype="object")
    out = lead_values(frame.drop(columns="current_stage", errors="ignore"), config)
    out[STAGE] = frame.get("current_stage")
    return out


def log_odds(table: PlsTable, leads: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Odoo's score as exactly additive log-odds: per lead, the priors' log ratio (the bias),
    and per counted criterion log(P(value | won) / P(value | lost)) (lead, field, value,
    log_odds). The sigmoid of their sum is Odoo's probability before rounding: what a
    shipped model's margin and contributions are made of."""
    hit, prior = criteria(table, leads)
    bias = np.log(prior["prior_won"] / prior["prior_lost"]).to_numpy(dtype="float64")
    terms = hit.assign(log_odds=np.log(hit["p_won"] / hit["p_lost"]))
    return bias, terms[["lead", "field", "value", "log_odds"]].reset_index(drop=True)
