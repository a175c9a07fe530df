"""The validated tables of one CRM export, in memory, and their index: what every later step reads.

`export_reader.py` reads files into this shape and `validation.py` checks it; both depend on this
module and not on each other. `index_export` turns an export once into what the steps above
join on (each row's lead position, each time as microseconds), so journeys, snapshots and the
batch features take those values instead of asking the tables again between their own steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from propensity.contract import TABLES, Manifest
from propensity.positions import IdIndex
from propensity.problems import ProblemReport, PropensityError
from propensity.timestamps import to_micros

NO_TIMESTAMPS = "the export has no timestamps"


@dataclass(frozen=True)
class SourceFile:
    path: Path
    header_rows: int
    """1 for CSV (the header is spreadsheet row 1), 0 for Parquet."""

    @property
    def name(self) -> str:
        return self.path.name

    def row_of(self, index: np.ndarray | pd.Index) -> np.ndarray:
        return np.asarray(index, dtype="int64") + 1 + self.header_rows


@dataclass
class CrmExport:
    """The validated tables of one export; absent tables are None."""

    leads: pd.DataFrame
    events: pd.DataFrame | None = None
    stage_history: pd.DataFrame | None = None
    opportunities: pd.DataFrame | None = None
    accounts: pd.DataFrame | None = None
    manifest: Manifest = field(default_factory=Manifest)
    report: ProblemReport = field(default_factory=ProblemReport)
    files: dict[str, SourceFile] = field(default_factory=dict)
    _lead_ids: tuple[pd.DataFrame, IdIndex] | None = field(default=None, repr=False,
                                                           compare=False)

    def table_names(self) -> list[str]:
        """The tables this export has (a table with a header and no rows counts: it says
        nothing happened, where an absent one says nothing is known)."""
        return [name for name in TABLES if getattr(self, name) is not None]

    def lead_index(self) -> IdIndex:
        """The index of the leads' ids, built once per leads table (rebuilt if the table is
        replaced)."""
        if self._lead_ids is None or self._lead_ids[0] is not self.leads:
            self._lead_ids = (self.leads, IdIndex(self.leads["lead_id"]))
        return self._lead_ids[1]

    def lead_positions(self, keys: pd.Series) -> np.ndarray:
        """Row position in `leads` of each lead id, -1 when absent."""
        return self.lead_index().positions(keys)

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(self.manifest.stages)

    def table(self, name: str) -> pd.DataFrame | None:
        if name not in TABLES:
            raise KeyError(name)
        frame: pd.DataFrame | None = getattr(self, name)
        return frame

    def latest_time(self) -> pd.Timestamp:
        """The latest timestamp anywhere in the export: its 'now' for a historical export."""
        latest = self.latest()
        if latest is None:
            raise PropensityError(NO_TIMESTAMPS)
        return latest

    def latest(self) -> pd.Timestamp | None:
        """`latest_time`, None when the export has no timestamps."""
        latest = [self.leads["created_at"].max()]
        for name, col in (("events", "occurred_at"), ("stage_history", "entered_at"),
                          ("opportunities", "created_at"), ("opportunities", "closed_at")):
            frame = self.table(name)
            if frame is not None and len(frame):
                latest.append(frame[col].max())
        valid = [t for t in latest if not pd.isna(t)]
        return pd.Timestamp(max(valid)) if valid else None

    def attribute_columns(self, name: str) -> list[str]:
        """Extra columns of `leads` / `accounts` usable as features (post-outcome excluded)."""
        frame = self.table(name)
        if frame is None:
            return []
        spec = TABLES[name]
        banned = set(spec.names) | set(self.manifest.post_outcome_columns(name))
        return [c for c in frame.columns if c not in banned]


def truncate_export(export: CrmExport, at: pd.Timestamp) -> CrmExport:
    """The export as it would have been exported at `at`: nothing dated at or after it.

    Leads created at or after `at` go; so do events, stage rows and opportunities created at or
    after it; an opportunity closed at or after it is reopened (its close is in the future).
    """
    leads = export.leads[export.leads["created_at"] < at]

    def keep(frame: pd.DataFrame | None, col: str) -> pd.DataFrame | None:
        return None if frame is None else frame[frame[col] < at]

    opps = keep(export.opportunities, "created_at")
    if opps is not None:
        future = opps["closed_at"] >= at
        opps = opps.copy()
        opps["status"] = opps["status"].astype("str")
        opps.loc[future, "closed_at"] = pd.NaT
        opps.loc[future, "status"] = "open"
    return CrmExport(
        leads=leads, events=keep(export.events, "occurred_at"),
        stage_history=keep(export.stage_history, "entered_at"), opportunities=opps,
        accounts=export.accounts, manifest=export.manifest, report=export.report,
        files=export.files,
    )


@dataclass(frozen=True, eq=False)
class ExportIndex:
    """An export read once into positions and microseconds, at the bottom: every row's lead
    (its position in `leads`, -1 when the export lacks it) and every time column as int64
    microseconds (`timestamps.to_micros`), an absent or empty table's arrays empty; and each
    lead's won amount, the export's outcome the outlook reads. Training builds it first and
    hands it up, so journeys, snapshot times, Odoo's history, the outlook's rows and each
    feature matrix read values instead of going back down into the tables between their own
    steps (each matrix looked every table's lead ids up again)."""

    export: CrmExport
    leads: pd.DataFrame
    """The export's leads, indexed by position (0..n-1): what a lead position picks."""
    lead_ids: IdIndex
    created: np.ndarray
    event_lead: np.ndarray
    event_time: np.ndarray
    stage_lead: np.ndarray
    stage_time: np.ndarray
    opportunity_lead: np.ndarray
    opportunity_created: np.ndarray
    opportunity_closed: np.ndarray
    end: pd.Timestamp | None
    """The export's latest timestamp (`CrmExport.latest_time`); None when it has none."""
    won_amount: np.ndarray
    """Each lead's won amount (the sum of its won opportunities' amounts), NaN when it won
    none: an outcome, known only as far as the export reaches."""

    def entity_rows(self, entities: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(each entity row's lead position, -1 when absent; its `as_of` in microseconds)."""
        as_of = to_micros(entities["as_of"])
        return self.lead_ids.positions(entities["lead_id"]), as_of


def _column(frame: pd.DataFrame | None, name: str) -> pd.Series:
    """A table's column; an absent table's is empty."""
    return pd.Series([], dtype="object") if frame is None else frame[name]


def _won(opportunities: pd.DataFrame | None) -> tuple[np.ndarray, pd.Series]:
    """(which opportunities were won with an amount, their amounts): what a lead's won amount
    sums, once its opportunities' leads are known."""
    if opportunities is None:
        return np.zeros(0, dtype=bool), pd.Series([], dtype="float64")
    won = (opportunities["status"].astype("str") == "won") & opportunities["amount"].notna()
    return won.to_numpy(), opportunities["amount"].reset_index(drop=True)


def index_export(export: CrmExport | ExportIndex) -> ExportIndex:
    """The export's `ExportIndex` (its times, then every table's rows' leads; the ids' index
    is the export's own, built once per leads table), or `export` itself when it is one
    already: a caller that reads several things of one export indexes it once."""
    if isinstance(export, ExportIndex):
        return export
    tables = (export.events, export.stage_history, export.opportunities)
    times = [_column(frame, col) for frame, col in zip(
        (export.leads, *tables, export.opportunities),
        ("created_at", "occurred_at", "entered_at", "created_at", "closed_at"), strict=True)]
    keys = [_column(frame, "lead_id") for frame in tables]
    end, (won, amount) = export.latest(), _won(export.opportunities)
    created, event_time, stage_time, opp_created, opp_closed = map(to_micros, times)
    lead_ids = export.lead_index()
    event_lead, stage_lead, opp_lead = (lead_ids.positions(k) for k in keys)
    won = won & (opp_lead >= 0)  # each lead's won amount: the sum of its won opportunities' amounts
    per_lead = amount[won].groupby(opp_lead[won]).sum()
    won_amount = np.full(len(export.leads), np.nan)
    won_amount[per_lead.index.to_numpy()] = per_lead.to_numpy(dtype="float64")
    return ExportIndex(
        export=export, leads=export.leads.reset_index(drop=True), lead_ids=lead_ids,
        created=created, event_lead=event_lead, event_time=event_time, stage_lead=stage_lead,
        stage_time=stage_time, opportunity_lead=opp_lead, opportunity_created=opp_created,
        opportunity_closed=opp_closed, end=end, won_amount=won_amount)
