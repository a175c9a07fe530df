"""The point-in-time join: for each (key, as_of) row, the events of that key strictly before as_of.

This is the one place where time travel happens, so it is the one place to get right. Events
are sorted by (key, time); entity rows are merged into that order with ties placed *before*
the event, so an event at exactly as_of is never seen. The count of events preceding an entity
row in the merged order is then the end of its slice: no Python loop, no per-lead filter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SortedEvents:
    """Event arrays ordered by (key, time); `start[k]` is the first event of key k."""

    key: np.ndarray
    time: np.ndarray
    order: np.ndarray
    """Positions in the original event table, in sorted order."""
    start: np.ndarray

    @classmethod
    def build(cls, key: np.ndarray, time: np.ndarray, n_keys: int) -> SortedEvents:
        valid = key >= 0
        idx = np.flatnonzero(valid)
        order = idx[np.lexsort((time[idx], key[idx]))]
        k = key[order]
        start = np.searchsorted(k, np.arange(n_keys + 1), side="left")
        return cls(key=k, time=time[order], order=order, start=start)


def before(events: SortedEvents, key: np.ndarray, as_of: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pairs (entity row, sorted-event position) for every event of the row's key before as_of.

    Returns (entity_rows, event_positions, age_us) where age_us = as_of - event time > 0.
    """
    n = key.size
    lo = events.start[np.maximum(key, 0)]
    all_key = np.concatenate([events.key, key])
    all_time = np.concatenate([events.time, as_of])
    # entity rows sort before events at the same (key, time): only strictly earlier events count
    kind = np.concatenate([np.ones(events.key.size, dtype="int8"), np.zeros(n, dtype="int8")])
    merged = np.lexsort((kind, all_time, all_key))
    is_event = (kind[merged] == 1).astype("int64")
    preceding = np.cumsum(is_event) - is_event
    position = np.empty(merged.size, dtype="int64")
    position[merged] = preceding
    hi = position[events.key.size:]
    hi = np.where(key >= 0, hi, lo)
    counts = np.maximum(hi - lo, 0)
    rows = np.repeat(np.arange(n), counts)
    offsets = np.cumsum(counts) - counts
    ev = np.arange(counts.sum()) - np.repeat(offsets, counts) + np.repeat(lo, counts)
    age = as_of[rows] - events.time[ev]
    return rows, ev, age
