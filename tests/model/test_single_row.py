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


def test_linear_margin_equals_its_terms_and_the_tails_survive_a_nan() -> None:
    """The one-lead fast forms give the long forms' numbers: a linear margin equals the sum of
    its terms (a column constant in training included, whose sd is ~1e-16, not 0), and the
    isotonic map extends its tails past the fitted range even when a NaN shares the batch."""
    from propensity.coding import Column
    from propensity.models.calibration import Calibrator
    from propensity.models.linear import LinearScorer

    rng = np.random.default_rng(1)
    X = rng.normal(size=(1000, 5))
    X[:, 2] = 3.0  # constant in training
    X[:, 4] = rng.integers(0, 3, len(X))
    X[rng.random(len(X)) < 0.1, 0] = np.nan
    y = (X[:, 0] + (X[:, 4] == 1) + rng.normal(size=len(X)) > 0.5).astype(int)
    columns = [Column(f"x{i}") for i in range(4)] + [Column("c", ("a", "b", "c"))]
    lin = LinearScorer(columns).fit(X, y)
    rows = X[:200].copy()
    rows[:50, 2] = 7.0  # a value the constant column never had
    terms = lin._terms(rows).sum(axis=1) + lin.intercept_
    assert np.abs(lin.margin(rows) - terms).max() < 1e-9
    assert np.abs(lin.margin(rows) - lin.contributions(rows).sum(axis=1)).max() < 1e-9
    iso = Calibrator("isotonic", x=[-2.0, 0.0, 2.0], y=[0.1, 0.5, 0.9])
    alone, beside_nan = iso(np.array([-5.0, 5.0])), iso(np.array([np.nan, -5.0, 5.0]))[1:]
    assert alone[0] < 0.1 and alone[1] > 0.9
    assert np.array_equal(alone, beside_nan)
