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
from propensity.funnel.journeys import Journeys, build_journeys
from propensity.odoo_history import OdooPlsConfig, closed_leads, open_lead_fields
from propensity.problems import PropensityError
from propensity.snapshot_rows import SnapshotRows, outlook_rows
from propensity.snapshots import SnapshotConfig, lead_entities, snapshot_times
from propensity.tables import CrmExport, truncate_export
from propensity.targets import LEAD, Target


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


def holdout_split(times: list[pd.Timestamp], horizon_days: int, holdout_share: float
                  ) -> tuple[list[pd.Timestamp], list[pd.Timestamp]]:
    """(times the evaluation fit learns from, holdout times): the latest times are the
    holdout; a training time's label window must close by the holdout's first time."""
    if len(times) < 4:
        raise PropensityError(f"only {len(times)} snapshot time(s): need 4 or more "
                              "(more history, or a smaller --horizon-days / snapshot spacing)")
    n_test = max(1, round(holdout_share * len(times)))
    test_times = times[-n_test:]
    train_times = [t for t in times if t + pd.Timedelta(days=horizon_days) <= test_times[0]]
    if len(train_times) < 2:
        raise PropensityError("too little history before the holdout for this horizon")
    return train_times, test_times


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
    """Read the export once, lowest floor first: journeys, snapshot times and their split, the
    entity frame, both phases' feature specs and matrices, then Odoo's history and the
    outlook's rows (both from the journeys already built)."""
    say = progress or (lambda _text: None)
    journeys = build_journeys(export)
    say("snapshots and labels")
    times = snapshot_times(export, snapshots)
    end = export.latest_time()
    train_times, test_times = holdout_split(times, snapshots.horizon_days, holdout_share)
    entities = target.entities(export, times, snapshots.horizon_days, journeys=journeys,
                               snapshots=snapshots).reset_index(drop=True)
    in_eval = entities["as_of"].isin([*train_times, *test_times]).to_numpy()
    specs = (fit_feature_spec(truncate_export(export, test_times[0]), features),
             fit_feature_spec(export, features))
    eval_entities = entities[in_eval].reset_index(drop=True)
    say(f"features for {len(eval_entities):,} evaluation rows (vocabulary as of "
        f"{test_times[0]:%Y-%m-%d})")
    X_eval = target.entity.matrix(export, FeaturePlan(specs[0]), eval_entities)
    say(f"features for {len(entities):,} labelled rows (whole export's vocabulary)")
    X_ship = target.entity.matrix(export, FeaturePlan(specs[1]), entities)
    inputs = TrainingInputs(target, times, train_times, test_times, end, entities, in_eval,
                            specs, X_eval, X_ship)
    if wanted.odoo is not None and (wanted.odoo_learner or wanted.naive_bayes):
        inputs.odoo = read_odoo(export, inputs, wanted.odoo, wanted, snapshots, journeys)
    if wanted.outlook_seed is not None:
        say("outlook (time to convert and amount): point-in-time snapshot rows")
        inputs.outlook = outlook_rows(export, specs[1], end, seed=wanted.outlook_seed,
                                      journeys=journeys)
    return inputs


def read_odoo(export: CrmExport, inputs: TrainingInputs, config: OdooPlsConfig,
              wanted: InputsWanted, snapshots: SnapshotConfig, journeys: Journeys) -> OdooInputs:
    """Odoo's history at the holdout cutoff (and the export's end, for its learner) and the
    leads its baseline scores, each as of its own time."""
    stale, end = snapshots.stale_days, inputs.end
    out = OdooInputs(
        stages=tuple(export.stages),
        lead_ids=export.leads["lead_id"].astype("str").to_numpy(),
        at_cutoff=closed_leads(export, inputs.cutoff, config, stale_days=stale,
                               journeys=journeys),
        at_end=closed_leads(export, end, config, stale_days=stale, journeys=journeys)
        if wanted.odoo_learner else None, end=end, scored=None)
    if not wanted.naive_bayes:
        return out
    holdout = inputs.entities[inputs.entities["as_of"].isin(inputs.test_times)]
    if inputs.target.entity is LEAD:
        out.scored = open_lead_fields(export, holdout[[LEAD.key, "as_of"]], config,
                                      journeys=journeys)
        return out
    leads = lead_entities(export, sorted(holdout["as_of"].unique()), snapshots.horizon_days,
                          journeys=journeys, labelled=False, stale_days=stale)
    out.scored = open_lead_fields(export, leads, config, journeys=journeys)
    out.lead_rows = leads.assign(account_id=export.leads["account_id"].to_numpy()[
        export.lead_positions(leads["lead_id"])])
    return out
