"""Drift: how far what a model serves has moved from what it learned from.

PSI (population stability index) per feature and for the score, between the reference's bin
shares and the served ones, both smoothed by half a lead per bin so an empty bin in a small
week is not an infinite shift. Beside it, per feature, the share of missing values and the
share of `__other__` (categories the model never learned: rare at training, or new), now and
at training. Computed per day or per ISO week (Monday first).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel

from propensity.database import served_histograms
from propensity.monitoring.aggregates import fetch
from propensity.monitoring.reference import SCORE, Reference

Period = Literal["day", "week"]
MIN_LEVEL_SHARE = 0.05
"""Categories below this share of the training rows are pooled into one bin for PSI (the
usual rule that no PSI bin hold under 5%): 25 sales reps at 4% each otherwise make a few
hundred leads look drifted by chance alone. New or rare levels still show in `other_share`."""


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = (expected + 0.5) / (expected.sum() + 0.5 * len(expected))
    a = (actual + 0.5) / (actual.sum() + 0.5 * len(actual))
    return float(np.sum((a - e) * np.log(a / e)))


class FeatureDrift(BaseModel):
    feature: str
    psi: float
    importance_rank: int | None
    missing_share: float
    missing_share_reference: float
    other_share: float | None = None
    """Share coded `__other__` (a category the model did not learn), None for numbers."""
    other_share_reference: float | None = None


class BinShare(BaseModel):
    bin: str
    reference: float
    served: float


class PeriodDrift(BaseModel):
    period: str
    """The day, or the Monday its week starts."""
    served: int
    score_psi: float
    score_bins: list[BinShare]
    features: list[FeatureDrift]
    """Most drifted first."""


def _fit(counts: np.ndarray, bins: int) -> np.ndarray:
    out = np.zeros(bins)
    out[:min(bins, len(counts))] = counts[:bins]
    return out


@dataclass(frozen=True, eq=False)
class _Layout:
    """A reference's features laid out as (features, bins) matrices, so one period's PSI of
    every feature is a handful of numpy calls (a call per feature and period cost most of a
    report: 34 periods x 144 features)."""

    names: list[str]
    bins: np.ndarray
    ranks: list[int | None]
    groups: np.ndarray
    """PSI group of each (feature, bin): small categories pooled into the last; -1 past a
    feature's bins."""
    n_groups: np.ndarray
    expected: np.ndarray
    expected_share: np.ndarray
    """Smoothed reference shares per group (1 past a feature's groups: adds 0 to the PSI)."""
    other: np.ndarray
    """The `__other__` bin of each feature, -1 for none."""

    @classmethod
    def of(cls, reference: Reference) -> _Layout:
        rows = reference.features
        width = max([b.bins for b in rows] or [1])
        ranks = {name: i + 1 for i, name in enumerate(reference.top(len(reference.importance)))}
        groups = np.full((len(rows), width), -1, dtype="int64")
        expected = np.zeros((len(rows), width))
        for i, b in enumerate(rows):
            e = np.asarray(b.counts, dtype="float64")
            expected[i, :b.bins] = e
            groups[i, :b.bins] = np.arange(b.bins)
            if b.categories is not None:
                small = e / max(e.sum(), 1) < MIN_LEVEL_SHARE
                if small.sum() >= 2:  # the pooled bin comes last, as `_pooled` orders it
                    groups[i, :b.bins] = np.where(small, (~small).sum(), np.cumsum(~small) - 1)
        n_groups = groups.max(axis=1) + 1
        layout = cls([b.name for b in rows], np.array([b.bins for b in rows], dtype="int64"),
                     [ranks.get(b.name) for b in rows], groups, n_groups, expected,
                     np.zeros(0), np.array([-1 if b.other_bin is None else b.other_bin
                                            for b in rows], dtype="int64"))
        return dataclasses.replace(layout, expected_share=layout.smoothed(expected))

    def grouped(self, counts: np.ndarray) -> np.ndarray:
        """(features, groups) sums of (features, bins) counts."""
        f, g = len(self.names), int(self.groups.max()) + 1 if self.groups.size else 1
        valid = self.groups >= 0
        flat = (np.arange(f)[:, None] * g + self.groups)[valid]
        return np.bincount(flat, weights=counts[valid], minlength=f * g).reshape(f, g)

    def smoothed(self, counts: np.ndarray) -> np.ndarray:
        """Shares per group smoothed by half a lead (as `psi`), 1 past a feature's groups."""
        grouped = self.grouped(counts)
        share = (grouped + 0.5) / (grouped.sum(axis=1, keepdims=True)
                                   + 0.5 * self.n_groups[:, None])
        return np.where(np.arange(grouped.shape[1])[None, :] < self.n_groups[:, None],
                        share, 1.0)


_LAYOUTS: dict[int, tuple[Reference, _Layout]] = {}


def _layout(reference: Reference) -> _Layout:
    hit = _LAYOUTS.get(id(reference))
    if hit is None or hit[0] is not reference:
        if len(_LAYOUTS) > 8:
            _LAYOUTS.clear()
        hit = _LAYOUTS[id(reference)] = (reference, _Layout.of(reference))
    return hit[1]


def _shares(counts: np.ndarray, rows: np.ndarray, bins: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=1)
    picked = np.where(bins >= 0, counts[rows, np.maximum(bins, 0)], 0.0)
    return np.where(total > 0, picked / np.where(total > 0, total, 1.0), 0.0)


def _features(reference: Reference, counts: dict[str, np.ndarray]) -> list[FeatureDrift]:
    lay = _layout(reference)
    served = np.zeros_like(lay.expected)
    for i, name in enumerate(lay.names):
        c = counts.get(name)
        if c is not None:
            k = min(len(c), int(lay.bins[i]))
            served[i, :k] = c[:k]
    a, e = lay.smoothed(served), lay.expected_share
    psis = ((a - e) * np.log(a / e)).sum(axis=1)
    rows = np.arange(len(lay.names))
    missing = _shares(served, rows, lay.bins - 1)
    missing_ref = _shares(lay.expected, rows, lay.bins - 1)
    other, other_ref = _shares(served, rows, lay.other), _shares(lay.expected, rows, lay.other)
    return [FeatureDrift.model_construct(  # our own floats: validating them cost 3x building
        feature=name, psi=float(psis[i]), importance_rank=lay.ranks[i],
        missing_share=float(missing[i]), missing_share_reference=float(missing_ref[i]),
        other_share=None if lay.other[i] < 0 else float(other[i]),
        other_share_reference=None if lay.other[i] < 0 else float(other_ref[i]))
        for i, name in enumerate(lay.names)]


def period_drift(reference: Reference, counts: dict[str, np.ndarray], period: str) -> PeriodDrift:
    """One period's drift from its served counts (feature -> counts per bin)."""
    score = _fit(counts.get(SCORE, np.zeros(0)), reference.score.bins)
    total = score.sum()
    features = _features(reference, counts)
    features.sort(key=lambda f: -f.psi)
    ref_score = np.asarray(reference.score.counts, dtype="float64")
    bins = [BinShare(bin=reference.score.label(i), reference=float(ref_score[i] / ref_score.sum()),
                     served=float(score[i] / total) if total else 0.0)
            for i in range(reference.score.bins - 1)]
    return PeriodDrift(period=period, served=int(total), score_psi=psi(ref_score, score),
                       score_bins=bins, features=features)


def served_counts(engine: sa.Engine, model: str, version: str, start: date,
                  end: date) -> pd.DataFrame:
    """The stored histograms of one model version, days in [start, end)."""
    h = served_histograms
    with engine.connect() as conn:
        frame = fetch(conn, sa.select(h.c.day, h.c.feature, h.c.bin, h.c["count"]).where(
            h.c.model_name == model, h.c.model_version == version, h.c.day >= start,
            h.c.day < end), ["day", "feature", "bin", "count"])
    frame["day"] = frame["day"].astype("str")
    frame["day"] = pd.to_datetime(frame["day"])
    return frame


def period_of(days: pd.Series, by: Period) -> pd.Series:
    if by == "day":
        return days.dt.strftime("%Y-%m-%d")
    return (days - pd.to_timedelta(days.dt.weekday, unit="D")).dt.strftime("%Y-%m-%d")


def _tables(counts: pd.DataFrame, periods: pd.Series) -> tuple[list[str], list[str],
                                                                 np.ndarray]:
    """(periods, features, counts per period, feature and bin) in one bincount: a report
    holds a row per day, feature and bin, and a groupby per period and feature cost more
    than everything else the report does."""
    period_codes, period_names = pd.factorize(periods, sort=True)
    feature_codes, features = pd.factorize(counts["feature"], sort=True)
    width = int(counts["bin"].max()) + 1
    flat = (period_codes * len(features) + feature_codes) * width + counts["bin"].to_numpy()
    table = np.bincount(flat, weights=counts["count"].to_numpy(dtype="float64"),
                        minlength=len(period_names) * len(features) * width)
    return ([str(p) for p in period_names], [str(f) for f in features],
            table.reshape(len(period_names), len(features), width))


def drift_over_time(reference: Reference, counts: pd.DataFrame, by: Period) -> list[PeriodDrift]:
    """Drift of each day or week with served leads, oldest first."""
    if counts.empty:
        return []
    periods, features, table = _tables(counts, period_of(counts["day"], by))
    return [period_drift(reference, dict(zip(features, table[i], strict=True)), period)
            for i, period in enumerate(periods)]


def window_drift(reference: Reference, counts: pd.DataFrame) -> PeriodDrift | None:
    """Drift of the whole window (None when nothing was served in it)."""
    if counts.empty:
        return None
    _, features, table = _tables(counts, pd.Series("window", index=counts.index))
    return period_drift(reference, dict(zip(features, table[0], strict=True)), "window")
