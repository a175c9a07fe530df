"""The point-in-time join: for each (key, as_of) row, the events of that key strictly before as_of.

This is the one place where time travel happens, so it is the one place to get right. Events
are sorted by (key, time), so a key's events are one block; each row's slice is the start of
its key's block up to the first event at or after its as_of (found by a binary search inside
the block, all rows at once), so an event at exactly as_of is never seen. No Python loop over
rows or keys, no per-lead filter.
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
        k, t = key[idx], time[idx]
        if not _in_order(k, t):  # an export written lead by lead is not sorted again
            order = np.lexsort((t, k))
            idx, k, t = idx[order], k[order], t[order]
        start = np.searchsorted(k, np.arange(n_keys + 1), side="left")
        return cls(key=k, time=t, order=idx, start=start)


def _in_order(key: np.ndarray, time: np.ndarray) -> bool:
    """Whether (key, time) pairs are already in lexicographic order (one pass, no sort: the
    23M events of a 1M-lead export are read in that order and sorting them cost seconds)."""
    if key.size < 2:
        return True
    same = key[1:] == key[:-1]
    return bool((key[1:] >= key[:-1]).all() and (time[1:][same] >= time[:-1][same]).all())


def before(events: SortedEvents, key: np.ndarray, as_of: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pairs (entity row, sorted-event position) for every event of the row's key before as_of.

    Returns (entity_rows, event_positions, age_us) where age_us = as_of - event time > 0.
    """
    lo = events.start[np.maximum(key, 0)]
    hi = _slice_ends(events, key, lo, as_of)
    counts = hi - lo
    rows = np.repeat(np.arange(key.size), counts)
    offsets = np.cumsum(counts) - counts
    ev = np.arange(counts.sum()) - np.repeat(offsets, counts) + np.repeat(lo, counts)
    age = as_of[rows] - events.time[ev]
    return rows, ev, age


def _slice_ends(events: SortedEvents, key: np.ndarray, lo: np.ndarray, as_of: np.ndarray
                ) -> np.ndarray:
    """Each row's end of slice: the first event of its key's block [lo, end) dated at or
    after its as_of (`lo` for a row without a key). A binary search of every row at once:
    as many passes as the largest block has bits, each over the rows still searching (a
    merge of the rows into the events' order sorted all the events again, seconds for a
    large export)."""
    a = lo.copy()
    if not key.size:
        return a
    b = np.where(key >= 0, events.start[np.minimum(np.maximum(key, 0) + 1,
                                                     events.start.size - 1)], lo)
    left = np.flatnonzero(a < b)
    while left.size:
        mid = (a[left] + b[left]) >> 1
        earlier = events.time[mid] < as_of[left]
        a[left] = np.where(earlier, mid + 1, a[left])
        b[left] = np.where(earlier, b[left], mid)
        left = left[a[left] < b[left]]
    return a
