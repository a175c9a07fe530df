"""Joining rows to their lead (or account) by id without materialising millions of strings."""

from __future__ import annotations

import numpy as np
import pandas as pd


def positions(keys: pd.Series, universe: pd.Series) -> np.ndarray:
    """Row position in `universe` of each key, -1 when absent (duplicates: the first wins).

    Categorical keys (how Parquet dictionary columns arrive) are looked up once per category,
    which turns 20 million string lookups into one per distinct lead.
    """
    values = pd.Series(universe.to_numpy())
    uniq = values.dropna().drop_duplicates()
    if uniq.empty:
        return np.full(len(keys), -1, dtype="int64")
    index = pd.Index(uniq.to_numpy())
    if isinstance(keys.dtype, pd.CategoricalDtype):
        per_category = index.get_indexer(keys.cat.categories)
        codes = keys.cat.codes.to_numpy()
        found = np.where(codes >= 0, per_category[np.maximum(codes, 0)], -1)
    else:
        found = index.get_indexer(keys.to_numpy())
    return np.where(found >= 0, uniq.index.to_numpy()[np.maximum(found, 0)], -1)
