"""The baselines a model must beat, fitted on the same rows and judged on the same holdout.

- `PointsModel`: what marketing ops write by hand: points per event type (recent events
  count more: each older window is worth half) and per attribute value.
- naive Bayes: Odoo's predictive lead scoring, exactly (`models/odoo_pls.py`): fitted on the
  leads closed before the cutoff, as Odoo's nightly rebuild would have been, and scored on each
  holdout row as of its own time. It needs the export (closed leads, stages), not the model
  matrix, so it is computed where the training sets are built.
- logistic regression: `models/linear.py`, the same definition that can also ship.

The points model follows the scikit-learn contract (parameters stored in `__init__`, learned
state ending in `_`, `fit` returns self) and outputs a probability: its score is mapped to one
by an isotonic fit so that calibration metrics compare like with like.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from propensity.contract import DEFAULT_STAGES
from propensity.models.odoo_pls import fit_table, probability
from propensity.odoo_history import OdooPlsConfig, lead_values
from propensity.single_table import SingleTable

DEFAULT_EVENT_POINTS: dict[str, float] = {
    "email_open": 1, "email_click": 3, "page_view": 1, "pricing_page_view": 10,
    "content_download": 5, "webinar_registered": 5, "webinar_attended": 10, "form_submit": 8,
    "demo_request": 25, "trial_signup": 20, "meeting": 20, "call": 8, "chat": 5,
    "email_bounce": -10, "unsubscribe": -25,
}
DEFAULT_ATTRIBUTE_POINTS: dict[str, dict[str, float]] = {
    "persona": {"executive": 10, "champion": 15, "end_user": 5},
    "source": {"referral": 15, "partner": 10, "event": 10, "paid_search": 5},
}


class PointsModel(ClassifierMixin, BaseEstimator):
    def __init__(self, event_points: dict[str, float] | None = None,
                 attribute_points: dict[str, dict[str, float]] | None = None,
                 numeric_thresholds: dict[str, list[list[float]]] | None = None) -> None:
        self.event_points = event_points
        self.attribute_points = attribute_points
        self.numeric_thresholds = numeric_thresholds

    def points(self, X: pd.DataFrame) -> np.ndarray:
        """The hand-written score: recent events count fully, each older window half as much."""
        total = np.zeros(len(X))
        events = DEFAULT_EVENT_POINTS if self.event_points is None else self.event_points
        for event, pts in events.items():
            recent, mid, old = (f"n_{event}_7d", f"n_{event}_30d", f"n_{event}_90d")
            if recent in X:
                decayed = (X[recent] + 0.5 * (X[mid] - X[recent]) + 0.25 * (X[old] - X[mid]))
                total += pts * decayed.to_numpy(dtype="float64")
        attrs = (DEFAULT_ATTRIBUTE_POINTS if self.attribute_points is None
                 else self.attribute_points)
        for col, table in attrs.items():
            if col in X:
                total += X[col].astype("str").map(table).fillna(0).to_numpy(dtype="float64")
        for col, rules in (self.numeric_thresholds or {}).items():
            if col in X:
                v = X[col].to_numpy(dtype="float64", na_value=np.nan)
                for threshold, pts in rules:
                    total += np.where(v >= threshold, pts, 0.0)
        return total

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> PointsModel:
        self.calibrator_ = IsotonicRegression(out_of_bounds="clip").fit(self.points(X), y)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self)
        p = np.clip(self.calibrator_.predict(self.points(X)), 0, 1)
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def odoo_naive_bayes(closed: pd.DataFrame, stages: tuple[str, ...], scored: pd.DataFrame,
                     holdout: pd.DataFrame, lead_rows: pd.DataFrame | None = None) -> np.ndarray:
    """Odoo's probability (0..1) of each holdout row (key, as_of), from the frequency table
    of the leads closed before the cutoff (`closed`: what the evaluation fit knew); `scored`:
    Odoo's fields of the leads it scores (`odoo_history.read_odoo`). An account gets the
    probability that any of its leads open at that time (`lead_rows`: lead_id, as_of,
    account_id of each scored lead) is won, taking them as independent (0 when it has none):
    Odoo scores leads, and an account buys when one of them does."""
    p = probability(fit_table(closed, stages), scored) / 100
    if lead_rows is None:
        return p
    leads = lead_rows.assign(log_none=np.log1p(-p))
    none = leads.dropna(subset=["account_id"]).groupby(["account_id", "as_of"])["log_none"].sum()
    keys = pd.MultiIndex.from_frame(holdout[["account_id", "as_of"]])
    return 1 - np.exp(none.reindex(keys).fillna(0.0).to_numpy(dtype="float64"))


def odoo_table_naive_bayes(table: SingleTable, train_rows: np.ndarray, test_rows: np.ndarray,
                           config: OdooPlsConfig) -> np.ndarray:
    """Odoo's probability (0..1) of held-out table rows. A table has no stages: every training
    row is a closed lead (won: the won stage, lost: the open one), every held-out row is
    scored in the open stage, where the stage weighs nothing and the priors decide."""
    stages = (DEFAULT_STAGES[0], DEFAULT_STAGES[-1])
    values = lead_values(table.frame[table.feature_columns], config)
    won = table.y[train_rows] == 1
    history = values.iloc[train_rows].assign(
        stage_id=np.where(won, stages[1], stages[0]), won=won)
    scored = values.iloc[test_rows].assign(stage_id=stages[0])
    return probability(fit_table(history, stages), scored) / 100


def _separation(v: pd.Series, y: np.ndarray) -> float | None:
    """How well one attribute alone ranks the rows (AUC folded above 0.5): numbers as they
    are (missing lowest), other values by their conversion rate; None when it is constant."""
    if pd.api.types.is_numeric_dtype(v):
        score = v.to_numpy(dtype="float64", na_value=np.nan)
        if np.isnan(score).all() or np.nanstd(score) == 0:
            return None
        score = np.where(np.isnan(score), np.nanmin(score) - 1, score)
    else:
        text = v.astype("str").where(v.notna(), "<missing>")
        rate = pd.Series(y, index=text.index).groupby(text).mean()
        score = text.map(rate).to_numpy(dtype="float64")
    if len(np.unique(score)) < 2:
        return None
    auc = roc_auc_score(y, score)
    return max(auc, 1 - auc)


def _points_for(lift: float) -> float:
    """Points in proportion to how much likelier those leads convert: 10 per doubling,
    within -20..20."""
    return float(np.clip(round(10 * np.log2(max(lift, 1e-3))), -20, 20))


def _numeric_rules(v: pd.Series, y: np.ndarray, base: float,
                   min_rows: int) -> list[list[float]]:
    """Points above the median and above the upper quartile, each where both sides hold
    `min_rows` rows."""
    values = v.to_numpy(dtype="float64", na_value=np.nan)
    rules = []
    for q in (0.5, 0.75):
        cut = float(np.nanquantile(values, q))
        above = values >= cut
        if above.sum() >= min_rows and (~above).sum() >= min_rows:
            rules.append([cut, _points_for(float(np.mean(y[above])) / base)])
    return rules


def _value_points(v: pd.Series, y: np.ndarray, base: float, min_rows: int) -> dict[str, float]:
    """Points per value held by `min_rows` rows or more."""
    frame = pd.DataFrame({"v": v.astype("str"), "y": y}).groupby("v")["y"].agg(["mean", "size"])
    frame = frame[frame["size"] >= min_rows]
    return {str(k): _points_for(m / base) for k, m in frame["mean"].items()}


def derived_points(X: pd.DataFrame, y: np.ndarray, columns: int = 5,
                   min_rows: int = 30) -> dict[str, object]:
    """A scorecard as an analyst writes one from a table's conversion rates: the `columns`
    attributes that separate best on their own, points per value (or above a median / upper
    quartile for numbers) in proportion to how much likelier those leads convert. Empty when
    no attribute separates at all: a constant is not a baseline."""
    base = float(np.mean(y))
    if base <= 0 or base >= 1:
        return {}
    ranked = []
    for col in X.columns:
        separation = _separation(X[col], y)
        if separation is not None:
            ranked.append((separation, col))
    attribute: dict[str, dict[str, float]] = {}
    numeric: dict[str, list[list[float]]] = {}
    for _, col in sorted(ranked, reverse=True)[:columns]:
        v = X[col]
        if not pd.api.types.is_numeric_dtype(v):
            attribute[col] = _value_points(v, y, base, min_rows)
        elif rules := _numeric_rules(v, y, base, min_rows):
            numeric[col] = rules
    if not attribute and not numeric:
        return {}
    return {"event_points": {}, "attribute_points": attribute, "numeric_thresholds": numeric}
