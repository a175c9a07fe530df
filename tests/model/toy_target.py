"""A model the library does not name: "reaches SQL within 30 days", asked only of leads below
SQL. Importing this module defines it, as a deployment's own module would: the test imports it
itself, and a scorer it starts imports it by name (PROPENSITY_TARGET_MODULES)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from propensity.funnel.journeys import Journeys
from propensity.snapshots import SnapshotConfig, lead_entities
from propensity.tables import CrmExport
from propensity.targets import LEAD, Target, define
from propensity.timestamps import NEVER

NAME = "reaches-sql-30d"
SQL = "sql"


def reaches_sql(j: Journeys, rows: np.ndarray, stage: np.ndarray, t: int, h: int) -> np.ndarray:
    at = j.reached[rows, j.stages.index(SQL)]
    return (at != NEVER) & (at > t) & (at <= t + h)


def below_sql(target: Target, export: CrmExport, times: list[pd.Timestamp],
              horizon_days: int, *, journeys: Journeys, labelled: bool,
              snapshots: SnapshotConfig | None, stale_days: int | None) -> pd.DataFrame:
    """Open leads that have not reached SQL yet: the only ones the question is about."""
    frame = lead_entities(export, times, horizon_days, journeys=journeys, labelled=labelled,
                          config=snapshots, stale_days=stale_days,
                          labels={target.label: reaches_sql})
    return frame[frame["stage_index"] < export.stages.index(SQL)].reset_index(drop=True)


TOY = define(Target(NAME, LEAD, "reached_sql", ("SQLs", "leads that never reached SQL"),
                    below_sql))
