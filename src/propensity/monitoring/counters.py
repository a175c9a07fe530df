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
    """A reference's edges as one padded matrix: every column binned by one comparison."""

    names: tuple[str, ...]
    edges: np.ndarray
    """(columns + 1, widest) edges, +inf padded; the last row is the score's."""
    missing: np.ndarray
    """Missing-value bin per row (its number of edges + 1)."""
    width: int
    """Bins per row in the counters (the widest row's, missing included)."""

    @classmethod
    def of(cls, reference: Reference) -> Binning:
        rows = [*reference.features, reference.score]
        widest = max(len(b.edges) for b in rows)
        edges = np.full((len(rows), max(widest, 1)), np.inf)
        for i, b in enumerate(rows):
            edges[i, :len(b.edges)] = b.edges
        missing = np.array([len(b.edges) + 1 for b in rows])
        return cls(tuple(b.name for b in rows), edges, missing, widest + 2)

    def bins(self, X: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """(rows, columns + 1) bin of each value; the same bins as `reference.bin_of`."""
        values = np.column_stack([X, probability])
        b = (values[:, :, None] >= self.edges[None, :, :]).sum(axis=2)
        return np.where(np.isnan(values), self.missing[None, :], b)

    def counts(self, X: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """(columns + 1, width) counts of the rows' bins."""
        b = self.bins(X, probability)
        flat = b + (np.arange(b.shape[1]) * self.width)[None, :]
        return np.bincount(flat.ravel(), minlength=len(self.names) * self.width).reshape(
            len(self.names), self.width)


class ServedCounters:
    def __init__(self) -> None:
        self._counts: dict[Key, tuple[tuple[str, ...], np.ndarray]] = {}
        self._kept: dict[tuple[str, str, object, str, int], int] = {}
        self._lock = threading.Lock()

    def add(self, key: Key, binning: Binning, X: np.ndarray, probability: np.ndarray) -> None:
        if not len(X):
            return
        counts = binning.counts(X, probability)
        with self._lock:
            held = self._counts.get(key)
            if held is None or held[0] != binning.names:
                self._counts[key] = (binning.names, counts)
            else:
                held[1][...] += counts

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
