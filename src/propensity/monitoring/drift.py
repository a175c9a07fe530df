"""Drift: how far what a model serves has moved from what it learned from.

PSI (population stability index) per feature and for the score, between the reference's bin
shares and the served ones, both smoothed by half a lead per bin so an empty bin in a small
week is not an infinite shift. Beside it, per feature, the share of missing values and the
share of `__other__` (categories the model never learned: rare at training, or new), now and
at training. Computed per day or per ISO week (Monday first).
"""

from __future__ import annotations

from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel

from propensity.database import served_histograms
from propensity.monitoring.reference import SCORE, Binned, Reference

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


def _share(counts: np.ndarray, b: int | None) -> float | None:
    if b is None:
        return None
    return float(counts[b] / counts.sum()) if counts.sum() else 0.0


def _fit(counts: np.ndarray, bins: int) -> np.ndarray:
    out = np.zeros(bins)
    out[:min(bins, len(counts))] = counts[:bins]
    return out


def _pooled(ref: Binned, expected: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    if ref.categories is None:
        return expected, actual
    small = expected / max(expected.sum(), 1) < MIN_LEVEL_SHARE
    if small.sum() < 2:
        return expected, actual
    return (np.append(expected[~small], expected[small].sum()),
            np.append(actual[~small], actual[small].sum()))


def _feature(ref: Binned, served: np.ndarray, rank: int | None) -> FeatureDrift:
    expected = np.asarray(ref.counts, dtype="float64")
    actual = _fit(served, ref.bins)
    return FeatureDrift(
        feature=ref.name, psi=psi(*_pooled(ref, expected, actual)), importance_rank=rank,
        missing_share=float(_share(actual, ref.bins - 1) or 0.0),
        missing_share_reference=float(_share(expected, ref.bins - 1) or 0.0),
        other_share=_share(actual, ref.other_bin),
        other_share_reference=_share(expected, ref.other_bin))


def period_drift(reference: Reference, counts: dict[str, np.ndarray], period: str) -> PeriodDrift:
    """One period's drift from its served counts (feature -> counts per bin)."""
    ranks = {name: i + 1 for i, name in enumerate(reference.top(len(reference.importance)))}
    score = _fit(counts.get(SCORE, np.zeros(0)), reference.score.bins)
    total = score.sum()
    features = [_feature(b, counts.get(b.name, np.zeros(0)), ranks.get(b.name))
                for b in reference.features]
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
        rows = conn.execute(sa.select(h.c.day, h.c.feature, h.c.bin, h.c["count"]).where(
            h.c.model_name == model, h.c.model_version == version, h.c.day >= start,
            h.c.day < end)).all()
    frame = pd.DataFrame(rows, columns=["day", "feature", "bin", "count"])
    frame["day"] = pd.to_datetime(frame["day"])
    return frame


def period_of(days: pd.Series, by: Period) -> pd.Series:
    if by == "day":
        return days.dt.strftime("%Y-%m-%d")
    return (days - pd.to_timedelta(days.dt.weekday, unit="D")).dt.strftime("%Y-%m-%d")


def drift_over_time(reference: Reference, counts: pd.DataFrame, by: Period) -> list[PeriodDrift]:
    """Drift of each day or week with served leads, oldest first."""
    if counts.empty:
        return []
    frame = counts.assign(period=period_of(counts["day"], by))
    out = []
    for period, part in frame.groupby("period", sort=True):
        per: dict[str, np.ndarray] = {}
        for feature, rows in part.groupby("feature"):
            arr = np.zeros(int(rows["bin"].max()) + 1)
            np.add.at(arr, rows["bin"].to_numpy(), rows["count"].to_numpy())
            per[str(feature)] = arr
        out.append(period_drift(reference, per, str(period)))
    return out
