"""One row per lead: when it reached each funnel stage, whether it ended, when it converted.

This is the shape every funnel metric is a group-by over. A lead that skipped a stage is
counted as having passed it when it reached the next higher one (the contract), so the time it
"reached" a stage is the earliest entry into that stage or any above it. The first stage is
reached at creation. Conversion is the earlier of entering the last stage and a won opportunity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from propensity.contract import TERMINAL_STAGES, stage_rank
from propensity.tables import CrmExport, ExportIndex, index_export
from propensity.timestamps import NEVER, from_micros


@dataclass
class Journeys:
    stages: tuple[str, ...]
    reached: np.ndarray
    """(n_leads, n_stages) int64 microseconds since epoch, NEVER when not reached."""
    entered: np.ndarray
    """Like `reached`, but only actual entries (a skipped stage stays NEVER here)."""
    ended: np.ndarray
    """(n_leads,) first terminal (disqualified / lost) entry, NEVER when none."""
    leads: pd.DataFrame

    def reached_at(self, stage: str) -> pd.Series:
        col = self.reached[:, self.stages.index(stage)]
        return from_micros(col, self.leads.index)

    @property
    def converted_at(self) -> pd.Series:
        return self.reached_at(self.stages[-1])


def build_journeys(export: CrmExport | ExportIndex) -> Journeys:
    """Every lead's journey, from the export's index (`tables.index_export`; built here when
    the caller passes the export): positions and times are read there once, not here."""
    ix = index_export(export)
    stages = ix.export.stages
    n, k = len(ix.leads), len(stages)
    entered = np.full((n, k), NEVER, dtype="int64")
    ended = np.full(n, NEVER, dtype="int64")
    entered[:, 0] = ix.created
    sh = ix.export.stage_history
    if sh is not None and len(sh):
        t, pos = ix.stage_time, ix.stage_lead
        stage_text = sh["stage"].astype("str").to_numpy()
        rank = pd.Series(stage_text).map(stage_rank(stages)).to_numpy()
        ok = (pos >= 0) & ~np.isnan(rank)
        np.minimum.at(entered, (pos[ok], rank[ok].astype("int64")), t[ok])
        term = (pos >= 0) & np.isin(stage_text, TERMINAL_STAGES)
        np.minimum.at(ended, pos[term], t[term])
    opps = ix.export.opportunities
    if opps is not None and len(opps):
        status = opps["status"].astype("str").to_numpy()
        closed, pos = ix.opportunity_closed, ix.opportunity_lead
        won = (status == "won") & (pos >= 0)
        np.minimum.at(entered[:, k - 1], pos[won], closed[won])
        # a lost opportunity ends the lead's journey unless it later advanced
        lost = (status == "lost") & (pos >= 0)
        np.minimum.at(ended, pos[lost], closed[lost])
    # passing a higher stage means passing every stage below it
    reached = np.minimum.accumulate(entered[:, ::-1], axis=1)[:, ::-1]
    return Journeys(stages=stages, reached=reached, entered=entered, ended=ended, leads=ix.leads)
