"""Running histograms of what a scorer serves: per model version and day, a count per bin of
every feature and of the score. No feature vector is stored; a request appends its matrix for
the writer thread to bin in batches.

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


@dataclass(frozen=True, eq=False)
class Binning:
    """A reference's edges laid out for counting a request in a handful of numpy calls: a
    category's code is its bin already, so only numbers are compared, against one padded
    matrix of edges; the score goes through `searchsorted`."""

    names: tuple[str, ...]
    """Feature names, then the score's."""
    numeric: np.ndarray
    """Feature columns binned by their edges."""
    edges: np.ndarray
    """(1, numeric columns, widest) edges, +inf padded."""
    numeric_missing: np.ndarray
    categorical: np.ndarray
    categorical_missing: np.ndarray
    score_edges: np.ndarray
    width: int
    """Bins per column in the counters (the widest column's, missing included)."""
    offsets: np.ndarray
    """Where each column's bins start in a flat (columns + 1) x width counter."""

    @classmethod
    def of(cls, reference: Reference) -> Binning:
        rows = list(reference.features)
        numeric = [i for i, b in enumerate(rows) if b.categories is None]
        categorical = [i for i, b in enumerate(rows) if b.categories is not None]
        widest = max([len(rows[i].edges) for i in numeric] or [0])
        edges = np.full((1, len(numeric), max(widest, 1)), np.inf)
        for k, i in enumerate(numeric):
            edges[0, k, :len(rows[i].edges)] = rows[i].edges
        missing = np.array([len(b.edges) + 1 for b in rows], dtype="int64")
        width = max(b.bins for b in [*rows, reference.score])
        names = (*(b.name for b in rows), reference.score.name)
        return cls(names, np.array(numeric, dtype="int64"), edges, missing[numeric][None, :],
                   np.array(categorical, dtype="int64"), missing[categorical][None, :],
                   np.asarray(reference.score.edges, dtype="float64"), width,
                   np.arange(len(names), dtype="int64") * width)

    def bins(self, X: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """(rows, columns + 1) bin of each value; the same bins as `reference.bin_of`."""
        out = np.empty((len(X), len(self.names)), dtype="int64")
        v = X[:, self.numeric]
        out[:, self.numeric] = np.where(v != v, self.numeric_missing,
                                        (v[:, :, None] >= self.edges).sum(axis=2))
        if len(self.categorical):
            c = X[:, self.categorical]
            out[:, self.categorical] = np.where(c != c, self.categorical_missing, c)
        out[:, -1] = np.searchsorted(self.score_edges, probability, side="right")
        return out

    def flat(self, X: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """The rows' bins as indices into a flat (columns + 1) x width counter."""
        return (self.bins(X, probability) + self.offsets).ravel()

    def counts(self, X: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """(columns + 1, width) counts of the rows' bins."""
        return np.bincount(self.flat(X, probability), minlength=len(self.names) * self.width
                           ).reshape(len(self.names), self.width)


class ServedCounters:
    """What the scorer served, binned in batches off the request path.

    A request only appends its model matrix and probabilities (references, no copy); the
    score log's writer thread bins everything gathered since its last beat in one vectorised
    pass per model version and day (about a seventh of the per-lead cost of binning one lead
    at a time) and keeps the counts; every few seconds it adds them to the stored ones.
    Matrices live until the next beat (half a second by default); nothing per lead is ever
    stored.
    """

    def __init__(self) -> None:
        self._seen: list[tuple[Key, Binning, np.ndarray, np.ndarray]] = []
        self._kept: dict[tuple[str, str, object, str, int], int] = {}
        self._lock = threading.Lock()

    def add(self, key: Key, binning: Binning, X: np.ndarray, probability: np.ndarray) -> None:
        if len(X):
            with self._lock:
                self._seen.append((key, binning, X, probability))

    @property
    def pending(self) -> bool:
        return bool(self._seen or self._kept)

    def _binned(self, seen: list[tuple[Key, Binning, np.ndarray, np.ndarray]],
                summed: dict[tuple[str, str, object, str, int], int]) -> None:
        """Add the counts of `seen` to `summed`, one vectorised pass per model and day."""
        groups: dict[tuple[Key, int], list[tuple[Binning, np.ndarray, np.ndarray]]] = {}
        for key, binning, X, p in seen:
            groups.setdefault((key, id(binning)), []).append((binning, X, p))
        for ((model, version, day), _), parts in groups.items():
            binning = parts[0][0]
            counts = binning.counts(np.concatenate([x for _, x, _ in parts]),
                                    np.concatenate([q for _, _, q in parts]))
            for f, b in zip(*np.nonzero(counts), strict=True):
                cell = (model, version, day, binning.names[f], int(b))
                summed[cell] = summed.get(cell, 0) + int(counts[f, b])

    def fold(self) -> None:
        """Bin what requests gathered into the kept counts, without writing them: the
        matrices are let go at every beat, the database is written less often."""
        with self._lock:
            seen, self._seen = self._seen, []
        if not seen:
            return
        summed: dict[tuple[str, str, object, str, int], int] = {}
        self._binned(seen, summed)
        with self._lock:
            for cell, n in summed.items():
                self._kept[cell] = self._kept.get(cell, 0) + n

    def drain(self) -> list[dict[str, object]]:
        """Every non-zero count as a served_histograms row (one per key, what a failed write
        gave back included); the counters start again at 0."""
        with self._lock:
            seen, self._seen = self._seen, []
            summed, self._kept = self._kept, {}
        self._binned(seen, summed)
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
