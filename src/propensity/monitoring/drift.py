"""Drift: how far what a model serves has moved from what it learned from.

PSI (population stability index) per feature and for the score, between the reference's bin
shares and the served ones, both smoothed by half a lead per bin so an empty bin in a small
week is not an infinite shift. Beside it, per feature, the share of missing values and the
share of `__other__` (categories the model never learned: rare at training, or new), now and
at training. Computed per day or per ISO week (Monday first).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

import numpy as np
import sqlalchemy as sa
from pydantic import BaseModel

from propensity.database import served_histograms
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


DayCounts = dict[date, np.ndarray]
"""Served counts per day: a (reference features + the score, bins) matrix, rows in the order
of `_names(reference)`, as wide as the widest reference feature (a served bin past a
feature's reference bins counts nowhere in a PSI, so it is left out)."""


def _names(reference: Reference) -> list[str]:
    return [*(b.name for b in reference.features), SCORE]


@dataclass
class _StoredCounts:
    """Days of `served_histograms` this process has read, each with the signature it had
    then: (rows, total count). Counts are only ever added (`upsert_adding` of positive
    counts), so any write to a day moves its total: a day whose signature is unchanged is
    read from here, the others from the database."""

    reference: Reference
    days: dict[date, tuple[tuple[int, int], np.ndarray]] = dataclasses.field(
        default_factory=dict)


_COUNTS: weakref.WeakKeyDictionary[sa.Engine, dict[tuple[str, str], _StoredCounts]] = (
    weakref.WeakKeyDictionary())
_COUNTS_LOCK = threading.Lock()
MAX_CACHED_DAYS = 2 * 366


def _as_date(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def served_counts(engine: sa.Engine, model: str, version: str, start: date, end: date,
                  reference: Reference) -> DayCounts:
    """The stored histograms of one model version, days in [start, end) with any: one small
    query for each day's signature, then the rows of the days that changed since this
    process last read them (a report's window is tens of thousands of rows, a few of them
    new)."""
    h = served_histograms
    where = (h.c.model_name == model, h.c.model_version == version)
    with _COUNTS_LOCK:
        per_engine = _COUNTS.setdefault(engine, {})
        cache = per_engine.get((model, version))
        if cache is None or cache.reference is not reference:
            cache = per_engine[(model, version)] = _StoredCounts(reference)
        with engine.connect() as conn:
            signatures = {_as_date(d): (int(n), int(total)) for d, n, total in conn.execute(
                sa.select(h.c.day, sa.func.count(), sa.func.sum(h.c["count"])).where(
                    *where, h.c.day >= start, h.c.day < end).group_by(h.c.day))}
            stale = sorted(d for d, sig in signatures.items()
                           if d not in cache.days or cache.days[d][0] != sig)
            if len(cache.days) + len(stale) > MAX_CACHED_DAYS:
                cache.days.clear()
                stale = sorted(signatures)
            if stale:
                rows = conn.execute(sa.select(h.c.day, h.c.feature, h.c.bin, h.c["count"]).where(
                    *where, h.c.day.in_(stale))).cursor.fetchall()
                for day, table in _matrices(reference, rows).items():
                    cache.days[day] = (signatures[day], table)
        return {d: cache.days[d][1] for d in sorted(signatures) if d in cache.days}


def _matrices(reference: Reference, rows: Sequence[Any]) -> DayCounts:
    """(day, feature, bin, count) rows as a matrix per day."""
    names = _names(reference)
    index = {name: i for i, name in enumerate(names)}
    width = max(b.bins for b in [*reference.features, reference.score])
    out: DayCounts = {}
    days: dict[object, date] = {}
    for day, feature, b, count in rows:
        i = index.get(feature)
        if i is None or b >= width:
            continue
        d = days.get(day)
        if d is None:
            d = days[day] = _as_date(day)
            out[d] = np.zeros((len(names), width))
        out[d][i, b] += count
    for d in days.values():  # a day with rows, none of them counted: still a day served
        out.setdefault(d, np.zeros((len(names), width)))
    return out


_DRIFTS: OrderedDict[tuple[int, str, bytes], tuple[Reference, PeriodDrift]] = OrderedDict()
_DRIFTS_LOCK = threading.Lock()
CACHED_PERIODS = 64
"""Periods' drift kept per process (about 0.2 MB each, 150 features): a dashboard asking for
windows that overlap (28 days, 5 weeks and the window's total by default) computes the
periods that changed only."""


def _period(reference: Reference, table: np.ndarray, period: str) -> PeriodDrift:
    """`period_drift` of one period's matrix, reused when the same counts were seen before."""
    key = (id(reference), period, hashlib.blake2b(table.tobytes(), digest_size=16).digest())
    with _DRIFTS_LOCK:
        hit = _DRIFTS.get(key)
        if hit is not None and hit[0] is reference:
            _DRIFTS.move_to_end(key)
            return hit[1]
    drift = period_drift(reference, dict(zip(_names(reference), table, strict=True)), period)
    with _DRIFTS_LOCK:
        _DRIFTS[key] = (reference, drift)
        while len(_DRIFTS) > CACHED_PERIODS:
            _DRIFTS.popitem(last=False)
    return drift


def drift_over_time(reference: Reference, counts: DayCounts, by: Period) -> list[PeriodDrift]:
    """Drift of each day or week with served leads, oldest first."""
    periods: dict[str, np.ndarray] = {}
    for day in sorted(counts):
        label = (day if by == "day" else day - timedelta(days=day.weekday())).isoformat()
        periods[label] = periods[label] + counts[day] if label in periods else counts[day]
    return [_period(reference, table, label) for label, table in periods.items()]


def window_drift(reference: Reference, counts: DayCounts) -> PeriodDrift | None:
    """Drift of the whole window (None when nothing was served in it)."""
    if not counts:
        return None
    return _period(reference, sum(counts.values()), "window")  # type: ignore[arg-type]
