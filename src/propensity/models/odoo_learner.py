"""Odoo's predictive lead scoring as a learner that can ship: a candidate beside LightGBM and
logistic regression, compared on the same folds by the same metric, and stored in the bundle.

Odoo's score is naive Bayes, so its log-odds are exactly additive: the priors' log ratio plus,
per counted criterion (the lead's stage, country, source, ...), log(P(value | won) /
P(value | lost)), the field's likelihood ratio (`odoo_pls.log_odds`). That is the margin and
the contributions every learner gives (`OdooScorer`, the same interface as `LinearScorer`),
so calibration, reasons and the scorer work unchanged: a lead's reasons are its fields ranked
by their likelihood ratio, the 3 highest above 1 and the 3 lowest below it. A shipped model
reads Odoo's fields back from the model matrix (`odoo_pls.matrix_leads`), so batch scoring,
the pyfunc and the scorer all score it from the one matrix they already build.

What it learns from is not the snapshot rows but Odoo's history: the leads closed (won or
lost) strictly before the fit's cutoff (`OdooHistory`), the evaluation fit's the holdout
cutoff (the naive-Bayes baseline's table), the shipped fit's the export's latest time. A fold
leaves out the closed records of the entities it holds, so a held lead's own outcome is never
in the table that scores it.

Where it departs from Odoo's displayed number: no rounding to 2 decimals or clamp (the margin
is calibrated to the horizon's probability like every learner's), and a lead with no stage
scores on its other fields rather than 0 (an open lead at a snapshot always has one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from propensity.coding import Column
from propensity.features.definitions import STAGE_COLUMN
from propensity.models.odoo_pls import (
    PlsTable,
    fit_table,
    log_odds,
    table_from_dict,
    table_to_dict,
)
from propensity.odoo_history import STAGE, OdooPlsConfig, lead_values


def field_columns(columns: list[Column], config: OdooPlsConfig) -> dict[str, int]:
    """Odoo field -> the matrix column that plays it (as `matrix_leads` decodes it: the first
    coded column named for the field; the stage from `current_stage`)."""
    coded = {c.name: i for i, c in enumerate(columns) if c.categories is not None}
    out = {STAGE: coded[STAGE_COLUMN]} if STAGE_COLUMN in coded else {}
    for name, candidates in config.columns.items():
        col = next((c for c in candidates if c in coded and c != STAGE_COLUMN), None)
        if col is not None:
            out[name] = coded[col]
    return out


@dataclass
class OdooScorer:
    """Margin and exact per-column contributions of Odoo's table on a lead model matrix.

    A coded column holds one of a few levels, so each (scope, column, level) criterion is
    looked up once, when the scorer is built, through the one definition (`odoo_pls.log_odds`
    on the decoded level, as `matrix_leads` decodes it); scoring is then array indexing
    (what `log_odds` on the matrix's leads gives, tested; one lead went from 77 ms to
    microseconds)."""

    columns: list[Column]
    table: PlsTable
    config: OdooPlsConfig
    leads: int = 0
    """Closed leads the table was counted from (the report shows it)."""
    _where: dict[str, int] = field(init=False, repr=False)
    _bias: np.ndarray = field(init=False, repr=False)
    """Per scope (each team with a table, then the pool): the priors' log ratio."""
    _terms: dict[int, np.ndarray] = field(init=False, repr=False)
    """Column -> (scopes, levels + 1) log likelihood ratios, the last level: missing."""
    _team: tuple[int, np.ndarray] | None = field(init=False, repr=False)
    """(column, scope per level + missing) of the column that gives the team; None: pool."""

    def __post_init__(self) -> None:
        self._where = field_columns(self.columns, self.config)
        teams = sorted(self.table.cells["team"].dropna().unique())
        scope_teams: list[str | None] = [*teams, None]
        self._team = self._team_lookup({t: i for i, t in enumerate(teams)}, len(teams))
        self._terms = {}
        bias = np.zeros(len(scope_teams))
        for name, col in self._where.items():
            levels = [*(self.columns[col].categories or ()), None]
            decoded = (pd.DataFrame({STAGE: levels}) if name == STAGE else lead_values(
                pd.DataFrame({self.columns[col].name: levels}, dtype="object"),
                self.config)[[name]])
            frame = pd.concat([decoded.assign(team=t) for t in scope_teams], ignore_index=True)
            b, terms = log_odds(self.table, frame)
            self._terms[col] = np.bincount(
                terms["lead"].to_numpy(dtype="int64"), weights=terms["log_odds"].to_numpy(),
                minlength=len(frame)).reshape(len(scope_teams), len(levels))
            bias = b[::len(levels)]
        self._bias = np.where(np.isfinite(bias), bias, 0.0)  # no first-stage cell: even odds

    def _team_lookup(self, scope_of: dict[str, int], pool: int) -> tuple[int, np.ndarray] | None:
        """The team column as `lead_values` picks it from the coded columns (owner through
        `owner_teams`, else the team column) and each of its levels' scope."""
        coded = {c.name: i for i, c in enumerate(self.columns)
                 if c.categories is not None and c.name != STAGE_COLUMN}
        by_owner = bool(self.config.owner_teams) and "owner_id" in coded
        name = "owner_id" if by_owner else self.config.team_column
        if name not in coded:
            return None
        col = coded[name]
        levels = self.columns[col].categories or ()
        teams = [self.config.owner_teams.get(v) if by_owner else v for v in levels]
        scopes = [pool if t is None else scope_of.get(str(t), pool) for t in teams]
        return col, np.array([*scopes, pool], dtype="int64")

    def _scopes(self, X: np.ndarray) -> np.ndarray:
        pool = len(self._bias) - 1
        if self._team is None:
            return np.full(len(X), pool, dtype="int64")
        col, scope = self._team
        return scope[_level(X[:, col], len(scope) - 1)]

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(rows, columns + 1): each criterion's log likelihood ratio on the column that plays
        its field, the priors' log ratio last; each row sums to the margin."""
        scope = self._scopes(X)
        out = np.zeros((len(X), len(self.columns) + 1))
        for col, terms in self._terms.items():
            out[:, col] = terms[scope, _level(X[:, col], terms.shape[1] - 1)]
        out[:, -1] = self._bias[scope]
        return out

    def margin(self, X: np.ndarray) -> np.ndarray:
        return self.contributions(X).sum(axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"table": table_to_dict(self.table), "config": self.config.model_dump(),
                "leads": self.leads}

    @classmethod
    def from_dict(cls, columns: list[Column], data: dict[str, Any]) -> OdooScorer:
        return cls(list(columns), table_from_dict(data["table"]),
                   OdooPlsConfig.model_validate(data["config"]), int(data.get("leads", 0)))


def _level(codes: np.ndarray, missing: int) -> np.ndarray:
    """Coded values as level indexes, missing as `missing`."""
    return np.where(np.isnan(codes), missing, np.nan_to_num(codes)).astype("int64")


@dataclass(frozen=True)
class OdooHistory:
    """The closed leads a fit may count: those closed strictly before its cutoff, each with
    the entity code of its labelled rows (-1: a lead with none), so a fold can leave its
    held entities out."""

    closed: pd.DataFrame
    """`odoo_history.closed_leads` (team, fields, stage_id, won), row order."""
    groups: np.ndarray
    stages: tuple[str, ...]
    config: OdooPlsConfig
    cutoff: pd.Timestamp

    def scorer(self, columns: list[Column], leave_out: np.ndarray | None = None) -> OdooScorer:
        """Odoo's table of every closed lead but those of the `leave_out` entities."""
        keep = np.ones(len(self.groups), dtype=bool) if leave_out is None or not len(
            leave_out) else ~np.isin(self.groups, leave_out)
        closed = self.closed[keep].reset_index(drop=True)
        return OdooScorer(list(columns), fit_table(closed, self.stages), self.config,
                          int(keep.sum()))


def odoo_history(closed: pd.DataFrame, lead_ids: np.ndarray, codes: pd.Index,
                 stages: tuple[str, ...], config: OdooPlsConfig,
                 cutoff: pd.Timestamp) -> OdooHistory:
    """Odoo's history as of `cutoff` from `closed` (`odoo_history.closed_leads`, indexed by
    lead position); `lead_ids`: the export's lead ids as text by position; `codes`: the lead
    ids whose position is an entity code."""
    ids = lead_ids[closed.index.to_numpy()]
    return OdooHistory(closed.reset_index(drop=True), codes.get_indexer(ids), stages, config,
                       cutoff)
