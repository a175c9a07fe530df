"""LightGBM with native categoricals, early stopping and a calibrator fitted on held-out rows.

The booster ranks; the calibrator makes its numbers mean what they say (a 0.2 is a lead that
buys one time in five). The isotonic map is kept as two arrays, not a pickle, so the scorer
applies it with `np.interp` in microseconds and the model file stays inspectable.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "cat_smooth": 50,
    "cat_l2": 10.0,
    "min_data_per_group": 200,
    "max_cat_to_onehot": 8,
    "verbose": -1,
    "seed": 13,
    "deterministic": True,
    "num_threads": 2,
}


ISOTONIC_MIN_ROWS = 2000


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


class CalibratedBooster:
    """Fit on (X, y); stop early on `valid`; calibrate on `calibration` (both held out)."""

    def __init__(self, params: dict[str, Any] | None = None, num_boost_round: int = 2000,
                 early_stopping_rounds: int = 50, calibration: str = "auto") -> None:
        self.params = params
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds
        self.calibration = calibration

    def fit(self, X: pd.DataFrame, y: np.ndarray, *, valid: tuple[pd.DataFrame, np.ndarray],
            calibration: tuple[pd.DataFrame, np.ndarray]) -> CalibratedBooster:
        params = {**DEFAULT_PARAMS, **(self.params or {})}
        train_set = lgb.Dataset(X, label=y, free_raw_data=False)
        valid_set = lgb.Dataset(valid[0], label=valid[1], reference=train_set)
        self.booster_ = lgb.train(
            params, train_set, num_boost_round=self.num_boost_round, valid_sets=[valid_set],
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
        )
        self.feature_names_ = list(X.columns)
        raw = self.predict_raw(calibration[0])
        method = self.calibration
        if method == "auto":  # isotonic needs rows; with few, Platt's two parameters are safer
            method = "isotonic" if len(raw) >= ISOTONIC_MIN_ROWS else "platt"
        self.calibration_method_ = method
        if method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(
                raw, calibration[1])
            self.calibration_x_ = np.asarray(iso.X_thresholds_, dtype="float64")
            # never exactly 0 or 1: a lead is never certain either way
            self.calibration_y_ = np.clip(np.asarray(iso.y_thresholds_, dtype="float64"),
                                          0.001, 0.999)
        elif method == "platt":
            grid = np.linspace(0.0, 1.0, 2001)
            platt = LogisticRegression(C=1e6).fit(_logit(raw)[:, None], calibration[1])
            self.calibration_x_ = grid
            self.calibration_y_ = np.clip(platt.predict_proba(_logit(grid)[:, None])[:, 1],
                                          0.001, 0.999)
        else:
            raise ValueError(f"calibration is auto, isotonic or platt, not {method!r}")
        return self

    def predict_raw(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.booster_.predict(X[self.feature_names_],
                                                num_iteration=self.booster_.best_iteration))

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.calibration_x_, self.calibration_y_)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.calibrate(self.predict_raw(X))
        return np.column_stack([1 - p, p])

    def contributions(self, X: pd.DataFrame) -> np.ndarray:
        """SHAP values per feature (log-odds of the raw booster), last column the bias."""
        return np.asarray(self.booster_.predict(X[self.feature_names_], pred_contrib=True,
                                                num_iteration=self.booster_.best_iteration))

    def importance(self) -> pd.Series:
        gain = self.booster_.feature_importance(importance_type="gain",
                                                iteration=self.booster_.best_iteration)
        return pd.Series(gain, index=self.feature_names_).sort_values(ascending=False)
