"""Every feature, defined once: its name, its coding and how it is computed from a lead's history.

A feature family declares its columns and computes them from `FeatureInputs` (flat arrays of
what happened before each row's `as_of`). The batch executor (a whole export) and the online
executor (one lead in a request) only gather those inputs; they never compute a feature
themselves. Adding a feature is one edit here, and `tests/model/test_features.py` enumerates
the plan to check that both executors produce every column.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from propensity.coding import Column
from propensity.contract import BUYER_PERSONAS
from propensity.features.inputs import FeatureInputs
from propensity.features.spec import FeatureSpec
from propensity.timestamps import DAY_US, NEVER

PERSONA_GROUPS = BUYER_PERSONAS
STAGE_COLUMN = "current_stage"
"""The matrix column holding a lead's funnel stage as of t (Odoo's stage; the hazard's
stage x period table is read by it)."""
_PERSONA_CODES = {p: i for i, p in enumerate(PERSONA_GROUPS)}


def persona_code(value: Any) -> int:
    """A contact's persona as every executor codes it: its index into PERSONA_GROUPS, -1 for
    any other (unknown, missing)."""
    return _PERSONA_CODES.get(value, -1) if isinstance(value, str) else -1


def persona_codes(values: pd.Series | None, n: int) -> np.ndarray:
    """`persona_code` of a column at once (-1 for all `n` rows without one)."""
    if values is None:
        return np.full(n, -1, dtype="int64")
    return np.asarray(pd.Index(PERSONA_GROUPS).get_indexer(values.astype("str").to_numpy()),
                      dtype="int64")
_FLOAT_MAX = float(np.finfo("float64").max)


def _grid(rows: np.ndarray, codes: np.ndarray, n: int, k: int,
          weights: np.ndarray | None = None) -> np.ndarray:
    """(n, k) counts (or sums of `weights`) of code per entity row."""
    flat = np.bincount(rows * k + codes, weights=weights, minlength=n * k)
    return flat.reshape(n, k)


def _min_per_row(rows: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Smallest value per entity row, NaN where a row has none."""
    out = np.full(n, np.inf)
    np.minimum.at(out, rows, values)
    out[np.isinf(out)] = np.nan
    return out


class Family:
    """A group of features computed together from the same inputs."""

    columns: list[Column]

    def __init__(self, spec: FeatureSpec) -> None:
        raise NotImplementedError

    def compute(self, x: FeatureInputs, out: np.ndarray) -> None:
        """Fill `out`, this family's (n, len(columns)) block of the feature matrix."""
        raise NotImplementedError


# --- attributes -----------------------------------------------------------------------------

def lead_attribute_columns(spec: FeatureSpec) -> list[Column]:
    """The lead's own columns, in the order an executor must gather them."""
    return ([Column(c, tuple(v)) for c, v in spec.lead_categorical.items()]
            + [Column(c) for c in spec.lead_numeric])


def account_attribute_columns(spec: FeatureSpec) -> list[Column]:
    """The account's columns (unprefixed names), in the order an executor must gather them."""
    return ([Column(c, tuple(v)) for c, v in spec.account_categorical.items()]
            + [Column(c) for c in spec.account_numeric])


class LeadAge(Family):
    def __init__(self, spec: FeatureSpec) -> None:
        self.columns = [Column("lead_age_days")]

    def compute(self, x: FeatureInputs, out: np.ndarray) -> None:
        out[:, 0] = (x.as_of - x.created) / DAY_US


class LeadAttributes(Family):
    def __init__(self, spec: FeatureSpec) -> None:
        self.columns = lead_attribute_columns(spec)

    def compute(self, x: FeatureInputs, out: np.ndarray) -> None:
        out[:] = x.lead_attributes


class AccountAttributes(Family):
    def __init__(self, spec: FeatureSpec) -> None:
        self.columns = [Column(f"account_{c.name}", c.categories)
                        for c in account_attribute_columns(spec)]

    def compute(self, x: FeatureInputs, out: np.ndarray) -> None:
        out[:] = x.account_attributes


# --- funnel stage and opportunities ---------------------------------------------------------

class Stage(Family):
    """Highest funnel stage entered before as_of, days since its first entry, entries so far.

    A lead with no entry is in the first stage since its creation; terminal stages
    (disqualified, lost) never set the current stage (an ended lead is not scored).
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.columns = [Column(STAGE_COLUMN, tuple(spec.stages)), Column("days_in_stage"),
                        Column("stage_changes")]

    def compute(self, x: FeatureInputs, out: np.ndarray) -> None:
        n = x.n
        best = np.zeros(n, dtype="int64")
        np.maximum.at(best, x.stage_row, x.stage_rank)
        at_best = x.stage_rank == best[x.stage_row]
        first = np.full(n, NEVER, dtype="int64")
        np.minimum.at(first, x.stage_row[at_best], x.stage_time[at_best])
        since = np.where(first != NEVER, first, x.created)
        out[:, 0] = best
        out[:, 1] = (x.as_of - since) / DAY_US
        out[:, 2] = np.bincount(x.stage_row, minlength=n)


class Opportunities(Family):
    """The lead's opportunities as of t: open ones (and their amount), lost ones."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.columns = [Column("open_opportunities"), Column("open_opportunity_amount"),
                        Column("lost_opportunities")]

    def compute(self, x: FeatureInputs, out: np.ndarray) -> None:
        n = x.n
        rows = x.opportunity_row
        still_open = x.opportunity_closed >= x.as_of[rows]  # NEVER (open) is the int64 max
        count = np.bincount(rows[still_open], minlength=n).astype("float64")
        amount = x.opportunity_amount[still_open]
        # nan_to_num's values (NaN 0, infinity the largest float) without its cost, 20x over
        amount = np.where(np.isnan(amount), 0.0, np.clip(amount, -_FLOAT_MAX, _FLOAT_MAX))
        total = np.bincount(rows[still_open], weights=amount, minlength=n)
        lost = ~still_open & x.opportunity_lost
        out[:, 0] = count
        out[:, 1] = np.where(count > 0, total, np.nan)
        out[:, 2] = np.bincount(rows[lost], minlength=n)


# --- engagement -----------------------------------------------------------------------------

def _suffix(window: int | None) -> str:
    return "all" if window is None else f"{window}d"


class Engagement(Family):
    """The lead's own events: counts per type and channel over windows, recency, decay, trend.

    Windows are nested (7 <= 30 <= 90 <= all days), so each event is counted once, in the
    smallest window that holds it, and a cumulative sum over windows gives every count: one
    pass over the events whatever the number of windows.
    """

    CHANNEL_WINDOWS: tuple[int | None, ...] = (30, None)
    VALUE_WINDOW = 30

    def __init__(self, spec: FeatureSpec) -> None:
        cfg = spec.config
        self.types = [*spec.event_types, "other"]
        self.channels = [*spec.channels, "other"]
        self.windows: list[int | None] = [*sorted(cfg.windows_days), None]
        self.edges = np.array([w for w in self.windows if w is not None], dtype="float64")
        self.channel_edges = np.array([w for w in self.CHANNEL_WINDOWS if w is not None],
                                      dtype="float64")
        self.half_life = cfg.half_life_days
        self.recent, self.before = cfg.trend_recent_days, cfg.trend_before_days
        cols: list[Column] = []
        for w in self.windows:
            cols += [Column(f"n_{t}_{_suffix(w)}") for t in self.types]
            cols.append(Column(f"n_events_{_suffix(w)}"))
        for w in self.CHANNEL_WINDOWS:
            cols += [Column(f"n_channel_{c}_{_suffix(w)}") for c in self.channels]
        cols.append(Column("days_since_last_event"))
        cols += [Column(f"days_since_{t}") for t in self.types]
        cols += [Column(n) for n in ("decayed_engagement", "events_per_day", "engagement_trend",
                                     f"value_sum_{self.VALUE_WINDOW}d")]
        self.columns = cols
        k, kc, nw = len(self.types), len(self.channels), len(self.windows)
        self.type_cols = np.arange(nw * (k + 1)).reshape(nw, k + 1)  # [window, type | total]
        at = nw * (k + 1)
        self.channel_cols = at + np.arange(len(self.CHANNEL_WINDOWS) * kc).reshape(-1, kc)
        self.last_col = at + self.channel_cols.size
        self.since_cols = self.last_col + 1 + np.arange(k)
        self.tail_col = self.last_col + 1 + k

    def compute(self, x: FeatureInputs, out: np.ndarray) -> None:
        n, rows, age = x.n, x.event_row, x.event_age
        k, nw = len(self.types), len(self.windows)
        smallest = np.searchsorted(self.edges, age, side="left")
        grid = np.bincount((rows * k + x.event_type) * nw + smallest,
                           minlength=n * k * nw).reshape(n, k, nw).cumsum(axis=2)
        per_window = grid.transpose(0, 2, 1)  # (rows, windows, types)
        # the type columns are one block, [window, type | total]: a slice, not fancy indexing
        block = np.empty((n, nw, k + 1))
        block[:, :, :k] = per_window
        block[:, :, k] = per_window.sum(axis=2)
        out[:, :self.type_cols.size] = block.reshape(n, self.type_cols.size)
        kc, nc = len(self.channels), len(self.CHANNEL_WINDOWS)
        has = x.event_channel >= 0
        smallest_c = np.searchsorted(self.channel_edges, age[has], side="left")
        grid_c = np.bincount((rows[has] * kc + x.event_channel[has]) * nc + smallest_c,
                             minlength=n * kc * nc).reshape(n, kc, nc).cumsum(axis=2)
        first = int(self.channel_cols[0, 0])
        out[:, first:first + self.channel_cols.size] = grid_c.transpose(0, 2, 1).reshape(
            n, self.channel_cols.size)
        out[:, self.last_col] = _min_per_row(rows, age, n)
        since = np.full(n * k, np.inf)
        np.minimum.at(since, rows * k + x.event_type, age)
        since[np.isinf(since)] = np.nan
        out[:, self.since_cols] = since.reshape(n, k)
        at = self.tail_col
        out[:, at] = np.bincount(rows, weights=np.exp(-np.log(2) * age / self.half_life),
                                 minlength=n)
        lead_age = (x.as_of - x.created) / DAY_US
        out[:, at + 1] = np.bincount(rows, minlength=n) / np.maximum(lead_age, 1.0)
        recent = np.bincount(rows[age <= self.recent], minlength=n)
        earlier = np.bincount(rows[(age > self.recent) & (age <= self.recent + self.before)],
                              minlength=n)
        out[:, at + 2] = (recent + 1) / (earlier / (self.before / self.recent) + 1)
        valued = ~np.isnan(x.event_value) & (age <= self.VALUE_WINDOW)
        out[:, at + 3] = np.bincount(rows[valued], weights=x.event_value[valued], minlength=n)


# --- the buying committee -------------------------------------------------------------------

class Committee(Family):
    """The lead's account as of t: its contacts, who of them is engaged, by persona.

    B2B purchases are made by committees, so a champion's score rises when an executive of
    the same account engages. All NaN for a lead without an account.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.window = w = spec.config.committee_window_days
        self.columns = [Column(n) for n in (
            "account_contacts", "account_engaged_contacts", "account_events_30d",
            "account_days_since_last_event", *(f"account_events_{p}_{w}d" for p in PERSONA_GROUPS),
            "account_executive_engaged", "account_champion_engaged")]

    def compute(self, x: FeatureInputs, out: np.ndarray) -> None:
        n = x.n
        rows, age = x.account_event_row, x.account_event_age
        recent = age <= self.window
        out[:, 0] = np.bincount(x.contact_row, minlength=n)
        contact = x.account_event_contact[recent]
        span = int(contact.max()) + 1 if contact.size else 1
        pairs = np.sort(rows[recent] * span + contact)  # distinct (row, contact): what
        first = np.ones(pairs.size, dtype=bool)  # np.unique does, without its wrappers
        first[1:] = pairs[1:] != pairs[:-1]
        pairs = pairs[first]
        out[:, 1] = np.bincount(pairs // span, minlength=n)
        out[:, 2] = np.bincount(rows[age <= 30], minlength=n)
        out[:, 3] = _min_per_row(rows, age, n)
        per = _grid(rows[recent & (x.account_event_persona >= 0)],
                    x.account_event_persona[recent & (x.account_event_persona >= 0)], n,
                    len(PERSONA_GROUPS))
        out[:, 4:4 + len(PERSONA_GROUPS)] = per
        at = 4 + len(PERSONA_GROUPS)
        out[:, at] = per[:, PERSONA_GROUPS.index("executive")] > 0
        out[:, at + 1] = per[:, PERSONA_GROUPS.index("champion")] > 0
        out[~x.has_account] = np.nan


class FeaturePlan:
    """The ordered columns of a fitted spec and the families that compute them.

    Built once per spec (a model keeps one), so neither executor decides a column's name,
    position or coding: they fill `matrix(inputs)` and read `columns`.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        kinds: list[type[Family]] = [LeadAge, LeadAttributes, AccountAttributes, Stage,
                                     Opportunities, Engagement]
        if spec.has_accounts:
            kinds.append(Committee)
        self.families = [kind(spec) for kind in kinds]
        self.columns: list[Column] = [c for f in self.families for c in f.columns]
        self.names = [c.name for c in self.columns]
        self.index = {name: i for i, name in enumerate(self.names)}
        if len(self.index) != len(self.names):
            dupes = sorted({x for x in self.names if self.names.count(x) > 1})
            raise ValueError(f"feature names defined twice: {dupes} (an attribute column "
                             "named like a computed feature?)")
        bounds = np.cumsum([0, *(len(f.columns) for f in self.families)])
        self._blocks = [(f, int(a), int(b)) for f, a, b in zip(
            self.families, bounds[:-1], bounds[1:], strict=True)]

    @property
    def categories(self) -> dict[str, list[str]]:
        return {c.name: list(c.categories) for c in self.columns if c.categories is not None}

    def matrix(self, x: FeatureInputs) -> np.ndarray:
        """(n, len(columns)) float64: categoricals as codes, NaN for missing."""
        out = np.full((x.n, len(self.columns)), np.nan)
        for family, a, b in self._blocks:
            family.compute(x, out[:, a:b])
        return out
