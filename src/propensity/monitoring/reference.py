"""What a model learned from, binned: each feature's and the score's distribution on its
training rows of the holdout period, stored with the registered version so drift is always
measured against rows that version saw.

Why the holdout period and not every training row: a served lead is a lead open *now*, with
all the history the export has by now. Early snapshots of any export hold only young leads
and small accounts (the export began recently, then), so the distribution over all snapshots
makes a stationary stream look drifted (lead age, days in stage and contacts per account
at PSI ~1, the score at 0.27). The latest labelled snapshot times look like what is served.

Every column is binned by edges: quantile edges for numbers (at most `MAX_BINS` bins, ties
merged), half-integer edges for categories (a category's code is its bin; rare and unseen
values share the `__other__` level). The last bin of every column is "missing". One rule for
both kinds keeps the scorer's counting a single vectorised comparison.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from propensity.coding import OTHER, Column

if TYPE_CHECKING:
    from propensity.models.bundle import ModelBundle

MAX_BINS = 10
SCORE = "__score__"
"""The score's row in the counters and in the reference."""
SAMPLE_ROWS = 50_000
IMPORTANCE_ROWS = 5_000


@dataclass(frozen=True)
class Binned:
    name: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    """Training rows per bin: len(edges) + 1 value bins, then missing."""
    categories: tuple[str, ...] | None = None

    @property
    def bins(self) -> int:
        return len(self.counts)

    @property
    def other_bin(self) -> int | None:
        if self.categories is None or OTHER not in self.categories:
            return None
        return self.categories.index(OTHER)

    def label(self, b: int) -> str:
        if b == self.bins - 1:
            return "missing"
        if self.categories is not None:
            return self.categories[b]
        if self.name == SCORE:  # probabilities read best as percentages
            lo = "0" if b == 0 else f"{100 * self.edges[b - 1]:.3g}"
            hi = "100" if b == len(self.edges) else f"{100 * self.edges[b]:.3g}"
            return f"{lo}-{hi}%"
        lo = "-inf" if b == 0 else f"{self.edges[b - 1]:.4g}"
        hi = "inf" if b == len(self.edges) else f"{self.edges[b]:.4g}"
        return f"[{lo}, {hi})"


def edges_for(values: np.ndarray, categories: tuple[str, ...] | None) -> tuple[float, ...]:
    if categories is not None:
        return tuple(float(i) + 0.5 for i in range(len(categories) - 1))
    seen = values[~np.isnan(values)]
    if not seen.size:
        return ()
    q = np.quantile(seen, np.linspace(0, 1, MAX_BINS + 1)[1:-1])
    # a bin's lower edge is inclusive: an edge at the minimum would leave the first bin empty
    return tuple(float(e) for e in np.unique(q) if e > seen.min())


def bin_of(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Bin per value: the number of edges at or below it; missing is the last bin."""
    b = np.searchsorted(np.asarray(edges, dtype="float64"), values, side="right")
    return np.where(np.isnan(values), len(edges) + 1, b)


def _binned(name: str, values: np.ndarray, categories: tuple[str, ...] | None) -> Binned:
    edges = edges_for(values, categories)
    counts = np.bincount(bin_of(values, edges), minlength=len(edges) + 2)
    return Binned(name, edges, tuple(int(c) for c in counts), categories)


@dataclass(frozen=True)
class Reference:
    features: tuple[Binned, ...]
    score: Binned
    importance: dict[str, float]
    """Mean |contribution| (log-odds) per feature on the training rows: what "top features"
    means when deciding whether drift matters."""
    rows: int

    def top(self, n: int) -> list[str]:
        return sorted(self.importance, key=lambda k: -self.importance[k])[:n]

    def to_json(self) -> str:
        def one(b: Binned) -> dict[str, Any]:
            return {"name": b.name, "edges": list(b.edges), "counts": list(b.counts),
                    "categories": None if b.categories is None else list(b.categories)}
        return json.dumps({"features": [one(b) for b in self.features], "score": one(self.score),
                           "importance": self.importance, "rows": self.rows})

    @classmethod
    def from_json(cls, text: str) -> Reference:
        raw = json.loads(text)

        def one(d: dict[str, Any]) -> Binned:
            return Binned(d["name"], tuple(d["edges"]), tuple(d["counts"]),
                          None if d["categories"] is None else tuple(d["categories"]))
        return cls(tuple(one(d) for d in raw["features"]), one(raw["score"]),
                   {k: float(v) for k, v in raw["importance"].items()}, int(raw["rows"]))


def fit_reference(columns: list[Column], X: np.ndarray, probability: np.ndarray,
                  contributions: np.ndarray, seed: int = 0) -> Reference:
    """The reference of a model's training matrix; `probability` and `contributions` are the
    shipped model's on (a sample of) the same rows."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(X), SAMPLE_ROWS, replace=False)) if len(X) > SAMPLE_ROWS \
        else np.arange(len(X))
    sample = X[rows]
    features = tuple(_binned(c.name, sample[:, i], c.categories) for i, c in enumerate(columns))
    score = _binned(SCORE, probability[rows] if len(probability) == len(X) else probability,
                    None)
    importance = np.abs(contributions[:, :len(columns)]).mean(axis=0)
    return Reference(features, score, {c.name: float(v) for c, v in zip(columns, importance,
                                                                        strict=True)}, len(X))


def served_like(times: np.ndarray, holdout_times: np.ndarray) -> np.ndarray:
    """Rows whose snapshot time is in the holdout period (at or after its first time): what a
    served lead looks like. Every row when there are no times (a single table)."""
    if not len(holdout_times) or not times.any():
        return np.arange(len(times))
    return np.flatnonzero(times >= holdout_times.min())


def reference_of(bundle: ModelBundle, X: np.ndarray) -> Reference:
    """`fit_reference` for a `ModelBundle` and rows of the matrix it was fitted on (those of
    `served_like`)."""
    p = bundle.predict(X, threads=0)
    rng = np.random.default_rng(1)
    few = rng.choice(len(X), min(len(X), IMPORTANCE_ROWS), replace=False)
    contrib = bundle.contributions(X[few], threads=0)
    return fit_reference(bundle.columns, X, p, contrib)
