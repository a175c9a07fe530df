"""Calibration read at a 2% base rate: equal-mass ECE, predicted vs realised per decile, and a
calibrator whose tails do not run off toward certainty."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from propensity.models.calibration import MIN_BIN_POSITIVES, Calibrator, fit_calibrator
from propensity.models.evaluation import (
    deciles,
    equal_mass_ece,
    equal_mass_ece_floor,
    expected_calibration_error,
    rank_auc,
)


def _world(n: int = 50_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(-4.6, 1.2, n)))  # about 2% buy
    return p, (rng.random(n) < p).astype("int64")


def test_equal_mass_bins_show_squeezed_probabilities_that_equal_width_bins_hide() -> None:
    p, y = _world()
    squeezed = p.mean() + 0.3 * (p - p.mean())  # the top predicted far too low, the rest high
    assert equal_mass_ece(y, p) < 0.003  # honest probabilities pass either way
    assert expected_calibration_error(y, squeezed) < 0.002  # nearly all in the first bin
    assert equal_mass_ece(y, squeezed) > 4 * expected_calibration_error(y, squeezed)
    assert equal_mass_ece(y, squeezed) > 0.008


def test_deciles_carry_the_mean_prediction_beside_the_realised_rate() -> None:
    p, y = _world(20_000)
    table = deciles(y, p)
    order = np.argsort(-p, kind="stable")
    top = order[:2000]
    assert table.loc[0, "predicted"] == np.float64(p[top].mean())
    assert table.loc[0, "rate"] == y[top].mean()
    assert table["predicted"].is_monotonic_decreasing


def test_the_calibrated_log_odds_rise_one_for_one_past_the_last_centre() -> None:
    p, y = _world()
    margin = np.log(p / (1 - p))
    cal = fit_calibrator(margin, y)
    top = cal.x[-1]
    beyond = cal(np.array([top + 1.0, top + 2.0]))
    at = cal(np.array([top]))[0]
    logit = np.log(beyond / (1 - beyond))
    assert np.allclose(logit - np.log(at / (1 - at)), [1.0, 2.0])
    # a margin one past a top block at 20% is 40.5% likely (the old tail said 70.6%)
    assert Calibrator("isotonic", x=[-5.0, -2.0], y=[0.01, 0.2])(np.array([-1.0]))[0] == (
        pytest.approx(1 / (1 + 4 / np.e)))


def test_rank_auc_is_roc_auc_score_ties_included() -> None:
    """The fast AUC the leakage check runs on every column gives sklearn's number: on
    continuous scores, on few levels (ties everywhere) and on a column that separates."""
    rng = np.random.default_rng(4)
    y = (rng.random(3000) < 0.1).astype("int64")
    for score in (rng.normal(size=3000), rng.integers(0, 4, 3000).astype("float64"),
                  y + rng.normal(0, 0.01, 3000), -y.astype("float64")):
        assert rank_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)


def test_no_isotonic_block_rests_on_a_handful_of_buyers() -> None:
    """Each block of the isotonic fit holds at least `MIN_BIN_POSITIVES` buyers' worth of rows,
    the top one included: a top block of five buyers used to set the level of every lead
    scored above it. The map still keeps the ranking and reads fresh data honestly."""
    p, y = _world(6000)
    margin = np.log(p / (1 - p))
    cal = fit_calibrator(margin, y)
    assert cal.kind == "isotonic"
    assert 2 <= len(cal.x) <= y.sum() / MIN_BIN_POSITIVES
    order = np.argsort(margin)
    top_rows = int(np.ceil(MIN_BIN_POSITIVES * len(y) / y.sum()))
    assert cal.x[-1] == pytest.approx(margin[order[-top_rows:]].mean())  # the top bin, whole
    fresh, fresh_y = _world(50_000, seed=1)
    calibrated = cal(np.log(fresh / (1 - fresh)))
    assert np.all(np.diff(calibrated[np.argsort(fresh)]) > 0)
    assert equal_mass_ece(fresh_y, calibrated) < 0.008  # squeezed probabilities give > 0.008


def test_the_ece_floor_is_what_a_calibrated_model_shows_against_a_sharper_truth() -> None:
    """A model that sees half of what decides a lead (the truth knows the other half) is
    calibrated, yet its ECE against the truth is not 0: about the floor, at any bin size;
    a model 20% too high stands well above it."""
    rng = np.random.default_rng(0)
    eces, floors = [], []
    for _ in range(40):
        seen, hidden = rng.normal(-1, 1, 900), rng.normal(0, 1, 900)
        p_true = 1 / (1 + np.exp(-(seen + hidden)))
        # E[p_true | seen], by averaging over the hidden part the model does not see
        draws = rng.normal(0, 1, (1, 400))
        p = (1 / (1 + np.exp(-(seen[:, None] + draws)))).mean(axis=1)
        eces.append(equal_mass_ece(p_true, p))
        floors.append(equal_mass_ece_floor(p_true, p))
    assert np.mean(eces) == pytest.approx(np.mean(floors), rel=0.15)
    assert np.mean(floors) > 0.01  # the truth is sharper: 900 leads cannot judge below it
    high = np.clip(1.2 * p, 0, 1)
    assert equal_mass_ece(p_true, high) > 2 * equal_mass_ece_floor(p_true, high)
