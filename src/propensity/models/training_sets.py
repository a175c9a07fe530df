"""The labelled rows training fits on, built from what training read of an export
(`training_inputs`: snapshot rows, labels, the matrices of both phases, Odoo's history) or
from a single table; the Spark engine builds the same
`TrainingSets` (`propensity.spark`) through `assemble_sets`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from propensity.coding import Column, encode, fit_vocabulary
from propensity.features import FeaturePlan, FeatureSpec
from propensity.models.baselines import odoo_naive_bayes, odoo_table_naive_bayes
from propensity.models.bundle import Kind
from propensity.models.odoo_learner import OdooHistory, odoo_history
from propensity.models.train_config import TrainConfig
from propensity.single_table import SingleTable
from propensity.targets import LEAD_CONVERSION, Target, target_named
from propensity.timestamps import to_micros
from propensity.training_inputs import TrainingInputs


@dataclass
class LabelledRows:
    """The rows of one phase: model matrix, labels, and who / when each row is."""

    X: np.ndarray
    y: np.ndarray
    columns: list[Column]
    groups: np.ndarray
    """Entity (lead or account) code per row: weights and folds count entities."""
    times: np.ndarray
    """Snapshot time per row (int64 microseconds; all 0 for a single table)."""
    weight: np.ndarray | None = None
    """Row weights of a sample (the Spark engine's: negatives weigh 1/their share); None: 1."""
    odoo: OdooHistory | None = None
    """The closed leads Odoo's table may count for a fit on these rows (lead models on
    exports: as of the holdout cutoff for the evaluation rows, the export's end for the
    shipping rows); None: Odoo's learner is not a candidate."""

    def take(self, idx: np.ndarray) -> LabelledRows:
        return LabelledRows(self.X[idx], self.y[idx], self.columns, self.groups[idx],
                            self.times[idx], None if self.weight is None else self.weight[idx],
                            self.odoo)


@dataclass
class TrainingSets:
    """Everything fitting needs, however it was built (pandas here, Spark in `propensity.spark`).

    `evaluation` holds the rows before the cutoff plus the holdout rows, coded with the
    evaluation vocabulary; `shipping` every labelled row, coded with the whole export's.
    """

    kind: Kind
    target: Target
    """What the rows are labelled for: the bundle is named after it, and its outcomes and
    baselines are what the fit counts and judges against."""
    evaluation: LabelledRows
    test: np.ndarray
    """Rows of `evaluation` that are the holdout; the others are what the evaluation fit sees."""
    shipping: LabelledRows
    holdout: pd.DataFrame
    """Holdout entities (key and as_of, or row numbers for a table) in `test` order."""
    evaluation_spec: FeatureSpec | None = None
    shipping_spec: FeatureSpec | None = None
    split: dict[str, Any] = field(default_factory=dict)
    horizon_days: int | None = None
    stale_days: int | None = None
    id_column: str | None = None
    baselines: dict[str, np.ndarray] = field(default_factory=dict)
    """Holdout predictions of baselines that read the raw data, not the matrix (Odoo's)."""


# --- building the labelled rows of an export --------------------------------------------------

def _labelled(X: np.ndarray, columns: list[Column], entities: pd.DataFrame, target: Target,
              codes: pd.Index) -> LabelledRows:
    return LabelledRows(
        X=X, y=entities[target.label].to_numpy(dtype="int64"), columns=list(columns),
        groups=codes.get_indexer(entities[target.entity.key].astype("str").to_numpy()),
        times=to_micros(entities["as_of"]))


def assemble_sets(entities: pd.DataFrame, X_eval: np.ndarray, X_ship: np.ndarray,
                  specs: tuple[FeatureSpec, FeatureSpec], times: list[pd.Timestamp],
                  split: tuple[list[pd.Timestamp], list[pd.Timestamp]],
                  config: TrainConfig) -> TrainingSets:
    """TrainingSets from labelled entity rows (in snapshot order) and their two matrices:
    `X_eval` of the rows at evaluation times (vocabulary as of the cutoff), `X_ship` of all
    (the whole export's); `split`: the snapshot times' (`snapshots.holdout_split`), which
    the caller decided before building the matrices. Both engines end here."""
    target = config.target
    key = target.entity.key
    train_times, test_times = split
    evaluation_spec, shipping_spec = specs
    codes = pd.Index(entities[key].astype("str").unique())
    in_eval = entities["as_of"].isin([*train_times, *test_times]).to_numpy()
    eval_entities = entities[in_eval].reset_index(drop=True)
    evaluation = _labelled(X_eval, target.entity.columns(FeaturePlan(evaluation_spec)),
                           eval_entities, target, codes)
    shipping = _labelled(X_ship, target.entity.columns(FeaturePlan(shipping_spec)),
                         entities, target, codes)
    test = np.flatnonzero(eval_entities["as_of"].isin(test_times).to_numpy())
    holdout = eval_entities.iloc[test][[key, "as_of"]].reset_index(drop=True)
    return TrainingSets(
        kind="export", target=target, evaluation=evaluation, test=test, shipping=shipping,
        holdout=holdout, evaluation_spec=evaluation_spec, shipping_spec=shipping_spec,
        horizon_days=config.snapshots.horizon_days, stale_days=config.snapshots.stale_days,
        split=split_info(times, train_times, test_times, config))


def split_info(times: list[pd.Timestamp], train_times: list[pd.Timestamp],
               test_times: list[pd.Timestamp], config: TrainConfig) -> dict[str, Any]:
    """What the report says about the split."""
    cutoff, horizon = test_times[0], config.snapshots.horizon_days
    return {"cutoff": str(cutoff), "first_snapshot": str(times[0]),
            "last_snapshot": str(times[-1]), "train_snapshots": len(train_times),
            "last_train_snapshot": str(train_times[-1]),
            "test_snapshots": len(test_times), "horizon_days": horizon,
            "gap_days": float((cutoff - train_times[-1]) / pd.Timedelta(days=1)),
            "stale_days": config.snapshots.stale_days}


def build_export_sets(inputs: TrainingInputs, config: TrainConfig) -> TrainingSets:
    """The labelled rows of both phases from what training read of an export (`inputs`:
    `training_inputs.read_training_inputs`), with Odoo's baseline and history when read."""
    sets = assemble_sets(inputs.entities, inputs.X_eval, inputs.X_ship, inputs.specs,
                         inputs.times, (inputs.train_times, inputs.test_times), config)
    odoo = inputs.odoo
    if odoo is None:
        return sets
    if odoo.scored is not None:
        sets.baselines["naive_bayes"] = odoo_naive_bayes(odoo.at_cutoff, odoo.stages,
                                                         odoo.scored, sets.holdout,
                                                         odoo.lead_rows)
    if odoo.at_end is not None:
        codes = pd.Index(inputs.entities[inputs.target.entity.key].astype("str").unique())
        sets.evaluation.odoo = odoo_history(odoo.at_cutoff, odoo.lead_ids, codes, odoo.stages,
                                            config.odoo, inputs.cutoff)
        sets.shipping.odoo = odoo_history(odoo.at_end, odoo.lead_ids, codes, odoo.stages,
                                          config.odoo, odoo.end)
    return sets



# --- single tables ---------------------------------------------------------------------------

def _table_rows(table: SingleTable, rows: np.ndarray, config: TrainConfig) -> LabelledRows:
    """A table's rows coded with a vocabulary fitted on those rows only."""
    frame = table.frame.iloc[rows]
    columns = []
    for col in table.feature_columns:
        if pd.api.types.is_numeric_dtype(table.frame[col]):
            columns.append(Column(col))
        elif levels := fit_vocabulary(frame[col], min_count=config.features.min_category_count,
                                      max_levels=config.features.max_categories):
            columns.append(Column(col, tuple(levels)))
    X = np.column_stack([encode(table.frame[c.name], c.categories) for c in columns]) if (
        columns) else np.zeros((len(table.frame), 0))
    return LabelledRows(X=X, y=table.y, columns=columns, groups=np.arange(len(table.frame)),
                        times=np.zeros(len(table.frame), dtype="int64"))


def build_table_sets(table: SingleTable, config: TrainConfig) -> TrainingSets:
    y = table.y
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=config.holdout_share, stratify=y,
                                  random_state=config.seed)
    rest, test = np.sort(rest), np.sort(test)
    evaluation = _table_rows(table, rest, config)
    shipping = _table_rows(table, idx, config)
    holdout = pd.DataFrame({"row": test})
    if table.id_column:
        holdout.insert(0, table.id_column, table.frame[table.id_column].to_numpy()[test])
    return TrainingSets(kind="table", target=target_named(LEAD_CONVERSION),
                        evaluation=evaluation,
                        test=test, shipping=shipping, holdout=holdout,
                        id_column=table.id_column,
                        baselines={"naive_bayes": odoo_table_naive_bayes(table, rest, test,
                                                                         config.odoo)},
                        split={"holdout_rows": int(test.size), "train_rows": int(rest.size),
                               "stratified": True, "seed": config.seed})
