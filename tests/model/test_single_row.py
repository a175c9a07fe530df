"""LightGBM's single-row fast path gives `Booster.predict`'s numbers (margin and SHAP)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

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
    assert np.array_equal(fast.margins(rows), [fast.margin(r) for r in rows])  # one loop
    strided = X[:600:2]  # a view of every other row: copied to C order first
    assert np.abs(fast.margins(strided) - booster.predict(strided, raw_score=True)).max() < 1e-12
    with pytest.raises(ValueError, match="the model reads 30"):
        fast.margins(rows[:, :29])
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


def test_a_rows_score_does_not_depend_on_the_rows_beside_it() -> None:
    """The scorer scores the requests that arrive together in one matrix, so a lead's margin
    must be the same, to the last bit, alone and beside any others. A matrix product is not:
    BLAS sums a row in an order that depends on how many rows it is given (and numpy sums a
    Fortran-ordered array's rows sequentially, one row alone pairwise)."""
    from propensity.coding import Column
    from propensity.models.linear import LinearScorer

    rng = np.random.default_rng(2)
    X = rng.normal(size=(600, 140)) * 10 ** rng.uniform(-3, 4, size=140)
    X[rng.random(X.shape) < 0.1] = np.nan
    X[:, -12:] = rng.integers(0, 4, size=(len(X), 12))  # enough categoricals for pairwise sums
    y = (np.nan_to_num(X[:, 0]) + rng.normal(size=len(X)) > 0).astype(int)
    columns = ([Column(f"x{i}") for i in range(128)]
               + [Column(f"c{i}", ("a", "b", "c", "d")) for i in range(12)])
    lin = LinearScorer(columns).fit(X, y)
    rows = X[:300]
    together = lin.margin(rows)
    for size in (1, 2, 3, 7):
        apart = np.concatenate([lin.margin(rows[a:a + size]) for a in range(0, len(rows), size)])
        assert np.array_equal(apart, together), size
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 15},
                        lgb.Dataset(X, y), 20)
    fast = SingleRow(booster)
    assert np.array_equal(np.array([fast.margin(r) for r in rows]),
                          booster.predict(rows, raw_score=True))
    assert np.array_equal(np.vstack([fast.contributions(r) for r in rows]),
                          booster.predict(rows, pred_contrib=True))


def test_a_row_of_the_wrong_length_is_refused_not_read_past_its_end() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 5))
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, X[:, 0] > 0), 5)
    fast = SingleRow(booster)
    for bad in (X[0, :4], X[:2].ravel(), X[:1]):
        with pytest.raises(ValueError, match="the model reads 5"):
            fast.margin(bad)
    assert fast.margin(X[0]) == booster.predict(X[:1], raw_score=True)[0]
