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

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from propensity.coding import Column, as_frame, encode, fit_vocabulary
from propensity.features import FeatureConfig, FeaturePlan, FeatureSpec, fit_feature_spec
from propensity.forecast.forecaster import attach_outlook
from propensity.funnel.journeys import Journeys, build_journeys
from propensity.models.baselines import (
    PointsModel,
    derived_points,
    odoo_naive_bayes,
    odoo_table_naive_bayes,
)
from propensity.models.bundle import LEARNERS, Kind, Learner, ModelBundle
from propensity.models.calibration import ISOTONIC_MIN_ROWS, fit_calibrator
from propensity.models.evaluation import evaluation_report, rank_auc
from propensity.models.linear import LinearScorer
from propensity.models.odoo_learner import OdooHistory, odoo_history
from propensity.models.odoo_pls import OdooPlsConfig
from propensity.models.selection import (
    Candidate,
    Choice,
    Fold,
    Problem,
    as_choice,
    entity_folds,
    fit_choice,
    fold_rates,
    lead_weights,
    oof_margins,
    resize,
    select,
    stratified_folds,
)
from propensity.monitoring.reference import Reference, reference_of, served_like
from propensity.problems import PropensityError
from propensity.single_table import SingleTable
from propensity.snapshots import SnapshotConfig, snapshot_times
from propensity.tables import CrmExport, truncate_export
from propensity.targets import LEAD_CONVERSION, Target, UnknownTarget, target_named
from propensity.timestamps import to_micros

LEAKY_AUC = 0.9
MIN_POSITIVES = 50
"""Fewest converting entities (leads, accounts; rows of a table) in the labelled history:
below it, folds hold a handful each and no choice or calibration means anything."""
MIN_NEGATIVES = 50
"""Fewest entities that never convert there, for the same reason."""
CALIBRATION_SHARES = (1 / 3, 1 / 2)
"""Latest shares of the snapshot times a calibration tries, smallest first (`_recent`)."""
CALIBRATION = "platt"
"""How a model's margin becomes a probability: Platt scaling, two parameters on out-of-fold
margins. The tree count is chosen by held log loss, so the margins are already close to
log-odds and what is left is their scale and level. On six seeds of the long-lived profile
(8,000 leads, judged at T against the generator's truth) Platt put the lead model's top decile
+2% above the truth's mean over the same leads where the (binned) isotonic map put it +28%
(PAV's top block is the highest of noisy averages), ECE 15 equal-mass 0.0049 vs 0.0082, and
the account model's log loss 0.1574 vs 0.1593 (docs/training.md)."""
Progress = Callable[[str], None]


class PointsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error

    event_points: dict[str, float] | None = None
    attribute_points: dict[str, dict[str, float]] | None = None
    numeric_thresholds: dict[str, list[list[float]]] | None = None


class TrainConfig(BaseModel):
    """One training run; `training/*.toml` files hold these."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error

    model: str = LEAD_CONVERSION
    """A target's name (`propensity.targets`)."""
    snapshots: SnapshotConfig = Field(default_factory=SnapshotConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    holdout_share: float = Field(0.25, gt=0, lt=1)
    """Share of the (latest) snapshot times, or of single-table rows, held out for evaluation."""
    folds: int = Field(4, ge=2, le=10)
    """Folds of whole entities (or stratified, for a table) for choosing and calibrating."""
    learners: list[Learner] = Field(default_factory=lambda: list(LEARNERS))
    search: bool = True
    """Try the small LightGBM grid (`models/booster.py`), not only its default setting."""
    max_search_rows: int = 150_000
    """Choose the learner on a sample of at most this many rows (whole leads); fits use all."""
    weights: Literal["lead", "row"] = "lead"
    """`lead`: a lead open at many snapshots counts once; `row`: every snapshot row counts."""
    booster: dict[str, Any] = Field(default_factory=dict)
    """LightGBM parameters applied over every setting tried (e.g. num_threads)."""
    points: PointsConfig = Field(default_factory=PointsConfig)
    odoo: OdooPlsConfig = Field(default_factory=OdooPlsConfig)
    """Where the naive-Bayes baseline (Odoo's lead scoring) finds teams and fields."""
    seed: int = 13
    outlook: bool = True
    """Fit the lead's outlook (time to convert, deal amount) with a model whose target ships
    one (`Target.outlook`); false leaves it out (the score's outlook fields are then null)."""

    @field_validator("model")
    @classmethod
    def _known_target(cls, name: str) -> str:
        try:
            target_named(name)
        except UnknownTarget as exc:  # a ValueError, so the file and field are named
            raise ValueError(str(exc)) from None
        return name

    @property
    def target(self) -> Target:
        return target_named(self.model)

    @classmethod
    def from_file(cls, path: Path | str) -> TrainConfig:
        """A config from a TOML file such as `training/default.toml`."""
        import tomllib

        try:
            return cls.model_validate(tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PropensityError(f"{path}: {exc}") from exc


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
    target: str
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


@dataclass
class TrainResult:
    target: str
    bundle: ModelBundle
    """What ships: refitted on all labelled rows."""
    evaluation_bundle: ModelBundle
    """What was measured on the holdout (fitted before the cutoff)."""
    report: dict[str, Any]
    holdout: pd.DataFrame
    """Holdout entities with `label`, `probability` and each baseline's probability."""
    holdout_X: np.ndarray
    """The evaluation model's matrix of the holdout rows (what promotion re-scores)."""
    params: dict[str, Any] = field(default_factory=dict)
    reference: Reference | None = None
    """The shipped model's rows of the holdout period, binned: what drift is measured against
    (what a served lead looks like; see `monitoring.reference`)."""

    @property
    def holdout_auc(self) -> float:
        return float(self.report["metrics"]["model"]["roc_auc"])

    @property
    def feature_names(self) -> list[str]:
        return self.bundle.feature_names


def _note(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)


def leaky_columns(X: pd.DataFrame, y: np.ndarray, threshold: float = LEAKY_AUC) -> list[str]:
    """Columns that alone separate the classes almost perfectly: filled in after the outcome?"""
    found = []
    for col in X.columns:
        v = X[col]
        if pd.api.types.is_numeric_dtype(v):
            score = v.to_numpy(dtype="float64", na_value=np.nan)
            if np.isnan(score).all():
                continue
            score = np.where(np.isnan(score), np.nanmin(score) - 1, score)
        else:
            text = v.astype("str").where(v.notna(), "<missing>")
            score = text.map(pd.Series(y, index=text.index).groupby(text).mean()).to_numpy(
                dtype="float64")
        if len(np.unique(score)) < 2:
            continue
        auc = rank_auc(y, score)  # roc_auc_score's number, faster over many columns
        if max(auc, 1 - auc) >= threshold:
            found.append(f"{col} alone separates the classes (AUC {max(auc, 1 - auc):.3f}): "
                         "it looks leaky (filled in after the outcome?)")
    return found


# --- building the labelled rows of an export --------------------------------------------------

def _labelled(X: np.ndarray, columns: list[Column], entities: pd.DataFrame, target: Target,
              codes: pd.Index) -> LabelledRows:
    return LabelledRows(
        X=X, y=entities[target.label].to_numpy(dtype="int64"), columns=list(columns),
        groups=codes.get_indexer(entities[target.entity.key].astype("str").to_numpy()),
        times=to_micros(entities["as_of"]))


def assemble_sets(entities: pd.DataFrame, X_eval: np.ndarray, X_ship: np.ndarray,
                  specs: tuple[FeatureSpec, FeatureSpec], times: list[pd.Timestamp],
                  config: TrainConfig) -> TrainingSets:
    """TrainingSets from labelled entity rows (in snapshot order) and their two matrices:
    `X_eval` of the rows at evaluation times (vocabulary as of the cutoff), `X_ship` of all
    (the whole export's). Both engines end here."""
    target = config.target
    key = target.entity.key
    train_times, test_times = holdout_split(times, config)
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
        kind="export", target=target.name, evaluation=evaluation, test=test, shipping=shipping,
        holdout=holdout, evaluation_spec=evaluation_spec, shipping_spec=shipping_spec,
        horizon_days=config.snapshots.horizon_days, stale_days=config.snapshots.stale_days,
        split=split_info(times, train_times, test_times, config))


def holdout_split(times: list[pd.Timestamp], config: TrainConfig
                  ) -> tuple[list[pd.Timestamp], list[pd.Timestamp]]:
    """(times the evaluation fit learns from, holdout times): the latest times are the
    holdout; a training time's label window must close by the holdout's first time."""
    horizon = config.snapshots.horizon_days
    if len(times) < 4:
        raise PropensityError(f"only {len(times)} snapshot time(s): need 4 or more "
                              "(more history, or a smaller --horizon-days / snapshot spacing)")
    n_test = max(1, round(config.holdout_share * len(times)))
    test_times = times[-n_test:]
    train_times = [t for t in times if t + pd.Timedelta(days=horizon) <= test_times[0]]
    if len(train_times) < 2:
        raise PropensityError("too little history before the holdout for this horizon")
    return train_times, test_times


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


def build_export_sets(export: CrmExport, config: TrainConfig,
                      progress: Progress | None = None,
                      journeys: Journeys | None = None) -> TrainingSets:
    """Snapshot rows, labels and features of both phases (`journeys`: the export's, when the
    caller built them already)."""
    target = config.target
    horizon = config.snapshots.horizon_days
    _note(progress, "snapshots and labels")
    journeys = build_journeys(export) if journeys is None else journeys
    times = snapshot_times(export, config.snapshots)
    train_times, test_times = holdout_split(times, config)
    cutoff = test_times[0]
    entities = target.entities(export, times, horizon, journeys=journeys,
                               snapshots=config.snapshots).reset_index(drop=True)
    in_eval = entities["as_of"].isin([*train_times, *test_times]).to_numpy()
    evaluation_spec = fit_feature_spec(truncate_export(export, cutoff), config.features)
    shipping_spec = fit_feature_spec(export, config.features)
    eval_entities = entities[in_eval].reset_index(drop=True)
    _note(progress, f"features for {len(eval_entities):,} evaluation rows (vocabulary as of "
                    f"{cutoff:%Y-%m-%d})")
    X_eval = target.entity.matrix(export, FeaturePlan(evaluation_spec), eval_entities)
    _note(progress, f"features for {len(entities):,} labelled rows (whole export's vocabulary)")
    X_ship = target.entity.matrix(export, FeaturePlan(shipping_spec), entities)
    sets = assemble_sets(entities, X_eval, X_ship, (evaluation_spec, shipping_spec), times,
                         config)
    if "naive_bayes" in target.baselines:
        sets.baselines["naive_bayes"] = odoo_naive_bayes(
            export, sets.holdout, cutoff, config.odoo, horizon_days=horizon,
            stale_days=config.snapshots.stale_days, journeys=journeys)
    if target.name == LEAD_CONVERSION and "odoo_pls" in config.learners:
        codes = pd.Index(entities[target.entity.key].astype("str").unique())  # as assembled
        for rows, at in ((sets.evaluation, cutoff), (sets.shipping, export.latest_time())):
            rows.odoo = odoo_history(export, at, config.odoo, codes,
                                     stale_days=config.snapshots.stale_days, journeys=journeys)
    return sets


def train_export(export: CrmExport, config: TrainConfig,
                 progress: Progress | None = None) -> TrainResult:
    """Train one target on an export: evaluate out of time, ship refitted on everything
    (with its outlook, when its target ships one)."""
    journeys = build_journeys(export)  # once, for the sets and the outlook alike
    result = fit_sets(build_export_sets(export, config, progress, journeys), config, progress)
    if config.outlook and config.target.outlook:
        result.report["outlook"] = attach_outlook(result.bundle, export, config.seed, progress,
                                                  journeys)
    return result


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
    return TrainingSets(kind="table", target=LEAD_CONVERSION, evaluation=evaluation,
                        test=test, shipping=shipping, holdout=holdout,
                        id_column=table.id_column,
                        baselines={"naive_bayes": odoo_table_naive_bayes(table, rest, test,
                                                                         config.odoo)},
                        split={"holdout_rows": int(test.size), "train_rows": int(rest.size),
                               "stratified": True, "seed": config.seed})


def train_table(table: SingleTable, config: TrainConfig,
                progress: Progress | None = None) -> TrainResult:
    """Train from a single table: a stratified holdout for the report, every row to ship."""
    result = fit_sets(build_table_sets(table, config), config, progress)
    declared = [c for c in table.post_outcome if c in table.frame]
    if declared:  # checked on their own, so the report can say they leak
        result.report["post_outcome_columns"] = declared
        result.report["post_outcome_checks"] = leaky_columns(table.frame[declared], table.y)
    return result


# --- fitting, the same for both shapes --------------------------------------------------------

def _problem(rows: LabelledRows, config: TrainConfig) -> Problem:
    leads = max(1, len(np.unique(rows.groups)))
    w = lead_weights(rows.groups) if config.weights == "lead" else np.ones(len(rows.y))
    if rows.weight is not None:
        w = w * rows.weight
    return Problem(rows.X, rows.y, w, rows.columns, rows_per_lead=len(rows.y) / leads,
                   entities=leads, overrides={"seed": config.seed, **config.booster},
                   groups=rows.groups, odoo=rows.odoo)


def _folds(rows: LabelledRows, kind: Kind, config: TrainConfig) -> list[Fold]:
    folds = (entity_folds(rows.groups, rows.y, config.folds, config.seed)
             if kind == "export" else stratified_folds(rows.y, config.folds, config.seed))
    if len(folds) < 2:
        raise PropensityError(
            f"only {len(folds)} usable fold(s) of {config.folds}: too few rows or conversions "
            "to choose and calibrate a model (more history, a longer horizon, or fewer folds)")
    return folds


def _sample(rows: LabelledRows, limit: int, seed: int) -> np.ndarray:
    """Rows of a random set of whole entities, about `limit` of them (all when fewer)."""
    if len(rows.y) <= limit:
        return np.arange(len(rows.y))
    groups = np.unique(rows.groups)
    rng = np.random.default_rng(seed)
    keep = rng.choice(groups, max(1, int(len(groups) * limit / len(rows.y))), replace=False)
    return np.flatnonzero(np.isin(rows.groups, keep))


def _bundle(sets: TrainingSets, rows: LabelledRows, choice: Choice, fitted: tuple[Any, Any],
            margins: np.ndarray, y: np.ndarray, spec: FeatureSpec | None,
            info: dict[str, Any]) -> ModelBundle:
    booster, linear = fitted
    if rows.odoo is not None and choice.learner == "odoo_pls":
        info = {**info, "odoo_table": {"closed_leads": linear.leads,
                                       "closed_before": str(rows.odoo.cutoff)}}
    seen = ~np.isnan(margins) & _recent(rows.times, y)
    calibrator = fit_calibrator(margins[seen], y[seen], CALIBRATION)
    return ModelBundle(
        kind=sets.kind, target=sets.target, columns=rows.columns,
        learner=choice.learner,
        calibrator=calibrator, booster=booster, linear=linear, blend_weight=choice.blend_weight,
        horizon_days=sets.horizon_days, stale_days=sets.stale_days, spec=spec,
        id_column=sets.id_column, info={**info, "calibration": {
            "kind": calibrator.kind, "rows": int(seen.sum()),
            **_span(rows.take(np.flatnonzero(seen)))}})


def _recent(times: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The rows a calibration is fitted on: the latest third of the snapshot times (else half,
    else all) that holds `ISOTONIC_MIN_ROWS` rows and `MIN_POSITIVES` positives. Scores are
    read at the latest time, where leads are older than early in the export, and a margin
    does not mean the same there: on long-lived leads the top decile at T was predicted 0.21
    against 0.136 realised when calibrated over all history, 0.16 over its latest quarter."""
    distinct = np.unique(times)
    for share in CALIBRATION_SHARES:
        recent = times >= distinct[int(len(distinct) * (1 - share))]
        if recent.sum() >= ISOTONIC_MIN_ROWS and y[recent].sum() >= MIN_POSITIVES:
            return recent
    return np.ones(len(times), dtype=bool)


def _span(rows: LabelledRows) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": len(rows.y), "entities": len(np.unique(rows.groups)),
                           "positives": int(rows.y.sum())}
    if rows.times.any():
        t = pd.to_datetime(rows.times, unit="us", utc=True)
        out["from"], out["to"] = str(t.min()), str(t.max())
    return out


def _baselines(train: LabelledRows, test: LabelledRows, config: TrainConfig,
               kind: Kind, raw: dict[str, np.ndarray],
               allowed: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Points, naive Bayes and logistic regression (those of them `allowed`: the target's),
    fitted on the evaluation fit's rows."""
    X_train, X_test = as_frame(train.X, train.columns), as_frame(test.X, test.columns)
    out: dict[str, np.ndarray] = {}
    points_cfg = config.points.model_dump()
    if kind == "table" and all(v is None for v in points_cfg.values()):
        points_cfg = derived_points(X_train, train.y) or points_cfg
    if "points" in allowed:
        points = PointsModel(**points_cfg).fit(X_train, train.y)
        if np.unique(points.predict_proba(X_train)[:, 1]).size > 1:  # a constant is no baseline
            out["points"] = points.predict_proba(X_test)[:, 1]
    out.update({k: v for k, v in raw.items() if k in allowed})  # Odoo's naive Bayes
    if "logistic_regression" in allowed:
        w = lead_weights(train.groups) if config.weights == "lead" else None
        linear = LinearScorer(train.columns).fit(train.X, train.y, w)
        out["logistic_regression"] = 1 / (1 + np.exp(-linear.margin(test.X)))
    return out


def enough_outcomes(rows: LabelledRows, target: str) -> None:
    """Refuse, in one line, labelled history too thin to produce a model that beats the rules:
    the minimums (`MIN_POSITIVES`, `MIN_NEGATIVES`) and what was found."""
    ever = np.zeros(int(rows.groups.max(initial=-1)) + 1, dtype=bool)
    ever[rows.groups[rows.y == 1]] = True
    seen = np.zeros_like(ever)
    seen[rows.groups] = True
    positives, negatives = int(ever.sum()), int((seen & ~ever).sum())
    yes, no = target_named(target).outcomes
    if positives < MIN_POSITIVES:
        raise PropensityError(f"{positives} {yes} in the labelled history; at least "
                              f"{MIN_POSITIVES} are needed")
    if negatives < MIN_NEGATIVES:
        raise PropensityError(f"{negatives} {no} in the labelled history; at least "
                              f"{MIN_NEGATIVES} are needed")


def _decided_on(rows: LabelledRows, folds: list[Fold]) -> dict[str, Any]:
    """The rows a decision was made on, and each fold's positive rate learnt vs held."""
    return {**_span(rows), "folds": len(folds), "fold_rates": fold_rates(rows.y, folds)}


def _fallbacks(winner: Candidate, tried: list[Candidate]) -> list[Candidate]:
    """The chosen candidate, then the best of every other learner by mean fold AUC: what is
    judged on the holdout, in order, until one does not lose there."""
    best: dict[str, Candidate] = {}
    for c in sorted(tried, key=lambda c: -c.auc):
        best.setdefault(c.learner, c)
    return [winner, *sorted((c for c in best.values() if c.learner != winner.learner),
                            key=lambda c: -c.auc)]


def _holdout_parts(sets: TrainingSets) -> tuple[LabelledRows, LabelledRows]:
    """The evaluation rows before the cutoff and the holdout rows, refused (after the shipping
    rows' own minimums) when either side holds a single class."""
    ev = sets.evaluation
    is_test = np.zeros(len(ev.y), dtype=bool)
    is_test[sets.test] = True
    train, test = ev.take(np.flatnonzero(~is_test)), ev.take(sets.test)
    enough_outcomes(sets.shipping, sets.target)
    for name, part in (("training", train), ("holdout", test)):
        if len(part.y) == 0 or len(np.unique(part.y)) < 2:
            raise PropensityError(
                f"the {name} rows ({len(part.y)}) hold only one class: too little data or too "
                "few conversions for this horizon and snapshot spacing")
    return train, test


@dataclass
class _Search:
    """Step 1's outcome: the learner, setting and tree count chosen on folds over (a sample
    of) all labelled history, with every candidate tried."""
    sample: LabelledRows
    folds: list[Fold]
    choice: Choice
    winner: Candidate
    tried: list[Candidate]


def _search(sets: TrainingSets, config: TrainConfig, progress: Progress | None) -> _Search:
    """Choose the learner, its setting and tree count on folds over all labelled history."""
    ship = sets.shipping
    sample = ship.take(_sample(ship, config.max_search_rows, config.seed))
    problem = _problem(sample, config)
    folds = _folds(sample, sets.kind, config)
    _note(progress, f"choosing a learner on {len(sample.y):,} rows of all labelled history, "
                    f"{len(folds)} folds")
    choice, winner, tried = select(problem, folds, search=config.search,
                                   learners=config.learners,
                                   note=lambda text: _note(progress, text))
    return _Search(sample, folds, choice, winner, tried)


@dataclass
class _Evaluation:
    """Step 2's outcome: the candidate that ships (the winner unless it lost the holdout),
    its evaluation model and holdout predictions beside the baselines', and every verdict."""
    candidate: Candidate
    choice: Choice
    bundle: ModelBundle
    predictions: dict[str, np.ndarray]
    judged: list[dict[str, Any]]


def _evaluate(sets: TrainingSets, train: LabelledRows, test: LabelledRows, config: TrainConfig,
              search: _Search, progress: Progress | None) -> _Evaluation:
    """The evaluation model: each fallback candidate in turn fitted before the cutoff (its
    tree count decided again on folds of those rows) and judged on the holdout beside the
    baselines, until one does not lose there (else the first is kept)."""
    train_problem = _problem(train, config)
    train_folds = _folds(train, sets.kind, config)
    _note(progress, "baselines: points, naive Bayes, logistic regression")
    baselines = _baselines(train, test, config, sets.kind, sets.baselines,
                           target_named(sets.target).baselines)
    judged: list[dict[str, Any]] = []
    chosen: tuple[Candidate, Choice, Any, np.ndarray] | None = None
    for cand in _fallbacks(search.winner, search.tried):
        _note(progress, f"evaluation fit: {cand.name} on {len(train.y):,} rows before the "
                        "cutoff")
        eval_choice, eval_oof = resize(as_choice(cand, ""), train_problem, train_folds,
                                       lambda text: _note(progress, text))
        bundle = _bundle(sets, train, eval_choice, fit_choice(eval_choice, train_problem),
                         eval_oof, train.y, sets.evaluation_spec,
                         {"fit": _span(train), "learner": eval_choice.name,
                          "decided_on": _decided_on(train, train_folds)})
        p = bundle.predict(test.X, threads=0)
        verdict = judge(test.y, {"model": p, **baselines})
        judged.append({"candidate": cand.name, "holdout": eval_choice.name, **verdict})
        if chosen is None or verdict["passed"]:
            chosen = (cand, eval_choice, bundle, p)
        if verdict["passed"]:
            break
    assert chosen is not None
    ship_cand, eval_choice, eval_bundle, p_model = chosen
    return _Evaluation(ship_cand, eval_choice, eval_bundle, {"model": p_model, **baselines},
                       judged)


def _holdout_report(train: LabelledRows, test: LabelledRows,
                    evaluation: _Evaluation) -> dict[str, Any]:
    """The holdout metrics of the evaluation model and the baselines, with its mean absolute
    SHAP per feature and the columns that alone rank the training rows suspiciously well."""
    contrib = evaluation.bundle.contributions(test.X[:20_000], threads=0)[:, :-1]
    importance = pd.DataFrame({"feature": [c.name for c in test.columns],
                               "mean_abs_shap": np.abs(contrib).mean(axis=0)}).sort_values(
        "mean_abs_shap", ascending=False)
    warnings = leaky_columns(as_frame(train.X, train.columns), train.y)
    return evaluation_report(test.y, evaluation.predictions, importance, warnings)


def _ship_margins(sets: TrainingSets, config: TrainConfig, search: _Search, choice: Choice,
                  candidate: Candidate, ship_problem: Problem,
                  progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """The out-of-fold margins the shipped model is calibrated on: the search's own when it
    saw every row, else fresh folds over every row (the choice was made on a sample)."""
    ship = sets.shipping
    if len(search.sample.y) == len(ship.y):
        _note(progress, f"shipping fit: {choice.name} on {len(ship.y):,} rows")
        return candidate.oof, ship.y
    ship_folds = _folds(ship, sets.kind, config)
    _note(progress, f"shipping fit: {choice.name} on {len(ship.y):,} rows, out-of-fold "
                    f"calibration over {len(ship_folds)} folds")
    return oof_margins(choice, ship_problem, ship_folds), ship.y


def _complete_report(report: dict[str, Any], sets: TrainingSets, search: _Search,
                     choice: Choice, evaluation: _Evaluation, shipped: ModelBundle,
                     parts: tuple[LabelledRows, LabelledRows],
                     fallback: dict[str, Any] | None) -> None:
    """Add to the holdout report how the choice was made, what was evaluated and shipped,
    the split, the row counts and the gate's verdict (with the fallback, if any)."""
    train, test = parts
    report["selection"] = {"chosen": choice.name, "learner": choice.learner, "why": choice.why,
                           "rows": len(search.sample.y), "folds": len(search.folds),
                           "decided_on": _decided_on(search.sample, search.folds),
                           "fits": len(search.folds) * sum(c.learner != "blend"
                                                           for c in search.tried),
                           "candidates": [c.summary() for c in search.tried]}
    report["evaluation"] = {**evaluation.bundle.info,
                            "feature_set": None if sets.evaluation_spec is None
                            else sets.evaluation_spec.key}
    report["shipped"] = {**shipped.info, "iterations": choice.iterations,
                         "feature_set": None if sets.shipping_spec is None
                         else sets.shipping_spec.key}
    report["split"] = sets.split
    report["rows"] = {"train": len(train.y), "test": len(test.y),
                      "shipped": len(sets.shipping.y)}
    report["gate"] = gate(report)
    report["holdout_judged"] = evaluation.judged
    if fallback:
        report["gate"]["fallback"] = fallback


def _holdout_frame(sets: TrainingSets, test: LabelledRows,
                   predictions: dict[str, np.ndarray]) -> pd.DataFrame:
    """The holdout rows with their label and every model's and baseline's probability."""
    holdout = sets.holdout.copy()
    holdout["label"] = test.y
    for name, p in predictions.items():
        holdout["probability" if name == "model" else f"p_{name}"] = p
    return holdout


def fit_sets(sets: TrainingSets, config: TrainConfig,
             progress: Progress | None = None) -> TrainResult:
    """Choose on all labelled history, evaluate on the holdout (falling back to a candidate
    that does not lose there), then refit and calibrate what ships."""
    started = time.perf_counter()
    train, test = _holdout_parts(sets)
    ship = sets.shipping
    search = _search(sets, config, progress)  # 1. choose
    evaluation = _evaluate(sets, train, test, config, search, progress)  # 2. evaluate
    choice, winner, ship_cand = search.choice, search.winner, evaluation.candidate
    fallback: dict[str, Any] | None = None
    if ship_cand is not winner:
        choice = as_choice(ship_cand, f"fallback: {winner.name} lost on the holdout "
                                      f"({_losses(evaluation.judged[0])}); {ship_cand.name} "
                                      "did not")
        fallback = {"chosen": winner.name, "shipped": ship_cand.name,
                    "lost_to": evaluation.judged[0]["loses_to"]}
    report = _holdout_report(train, test, evaluation)
    # 3. what ships: the choice fitted on every labelled row, calibrated out of fold
    ship_problem = _problem(ship, config)
    margins, calib_y = _ship_margins(sets, config, search, choice, ship_cand, ship_problem,
                                     progress)
    info: dict[str, Any] = {"fit": _span(ship), "learner": choice.name, "why": choice.why}
    if fallback:
        info["fallback"] = fallback
    shipped = _bundle(sets, ship, choice, fit_choice(choice, ship_problem), margins, calib_y,
                      sets.shipping_spec, info)
    _complete_report(report, sets, search, choice, evaluation, shipped, (train, test), fallback)
    report["seconds"] = round(time.perf_counter() - started, 1)
    holdout = _holdout_frame(sets, test, evaluation.predictions)
    _note(progress, "reference distributions of the shipped model's rows of the holdout period")
    return TrainResult(target=sets.target, bundle=shipped, evaluation_bundle=evaluation.bundle,
                       report=report, holdout=holdout, holdout_X=test.X,
                       params=config.model_dump(mode="json"),
                       reference=reference_of(
                           shipped, ship.X[served_like(ship.times, test.times)]))


def _losses(verdict: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in verdict["loses_to"].items()) + (
        f" vs {verdict['model_auc']:.4f}")


def judge(y: np.ndarray, predictions: dict[str, np.ndarray]) -> dict[str, Any]:
    """The gate's verdict on holdout predictions (`model` first, then the baselines)."""
    return _verdict({name: float(roc_auc_score(y, p)) for name, p in predictions.items()})


def _verdict(auc: dict[str, float]) -> dict[str, Any]:
    model = auc["model"]
    losses = {name: round(a, 4) for name, a in auc.items() if name != "model" and a > model}
    return {"passed": not losses, "model_auc": round(model, 4), "loses_to": losses}


def gate(report: dict[str, Any]) -> dict[str, Any]:
    """Does the model rank the holdout at least as well as every baseline? Promotion asks."""
    return _verdict({name: m["roc_auc"] for name, m in report["metrics"].items()})
