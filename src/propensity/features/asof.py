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
    lo = events.start[np.maximum(key, 0)]
    if as_of.size and (as_of == as_of[0]).all():
        hi = _ends_at_one_time(events, key, lo, int(as_of[0]))
    else:
        hi = _ends_merged(events, key, as_of)
    hi = np.where(key >= 0, hi, lo)
    counts = np.maximum(hi - lo, 0)
    rows = np.repeat(np.arange(key.size), counts)
    offsets = np.cumsum(counts) - counts
    ev = np.arange(counts.sum()) - np.repeat(offsets, counts) + np.repeat(lo, counts)
    age = as_of[rows] - events.time[ev]
    return rows, ev, age


def _ends_merged(events: SortedEvents, key: np.ndarray, as_of: np.ndarray) -> np.ndarray:
    """Each row's end of slice, by merging the rows into the events' (key, time) order."""
    n = key.size
    all_key = np.concatenate([events.key, key])
    all_time = np.concatenate([events.time, as_of])
    # entity rows sort before events at the same (key, time): only strictly earlier events count
    kind = np.concatenate([np.ones(events.key.size, dtype="int8"), np.zeros(n, dtype="int8")])
    merged = np.lexsort((kind, all_time, all_key))
    is_event = (kind[merged] == 1).astype("int64")
    preceding = np.cumsum(is_event) - is_event
    position = np.empty(merged.size, dtype="int64")
    position[merged] = preceding
    return position[events.key.size:]


def _ends_at_one_time(events: SortedEvents, key: np.ndarray, lo: np.ndarray, t: int
                      ) -> np.ndarray:
    """Each row's end of slice when every row is as of the same time t (batch scoring): a
    key's events before t are the first ones of its block (which starts at `lo`), so one pass
    over the events counts them, where the merge sorts them all again (1.7 of 6.3 s of 1M
    leads' features)."""
    earlier = np.zeros(events.time.size + 1, dtype="int64")
    np.cumsum(events.time < t, out=earlier[1:])
    # a row without a key (-1) is masked by the caller; with no keys at all, start is [0]
    end = events.start[np.minimum(np.maximum(key, 0) + 1, events.start.size - 1)]
    return lo + earlier[end] - earlier[lo]
