"""Fitting, the same for both shapes of data and both engines: choose on all labelled
history, evaluate on the holdout (falling back to a learner that does not lose there), then
refit and calibrate what ships (the steps are told in `propensity.training`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from propensity.coding import as_frame
from propensity.features import FeatureSpec
from propensity.models.baselines import (
    PointsModel,
    derived_points,
)
from propensity.models.bundle import Kind, ModelBundle
from propensity.models.calibration import ISOTONIC_MIN_ROWS, fit_calibrator
from propensity.models.evaluation import evaluation_report, rank_auc
from propensity.models.linear import LinearScorer
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
from propensity.models.train_config import Progress, TrainConfig, note
from propensity.models.training_sets import LabelledRows, TrainingSets
from propensity.problems import PropensityError
from propensity.targets import Target

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


@dataclass
class FitResult:
    """What the fit loop returns; `training.TrainResult` adds the monitoring reference."""

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

    @property
    def holdout_auc(self) -> float:
        return float(self.report["metrics"]["model"]["roc_auc"])

    @property
    def feature_names(self) -> list[str]:
        return self.bundle.feature_names


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
        kind=sets.kind, target=sets.target.name, columns=rows.columns,
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


def _baselines(train: LabelledRows, X_train: pd.DataFrame, test: LabelledRows,
               config: TrainConfig, kind: Kind, raw: dict[str, np.ndarray],
               allowed: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Points, naive Bayes and logistic regression (those of them `allowed`: the target's),
    fitted on the evaluation fit's rows (`X_train`: them as a frame, `as_frame`)."""
    X_test = as_frame(test.X, test.columns)
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


def enough_outcomes(rows: LabelledRows, target: Target) -> None:
    """Refuse, in one line, labelled history too thin to produce a model that beats the rules:
    the minimums (`MIN_POSITIVES`, `MIN_NEGATIVES`) and what was found."""
    ever = np.zeros(int(rows.groups.max(initial=-1)) + 1, dtype=bool)
    ever[rows.groups[rows.y == 1]] = True
    seen = np.zeros_like(ever)
    seen[rows.groups] = True
    positives, negatives = int(ever.sum()), int((seen & ~ever).sum())
    yes, no = target.outcomes
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
    note(progress, f"choosing a learner on {len(sample.y):,} rows of all labelled history, "
                    f"{len(folds)} folds")
    choice, winner, tried = select(problem, folds, search=config.search,
                                   learners=config.learners,
                                   note=lambda text: note(progress, text))
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
    train_frame: pd.DataFrame
    """The evaluation fit's rows as a frame: what the baselines learnt from and the leak
    check reads (built once for both)."""


def _evaluate(sets: TrainingSets, train: LabelledRows, test: LabelledRows, config: TrainConfig,
              search: _Search, progress: Progress | None) -> _Evaluation:
    """The evaluation model: each fallback candidate in turn fitted before the cutoff (its
    tree count decided again on folds of those rows) and judged on the holdout beside the
    baselines, until one does not lose there (else the first is kept)."""
    train_problem = _problem(train, config)
    train_folds = _folds(train, sets.kind, config)
    note(progress, "baselines: points, naive Bayes, logistic regression")
    train_frame = as_frame(train.X, train.columns)
    baselines = _baselines(train, train_frame, test, config, sets.kind, sets.baselines,
                           sets.target.baselines)
    judged: list[dict[str, Any]] = []
    chosen: tuple[Candidate, Choice, Any, np.ndarray] | None = None
    for cand in _fallbacks(search.winner, search.tried):
        note(progress, f"evaluation fit: {cand.name} on {len(train.y):,} rows before the "
                        "cutoff")
        eval_choice, eval_oof = resize(as_choice(cand, ""), train_problem, train_folds,
                                       lambda text: note(progress, text))
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
                       judged, train_frame)


def _holdout_report(train: LabelledRows, test: LabelledRows,
                    evaluation: _Evaluation) -> dict[str, Any]:
    """The holdout metrics of the evaluation model and the baselines, with its mean absolute
    SHAP per feature and the columns that alone rank the training rows suspiciously well."""
    contrib = evaluation.bundle.contributions(test.X[:20_000], threads=0)[:, :-1]
    importance = pd.DataFrame({"feature": [c.name for c in test.columns],
                               "mean_abs_shap": np.abs(contrib).mean(axis=0)}).sort_values(
        "mean_abs_shap", ascending=False)
    warnings = leaky_columns(evaluation.train_frame, train.y)
    return evaluation_report(test.y, evaluation.predictions, importance, warnings)


def _ship_margins(sets: TrainingSets, config: TrainConfig, search: _Search, choice: Choice,
                  candidate: Candidate, ship_problem: Problem,
                  progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """The out-of-fold margins the shipped model is calibrated on: the search's own when it
    saw every row, else fresh folds over every row (the choice was made on a sample)."""
    ship = sets.shipping
    if len(search.sample.y) == len(ship.y):
        note(progress, f"shipping fit: {choice.name} on {len(ship.y):,} rows")
        return candidate.oof, ship.y
    ship_folds = _folds(ship, sets.kind, config)
    note(progress, f"shipping fit: {choice.name} on {len(ship.y):,} rows, out-of-fold "
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
             progress: Progress | None = None) -> FitResult:
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
    return FitResult(target=sets.target.name, bundle=shipped, evaluation_bundle=evaluation.bundle,
                     report=report, holdout=holdout, holdout_X=test.X,
                     params=config.model_dump(mode="json"))


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
