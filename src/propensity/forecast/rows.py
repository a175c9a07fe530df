"""Point-in-time rows for the forecast models: the leads open at past snapshot times, their
features as of each time, and when (if ever) each converted after it.

Everything is read from the export as it was at `as_of` (`truncate_export`): a model fitted
here for a forecast at T never sees a row dated at or after T. A snapshot row at t is a lead
open at t (as `snapshots.lead_entities` defines it); its features come from the one batch
feature builder, so nothing here defines a feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from propensity.features import FeatureConfig, FeaturePlan, fit_feature_spec
from propensity.features.batch import lead_feature_matrix
from propensity.features.spec import FeatureSpec
from propensity.funnel.journeys import Journeys
from propensity.problems import PropensityError
from propensity.snapshots import lead_entities
from propensity.tables import CrmExport
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


def snapshot_rows(export: CrmExport, as_of: pd.Timestamp, *, every_days: int = 28,
                  min_window_days: int = 30, max_rows: int = 60_000, seed: int = 0,
                  features: FeatureConfig | None = None,
                  spec: FeatureSpec | None = None,
                  journeys: Journeys) -> SnapshotRows:
    """Open leads at every `every_days` before `as_of` whose first `min_window_days` of outcome
    are known by `as_of`, at most `max_rows` of them (whole snapshot rows, seeded sample),
    with features. `export` must already be cut at `as_of` (the caller cuts once, and builds
    its `journeys` once for every step that reads them)."""
    end_us = int(to_micros(pd.Series([as_of]))[0])
    if export.latest_time() >= as_of:
        raise ValueError("snapshot_rows needs the export cut at as_of (truncate_export)")
    times = snapshot_grid(export, as_of, every_days, min_window_days)
    entities = lead_entities(export, times, min_window_days, journeys=journeys, labelled=False)
    if len(entities) > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(entities), max_rows,
                                                          replace=False))
        entities = entities.iloc[keep].reset_index(drop=True)
    spec = spec if spec is not None else fit_feature_spec(export, features or FeatureConfig())
    plan = FeaturePlan(spec)
    X = lead_feature_matrix(export, plan, entities) if len(entities) else np.zeros(
        (0, len(plan.columns)))
    pos = export.lead_positions(entities["lead_id"])
    converted = journeys.reached[:, -1][pos]
    return SnapshotRows(entities=entities, X=X, plan=plan,
                        converted_at=np.where(converted == NEVER, NEVER, converted),
                        as_of_us=to_micros(entities["as_of"]), end_us=end_us)


def open_leads(export: CrmExport, as_of: pd.Timestamp, plan: FeaturePlan,
               journeys: Journeys) -> tuple[pd.DataFrame, np.ndarray]:
    """The leads open at `as_of` (created before it, neither converted nor ended) and their
    features as of `as_of`, read with the models' plan."""
    entities = lead_entities(export, [as_of], 1, journeys=journeys, labelled=False)
    X = lead_feature_matrix(export, plan, entities) if len(entities) else np.zeros(
        (0, len(plan.columns)))
    return entities, X
