"""The point-in-time join against the plainest reading of its rule: for each row, the events
of its key strictly before its as_of, in time order. Rows at one time (batch scoring) and at
many (training snapshots), events shuffled or already in (key, time) order (then they are not
sorted again), with ties at exactly as_of and rows without a key."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from propensity.features.asof import SortedEvents, before

keys = st.integers(min_value=-1, max_value=5)  # -1: no key (a lead without an account)
times = st.integers(min_value=0, max_value=12)  # a narrow range: ties are the common case


def _expected(events: list[tuple[int, int]], key: list[int], as_of: list[int]
              ) -> list[tuple[int, int, int]]:
    """(row, key, event time) of every event a row sees, rows in order, events by time."""
    out = []
    for row, (k, t) in enumerate(zip(key, as_of, strict=True)):
        if k < 0:
            continue
        out += [(row, k, w) for w in sorted(w for e, w in events if e == k and w < t)]
    return out


def _seen(events: list[tuple[int, int]], key: list[int], as_of: list[int]
          ) -> list[tuple[int, int, int]]:
    n_keys = 1 + max([-1, *(e for e, _ in events), *key])  # 0 when nothing has a key
    sorted_ = SortedEvents.build(np.array([e for e, _ in events], dtype="int64"),
                                 np.array([w for _, w in events], dtype="int64"), n_keys)
    rows, ev, age = before(sorted_, np.array(key, dtype="int64"), np.array(as_of, dtype="int64"))
    assert (age > 0).all()
    assert np.array_equal(np.array(as_of, dtype="int64")[rows] - age, sorted_.time[ev])
    return list(zip(rows.tolist(), sorted_.key[ev].tolist(), sorted_.time[ev].tolist(),
                    strict=True))


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.tuples(keys, times), max_size=40),
       key=st.lists(keys, min_size=1, max_size=12), t=times)
@example(events=[(-1, 3)], key=[-1], t=10)  # no key anywhere
def test_rows_at_one_time_see_exactly_the_earlier_events_of_their_key(
        events: list[tuple[int, int]], key: list[int], t: int) -> None:
    as_of = [t] * len(key)
    assert _seen(events, key, as_of) == _expected(events, key, as_of)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.tuples(keys, times), max_size=40),
       rows=st.lists(st.tuples(keys, times), min_size=2, max_size=12), in_order=st.booleans())
def test_rows_at_many_times_see_exactly_the_earlier_events_of_their_key(
        events: list[tuple[int, int]], rows: list[tuple[int, int]], in_order: bool) -> None:
    events = sorted(events) if in_order else events
    key, as_of = [k for k, _ in rows], [t for _, t in rows]
    assert _seen(events, key, as_of) == _expected(events, key, as_of)
