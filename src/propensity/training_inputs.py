"""What training reads from an export, read once, low to high, before anything is fitted.

The export is read down to what the models need in one step, here: the lead journeys, the
snapshot times and their holdout split, the labelled entity frame, the feature spec of each
phase and its matrix, Odoo's history (the leads closed before each fit's cutoff and the
holdout leads its baseline scores) and the outlook's point-in-time rows. The higher floors,
`models/` (`training_sets.build_export_sets`, the fit) and `forecast/` (the outlook's models),
receive these values and never the export, so they never call back down into the tables.

Point in time is decided here, once: the evaluation phase's vocabulary is fitted on the
export cut at the holdout's first time, and each Odoo history holds only the leads closed
strictly before its own cutoff.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from propensity.features import FeatureConfig, FeaturePlan, FeatureSpec, fit_feature_spec
from propensity.funnel.journeys import build_journeys
from propensity.odoo_history import OdooInputs, OdooPlsConfig, OdooWanted, read_odoo
from propensity.snapshot_rows import SnapshotRows, outlook_rows
from propensity.snapshots import SnapshotConfig, holdout_split, snapshot_times
from propensity.tables import CrmExport, index_export, truncate_export
from propensity.targets import LEAD, Target


@dataclass
class TrainingInputs:
    """Everything training takes from one export (`read_training_inputs`)."""

    target: Target
    times: list[pd.Timestamp]
    """Snapshot times, oldest first."""
    train_times: list[pd.Timestamp]
    test_times: list[pd.Timestamp]
    end: pd.Timestamp
    """The export's latest timestamp (`CrmExport.latest_time`): its 'now'."""
    entities: pd.DataFrame
    """Labelled entity rows (key, as_of, labels) at every snapshot time, in time order."""
    in_eval: np.ndarray
    """Rows of `entities` at the evaluation phase's times (train and holdout)."""
    specs: tuple[FeatureSpec, FeatureSpec]
    """(evaluation: fitted on the export as of the cutoff, shipping: on the whole export)."""
    X_eval: np.ndarray
    X_ship: np.ndarray
    odoo: OdooInputs | None = None
    outlook: SnapshotRows | str | None = None
    """The shipped outlook's rows (`outlook_rows`), the reason there are none, or None when
    the target ships no outlook."""

    @property
    def cutoff(self) -> pd.Timestamp:
        return self.test_times[0]


@dataclass(frozen=True)
class InputsWanted:
    """What to read besides the labelled rows: Odoo's side (with its config) and the outlook."""

    odoo: OdooPlsConfig | None = None
    odoo_learner: bool = False
    naive_bayes: bool = False
    outlook_seed: int | None = None
    """The outlook's sampling seed; None: no outlook."""


def read_training_inputs(export: CrmExport, target: Target, snapshots: SnapshotConfig,
                         features: FeatureConfig, holdout_share: float, wanted: InputsWanted,
                         progress: Callable[[str], None] | None = None) -> TrainingInputs:
    """Read the export once, lowest floor first: its index (`tables.index_export`: every
    row's lead position and time), the journeys, snapshot times and their split, the entity
    frame, Odoo's history, both phases' feature specs and matrices, then the outlook's rows,
    each from the index and the journeys already built."""
    say = progress or (lambda _text: None)
    end = export.latest_time()
    ix = index_export(export)
    say("snapshots and labels")
    times = snapshot_times(ix.leads["created_at"].min(), end, snapshots)
    train_times, test_times = holdout_split(times, snapshots.horizon_days, holdout_share)
    journeys = build_journeys(ix)
    entities = target.entities(export, times, snapshots.horizon_days, journeys=journeys,
                               snapshots=snapshots).reset_index(drop=True)
    odoo = None
    if wanted.odoo is not None and (wanted.odoo_learner or wanted.naive_bayes):
        odoo = read_odoo(ix, journeys, OdooWanted(
            wanted.odoo, wanted.odoo_learner, wanted.naive_bayes, snapshots.stale_days,
            snapshots.horizon_days, target.entity is LEAD), (test_times[0], end),
            entities[entities["as_of"].isin(test_times)])
    in_eval = entities["as_of"].isin([*train_times, *test_times]).to_numpy()
    specs = (fit_feature_spec(truncate_export(export, test_times[0]), features),
             fit_feature_spec(export, features))
    eval_entities = entities[in_eval].reset_index(drop=True)
    say(f"features for {len(eval_entities):,} evaluation rows (vocabulary as of "
        f"{test_times[0]:%Y-%m-%d})")
    X_eval = target.entity.matrix(ix, FeaturePlan(specs[0]), eval_entities)
    say(f"features for {len(entities):,} labelled rows (whole export's vocabulary)")
    X_ship = target.entity.matrix(ix, FeaturePlan(specs[1]), entities)
    inputs = TrainingInputs(target, times, train_times, test_times, end, entities, in_eval,
                            specs, X_eval, X_ship, odoo)
    if wanted.outlook_seed is not None:
        say("outlook (time to convert and amount): point-in-time snapshot rows")
        inputs.outlook = outlook_rows(ix, specs[1], end, seed=wanted.outlook_seed,
                                      journeys=journeys)
    return inputs
