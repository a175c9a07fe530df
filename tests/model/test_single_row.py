"""LightGBM's single-row fast path gives `Booster.predict`'s numbers (margin and SHAP)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from propensity.models.single_row import SingleRow


def test_single_row_equals_booster_predict() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 30))
    X[rng.random(X.shape) < 0.1] = np.nan  # missing values take the default branches
    X[:, 4] = rng.integers(0, 7, len(X))  # a categorical column, codes as floats
    X[rng.random(len(X)) < 0.05, 4] = np.nan
    y = ((X[:, 0] > 0) ^ (X[:, 4] == 2) ^ (rng.random(len(X)) < 0.2)).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 15},
                        lgb.Dataset(X, y, categorical_feature=[4]), 40)
    fast = SingleRow(booster)
    rows = X[:300]
    raw = booster.predict(rows, raw_score=True)
    contrib = booster.predict(rows, pred_contrib=True)
    assert np.abs(np.array([fast.margin(r) for r in rows]) - raw).max() < 1e-12
    assert np.abs(np.vstack([fast.contributions(r) for r in rows]) - contrib).max() < 1e-12
    assert contrib.std() > 0  # the rows differ, so a constant could not pass
