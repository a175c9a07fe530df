"""The baselines a model must beat, fitted on the same rows and judged on the same holdout.

- `PointsModel`: what marketing ops write by hand: points per event type (recent events
  count more: each older window is worth half) and per attribute value.
- `FrequencyNaiveBayes`: Odoo's predictive lead scoring: per field, the frequency of each value
  among won and lost leads, multiplied as independent evidence (numbers binned by quantile).
- logistic regression: `models/linear.py`, the same definition that can also ship.

Each follows the scikit-learn contract (parameters stored in `__init__`, learned state ending
in `_`, `fit` returns self) and outputs a probability; the points score is mapped to one by an
isotonic fit so that calibration metrics compare like with like.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

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


def _categorical_columns(X: pd.DataFrame) -> list[str]:
    return [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]


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


class FrequencyNaiveBayes(ClassifierMixin, BaseEstimator):
    """Per-field value frequencies among won and lost, combined as independent evidence."""

    def __init__(self, bins: int = 10, alpha: float = 1.0, max_fields: int | None = None) -> None:
        self.bins = bins
        self.alpha = alpha
        self.max_fields = max_fields

    def _tokens(self, X: pd.DataFrame) -> pd.DataFrame:
        out = {}
        for col in self.fields_:
            if col in self.edges_ or (pd.api.types.is_numeric_dtype(X[col]) and col not in (
                    self.edges_)):
                if col not in self.edges_:
                    out[col] = np.full(len(X), -1.0)
                    continue
                v = X[col].to_numpy(dtype="float64", na_value=np.nan)
                b = np.searchsorted(self.edges_[col], v, side="right").astype("float64")
                b[np.isnan(v)] = -1
                out[col] = b
            else:
                out[col] = X[col].astype("str").where(X[col].notna(), "<missing>").to_numpy()
        return pd.DataFrame(out, index=X.index)

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> FrequencyNaiveBayes:
        y = np.asarray(y)
        self.fields_ = list(X.columns)[: self.max_fields]
        self.edges_ = {}
        for col in self.fields_:
            if pd.api.types.is_numeric_dtype(X[col]) and X[col].notna().any():
                q = np.nanquantile(X[col].to_numpy(dtype="float64", na_value=np.nan),
                                   np.linspace(0, 1, self.bins + 1)[1:-1])
                self.edges_[col] = np.unique(q)
        tokens = self._tokens(X)
        self.prior_ = float(np.log((y.sum() + self.alpha) / ((1 - y).sum() + self.alpha)))
        self.tables_ = {}
        n_pos, n_neg = y.sum(), (1 - y).sum()
        for col in self.fields_:
            frame = pd.DataFrame({"v": tokens[col], "y": y})
            counts = frame.groupby("v")["y"].agg(["sum", "count"])
            k = len(counts) + 1
            pos = (counts["sum"] + self.alpha) / (n_pos + self.alpha * k)
            neg = (counts["count"] - counts["sum"] + self.alpha) / (n_neg + self.alpha * k)
            self.tables_[col] = (np.log(pos) - np.log(neg)).to_dict()
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self)
        tokens = self._tokens(X)
        logit = np.full(len(X), self.prior_)
        for col in self.fields_:
            logit += pd.Series(tokens[col]).map(self.tables_[col]).fillna(0).to_numpy(
                dtype="float64")
        p = 1 / (1 + np.exp(-np.clip(logit, -30, 30)))
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


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
        v = X[col]
        if pd.api.types.is_numeric_dtype(v):
            score = v.to_numpy(dtype="float64", na_value=np.nan)
            if np.isnan(score).all() or np.nanstd(score) == 0:
                continue
            score = np.where(np.isnan(score), np.nanmin(score) - 1, score)
        else:
            text = v.astype("str").where(v.notna(), "<missing>")
            rate = pd.Series(y, index=text.index).groupby(text).mean()
            score = text.map(rate).to_numpy(dtype="float64")
        if len(np.unique(score)) < 2:
            continue
        auc = roc_auc_score(y, score)
        ranked.append((max(auc, 1 - auc), col))
    attribute: dict[str, dict[str, float]] = {}
    numeric: dict[str, list[list[float]]] = {}
    for _, col in sorted(ranked, reverse=True)[:columns]:
        v = X[col]
        if pd.api.types.is_numeric_dtype(v):
            values = v.to_numpy(dtype="float64", na_value=np.nan)
            rules = []
            for q in (0.5, 0.75):
                cut = float(np.nanquantile(values, q))
                above = values >= cut
                if above.sum() >= min_rows and (~above).sum() >= min_rows:
                    lift = float(np.mean(y[above])) / base
                    rules.append([cut, float(np.clip(round(10 * np.log2(max(lift, 1e-3))),
                                                     -20, 20))])
            if rules:
                numeric[col] = rules
        else:
            text = v.astype("str")
            frame = pd.DataFrame({"v": text, "y": y}).groupby("v")["y"].agg(["mean", "size"])
            frame = frame[frame["size"] >= min_rows]
            attribute[col] = {str(k): float(np.clip(round(10 * np.log2(max(m / base, 1e-3))),
                                                    -20, 20))
                              for k, m in frame["mean"].items()}
    if not attribute and not numeric:
        return {}
    return {"event_points": {}, "attribute_points": attribute, "numeric_thresholds": numeric}
