"""Training: entity frame -> features as of t -> time split -> model, baselines, evaluation.

Out-of-time by construction: the latest snapshots are the holdout, and the model only learns
from snapshots whose label window closed before the holdout begins (a label that was not yet
known at the cutoff would be a peek at the holdout period). Early stopping and calibration use
the latest training snapshots, split between them by lead. Single tables, which have no
dates, get a stratified random split instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from propensity.features import FeatureConfig, FeatureSpec, build_lead_features, fit_feature_spec
from propensity.features.account import build_account_features
from propensity.funnel.journeys import build_journeys
from propensity.models.baselines import FrequencyNaiveBayes, PointsModel, logistic_regression
from propensity.models.booster import CalibratedBooster
from propensity.models.evaluation import evaluation_report
from propensity.problems import PropensityError
from propensity.single_table import SingleTable, table_features
from propensity.snapshots import (
    SnapshotConfig,
    Target,
    account_entities,
    lead_entities,
    snapshot_times,
)
from propensity.tables import CrmExport, truncate_export

LABELS: dict[str, str] = {"lead-conversion": "converted", "stage-advancement": "advanced",
                          "account-propensity": "bought"}
LEAKY_AUC = 0.9
Progress = Callable[[str], None]


class PointsConfig(BaseModel):
    event_points: dict[str, float] | None = None
    attribute_points: dict[str, dict[str, float]] | None = None
    numeric_thresholds: dict[str, list[list[float]]] | None = None


class TrainConfig(BaseModel):
    """One training run; `training/*.toml` files hold these."""

    model: Target = "lead-conversion"
    snapshots: SnapshotConfig = Field(default_factory=SnapshotConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    holdout_share: float = 0.25
    """Share of the (latest) snapshot times, or of single-table rows, held out for evaluation."""
    tuning_share: float = 0.25
    """Share of the latest training snapshots used for early stopping and calibration."""
    booster: dict[str, Any] = Field(default_factory=dict)
    points: PointsConfig = Field(default_factory=PointsConfig)
    seed: int = 13

    @classmethod
    def from_file(cls, path: Path | str) -> TrainConfig:
        """A config from a TOML file such as `training/default.toml`."""
        import tomllib

        try:
            return cls.model_validate(tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PropensityError(f"{path}: {exc}") from exc


@dataclass
class TrainResult:
    target: str
    booster: CalibratedBooster
    feature_names: list[str]
    report: dict[str, Any]
    holdout: pd.DataFrame
    """Holdout entities with `label` and `probability` (what promotion re-scores)."""
    spec: FeatureSpec | None = None
    table_columns: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def holdout_auc(self) -> float:
        return float(self.report["metrics"]["model"]["roc_auc"])


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
        auc = roc_auc_score(y, score)
        if max(auc, 1 - auc) >= threshold:
            found.append(f"{col} alone separates the classes (AUC {max(auc, 1 - auc):.3f}): "
                         "it looks leaky (filled in after the outcome?)")
    return found


def _fit_and_evaluate(
    X: pd.DataFrame, y: np.ndarray, parts: dict[str, np.ndarray], config: TrainConfig,
    progress: Progress | None,
) -> tuple[CalibratedBooster, dict[str, Any], np.ndarray]:
    fit, valid, calib, test = (parts[k] for k in ("fit", "valid", "calib", "test"))
    for name, idx in parts.items():
        if idx.size == 0 or len(np.unique(y[idx])) < 2:
            raise PropensityError(
                f"the {name} split has {idx.size} rows and only one class: too little data or "
                "too few conversions for this horizon and snapshot spacing")
    _note(progress, f"LightGBM on {fit.size:,} rows, early stopping on {valid.size:,}")
    booster = CalibratedBooster(params={"seed": config.seed, **config.booster}).fit(
        X.iloc[fit], y[fit], valid=(X.iloc[valid], y[valid]),
        calibration=(X.iloc[calib], y[calib]))
    p_model = booster.predict_proba(X.iloc[test])[:, 1]
    _note(progress, "baselines: points, naive Bayes, logistic regression")
    train_rows = np.concatenate([fit, valid, calib])
    points = PointsModel(**config.points.model_dump()).fit(X.iloc[train_rows], y[train_rows])
    nb = FrequencyNaiveBayes().fit(X.iloc[train_rows], y[train_rows])
    lr = logistic_regression(X).fit(X.iloc[train_rows], y[train_rows])
    predictions = {
        "model": p_model,
        "points": points.predict_proba(X.iloc[test])[:, 1],
        "naive_bayes": nb.predict_proba(X.iloc[test])[:, 1],
        "logistic_regression": lr.predict_proba(X.iloc[test])[:, 1],
    }
    _note(progress, "evaluation: metrics, deciles, SHAP")
    sample = test if test.size <= 20_000 else np.random.default_rng(0).choice(
        test, 20_000, replace=False)
    contrib = booster.contributions(X.iloc[sample])[:, :-1]
    gain = booster.importance()
    importance = pd.DataFrame({
        "feature": booster.feature_names_,
        "mean_abs_shap": np.abs(contrib).mean(axis=0),
        "gain": gain.reindex(booster.feature_names_).to_numpy(),
    }).sort_values("mean_abs_shap", ascending=False)
    warnings = leaky_columns(X.iloc[train_rows], y[train_rows])
    report = evaluation_report(y[test], predictions, importance, warnings)
    report["rows"] = {k: int(v.size) for k, v in parts.items()}
    report["best_iteration"] = int(booster.booster_.best_iteration)
    return booster, report, p_model


def _split_by_lead(ids: pd.Series, share: float, seed: int) -> np.ndarray:
    """True for rows whose entity falls in the first `share` of a seeded hash order."""
    key = f"propensity{seed:06d}"[:16]
    h = pd.util.hash_pandas_object(ids.astype("str"), index=False, hash_key=key)
    return (h.to_numpy() % 1000) < share * 1000


def train_export(export: CrmExport, config: TrainConfig,
                 progress: Progress | None = None) -> TrainResult:
    """Train one target on an export; the holdout is the latest snapshots."""
    target = config.model
    horizon = config.snapshots.horizon_days
    _note(progress, "snapshots and labels")
    journeys = build_journeys(export)
    times = snapshot_times(export, config.snapshots)
    if len(times) < 4:
        raise PropensityError(f"only {len(times)} snapshot time(s): need 4 or more "
                              "(more history, or a smaller --horizon-days / snapshot spacing)")
    n_test = max(1, round(config.holdout_share * len(times)))
    test_times = times[-n_test:]
    cutoff = test_times[0]
    train_times = [t for t in times if t + pd.Timedelta(days=horizon) <= cutoff]
    if len(train_times) < 2:
        raise PropensityError("too little history before the holdout for this horizon")
    spec = fit_feature_spec(truncate_export(export, cutoff), config.features)
    if target == "account-propensity":
        entities = account_entities(export, train_times + test_times, horizon, journeys=journeys)
        key = "account_id"
        _note(progress, f"account features for {len(entities):,} rows")
        X = build_account_features(export, spec, entities)
    else:
        entities = lead_entities(export, train_times + test_times, horizon, journeys=journeys,
                                 config=config.snapshots)
        key = "lead_id"
        _note(progress, f"lead features for {len(entities):,} rows")
        X = build_lead_features(export, spec, entities)
    y = entities[LABELS[target]].to_numpy(dtype="int64")
    is_test = entities["as_of"].isin(test_times).to_numpy()
    tune_from = train_times[-max(1, round(config.tuning_share * len(train_times)))]
    is_tune = ~is_test & (entities["as_of"] >= tune_from).to_numpy()
    half = _split_by_lead(entities[key], 0.5, config.seed)
    parts = {"fit": np.flatnonzero(~is_test & ~is_tune),
             "valid": np.flatnonzero(is_tune & half),
             "calib": np.flatnonzero(is_tune & ~half),
             "test": np.flatnonzero(is_test)}
    booster, report, p = _fit_and_evaluate(X, y, parts, config, progress)
    holdout = entities.iloc[parts["test"]][[key, "as_of"]].reset_index(drop=True)
    holdout["label"] = y[parts["test"]]
    holdout["probability"] = p
    report["split"] = {"cutoff": str(cutoff), "train_snapshots": len(train_times),
                       "test_snapshots": len(test_times), "horizon_days": horizon}
    return TrainResult(target=target, booster=booster, feature_names=list(X.columns),
                       report=report, holdout=holdout, spec=spec,
                       categories=spec.categories(), params=config.model_dump(mode="json"))


def train_table(table: SingleTable, config: TrainConfig,
                progress: Progress | None = None) -> TrainResult:
    """Train from a single table with a stratified random holdout (it has no dates)."""
    columns = table.feature_columns
    categories = {c: sorted(table.frame[c].dropna().astype("str").value_counts()
                            .index[:config.features.max_categories].tolist())
                  for c in columns if not pd.api.types.is_numeric_dtype(table.frame[c])}
    X = table_features(table.frame, columns, categories)
    y = table.y
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=config.holdout_share, stratify=y,
                                  random_state=config.seed)
    fit, tune = train_test_split(rest, test_size=config.tuning_share, stratify=y[rest],
                                 random_state=config.seed)
    valid, calib = train_test_split(tune, test_size=0.5, stratify=y[tune],
                                    random_state=config.seed)
    parts = {"fit": np.sort(fit), "valid": np.sort(valid), "calib": np.sort(calib),
             "test": np.sort(test)}
    booster, report, p = _fit_and_evaluate(X, y, parts, config, progress)
    # the post-outcome columns, checked on their own so the report can say they leak
    declared = [c for c in table.post_outcome if c in table.frame]
    if declared:
        post = {c: sorted(table.frame[c].dropna().astype("str").unique().tolist())
                for c in declared if not pd.api.types.is_numeric_dtype(table.frame[c])}
        report["post_outcome_columns"] = declared
        report["post_outcome_checks"] = leaky_columns(
            table_features(table.frame, declared, post).iloc[parts["fit"]], y[parts["fit"]])
    holdout = pd.DataFrame({"row": parts["test"], "label": y[test := parts["test"]],
                            "probability": p})
    if table.id_column:
        holdout.insert(0, "lead_id", table.frame[table.id_column].to_numpy()[test])
    return TrainResult(target="lead-conversion", booster=booster, feature_names=columns,
                       report=report, holdout=holdout, table_columns=columns,
                       categories=categories, params=config.model_dump(mode="json"))
