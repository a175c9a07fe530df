"""Running histograms of what a scorer serves: per model version and day, a count per bin of
every feature and of the score. No feature vector is kept; a request adds one `bincount`.

The scorer's log writer drains them with the score log (`drain` / `restore` on a failed
write), adding to the day's stored counts, so several workers and restarts sum correctly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date

import numpy as np

from propensity.monitoring.reference import SCORE, Reference

Key = tuple[str, str, date]
"""(model name, model version, day of the scores' as_of)."""


@dataclass(frozen=True)
class Binning:
    """A reference's edges laid out for counting: a category's code is its bin already, so
    only the numbers (and the score) are compared, against one padded matrix of edges."""

    names: tuple[str, ...]
    numeric: np.ndarray
    """Columns (the score last, at len(names) - 1) binned by their edges."""
    edges: np.ndarray
    """(numeric columns, widest) edges, +inf padded."""
    numeric_missing: np.ndarray
    categorical: np.ndarray
    categorical_missing: np.ndarray
    width: int
    """Bins per column in the counters (the widest column's, missing included)."""

    @classmethod
    def of(cls, reference: Reference) -> Binning:
        rows = [*reference.features, reference.score]
        numeric = [i for i, b in enumerate(rows) if b.categories is None]
        categorical = [i for i, b in enumerate(rows) if b.categories is not None]
        widest = max([len(rows[i].edges) for i in numeric] or [0])
        edges = np.full((len(numeric), max(widest, 1)), np.inf)
        for k, i in enumerate(numeric):
            edges[k, :len(rows[i].edges)] = rows[i].edges
        missing = np.array([len(b.edges) + 1 for b in rows])
        return cls(tuple(b.name for b in rows), np.array(numeric), edges, missing[numeric],
                   np.array(categorical, dtype="int64"), missing[categorical],
                   max(b.bins for b in rows))

    def bins(self, X: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """(rows, columns + 1) bin of each value; the same bins as `reference.bin_of`."""
        out = np.empty((len(X), len(self.names)), dtype="int64")
        features = self.numeric[:-1]  # the score is the last numeric row
        v = X[:, features]
        b = (v[:, :, None] >= self.edges[None, :-1, :]).sum(axis=2)
        out[:, features] = np.where(np.isnan(v), self.numeric_missing[None, :-1], b)
        score_edges = self.edges[-1, :self.numeric_missing[-1] - 1]
        out[:, -1] = np.searchsorted(score_edges, probability, side="right")
        if len(self.categorical):
            c = X[:, self.categorical]
            out[:, self.categorical] = np.where(np.isnan(c), self.categorical_missing[None, :],
                                                np.nan_to_num(c)).astype("int64")
        return out

    def flat(self, X: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """The rows' bins as indices into a flat (columns + 1) x width counter."""
        return (self.bins(X, probability) + self.offsets[None, :]).ravel()

    @property
    def offsets(self) -> np.ndarray:
        return np.arange(len(self.names)) * self.width

    def counts(self, X: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """(columns + 1, width) counts of the rows' bins."""
        return np.bincount(self.flat(X, probability), minlength=len(self.names) * self.width
                           ).reshape(len(self.names), self.width)


class ServedCounters:
    def __init__(self) -> None:
        self._counts: dict[Key, tuple[tuple[str, ...], np.ndarray]] = {}
        self._kept: dict[tuple[str, str, object, str, int], int] = {}
        self._lock = threading.Lock()

    def add(self, key: Key, binning: Binning, X: np.ndarray, probability: np.ndarray) -> None:
        if not len(X):
            return
        flat = binning.flat(X, probability)
        with self._lock:
            held = self._counts.get(key)
            if held is None or held[0] != binning.names:
                held = (binning.names, np.zeros((len(binning.names), binning.width), "int64"))
                self._counts[key] = held
            cells = held[1].reshape(-1)
            if len(X) == 1:  # one lead: one cell per column, no index repeats
                cells[flat] += 1
            else:
                np.add.at(cells, flat, 1)

    @property
    def pending(self) -> bool:
        return bool(self._counts or self._kept)

    def drain(self) -> list[dict[str, object]]:
        """Every non-zero count as a served_histograms row (one per key, what a failed write
        gave back included); the counters start again at 0."""
        with self._lock:
            taken, self._counts = self._counts, {}
            summed, self._kept = self._kept, {}
        for (model, version, day), (names, counts) in taken.items():
            for f, b in zip(*np.nonzero(counts), strict=True):
                cell = (model, version, day, names[f], int(b))
                summed[cell] = summed.get(cell, 0) + int(counts[f, b])
        return [{"model_name": m, "model_version": v, "day": d, "feature": f, "bin": b,
                 "count": c} for (m, v, d, f, b), c in summed.items()]

    def restore(self, rows: list[dict[str, object]]) -> None:
        """Rows a failed write could not store, added to the next drain."""
        with self._lock:
            for r in rows:
                cell = (str(r["model_name"]), str(r["model_version"]), r["day"],
                        str(r["feature"]), int(r["bin"]))  # type: ignore[call-overload]
                self._kept[cell] = self._kept.get(cell, 0) + int(r["count"])  # type: ignore[call-overload]


__all__ = ["SCORE", "Binning", "Key", "ServedCounters"]
