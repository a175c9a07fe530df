"""How much: the amount a lead's deal will be won for, with an 80% interval.

Learned from won opportunities: each snapshot row of a lead whose opportunity was later won
(before the data's end) is one row, its features as of the snapshot, its target the won
amount; rows are weighted so each won lead counts once. Three LightGBM quantile models on the
log amount (10%, 50%, 90%; quantiles survive the log), the interval then widened or narrowed
by split-conformal scores on won leads held out of the fit (so it holds 80% of amounts on
data like the history, not merely in the loss's intent), and the mean (what revenue needs) as
the median's fit on the log scale times the average exp(residual) on the held-out leads
(Duan's smearing).

The rule-based reference users have: the median won amount of the lead's segment (source,
industry, size band), falling back to coarser segments with fewer than 5 wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from propensity.coding import Column
from propensity.forecast.hazard import categorical_indices
from propensity.models.outlook import QUANTILES, AmountQuantiles
from propensity.snapshot_rows import SnapshotRows
from propensity.tables import CrmExport

AMOUNT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05, "num_leaves": 8, "max_depth": 3, "min_data_in_leaf": 20,
    "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
    "cat_smooth": 20,
    "max_cat_to_onehot": 8, "verbose": -1, "deterministic": True, "force_row_wise": True,
    "num_threads": 1,
}
ROUNDS = 200
"""Trees of depth 3 (8 leaves): on held-out won leads (bench_serve's 20,000-lead export) their
pinball loss equals that of 15 leaves of any depth (median 0.1773 vs 0.1775, 10%: 0.0865 vs
0.0922, 90%: 0.0887 vs 0.0888, 200 trees each) and a lead's SHAP values, the amount's
reasons, cost a third (TreeSHAP's cost grows with leaves x depth squared). The loss still
falls at 200 trees (0.05 learning rate; 0.15 or 0.3 with fewer trees lost 3-10%), so the
count stays."""
SIZE_BANDS = (0, 10, 50, 200, 1000, 5000)
MIN_SEGMENT_WINS = 5


@dataclass
class AmountModel(AmountQuantiles):
    """`AmountQuantiles` (what scoring reads) with its fit."""

    seed: int = 0
    rounds: int = ROUNDS

    def fit(self, rows: SnapshotRows, amount: np.ndarray, fit_mask: np.ndarray,
            columns: list[Column]) -> AmountModel:
        won = ~np.isnan(amount) & (amount > 0)
        if won.sum() == 0:
            raise ValueError("no won opportunity with an amount before the forecast time")
        self.fallback_ = float(np.nanmean(amount[won]))
        y = np.log(amount)
        lead = rows.entities["lead_id"].to_numpy()
        fit, held = won & fit_mask, won & ~fit_mask
        if fit.sum() < 30:
            return self
        w = _lead_weights(lead[fit])
        cats = categorical_indices(columns)
        for q in QUANTILES:
            data = lgb.Dataset(rows.X[fit], label=y[fit], weight=w, categorical_feature=cats)
            self.boosters_[q] = lgb.train({**AMOUNT_PARAMS, "objective": "quantile",
                                           "alpha": q, "seed": self.seed}, data,
                                          num_boost_round=self.rounds)
        if held.sum() >= 20:
            lo, mid, hi = (self.boosters_[q].predict(rows.X[held]) for q in QUANTILES)
            # one row per held-out lead (its latest snapshot): rows of one lead are not
            # independent draws
            last = _latest_per_lead(lead[held], rows.as_of_us[held])
            score = np.maximum(lo - y[held], y[held] - hi)[last]
            level = min(1.0, np.ceil(0.8 * (last.size + 1)) / last.size)
            self.widen_ = float(np.quantile(score, level))
            self.smear_ = float(np.mean(np.exp(y[held] - mid)[last]))
        return self

    def predict(self, X: np.ndarray) -> pd.DataFrame:
        """amount_low (10%), amount_median, amount_high (90%), expected_amount (mean)."""
        return pd.DataFrame(dict(zip(("amount_low", "amount_median", "amount_high",
                                      "expected_amount"), self.quantiles(X), strict=True)))


def _lead_weights(lead: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(lead, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def _latest_per_lead(lead: np.ndarray, t: np.ndarray) -> np.ndarray:
    order = np.lexsort((-t, lead))
    first = np.r_[True, lead[order][1:] != lead[order][:-1]]
    return np.sort(order[first])


# --- the rule-based reference --------------------------------------------------------------

def size_band(employees: pd.Series) -> pd.Series:
    labels = [f"{a}-{b - 1}" for a, b in pairwise(SIZE_BANDS)]
    labels.append(f"{SIZE_BANDS[-1]}+")
    bins = [*SIZE_BANDS, np.inf]
    band = pd.cut(pd.to_numeric(employees, errors="coerce"), bins=bins, labels=labels,
                  right=False)
    return band.astype("str").where(band.notna(), "unknown")


def lead_segments(export: CrmExport, lead_ids: pd.Series) -> pd.DataFrame:
    """source, industry and size band of each lead ('unknown' where the export lacks it)."""
    leads = export.leads
    pos = export.lead_positions(lead_ids)
    out = pd.DataFrame(index=range(len(lead_ids)))
    out["source"] = leads["source"].astype("str").to_numpy()[pos] if "source" in leads else (
        "unknown")
    industry = pd.Series("unknown", index=out.index)
    employees = pd.Series(np.nan, index=out.index)
    acc = export.accounts
    if acc is not None and "account_id" in leads:
        acc = acc.set_index(acc["account_id"].astype("str"))
        ids = leads["account_id"].astype("str").where(leads["account_id"].notna()).to_numpy()[pos]
        if "industry" in acc:
            industry = pd.Series(acc["industry"].astype("str").reindex(ids).to_numpy()).fillna(
                "unknown")
        if "employees" in acc:
            employees = pd.Series(acc["employees"].reindex(ids).to_numpy())
    out["industry"] = industry.to_numpy()
    out["size_band"] = size_band(employees).to_numpy()
    out["segment"] = out["source"] + "/" + out["industry"] + "/" + out["size_band"]
    return out


@dataclass
class SegmentMedians:
    """Median won amount per (source, industry, size band), with coarser fallbacks."""

    levels: list[dict[tuple[str, ...], float]] = field(default_factory=list)
    overall: float = 0.0

    KEYS = (("source", "industry", "size_band"), ("industry", "size_band"), ("size_band",))

    def fit(self, segments: pd.DataFrame, amount: np.ndarray) -> SegmentMedians:
        won = ~np.isnan(amount)
        frame = segments[won].assign(amount=amount[won])
        self.overall = float(frame["amount"].median()) if len(frame) else 0.0
        self.levels = []
        for keys in self.KEYS:
            g = frame.groupby(list(keys))["amount"].agg(["median", "size"])
            g = g[g["size"] >= MIN_SEGMENT_WINS]
            self.levels.append({(k if isinstance(k, tuple) else (k,)): float(v)
                                for k, v in g["median"].items()})
        return self

    def predict(self, segments: pd.DataFrame) -> np.ndarray:
        out = np.full(len(segments), np.nan)
        for keys, table in zip(self.KEYS, self.levels, strict=True):
            tuples = list(segments[list(keys)].itertuples(index=False, name=None))
            found = np.array([table.get(t, np.nan) for t in tuples], dtype="float64")
            out = np.where(np.isnan(out), found, out)
        return np.where(np.isnan(out), self.overall, out)

