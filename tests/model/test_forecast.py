"""The forecast models on a generated export: point in time, monotone curves, the truth,
intervals that hold what they say, and the same numbers for the same data and seed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from propensity.export_reader import load_export
from propensity.features import FeatureConfig, fit_feature_spec
from propensity.features.definitions import STAGE_COLUMN
from propensity.forecast import fit_forecaster, forecast_from, lead_outlook
from propensity.forecast.backtest import actuals, quarter_starts
from propensity.forecast.forecaster import Forecaster, calibration_mask
from propensity.forecast.hazard import (
    ANCHOR_WEIGHT,
    HORIZONS,
    PRIOR_ROWS,
    HazardModel,
    interpolate,
    median_days,
    person_periods,
)
from propensity.forecast.simulate import interval, simulate
from propensity.funnel.journeys import build_journeys
from propensity.models.outlook import AmountQuantiles, Outlook
from propensity.snapshot_rows import snapshot_rows
from propensity.synthetic import read_truth, truth_probability, write_synthetic
from propensity.tables import CrmExport, index_export, truncate_export

T = pd.Timestamp("2025-07-01", tz="UTC")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CrmExport]:
    directory = write_synthetic(tmp_path_factory.mktemp("forecast") / "export", n_leads=3000,
                                seed=5)
    return directory, load_export(directory)


@pytest.fixture(scope="module")
def forecaster(world: tuple[Path, CrmExport]) -> Forecaster:
    return fit_forecaster(world[1], T, seed=3)


@pytest.fixture(scope="module")
def outlook(forecaster: Forecaster) -> tuple[pd.DataFrame, np.ndarray]:
    return lead_outlook(forecaster)


PREDICTED = ("curve", "horizons", "expected_days", "amount_low", "amount_median", "amount_high",
             "expected_amount", "expected_revenue", "contributions")


def test_a_lead_alone_gets_the_outlook_it_gets_in_a_batch(forecaster: Forecaster) -> None:
    """A request's few leads take LightGBM's single-row path, one lead's eight period rows
    in one loop, and the post-processing on one row; a batch takes one call of each booster.
    Every figure of the open leads and of past snapshots' leads (>= 200), the amount's
    reasons included for the leads that ask, is the same either way to 1e-12."""
    model = Outlook(forecaster.hazard, forecaster.amount)
    past = snapshot_rows(index_export(forecaster.export), T, forecaster.plan.spec, seed=3,
                         journeys=forecaster.journeys)  # the rows the models learned from
    X = np.vstack([forecaster.open_X, past.X[::max(1, len(past.X) // 300)]])
    asked = np.arange(len(X)) % 3 == 0
    together = model.predict(X, explain=asked)
    assert len(X) >= 200 and together.horizons.std() > 0 and together.amount_median.std() > 0
    for size in (1, 5, 16):  # alone, and batches of requests on the single-row path
        parts = [model.predict(X[i:i + size], explain=asked[i:i + size])
                 for i in range(0, len(X), size)]
        for name in PREDICTED:
            got = np.concatenate([np.full((len(p.curve), X.shape[1] + 1), np.nan)
                                  if getattr(p, name) is None else getattr(p, name)
                                  for p in parts])
            expected = getattr(together, name)
            assert np.array_equal(np.isnan(got), np.isnan(expected)), (size, name)
            assert np.nanmax(np.abs(got - expected)) < 1e-12, (size, name)


def with_another_future(export: CrmExport, at: pd.Timestamp) -> CrmExport:
    """The same past; after `at`, every event gone, every lead open then a customer a day
    later, every opportunity open then won, and a new one won for a fortune per lead (an
    open opportunity's amount was known before `at`: it stays)."""
    assert export.stage_history is not None and export.events is not None
    assert export.opportunities is not None
    leads = export.leads[export.leads["created_at"] < at]
    sh = export.stage_history
    sh = sh[sh["entered_at"] < at]
    won = pd.DataFrame({"lead_id": leads["lead_id"].astype("str"), "stage": "customer",
                        "entered_at": at + pd.Timedelta(days=1)})
    stage_history = pd.concat([sh.astype({"lead_id": "str", "stage": "str"}), won],
                              ignore_index=True)
    opps = export.opportunities
    opps = opps[opps["created_at"] < at].copy()
    opps["status"] = opps["status"].astype("str")
    late = opps["closed_at"].isna() | (opps["closed_at"] >= at)
    opps.loc[late, "status"] = "won"
    opps.loc[late, "closed_at"] = at + pd.Timedelta(days=1)
    fortune = pd.DataFrame({
        "opportunity_id": "X" + leads["lead_id"].astype("str"),
        "lead_id": leads["lead_id"].astype("str"), "account_id": leads["account_id"],
        "created_at": at + pd.Timedelta(hours=1), "closed_at": at + pd.Timedelta(days=2),
        "amount": 1e9, "status": "won"})
    opps = pd.concat([opps.astype({"lead_id": "str"}), fortune], ignore_index=True)
    events = export.events[export.events["occurred_at"] < at]
    return CrmExport(leads=export.leads, events=events, stage_history=stage_history,
                     opportunities=opps, accounts=export.accounts, manifest=export.manifest)


def test_a_changed_future_does_not_move_the_forecast_made_before_it(
        world: tuple[Path, CrmExport], outlook: tuple[pd.DataFrame, np.ndarray]) -> None:
    other = lead_outlook(fit_forecaster(with_another_future(world[1], T), T, seed=3))
    pd.testing.assert_frame_equal(outlook[0], other[0])
    np.testing.assert_array_equal(outlook[1], other[1])


def test_same_data_and_seed_give_the_same_forecast(
        world: tuple[Path, CrmExport]) -> None:
    a, _ = forecast_from(fit_forecaster(world[1], T, seed=3), 13, "source", seed=3, sims=300)
    b, _ = forecast_from(fit_forecaster(world[1], T, seed=3), 13, "source", seed=3, sims=300)
    assert a.model_dump() == b.model_dump()
    c, _ = forecast_from(fit_forecaster(world[1], T, seed=4), 13, "source", seed=4, sims=300)
    assert c.model_dump() != a.model_dump()  # the seed is really used


def test_the_curve_is_a_probability_rising_with_time(
        outlook: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame, weekly = outlook
    cols = [f"p_by_{h}" for h in HORIZONS] + ["p_ever"]
    curve = frame[cols].to_numpy()
    assert len(frame) > 50
    assert ((curve >= 0) & (curve <= 1)).all()
    assert (np.diff(curve, axis=1) >= -1e-12).all()
    assert (np.diff(weekly, axis=1) >= -1e-12).all() and (weekly[:, 0] == 0).all()
    assert curve[:, -1].max() > curve[:, 0].max()  # it does rise, not merely stay flat
    finite = frame["median_days"].dropna()
    assert ((finite >= 0) & (finite <= frame["ever_within_days"].max())).all()


def test_the_median_day_is_the_first_day_the_curve_reaches_half_its_end() -> None:
    """Solved inside its period, it is the day a grid of every day gives (read off the
    interpolated curve), and missing for a lead that never converts."""
    rng = np.random.default_rng(3)
    edges = (0, 30, 60, 90, 120, 180, 270, 365, 540)
    hazard = rng.uniform(0, 0.3, size=(3000, 8)) * (rng.uniform(size=(3000, 1)) < 0.9)
    curve = 1 - np.column_stack([np.ones(3000), np.cumprod(1 - hazard, axis=1)])
    grid = np.arange(0, 541, 1.0)
    dense = interpolate(curve, np.asarray(edges, dtype="float64"), grid)
    first = grid[np.argmax(dense >= dense[:, -1:] / 2, axis=1)]
    expected = np.where(dense[:, -1] > 0, first, np.nan)
    got = median_days(curve, edges)
    assert np.isnan(got).sum() == np.isnan(expected).sum() > 0
    np.testing.assert_array_equal(got, expected)


def test_interpolation_keeps_the_edges_and_the_order() -> None:
    edges = np.array([0.0, 30, 60, 90])
    curve = np.array([[0, 0.1, 0.25, 0.3], [0, 0, 0.5, 0.5]])
    dense = interpolate(curve, edges, np.array([0, 15, 30, 45, 60, 90, 200]))
    np.testing.assert_allclose(dense[:, [0, 2, 4, 5]], curve, atol=1e-12)
    assert (np.diff(dense, axis=1) >= 0).all()
    assert dense[0, 1] < 0.1 and dense[0, -1] == pytest.approx(0.3)


def test_the_curve_follows_the_generators_truth(
        world: tuple[Path, CrmExport], outlook: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame, _ = outlook
    truth, means = read_truth(world[0])
    known = truth.loc[frame["lead_id"]]
    for h in (30, 90):
        p_true = truth_probability(known["intent"].to_numpy(), frame["stage_index"].to_numpy(),
                                   h, means, known["pace"].to_numpy())
        p = frame[f"p_by_{h}"].to_numpy()
        assert spearmanr(p, p_true).statistic > 0.6, h
        assert abs(p.sum() - p_true.sum()) < 0.25 * p_true.sum(), (h, p.sum(), p_true.sum())


def test_the_amount_interval_holds_most_won_amounts(
        world: tuple[Path, CrmExport], outlook: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame = outlook[0].set_index("lead_id")
    opps = world[1].opportunities
    assert opps is not None
    won = opps[(opps["status"].astype("str") == "won") & (opps["closed_at"] > T)]
    amounts = won.groupby(won["lead_id"].astype("str"))["amount"].sum()
    rows = frame.reindex(amounts.index).dropna(subset=["amount_low"])
    assert len(rows) >= 25
    inside = ((amounts.loc[rows.index] >= rows["amount_low"])
              & (amounts.loc[rows.index] <= rows["amount_high"])).mean()
    assert 0.55 <= inside <= 0.97, inside  # 80% of about 30: three standard errors
    assert (rows["amount_low"] <= rows["amount_median"]).all()
    assert (rows["amount_median"] <= rows["amount_high"]).all()


def test_simulated_count_intervals_match_the_exact_poisson_binomial() -> None:
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 6, 400)
    cumulative = np.column_stack([np.zeros(p.size), p])
    sim = simulate(cumulative, np.ones(p.size), np.ones(p.size), np.ones(p.size),
                   np.zeros(p.size, dtype="int64"), 1, sims=20_000, seed=1)
    pmf = np.array([1.0])
    for q in p:  # the exact distribution of a sum of Bernoulli trials, by convolution
        pmf = np.convolve(pmf, [1 - q, q])
    cdf = np.cumsum(pmf)
    for level in (0.8, 0.95):
        a = (1 - level) / 2
        exact = (np.searchsorted(cdf, a), np.searchsorted(cdf, 1 - a))
        low, high = interval(sim.counts[0], level)
        assert abs(low - exact[0]) <= 1 and abs(high - exact[1]) <= 1, (level, low, high, exact)
    assert sim.revenue[0].mean() == pytest.approx(p.sum(), rel=0.02)  # amount 1 each


def test_the_backtest_counts_what_happened_after_each_quarter(
        world: tuple[Path, CrmExport]) -> None:
    starts = quarter_starts(world[1], 13)
    assert starts and all(t.month in (1, 4, 7, 10) and t.day == 1 for t in starts)
    assert starts[-1] + pd.Timedelta(weeks=13) <= world[1].latest_time()
    frame, _ = lead_outlook(fit_forecaster(world[1], T, seed=3))
    count, revenue = actuals(world[1], T, 13, frame["lead_id"])
    truth, _ = read_truth(world[0])
    conv = truth.loc[frame["lead_id"], "converted_at"]
    expected = int(((conv > T) & (conv <= T + pd.Timedelta(weeks=13))).sum())
    assert count == expected and revenue > 0


def test_a_stage_hazard_follows_the_table_when_the_trees_have_nothing_to_add(
        world: tuple[Path, CrmExport], tmp_path: Path) -> None:
    """Only the stage (and the period) left in the matrix: the stage x period table already
    says all they can, so a late-stage lead's hazard is its stage's past rate, not the
    average the regularised trees would pull a few leads toward; and the table survives the
    outlook's files (an outlook saved before it had none: nothing is added)."""
    cut = truncate_export(world[1], T)
    rows = snapshot_rows(index_export(cut), T, fit_feature_spec(cut, FeatureConfig()), seed=3,
                         journeys=build_journeys(cut))
    stage_col = [c.name for c in rows.plan.columns].index(STAGE_COLUMN)
    only_stage = np.zeros_like(rows.X)
    only_stage[:, stage_col] = rows.X[:, stage_col]
    rows.X = only_stage
    fit = calibration_mask(rows.entities["lead_id"], 3)
    model = HazardModel(seed=3).fit(rows, fit)
    assert model.base_ is not None
    idx, k, y = person_periods(rows, model.edges)
    keep = fit[idx]
    stage = rows.X[idx, stage_col].astype("int64")
    overall = y[keep & (k == 0)].mean()
    late = int(np.argmax(np.bincount(stage[keep & (y == 1)], minlength=4)[:4]
                         / np.maximum(np.bincount(stage[keep], minlength=4)[:4], 1)))
    sel = keep & (k == 0) & (stage == late)
    rate = y[sel].mean()
    assert sel.sum() >= 30 and rate > 1.5 * overall, (late, sel.sum(), rate, overall)
    lead = rows.X[np.flatnonzero(rows.X[:, stage_col] == late)[:1]]
    hazard = model.raw_curve(lead)[0, 1]  # P(converted in the first period)
    table = 1 / (1 + np.exp(-model.base_[late, 0]))
    assert abs(hazard - table) < 0.1 * table, (hazard, table)
    assert abs(hazard - rate) < abs(hazard - overall), (hazard, rate, overall)
    outlook = Outlook(model, AmountQuantiles())
    outlook.save(tmp_path / "new")
    again = Outlook.load(tmp_path / "new")
    assert again is not None
    np.testing.assert_array_equal(again.hazard.curve(rows.X[:50]), model.curve(rows.X[:50]))
    # an outlook saved before the table: its JSON under the name loaders before it read
    # (which the new one is not: a rolled-back scorer reads no outlook, not wrong hazards)
    meta = json.loads((tmp_path / "new" / "outlook-v2.json").read_text())
    del meta["base_margin"]
    (tmp_path / "new" / "outlook-v2.json").unlink()
    (tmp_path / "new" / "outlook.json").write_text(json.dumps(meta))
    old = Outlook.load(tmp_path / "new")
    assert old is not None and old.hazard.base_ is None
    assert not np.allclose(old.hazard.raw_curve(lead), model.raw_curve(lead))


def test_anchoring_leans_each_stages_level_on_its_history(
        world: tuple[Path, CrmExport]) -> None:
    """The leads open at T in a stage: their mean P(converted by 30 days) moves the weight x
    n / (n + PRIOR_ROWS) share of the way from the trees' to the share of the stage's n past
    rows that converted within 30 days (weight 1 and the shipped half), and the forecast's
    fit anchors on the leads it forecasts, reading their trees once."""
    cut = truncate_export(world[1], T)
    journeys = build_journeys(cut)
    rows = snapshot_rows(index_export(cut), T, fit_feature_spec(cut, FeatureConfig()), seed=3,
                         journeys=journeys)
    fit = calibration_mask(rows.entities["lead_id"], 3)
    scored = rows.open_X
    free = HazardModel(seed=3).fit(rows, fit)
    half = HazardModel(seed=3).fit(rows, fit, scored)
    full = copy.deepcopy(free)
    full.anchor(rows, scored, weight=1.0)
    stage, past = free.stage_rows(scored), free.stage_rows(rows.X)
    checked = 0
    for s in np.unique(stage[stage < free.base_.shape[0] - 1]):
        seen = rows.observed(30) & (past == s)
        rate = rows.converted_within(30)[seen].mean()
        share = seen.sum() / (seen.sum() + PRIOR_ROWS)
        before = free.raw_curve(scored[stage == s])[:, 1].mean()
        for model, weight in ((full, 1.0), (half, ANCHOR_WEIGHT)):
            after = model.raw_curve(scored[stage == s])[:, 1].mean()
            assert after == pytest.approx(before + weight * share * (rate - before),
                                          abs=1e-9), (s, weight)
        checked += abs(rate - before) > 0.01
    assert checked >= 2  # stages whose level the anchoring did move
    model = fit_forecaster(world[1], T, seed=3)
    np.testing.assert_allclose(model.hazard.base_, half.base_, rtol=1e-12)
    # the forecast reads the trees' margins the anchoring computed: the same numbers
    assert model.open_X is not None and model.hazard.scored_trees_ is not None
    frame, _ = lead_outlook(model)
    again = Outlook(model.hazard, model.amount).predict(model.open_X)
    np.testing.assert_array_equal(frame[[f"p_by_{h}" for h in HORIZONS]].to_numpy(),
                                  again.horizons)
