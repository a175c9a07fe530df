"""LightGBM on the model matrix: native categoricals, regularisation counted in leads.

A lead that stays open appears in many snapshots; rows are weighted so each lead counts once,
and `min_data_in_leaf` is set from a number of *leads* times the average rows per lead, so a
leaf cannot be one long-lived lead seen twenty times. The small grid below is the zero-
configuration search: a default, a simpler and a richer tree, and a strongly regularised one
for noisy exports; validation picks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np

from propensity.coding import Column

BASE_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.1,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "cat_l2": 10.0,
    "max_cat_to_onehot": 8,
    "verbose": -1,
    "seed": 13,
    "deterministic": True,
}
THREADED_ROWS = 100_000
"""Below this many rows LightGBM trains on one thread: the gain from more is small, and on a
busy machine OpenMP threads waiting for a core make training many times slower."""
GRID: tuple[dict[str, Any], ...] = (
    {"num_leaves": 15, "min_leads_in_leaf": 40, "cat_smooth": 50},
    {"num_leaves": 7, "min_leads_in_leaf": 100, "cat_smooth": 100},
    {"num_leaves": 31, "min_leads_in_leaf": 20, "cat_smooth": 20},
    {"num_leaves": 15, "min_leads_in_leaf": 150, "cat_smooth": 200, "lambda_l2": 10.0,
     "cat_l2": 30.0, "max_cat_to_onehot": 4},
)
MAX_ROUNDS = 1500
PATIENCE = 40


def lightgbm_params(setting: dict[str, Any], rows_per_lead: float, entities: int,
                    overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """LightGBM parameters from a grid setting: leads-per-leaf becomes rows-per-leaf, and
    never more than a 25th of the leads there are (or a small export grows stumps)."""
    params = {**BASE_PARAMS, **{k: v for k, v in setting.items() if k != "min_leads_in_leaf"}}
    leads = min(int(setting.get("min_leads_in_leaf", 40)), max(5, entities // 25))
    params["min_data_in_leaf"] = max(5, round(leads * rows_per_lead))
    params["min_data_per_group"] = max(10, round(2 * leads * rows_per_lead))
    return {**params, **(overrides or {})}


def _dataset(X: np.ndarray, y: np.ndarray, w: np.ndarray | None, columns: Sequence[Column],
             reference: lgb.Dataset | None = None) -> lgb.Dataset:
    cats = [i for i, c in enumerate(columns) if c.categories is not None]
    return lgb.Dataset(X, label=y, weight=w, feature_name=[c.name for c in columns],
                       categorical_feature=cats, reference=reference, free_raw_data=True,
                       params={"verbose": -1})


def train_booster(X: np.ndarray, y: np.ndarray, w: np.ndarray | None, columns: Sequence[Column],
                  params: dict[str, Any], rounds: int,
                  valid: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[lgb.Booster, list[float]]:
    """A booster of at most `rounds` trees; with `valid`, stops PATIENCE rounds after the best
    validation log loss and returns minus the log loss after every round (higher is better: to
    choose one count for all folds). Log loss, not AUC: the count is what the probabilities
    are read from, and AUC stops as soon as the ranking stalls, when the margins are still
    too flat to carry the top decile (docs/training.md has the figures)."""
    params = {"num_threads": 1 if len(X) < THREADED_ROWS else 0, **params}
    train_set = _dataset(X, y, w, columns)
    if valid is None:
        return lgb.train(params, train_set, num_boost_round=rounds), []
    valid_set = _dataset(valid[0], valid[1], None, columns, reference=train_set)
    record: dict[str, Any] = {}
    booster = lgb.train(
        {**params, "metric": "binary_logloss"}, train_set, num_boost_round=rounds,
        valid_sets=[valid_set], valid_names=["valid"],
        callbacks=[lgb.early_stopping(PATIENCE, verbose=False), lgb.record_evaluation(record)])
    return booster, [-v for v in record["valid"]["binary_logloss"]]
