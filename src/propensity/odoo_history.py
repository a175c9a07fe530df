"""What Odoo's predictive lead scoring reads from an export: each lead's team and fields, the
leads closed (won or lost) strictly before a time with the stage each closed in, and open
leads' fields and stage as of their own time.

Reading is apart from counting (`models.odoo_pls`, the frequency table and its scores): training
reads these once, at the bottom, beside the rest of what it takes from the export
(`training_inputs`), and the learner and the baseline count what they are given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from propensity.funnel.journeys import Journeys
from propensity.problems import PropensityError
from propensity.snapshots import lead_entities
from propensity.tables import CrmExport, ExportIndex, index_export
from propensity.timestamps import DAY_US, NEVER, to_micros

STAGE, TAG = "stage_id", "tag_id"
DEFAULT_COLUMNS: dict[str, list[str]] = {
    "country_id": ["country"], "state_id": ["state", "region"], "lang_id": ["lang", "language"],
    "source_id": ["source", "lead_source"], "email_state": ["email_state", "email_domain"],
    "phone_state": ["phone_state"], TAG: ["tags"],
}
"""Odoo's PLS fields and, for each, the columns that play its role (the first present wins)."""


class OdooPlsConfig(BaseModel):
    """Where Odoo's fields and teams are found in an export or a table."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error

    team_column: str = "team_id"
    """The lead column holding the sales team, when there is no `owner_teams`."""
    owner_teams: dict[str, str] = Field(default_factory=dict)
    """owner_id -> team: each lead is in its owner's team (Odoo's salesperson's team)."""
    columns: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    tag_separator: str = ";"


# --- an export as of t -------------------------------------------------------------------------

def _lead_teams(leads: pd.DataFrame, config: OdooPlsConfig, usable: list[str]) -> pd.Series:
    """Each lead's sales team (text, None when unknown): from its owner through
    `owner_teams` when given, else from the team column, else none at all."""
    if config.owner_teams and "owner_id" in usable:
        team = leads["owner_id"].astype("object").map(config.owner_teams)
    elif config.team_column in usable:
        team = leads[config.team_column].astype("object")
    else:
        team = pd.Series(None, index=leads.index, dtype="object")
    return pd.Series([None if pd.isna(v) else str(v) for v in team], dtype="object")


def _tags(values: pd.Series, sep: str) -> pd.Series:
    """Each lead's tags: the separated, stripped, non-empty parts of its text."""
    return pd.Series([() if pd.isna(v) else tuple(
        x.strip() for x in str(v).split(sep) if x.strip()) for v in values], dtype="object")


def lead_values(leads: pd.DataFrame, config: OdooPlsConfig,
                exclude: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Each lead's team and Odoo fields (row order), from the columns that play their roles;
    `exclude`: post-outcome columns, never read."""
    usable = [c for c in leads.columns if c not in exclude]
    out = pd.DataFrame(index=range(len(leads)))
    out["team"] = _lead_teams(leads, config, usable)
    for field, names in config.columns.items():
        col = next((c for c in names if c in usable), None)
        if col is None:
            continue
        out[field] = (_tags(leads[col], config.tag_separator) if field == TAG
                      else leads[col].to_numpy(dtype=object))
    return out


def _stage_before(j: Journeys, rows: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Highest stage each lead reached strictly before its own t; -1 when none."""
    reached = j.reached[rows] < t[:, None]
    top = reached.shape[1] - 1 - np.argmax(reached[:, ::-1], axis=1)
    return np.where(reached.any(axis=1), top, -1)


def _stale_at(j: Journeys, stale_days: int) -> np.ndarray:
    """When each lead had sat in a stage longer than `stale_days` (the funnel's lost)."""
    out = np.full(len(j.leads), NEVER, dtype="int64")
    for k in range(j.reached.shape[1] - 1):
        since = j.reached[:, k]
        limit = np.where(since != NEVER, since + stale_days * DAY_US, NEVER)
        stale = (since != NEVER) & (j.reached[:, k + 1] > limit)
        out = np.where(stale, np.minimum(out, limit), out)
    return out


def closed_leads(export: CrmExport, t: pd.Timestamp, config: OdooPlsConfig, *,
                 stale_days: int | None = None, journeys: Journeys) -> pd.DataFrame:
    """Odoo's history as of t: the leads won or lost strictly before t, each with the stage
    it closed in (won: the last; lost: the highest it had reached), indexed by position in
    the export's leads (`journeys`: the export's, built once by the caller)."""
    won_at, lost_at = journeys.reached[:, -1], journeys.ended
    if stale_days is not None:
        lost_at = np.minimum(lost_at, _stale_at(journeys, stale_days))
    at = int(to_micros(pd.Series([t]))[0])
    rows = np.flatnonzero(np.minimum(won_at, lost_at) < at)
    won = won_at[rows] <= lost_at[rows]
    lost_by = np.minimum(lost_at[rows], NEVER - 1) + 1  # the stage entered at the loss counts
    stage = np.where(won, len(journeys.stages) - 1, _stage_before(journeys, rows, lost_by))
    out = lead_values(journeys.leads.iloc[rows], config,
                      export.manifest.post_outcome_columns("leads"))
    out[STAGE] = np.array(journeys.stages, dtype=object)[stage]
    out["won"] = won
    return out.set_axis(rows)  # each lead's position in the export's leads


def open_lead_fields(export: CrmExport | ExportIndex, entities: pd.DataFrame,
                     config: OdooPlsConfig, *, journeys: Journeys) -> pd.DataFrame:
    """Values of (lead_id, as_of) rows, each as of its own time: the stage it had reached
    (`export`: its index, when the caller holds one)."""
    ix = index_export(export)
    rows, at = ix.entity_rows(entities)
    return fields_at(ix, journeys, config, entities["lead_id"], rows, at)


def fields_at(ix: ExportIndex, journeys: Journeys, config: OdooPlsConfig, lead_ids: pd.Series,
              rows: np.ndarray, at: np.ndarray) -> pd.DataFrame:
    """`open_lead_fields` of leads already looked up: `rows` their positions (-1: a lead id
    the export lacks, an error), `at` each one's time in microseconds."""
    if (rows < 0).any():
        missing = lead_ids.to_numpy()[rows < 0][:5]
        raise PropensityError(f"lead ids not in the export: {', '.join(map(str, missing))}")
    stage = _stage_before(journeys, rows, at)
    out = lead_values(journeys.leads.iloc[rows], config,
                      ix.export.manifest.post_outcome_columns("leads"))
    out[STAGE] = np.where(stage >= 0, np.array(journeys.stages, dtype=object)[stage], None)
    return out


# --- what training reads of Odoo's side --------------------------------------------------------

@dataclass
class OdooInputs:
    """Odoo's side of an export, read for a lead model's Odoo learner and baseline."""

    stages: tuple[str, ...]
    lead_ids: np.ndarray
    """The export's lead ids as text, by position (a closed lead's index is its position)."""
    at_cutoff: pd.DataFrame
    """`closed_leads` strictly before the holdout cutoff: what the evaluation fit and the
    naive-Bayes baseline count."""
    at_end: pd.DataFrame | None
    """`closed_leads` strictly before the export's latest time (the shipped fit's); None when
    Odoo's learner is not a candidate."""
    end: pd.Timestamp
    scored: pd.DataFrame | None
    """The naive-Bayes baseline's leads, each's fields and stage as of its own time: the
    holdout rows of a lead model; every lead open at a holdout time of an account model, with
    `lead_rows` saying which (lead_id, as_of, account_id). None: no such baseline."""
    lead_rows: pd.DataFrame | None = None


@dataclass(frozen=True)
class OdooWanted:
    """Which of Odoo's side a training run reads, and the snapshot rules it reads it with."""

    config: OdooPlsConfig
    learner: bool
    """Odoo's learner is a candidate: its history at the export's end is read too."""
    naive_bayes: bool
    """The naive-Bayes baseline judges the model: the holdout leads it scores are read."""
    stale_days: int | None
    horizon_days: int
    lead_model: bool
    """The model's rows are leads: the baseline scores its holdout rows themselves."""


def read_odoo(ix: ExportIndex, journeys: Journeys, wanted: OdooWanted,
              times: tuple[pd.Timestamp, pd.Timestamp], holdout: pd.DataFrame) -> OdooInputs:
    """Odoo's history at the holdout cutoff and at the export's end (`times`; the latter for
    its learner) and the leads its baseline scores, each as of its own time: the `holdout`
    entity rows themselves when they are leads, else every lead open at a holdout time. The
    scored leads are looked up in the index first; the rest reads the journeys."""
    config, stale, (cutoff, end) = wanted.config, wanted.stale_days, times
    leads = holdout[["lead_id", "as_of"]] if wanted.lead_model else lead_entities(
        ix.export, sorted(holdout["as_of"].unique()), wanted.horizon_days, journeys=journeys,
        labelled=False, stale_days=stale)
    rows, at = ix.entity_rows(leads)
    out = OdooInputs(
        stages=tuple(ix.export.stages), lead_ids=ix.leads["lead_id"].astype("str").to_numpy(),
        at_cutoff=closed_leads(ix.export, cutoff, config, stale_days=stale, journeys=journeys),
        at_end=closed_leads(ix.export, end, config, stale_days=stale, journeys=journeys)
        if wanted.learner else None, end=end, scored=None)
    if not wanted.naive_bayes:
        return out
    out.scored = fields_at(ix, journeys, config, leads["lead_id"], rows, at)
    if not wanted.lead_model:
        out.lead_rows = leads.assign(account_id=ix.leads["account_id"].to_numpy()[rows])
    return out
