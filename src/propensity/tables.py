"""The validated tables of one CRM export, in memory: what every later step reads.

`export_reader.py` reads files into this shape and `validation.py` checks it; both depend on this
module and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from propensity.contract import TABLES, Manifest
from propensity.positions import IdIndex
from propensity.problems import ProblemReport, PropensityError


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

    def lead_positions(self, keys: pd.Series) -> np.ndarray:
        """Row position in `leads` of each lead id, -1 when absent; the index of the leads'
        ids is built once per leads table (rebuilt if the table is replaced)."""
        if self._lead_ids is None or self._lead_ids[0] is not self.leads:
            self._lead_ids = (self.leads, IdIndex(self.leads["lead_id"]))
        return self._lead_ids[1].positions(keys)

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
        latest = [self.leads["created_at"].max()]
        for name, col in (("events", "occurred_at"), ("stage_history", "entered_at"),
                          ("opportunities", "created_at"), ("opportunities", "closed_at")):
            frame = self.table(name)
            if frame is not None and len(frame):
                latest.append(frame[col].max())
        valid = [t for t in latest if not pd.isna(t)]
        if not valid:
            raise PropensityError("the export has no timestamps")
        return pd.Timestamp(max(valid))

    def won_amounts(self, lead_ids: pd.Series) -> np.ndarray:
        """Each lead's won amount (the sum of its won opportunities' amounts), NaN when it won
        none: an outcome, known only as far as the export reaches."""
        opps = self.opportunities
        out = np.full(len(lead_ids), np.nan)
        if opps is None or not len(opps):
            return out
        won = opps[(opps["status"].astype("str") == "won") & opps["amount"].notna()]
        per_lead = won.groupby(won["lead_id"].astype("str"))["amount"].sum()
        return per_lead.reindex(lead_ids.astype("str").to_numpy()).to_numpy(dtype="float64")

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
