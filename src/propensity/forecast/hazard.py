"""When: a discrete-time hazard model of time to convert, and the curve it gives.

A lead's conversion is a time-to-event problem with a large "never" share. LightGBM has no
survival objective, so each snapshot row (a lead open at t, features as of t) becomes one
binary row per period after t ("converted in (t + a, t + b], having not converted by t + a"),
the period's start and width as two more features. A lead that was disqualified stays at risk
with no event: the curve is then the cumulative incidence of conversion (P(converted by t)),
not a survival that ignores the leads that drop out. A period whose end is after the data's
end is left out (right censoring: the period's outcome is not known yet).

The trees start from a stage x period table of past hazards (LightGBM's init_score; the
table ships with the trees and is added in every path), so they learn how a lead departs from
its stage's history instead of pulling the few late-stage leads toward the average; as many
trees as lower the held-out leads' log loss; past `MAX_PERIOD_ROWS` person-period rows, a
seeded sample of the rows without a conversion, weighted (every conversion kept).

Each stage's level is then anchored at the leads the model is fitted for (those open at the
as-of time): their mean P(converted by each period end) moves part of the way toward the share
of the stage's past snapshot rows that converted within it (`HazardModel.anchor`), the stage
rule's low-variance estimate, read from every lead of the history.

P(converted by d) = 1 - prod over periods (1 - hazard), interpolated inside a period at a
constant daily rate, calibrated at each period end on the latest snapshot rows of leads the
model did not learn from where they hold `MIN_SLOPE_EVENTS` conversions (a map on the logit),
and kept monotone in d.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
from scipy.optimize import brentq

from propensity.coding import Column
from propensity.features.definitions import STAGE_COLUMN
from propensity.models.calibration import fit_calibrator
from propensity.models.outlook import (
    EDGES,
    HORIZONS,
    HazardCurve,
    cumulative,
    interpolate,
    logit,
    median_days,
    with_period,
)
from propensity.snapshot_rows import SnapshotRows, TooLittleHistory

__all__ = ["EDGES", "HORIZONS", "HazardModel", "interpolate", "median_days"]

HAZARD_PARAMS: dict[str, Any] = {
    "objective": "binary", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 200,
    "min_sum_hessian_in_leaf": 5.0, "feature_fraction": 0.8, "bagging_fraction": 0.8,
    "bagging_freq": 1, "lambda_l2": 200.0, "cat_smooth": 200, "cat_l2": 50.0,
    "min_data_per_group": 500, "max_cat_threshold": 4, "max_cat_to_onehot": 8, "verbose": -1,
    "deterministic": True, "force_row_wise": True, "num_threads": 1,
}
ROUNDS = 300
PATIENCE = 30
"""Trees past the best held-out log loss before the boosting stops."""
PRIOR_ROWS = 20.0
"""Rows of its stage's hazard (over all periods) each cell of the stage x period table is
shrunk with."""
MIN_CALIBRATION_ROWS = 300
MIN_SLOPE_EVENTS = 300
"""Fewer conversions than this among the calibration rows of a period end, and the curve is
not calibrated there: a slope read from 15 conversions flattened the long-lived profile's
curve at its first backtest quarter (2,188 open leads forecast 70 customers; 40 bought), and
a level shift read from the held-out quarter of the leads at the latest third of the times
(30-300 conversions) moved the backtest's counts by +5 to +9% against the generator's truth
on realistic seeds 2 and 3: the level is the anchoring's (`ANCHOR_WEIGHT`), read from every
lead of the history."""
ANCHOR_WEIGHT = 0.5
"""How far each stage's mean P(converted by a period end) at the leads scored moves toward
the stage's past rate (`HazardModel.anchor`), times n / (n + `PRIOR_ROWS`) for its n past rows.
The stage rule is a strong, low-variance estimate of a quarter's count (within 3-5% of the
generator's exact expected count on average) and the trees' mix a noisier one; half way is
the shrinkage measured in docs/forecast.md (1 makes the forecast's count the rule's)."""
MIN_CONVERSIONS = 20
"""Fewest conversions in the observed periods for a hazard model to mean anything."""
MAX_PERIOD_ROWS = 100_000
"""Most person-period rows the trees are fitted on. Beyond it, the rows without a conversion
are sampled (seeded: the same rows for the same data) and each kept one stands for those left
out (weight: the inverse of the share kept), every conversion kept. The weighted log loss is
then the whole set's in expectation, so the hazards are not biased by the sampling, only a
little noisier where conversions are many anyway; a 1M-lead export's 60,000 snapshot rows
(276,000 person-periods, 207,000 of them fitted) then cost about half their fit."""


def categorical_indices(columns: list[Column]) -> list[int]:
    return [i for i, c in enumerate(columns) if c.categories is not None]


def person_periods(rows: SnapshotRows, edges: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """(row index, period index, label) of every observed period of every snapshot row at
    risk at its start."""
    idx_parts, k_parts, y_parts = [], [], []
    day = 86_400 * 1_000_000
    for k in range(len(edges) - 1):
        a, b = edges[k] * day, edges[k + 1] * day
        at_risk = rows.converted_at > rows.as_of_us + a
        seen = rows.as_of_us + b <= rows.end_us
        sel = np.flatnonzero(at_risk & seen)
        if not sel.size:
            continue
        idx_parts.append(sel)
        k_parts.append(np.full(sel.size, k))
        y_parts.append((rows.converted_at[sel] <= rows.as_of_us[sel] + b).astype("int8"))
    if not idx_parts:
        empty = np.zeros(0, dtype="int64")
        return empty, empty, empty
    return np.concatenate(idx_parts), np.concatenate(k_parts), np.concatenate(y_parts)


def stage_period_table(stage: np.ndarray, k: np.ndarray, y: np.ndarray, n_stages: int,
                       n_periods: int, prior_rows: float = PRIOR_ROWS) -> np.ndarray:
    """(n_stages + 1, n_periods) log-odds of the hazard of each (stage at the snapshot,
    period) among person-period rows, the last row (a stage unknown) each period's over all
    stages. Each cell is shrunk toward its stage's hazard over all periods by `prior_rows`
    rows of it (and a stage toward the whole history's), so a cell seen a few times reads
    close to its stage rather than 0 or 1: the few late-stage leads of a short history are
    seen in its first periods mostly, and their later periods' hazards are those of their
    stage (a stage's hazard changes little with the period), not those of the early-stage
    leads that fill the other rows of a period."""
    y = np.asarray(y, dtype="float64")
    overall = (y.sum() + 0.5) / (y.size + 1.0)

    def shrunk(groups: np.ndarray, size: int, toward: np.ndarray | float) -> np.ndarray:
        rows = np.bincount(groups, minlength=size).astype("float64")
        events = np.bincount(groups, weights=y, minlength=size)
        return np.asarray((events + prior_rows * toward) / (rows + prior_rows))

    by_stage = shrunk(stage, n_stages + 1, overall)
    table = shrunk(stage * n_periods + k, (n_stages + 1) * n_periods,
                   np.repeat(by_stage, n_periods)).reshape(-1, n_periods)
    table[-1] = shrunk(k, n_periods, overall)
    return np.asarray(logit(table))


def bounded_periods(y: np.ndarray, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The person-period rows to fit on (positions, in order) and their weights (None: every
    row, unweighted, as below `limit`): all conversions, and a seeded sample of the other rows
    filling `limit` (at least a quarter of it), weighted by how many rows each stands for."""
    if y.size <= limit:
        return np.arange(y.size), None
    events, quiet = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    room = min(quiet.size, max(limit - events.size, limit // 4))
    if room == 0 or room == quiet.size:  # nothing to leave out
        return np.arange(y.size), None
    chosen = quiet[np.random.default_rng(seed).choice(quiet.size, room, replace=False)]
    sample = np.sort(np.concatenate([events, chosen]))
    return sample, np.where(y[sample] == 1, 1.0, quiet.size / room)


@dataclass
class HazardModel(HazardCurve):
    """`HazardCurve` (what scoring reads) with its fit."""

    seed: int = 0
    rounds: int = ROUNDS
    """The most trees; fewer when the held-out leads' log loss stops falling."""
    scored_trees_: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The trees' margins of the matrix `anchor` read (`tree_margins`), for the forecast to
    read rather than run the booster on the open leads again; not saved."""
    held_curve_: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The calibrated curve of the rows held out of the fit (what `_calibrate` scored), for
    `uncertainty.level_sd` to read rather than score them again; not saved."""

    def fit(self, rows: SnapshotRows, fit_mask: np.ndarray,
            scored: np.ndarray | None = None) -> HazardModel:
        """Learn hazards from the rows in `fit_mask`; the others (leads held out) choose the
        tree count (early stopping) and then calibrate the curve, and `level_sd` reads their
        curve too: three uses of one held set, so the intervals' spread is a little optimistic.
        `scored`: the matrix of the leads the model is for (open at the as-of time), whose
        stages' levels are anchored to the history's (`anchor`)."""
        observed_span = (rows.end_us - rows.as_of_us.min()) / 86_400e6 if len(
            rows.as_of_us) else 0
        usable = [e for e in self.edges if e <= observed_span]
        self.edges = tuple(usable) if len(usable) >= 2 else self.edges[:2]
        self.max_days_ = int(self.edges[-1])
        edges = np.asarray(self.edges, dtype="float64")
        idx, k, y = person_periods(rows, self.edges)
        keep = fit_mask[idx]
        if y[keep].sum() < MIN_CONVERSIONS:
            raise TooLittleHistory(f"{int(y[keep].sum())} conversions in the history before the "
                                   f"forecast time: at least {MIN_CONVERSIONS} are needed to "
                                   "learn when leads convert")
        self.columns_ = [*rows.plan.columns, Column("period_start_days"),
                         Column("period_days")]
        stage_column = next((c for c in rows.plan.columns if c.name == STAGE_COLUMN), None)
        n_stages = len(stage_column.categories or ()) if stage_column else 0
        self.base_ = np.zeros((n_stages + 1, len(self.edges) - 1))  # stage_rows reads its size
        stage = self.stage_rows(rows.X)
        self.base_ = stage_period_table(stage[idx[keep]], k[keep], y[keep], n_stages,
                                        len(self.edges) - 1)
        self.booster_ = self._boost(rows.X, (idx, k, y), keep, stage, edges)
        if scored is not None:
            self.anchor(rows, scored)
        self._calibrate(rows, ~fit_mask)
        return self

    def anchor(self, rows: SnapshotRows, scored: np.ndarray,
               weight: float = ANCHOR_WEIGHT) -> None:
        """Shrink each stage's level at the leads scored toward the stage's history: at each
        period end e, the mean P(converted by e) of the `scored` leads in a stage moves a
        share weight x n / (n + PRIOR_ROWS) of the way to the share of the stage's n past
        snapshot rows (every lead, learned from or held out) that converted within e, by one
        shift of the stage's hazard log-odds in the period ending at e, added to its cell of
        the table (`base_`), so that every path reads it. The trees still rank the leads
        inside a stage; the level of a stage, which a few dozen buyers set for the trees,
        leans on the rule's estimate from every past row of the stage. Stages and periods
        without past rows are left alone."""
        if self.base_ is None or not len(scored):
            return
        trees = self.scored_trees_ = self.tree_margins(scored)
        stage = self.stage_rows(scored)
        past = self.stage_rows(rows.X)
        ends = [(rows.observed(e), rows.converted_within(e)) for e in self.edges[1:]]
        for s in np.unique(stage[stage < self.base_.shape[0] - 1]):
            margins = trees[stage == s]
            for k, (observed, converted) in enumerate(ends):
                seen = observed & (past == s)
                n = int(seen.sum())
                if n == 0:
                    continue
                rate = float(converted[seen].mean())
                share = weight * n / (n + PRIOR_ROWS)
                self.base_[s, k] += level_shift(margins + self.base_[s], k, rate, share)

    def _boost(self, X: np.ndarray, periods: tuple[np.ndarray, ...], keep: np.ndarray,
               stage: np.ndarray, edges: np.ndarray) -> lgb.Booster:
        """Trees on the person-period rows in `keep`, starting from the stage x period table
        (LightGBM's init_score: the trees learn how a lead departs from its stage's past
        hazard, and where they find nothing the table stands); as many trees as lower the
        log loss of the held-out leads' rows (at most `rounds`)."""
        assert self.base_ is not None
        base = self.base_
        idx, k, y = periods
        cats = categorical_indices(self.columns_)

        def dataset(sel: np.ndarray, reference: lgb.Dataset | None = None,
                    weight: np.ndarray | None = None) -> lgb.Dataset:
            return lgb.Dataset(with_period(X[idx[sel]], k[sel], edges), label=y[sel],
                               weight=weight, init_score=base[stage[idx[sel]], k[sel]],
                               categorical_feature=cats, reference=reference,
                               free_raw_data=True)

        params = {**HAZARD_PARAMS, "seed": self.seed}
        fitted = np.flatnonzero(keep)  # past MAX_PERIOD_ROWS, a weighted sample of them
        sample, weight = bounded_periods(y[fitted], MAX_PERIOD_ROWS, self.seed)
        train = dataset(fitted[sample], weight=weight)
        if y[~keep].sum() < MIN_CONVERSIONS:
            return lgb.train(params, train, num_boost_round=self.rounds)
        booster = lgb.train({**params, "metric": "binary_logloss"}, train,
                            num_boost_round=self.rounds,
                            valid_sets=[dataset(~keep, train)], valid_names=["held"],
                            callbacks=[lgb.early_stopping(PATIENCE, verbose=False)])
        # only the best trees are kept (the single-row path reads every tree a booster has)
        best = max(int(booster.best_iteration), 1)
        return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))

    def _calibrate(self, rows: SnapshotRows, mask: np.ndarray) -> None:
        """Per period end: the latest third of the snapshot times that observed it, rows of
        leads held out of the fit (read when leads are as old as they are at the forecast)."""
        self.calibrators_ = {}
        self.held_curve_ = None
        if not mask.any():
            return
        raw = self.raw_curve(rows.X[mask])
        as_of = rows.as_of_us[mask]
        for j, edge in enumerate(self.edges[1:], start=1):
            seen = rows.observed(edge)[mask]
            times = np.unique(as_of[seen])
            if times.size == 0:
                continue
            recent = seen & (as_of >= times[int(len(times) * 2 / 3)])
            if recent.sum() < MIN_CALIBRATION_ROWS:
                recent = seen
            if recent.sum() < MIN_CALIBRATION_ROWS:
                continue
            y = rows.converted_within(edge)[mask][recent]
            if y.sum() < MIN_SLOPE_EVENTS:
                continue  # the anchored level is nearer than a few held-out coin flips
            self.calibrators_[edge] = fit_calibrator(logit(raw[recent, j]), y)
        self.held_curve_ = self.calibrated(raw)


LEVEL_SHIFT_BOUND = 10.0
"""The largest shift of a hazard's log-odds the anchoring makes (a target the period cannot
reach, e.g. below what the earlier periods already hold, stops there)."""


def level_shift(margins: np.ndarray, k: int, rate: float, share: float) -> float:
    """The shift of every row's hazard log-odds in period `k` (`margins`: (rows, periods))
    that moves the rows' mean P(converted by the period's end) a `share` of the way from
    where it is to `rate`."""
    start = cumulative(margins[:, :k])[:, -1] if k else np.zeros(len(margins))
    now = float(cumulative(margins[:, :k + 1])[:, -1].mean())
    target = now + share * (rate - now)

    def gap(d: float) -> float:
        hazard = 1 / (1 + np.exp(-(margins[:, k] + d)))
        return float(np.mean(1 - (1 - start) * (1 - hazard))) - target

    low, high = gap(-LEVEL_SHIFT_BOUND), gap(LEVEL_SHIFT_BOUND)
    if low >= 0 or high <= 0:
        return -LEVEL_SHIFT_BOUND if low >= 0 else LEVEL_SHIFT_BOUND
    return float(brentq(gap, -LEVEL_SHIFT_BOUND, LEVEL_SHIFT_BOUND, xtol=1e-10))
