"""Joining rows to their lead (or account) by id without materialising millions of strings."""

from __future__ import annotations

import numpy as np
import pandas as pd


class IdIndex:
    """The ids of a table (its first occurrence of each), built once and looked up many times:
    a 1M-lead export joins events, stages, opportunities and entity frames to its leads."""

    def __init__(self, universe: pd.Series) -> None:
        values = pd.Series(universe.to_numpy())
        uniq = values.dropna().drop_duplicates()
        self.index = pd.Index(uniq.to_numpy())
        self.rows = uniq.index.to_numpy()

    def positions(self, keys: pd.Series) -> np.ndarray:
        """Row position of each key, -1 when absent.

        Categorical keys (how Parquet dictionary columns arrive) are looked up once per
        category, which turns 20 million string lookups into one per distinct lead.
        """
        if self.index.empty:
            return np.full(len(keys), -1, dtype="int64")
        if isinstance(keys.dtype, pd.CategoricalDtype):
            per_category = self.index.get_indexer(keys.cat.categories)
            codes = keys.cat.codes.to_numpy()
            found = np.where(codes >= 0, per_category[np.maximum(codes, 0)], -1)
        else:
            found = self.index.get_indexer(keys.to_numpy())
        return np.where(found >= 0, self.rows[np.maximum(found, 0)], -1)


def positions(keys: pd.Series, universe: pd.Series) -> np.ndarray:
    """Row position in `universe` of each key, -1 when absent (duplicates: the first wins)."""
    return IdIndex(universe).positions(keys)
