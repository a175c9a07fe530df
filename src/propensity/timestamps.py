"""Time as every computation sees it: int64 microseconds since the epoch, UTC.

Features, journeys, snapshots and the scorer all compare times, and they must agree to the
microsecond (a request's event at exactly `as_of` is excluded on every path). So the unit, the
"never" sentinel and the conversions (a pandas column, one Python datetime) live here once, and
so does the contract's rule that a naive time is UTC (`to_utc` for a column, `utc` for one time,
`as_utc` for a datetime).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from propensity.contract import TIMESTAMP_DTYPE

NEVER = np.iinfo("int64").max
"""'Not happened' in int64 microsecond arrays: sorts after every real time."""
DAY_US = 86_400_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
"""The times a request may carry: from EARLIEST, before LATEST (in UTC). Outside them is a
placeholder or a typo (0001-01-01, 9999-12-31), and the windows and horizons computed from
it (as_of - 365 days, end + 1 day, a zone's offset) would leave Python's datetime range."""


def to_micros(values: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 microseconds, NEVER for missing."""
    i8 = pd.DatetimeIndex(values.astype(TIMESTAMP_DTYPE)).asi8  # a view: no local-time copy
    return np.where(i8 == np.iinfo("int64").min, NEVER, i8)  # NaT is int64's minimum


def micros(t: datetime) -> int:
    """Exact microseconds since the epoch of one datetime; naive means UTC (the contract)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    d = t - EPOCH  # days, seconds and microseconds are exact integers: no division needed
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def as_utc(t: datetime) -> datetime:
    """One datetime in UTC; naive means UTC (the contract)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def maybe_utc(t: datetime | None) -> datetime | None:
    """`as_utc`, None kept (SQLite hands back naive datetimes; every stored time is UTC)."""
    return None if t is None else as_utc(t)


def utc(t: pd.Timestamp | datetime | str) -> pd.Timestamp:
    """Any one time (text too) as a UTC timestamp; naive means UTC (the contract)."""
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def to_utc(values: pd.Series) -> pd.Series:
    """Timestamps to UTC at microsecond resolution; naive means UTC (the contract)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype(TIMESTAMP_DTYPE)
    if pd.api.types.is_datetime64_dtype(values):
        return values.dt.tz_localize("UTC").astype(TIMESTAMP_DTYPE)
    parsed = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
    return parsed.astype(TIMESTAMP_DTYPE)


def parse_utc(value: Any) -> datetime:
    """One time as a CRM may write it (ISO 8601 text, a timestamp) as a UTC datetime."""
    return utc(value).to_pydatetime()


def from_micros(values: np.ndarray, index: pd.Index | None = None) -> pd.Series:
    """int64 microseconds back to UTC timestamps (NEVER -> missing)."""
    v = np.asarray(values, dtype="int64")
    out = pd.Series(v.view("datetime64[us]"), index=index).where(v != NEVER)
    return out.dt.tz_localize("UTC").astype(TIMESTAMP_DTYPE)
