"""Point-in-time rows for the forecast models (the forecast's and a shipped bundle's
outlook): the leads open at past snapshot times, their features as of each time, and what
came after it: when (if ever) each converted, and the amount it was won for.

They are read from the export here, below the models that learn from them
(`forecast.hazard`, `forecast.amount`), so those models take rows, not an export.

Everything is read from the export as it was at `as_of` (`truncate_export`): a model fitted
here for a forecast at T never sees a row dated at or after T. A snapshot row at t is a lead
open at t (as `snapshots.lead_entities` defines it); its features come from the one batch
feature builder, so nothing here defines a feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from propensity.features import FeaturePlan
from propensity.features.batch import lead_matrix_at
from propensity.features.spec import FeatureSpec
from propensity.funnel.journeys import Journeys
from propensity.problems import PropensityError
from propensity.snapshots import open_lead_rows
from propensity.tables import NO_TIMESTAMPS, CrmExport, ExportIndex
from propensity.timestamps import DAY_US, NEVER, to_micros


class TooLittleHistory(PropensityError):
    """The export before the forecast time cannot teach the models (exit 1)."""


@dataclass
class SnapshotRows:
    """Open leads at past times with their features (as of each time) and outcome times."""

    entities: pd.DataFrame
    """lead_id, as_of, stage_index: one row per lead open at each snapshot time."""
    X: np.ndarray
    plan: FeaturePlan
    converted_at: np.ndarray
    """int64 microseconds of each row's lead's conversion, NEVER when not (yet) converted."""
    as_of_us: np.ndarray
    end_us: int
    """The time the data stops: an outcome after it is not known."""
    amount: np.ndarray
    """Each row's lead's won amount (`ExportIndex.won_amount`), NaN when it won none: known
    once it was won before the data's end, as the export is cut there."""
    open_entities: pd.DataFrame
    """The leads open at `as_of` (lead_id, as_of, stage_index): the hazard
    model's levels are anchored on them (`HazardModel.anchor`), and a forecast scores them."""
    open_X: np.ndarray
    """Their features as of `as_of`, read with `plan`."""

    @property
    def as_of(self) -> pd.Timestamp:
        """The time the rows were read as of (the export's cut, `end_us`), not a row's own
        snapshot time (`as_of_us`)."""
        return pd.Timestamp(self.end_us, unit="us", tz="UTC")

    def observed(self, days: float) -> np.ndarray:
        """Rows whose window (as_of, as_of + days] closed by the end of the data."""
        return self.as_of_us + int(days * DAY_US) <= self.end_us

    def converted_within(self, days: float) -> np.ndarray:
        return (self.converted_at <= self.as_of_us + int(days * DAY_US)).astype("int8")


def snapshot_grid(export: CrmExport, end: pd.Timestamp, every_days: int,
                  min_window_days: int) -> list[pd.Timestamp]:
    """Every `every_days` from a step after the first lead to `min_window_days` before `end`,
    counted back from `end` so the latest snapshot is as recent as the window allows."""
    first = export.leads["created_at"].min() + pd.Timedelta(days=every_days)
    last = end - pd.Timedelta(days=min_window_days)
    if first > last:
        raise TooLittleHistory(
            f"the history before {end:%Y-%m-%d} is too short: leads start "
            f"{export.leads['created_at'].min():%Y-%m-%d}, and the forecast models need "
            f"{min_window_days} days of outcomes after the first snapshot")
    last = last.floor("D")
    steps = int((last - first) / pd.Timedelta(days=every_days))
    return [last - pd.Timedelta(days=every_days * k) for k in range(steps, -1, -1)]


def snapshot_rows(ix: ExportIndex, as_of: pd.Timestamp, spec: FeatureSpec, *,
                  every_days: int = 28, min_window_days: int = 30, max_rows: int = 60_000,
                  seed: int = 0, journeys: Journeys) -> SnapshotRows:
    """Open leads at every `every_days` before `as_of` whose first `min_window_days` of outcome
    are known by `as_of`, at most `max_rows` of them (whole snapshot rows, seeded sample),
    with features read with `spec` (fitted by the caller: the forecast's on the cut export, a
    bundle's own). The export (`ix`: its index, `tables.index_export`) must already be cut
    at `as_of`: the caller cuts once, and indexes it and builds its `journeys` once for every
    step that reads them. The leads open at `as_of` itself are read beside them, and both
    frames' features in one matrix."""
    if ix.end is None:
        raise PropensityError(NO_TIMESTAMPS)
    if ix.end >= as_of:
        raise ValueError("snapshot_rows needs the export cut at as_of (truncate_export)")
    end_us = int(to_micros(pd.Series([as_of]))[0])
    times = snapshot_grid(ix.export, as_of, every_days, min_window_days)
    entities, pos, as_of_us = open_lead_rows(journeys, times, min_window_days, labelled=False)
    if len(entities) > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(entities), max_rows,
                                                          replace=False))
        entities = entities.iloc[keep].reset_index(drop=True)
        pos, as_of_us = pos[keep], as_of_us[keep]
    open_entities, open_pos, open_us = open_lead_rows(journeys, [as_of], 1, labelled=False)
    plan, n = FeaturePlan(spec), len(entities)
    X = (lead_matrix_at(ix, plan, np.concatenate([pos, open_pos]),
                        np.concatenate([as_of_us, open_us]))
         if n + len(open_entities) else np.zeros((0, len(plan.columns))))
    converted = journeys.reached[:, -1][pos]
    return SnapshotRows(entities=entities, X=X[:n], plan=plan,
                        converted_at=np.where(converted == NEVER, NEVER, converted),
                        as_of_us=as_of_us, end_us=end_us, amount=ix.won_amount[pos],
                        open_entities=open_entities, open_X=X[n:])


def outlook_rows(ix: ExportIndex, spec: FeatureSpec, latest: pd.Timestamp, *,
                 seed: int, journeys: Journeys, max_rows: int = 60_000) -> SnapshotRows | str:
    """The rows a shipped bundle's outlook learns from: the whole export as of the day after
    its latest timestamp (`latest`: `CrmExport.latest_time`; the forecast's default), with the
    bundle's own feature spec (so the outlook reads the matrix the probability is scored
    from). Too short a history gives the reason instead: the bundle then ships without an
    outlook."""
    as_of = latest.floor("D") + pd.Timedelta(days=1)
    try:
        return snapshot_rows(ix, as_of, spec, max_rows=max_rows, seed=seed,
                             journeys=journeys)
    except TooLittleHistory as exc:
        return str(exc)
