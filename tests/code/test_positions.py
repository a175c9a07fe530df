"""Joining rows to leads by id: every kind of key column gives the same positions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from propensity.positions import IdIndex


def test_every_key_dtype_finds_the_first_row_of_its_id() -> None:
    rng = np.random.default_rng(3)
    ids = [f"L{i}" for i in rng.integers(0, 300, 400)] + [None]  # duplicates: the first wins
    universe = pd.Series(ids, dtype="str")
    raw = [f"L{i}" for i in rng.integers(0, 400, 5000)] + [None, "", "l1"]
    first: dict[str, int] = {}
    for row, v in enumerate(ids):
        if v is not None:
            first.setdefault(v, row)
    expected = np.array([first.get(k, -1) if k is not None else -1 for k in raw])
    assert (expected >= 0).sum() > 1000 and (expected == -1).sum() > 1000
    index = IdIndex(universe)
    for keys in (pd.Series(raw, dtype="str"),  # Arrow-backed text: looked up by Arrow
                 pd.Series(raw, dtype="string[pyarrow]"),
                 pd.Series(raw, dtype=object),
                 pd.Series(raw, dtype="category")):
        assert np.array_equal(index.positions(keys), expected), keys.dtype
    # ids that are numbers: text keys find nothing, as pandas' lookup finds nothing
    numeric = IdIndex(pd.Series([5, 1, 7]))
    assert numeric.positions(pd.Series(["1", "5"], dtype="str")).tolist() == [-1, -1]
    assert numeric.positions(pd.Series([1, 9])).tolist() == [1, -1]
