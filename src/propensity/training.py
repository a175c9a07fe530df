"""Training: choose on all labelled history, measure out of time, ship what does not lose.

1. **Choose.** Folds of whole entities over every labelled snapshot (what the shipped model
   learns from) compare LightGBM settings, logistic regression and their blend, and fix the
   tree count; a fixed count of fits, no clock.
2. **Evaluate.** The latest snapshot times are the holdout. The vocabulary is fitted on the
   export as it was at the holdout's first time (the cutoff), and the model learns only from
   snapshots whose label window closed by then (a label not yet known at the cutoff would be a
   peek at the holdout period). The chosen learner is refitted on those rows (its tree count
   decided again on their folds), calibrated on its out-of-fold margins, and judged on the
   holdout beside the baselines. If it loses to one, the best other learner that does not is
   what ships, and the report says so.
3. **Ship.** That learner, setting and tree count refitted on every labelled snapshot up to
   the latest complete label window (holdout included), with a vocabulary from the whole
   export, calibrated (Platt, `CALIBRATION`) on its out-of-fold margins of the latest snapshot
   times.

Single tables, which have no dates, get a stratified holdout for the report and stratified
folds; the shipped model learns from every row.
"""

from __future__ import annotations

from dataclasses import dataclass

from propensity.forecast.forecaster import attach_outlook
from propensity.models.fitting import MIN_POSITIVES, FitResult, fit_sets, leaky_columns
from propensity.models.train_config import Progress, TrainConfig, note
from propensity.models.training_sets import (
    LabelledRows,
    TrainingSets,
    build_export_sets,
    build_table_sets,
)
from propensity.monitoring.reference import Reference, reference_of, served_like
from propensity.single_table import SingleTable
from propensity.tables import CrmExport
from propensity.targets import LEAD_CONVERSION
from propensity.training_inputs import InputsWanted, TrainingInputs, read_training_inputs

__all__ = ["MIN_POSITIVES", "LabelledRows", "Progress", "TrainConfig", "TrainResult",
           "TrainingSets", "export_sets", "fit_sets", "read_inputs", "train_export",
           "train_sets", "train_table"]


@dataclass
class TrainResult(FitResult):
    reference: Reference | None = None
    """The shipped model's rows of the holdout period, binned: what drift is measured against
    (what a served lead looks like; see `monitoring.reference`)."""


def train_sets(sets: TrainingSets, config: TrainConfig,
               progress: Progress | None = None) -> TrainResult:
    """`fit_sets`, with the shipped model's reference distributions (what monitoring needs)."""
    fitted = fit_sets(sets, config, progress)
    ship, held = sets.shipping, sets.evaluation.times[sets.test]
    note(progress, "reference distributions of the shipped model's rows of the holdout period")
    return TrainResult(**vars(fitted), reference=reference_of(
        fitted.bundle, ship.X[served_like(ship.times, held)]))


def read_inputs(export: CrmExport, config: TrainConfig, progress: Progress | None = None, *,
                outlook: bool = False) -> TrainingInputs:
    """What this run reads of the export (`training_inputs`), once: Odoo's side when a
    baseline or a learner of it needs it, the outlook's rows when asked and the target ships
    one."""
    target = config.target
    wanted = InputsWanted(
        odoo=config.odoo, naive_bayes="naive_bayes" in target.baselines,
        odoo_learner=target.name == LEAD_CONVERSION and "odoo_pls" in config.learners,
        outlook_seed=config.seed if outlook and config.outlook and target.outlook else None)
    return read_training_inputs(export, target, config.snapshots, config.features,
                                config.holdout_share, wanted, progress)


def export_sets(export: CrmExport, config: TrainConfig,
                progress: Progress | None = None) -> TrainingSets:
    """The labelled rows of both phases of an export, as `train_export` fits them."""
    return build_export_sets(read_inputs(export, config, progress), config)


def train_export(export: CrmExport, config: TrainConfig,
                 progress: Progress | None = None) -> TrainResult:
    """Train one target on an export: read it once (`training_inputs`), evaluate out of time,
    ship refitted on everything (with its outlook, when its target ships one). Nothing past
    the reading sees the export."""
    inputs = read_inputs(export, config, progress, outlook=True)
    result = train_sets(build_export_sets(inputs, config), config, progress)
    if inputs.outlook is not None:
        result.report["outlook"] = attach_outlook(result.bundle, inputs.outlook, config.seed,
                                                  progress)
    return result


def train_table(table: SingleTable, config: TrainConfig,
                progress: Progress | None = None) -> TrainResult:
    """Train from a single table: a stratified holdout for the report, every row to ship."""
    result = train_sets(build_table_sets(table, config), config, progress)
    declared = [c for c in table.post_outcome if c in table.frame]
    if declared:  # checked on their own, so the report can say they leak
        result.report["post_outcome_columns"] = declared
        result.report["post_outcome_checks"] = leaky_columns(table.frame[declared], table.y)
    return result
