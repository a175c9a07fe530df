"""How a raw value becomes a model input: the one coding rule for categories and numbers.

Training reads a column of an export or a table, the scorer reads one JSON value; both go
through `Vocabulary.code` and `number`, value by value (the vectorised forms apply the same
functions to each distinct value), so "5", 5 and 5.0 mean the same thing wherever they arrive.
A model's matrix holds floats: categories as their index in the vocabulary, NaN for missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

OTHER = "__other__"
"""The level every rare or unseen value shares: a model learns one effect for 'something
else' instead of memorising levels it saw a handful of times."""


@dataclass(frozen=True)
class Column:
    name: str
    categories: tuple[str, ...] | None = None
    """Set for a categorical column: its value is an index into these (NaN when missing)."""


def category_text(value: Any) -> str | None:
    """A categorical value's text; None for missing (None, NaN, NA, NaT, and the empty text,
    which every file reader already treats as missing)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value)
    return text if text else None


def plain_value(value: Any) -> Any:
    """A cell as JSON carries it: None for missing, ISO 8601 text for a timestamp, a Python
    number or bool, else text (the pyfunc's rows and the data source's account rows are
    written alike, so both executors code them alike)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value if isinstance(value, int | float | bool) else str(value)


def not_a_number(value: Any) -> bool:
    """A value `number` reads as missing although it says something: text that is neither
    blank nor a number (NaN spelt out counts as a number, as `float` and Spark read it)."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    if not text:
        return False
    try:
        float(text)
    except ValueError:
        return True
    return False


def number(value: Any) -> float:
    """A numeric value; text that is not a number is missing (NaN), never an error."""
    if value is None or value is pd.NA or value is pd.NaT:
        return math.nan
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return math.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _per_distinct(values: pd.Series, rule: Any) -> np.ndarray:
    """`rule` applied to each distinct value once, spread back over the rows."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        mapped = np.array([rule(v) for v in values.cat.categories], dtype="float64")
        codes = values.cat.codes.to_numpy()
        return np.where(codes >= 0, mapped[np.maximum(codes, 0)] if mapped.size else np.nan,
                        rule(None))
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    mapped = np.array([rule(v) for v in uniques], dtype="float64")
    return np.where(codes >= 0, mapped[np.maximum(codes, 0)] if mapped.size else np.nan,
                    rule(None))


def not_numbers(values: pd.Series) -> np.ndarray:
    """`not_a_number` over a column as a mask, each distinct value judged once."""
    return _per_distinct(values, not_a_number) > 0


def numbers(values: pd.Series) -> np.ndarray:
    """`number` over a column (numeric columns pass straight through: same result)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype="float64", na_value=np.nan)
    return _per_distinct(values, number)


class Vocabulary:
    """A categorical column's fixed levels: text -> index, anything else -> OTHER (if kept)."""

    def __init__(self, categories: Sequence[str]) -> None:
        self.categories = list(categories)
        self.lookup = {c: float(i) for i, c in enumerate(self.categories)}
        self.other = self.lookup.get(OTHER, math.nan)

    def code(self, value: Any) -> float:
        text = category_text(value)
        if text is None:
            return math.nan
        return self.lookup.get(text, self.other)

    def codes(self, values: pd.Series) -> np.ndarray:
        return _per_distinct(values, self.code)


def fit_vocabulary(values: pd.Series, *, min_count: int, max_levels: int) -> list[str]:
    """Levels seen at least `min_count` times (the `max_levels` most frequent), then OTHER.

    Returns [] when no level is frequent enough: an id-like column, or noise with many rare
    levels, that a model could only memorise.
    """
    counts = values.dropna().astype("str").value_counts()
    counts = counts[counts.index != ""]
    kept = counts[counts >= min_count].index[:max_levels].tolist()
    return [*sorted(kept), OTHER] if kept else []


def encode(values: pd.Series, categories: Sequence[str] | None) -> np.ndarray:
    """A column as model input: codes for a categorical column, floats otherwise."""
    if categories is None:
        return numbers(values)
    return Vocabulary(categories).codes(values)


def as_frame(matrix: np.ndarray, columns: Sequence[Column],
             index: pd.Index | None = None) -> pd.DataFrame:
    """A model matrix as a DataFrame, categoricals as pandas categoricals (what LightGBM and
    the baselines are trained on); the codes are the matrix's, untouched."""
    data: dict[str, Any] = {}
    for i, col in enumerate(columns):
        if col.categories is None:
            data[col.name] = matrix[:, i]
        else:
            codes = np.where(np.isnan(matrix[:, i]), -1, matrix[:, i]).astype("int64")
            data[col.name] = pd.Categorical.from_codes(codes, categories=list(col.categories))
    return pd.DataFrame(data, index=index if index is not None else range(len(matrix)))


def as_matrix(frame: pd.DataFrame, columns: Sequence[Column]) -> np.ndarray:
    """The inverse of `as_frame`: categorical codes back to floats, NaN for missing."""
    out = np.empty((len(frame), len(columns)))
    for i, col in enumerate(columns):
        values = frame[col.name]
        if isinstance(values.dtype, pd.CategoricalDtype):
            codes = values.cat.codes.to_numpy().astype("float64")
            codes[codes < 0] = np.nan
            out[:, i] = codes
        else:
            out[:, i] = values.to_numpy(dtype="float64", na_value=np.nan)
    return out
