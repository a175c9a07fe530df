"""One lead at a time, fast: the same features as `build_lead_features`, without pandas.

A CRM posts a lead with its events and wants a score in milliseconds; a pandas DataFrame per
request costs 15-40 ms, so this module computes the feature vector with plain numpy on the
lead's own arrays, in the model's column order, and predicts with one LightGBM thread. It must
give the batch pipeline's numbers exactly: `tests/model/test_fast.py` compares the two on
random leads, and the scorer's parity test compares them through HTTP.

Scope: a lead as a request describes it (its attributes, optional account attributes, its
events, its current stage). Opportunities are not part of a request, so their features are
those of a lead without one, as in the batch path for such a lead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from propensity.features.lead import PERSONA_GROUPS
from propensity.models.bundle import ModelBundle

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
DAY_US = 86_400_000_000


def micros(t: datetime) -> int:
    """Exact microseconds since the epoch; naive means UTC (the contract)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - EPOCH) // US


@dataclass
class LeadInput:
    lead_id: str
    created_at: datetime
    as_of: datetime
    attributes: dict[str, Any]
    """source, campaign, persona, owner_id, product, account_id and any other lead column."""
    events: list[tuple[datetime, str, str | None, float | None]]
    stage: str | None = None
    stage_entered_at: datetime | None = None
    account: dict[str, Any] | None = None
    stage_history: list[tuple[str, datetime]] | None = None
    """Every stage entry, when the CRM has them; `stage` alone is the current one."""

    def stage_rows(self) -> list[tuple[str, datetime]]:
        rows = list(self.stage_history or [])
        if self.stage is not None:
            rows.append((self.stage, self.stage_entered_at or self.created_at))
        return rows


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class FastScorer:
    """Feature vectors and predictions for single leads, for one export-kind model."""

    def __init__(self, model: ModelBundle) -> None:
        if model.spec is None or model.kind != "export" or model.target == "account-propensity":
            raise ValueError("the fast path serves lead models trained on exports")
        self.model = model
        self.spec = spec = model.spec
        self.names = list(model.feature_names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.types = [*spec.event_types, "other"]
        self.type_index = {t: i for i, t in enumerate(spec.event_types)}
        self.channel_index = {c: i for i, c in enumerate(spec.channels)}
        self.categories = {k: {v: i for i, v in enumerate(c)}
                           for k, c in model.categories.items()}
        self.stage_rank = {s: i for i, s in enumerate(spec.stages)}
        self.windows = [*spec.config.windows_days, None]
        # where each count lands in the row (-1: the model does not use it)
        self._type_slots = {
            w: np.array([self.index.get(f"n_{t}_{self._suffix(w)}", -1) for t in self.types])
            for w in self.windows}
        self._channel_slots = {
            w: np.array([self.index.get(f"n_channel_{c}_{self._suffix(w)}", -1)
                         for c in [*spec.channels, "other"]]) for w in (30, None)}
        self._since_slots = np.array([self.index.get(f"days_since_{t}", -1) for t in self.types])

    @staticmethod
    def _suffix(w: int | None) -> str:
        return "all" if w is None else f"{w}d"

    @staticmethod
    def _put(row: np.ndarray, slots: np.ndarray, values: np.ndarray) -> None:
        used = slots >= 0
        row[slots[used]] = values[used]

    def _set(self, row: np.ndarray, name: str, value: float) -> None:
        i = self.index.get(name)
        if i is not None:
            row[i] = value

    def _category(self, name: str, value: Any) -> float:
        text = _text(value)
        if text is None:
            return math.nan
        code = self.categories[name].get(text)
        return math.nan if code is None else float(code)

    def features(self, lead: LeadInput) -> np.ndarray:
        spec = self.spec
        row = np.full(len(self.names), np.nan)
        t = micros(lead.as_of)
        created = micros(lead.created_at)
        attrs = lead.attributes
        age_days = np.float64(t - created) / DAY_US
        self._set(row, "lead_age_days", age_days)
        for col in spec.lead_categorical:
            value = attrs.get(col)
            if col in ("source", "persona") and _text(value) is None:
                value = "unknown"
            self._set(row, col, self._category(col, value))
        for col in spec.lead_numeric:
            self._set(row, col, _number(attrs.get(col)))
        account_id = _text(attrs.get("account_id"))
        account = lead.account if account_id is not None else None
        for col in spec.account_numeric:
            self._set(row, f"account_{col}", _number((account or {}).get(col)))
        for col in spec.account_categorical:
            self._set(row, f"account_{col}",
                      self._category(f"account_{col}", (account or {}).get(col)))
        # stage as of t
        current, since, changes = 0, created, 0.0
        first_at_best: dict[int, int] = {}
        for stage, when in lead.stage_rows():
            rank = self.stage_rank.get(stage)
            entered = micros(when)
            if rank is None or entered >= t:  # terminal stages never set the current one
                continue
            changes += 1.0
            first_at_best[rank] = min(entered, first_at_best.get(rank, entered))
        if first_at_best:
            current = max(first_at_best)
            since = first_at_best[current]
        self._set(row, "current_stage", float(current))
        self._set(row, "days_in_stage", np.float64(t - since) / DAY_US)
        self._set(row, "stage_changes", changes)
        self._set(row, "open_opportunities", 0.0)
        self._set(row, "lost_opportunities", 0.0)
        arrays = self._event_arrays(lead, t)
        self._engagement(row, arrays, age_days)
        if spec.has_accounts:
            self._committee(row, lead, arrays, t, created, account_id)
        return row

    def _event_arrays(self, lead: LeadInput, t: int) -> tuple[np.ndarray, ...]:
        if not lead.events:
            empty = np.zeros(0)
            return empty.astype("int64"), empty.astype("int64"), empty.astype("int64"), empty
        times = np.fromiter((micros(e[0]) for e in lead.events), dtype="int64",
                            count=len(lead.events))
        order = np.argsort(times, kind="stable")
        keep = order[times[order] < t]
        n_types = len(self.spec.event_types)
        tcode = np.array([self.type_index.get(lead.events[i][1], n_types) for i in keep],
                         dtype="int64")
        ccode = np.array([-1 if lead.events[i][2] is None else self.channel_index.get(
            lead.events[i][2], len(self.spec.channels)) for i in keep], dtype="int64")
        value = np.array([_number(lead.events[i][3]) for i in keep], dtype="float64")
        age = (t - times[keep]) / DAY_US
        return tcode, ccode, np.zeros(len(keep), dtype="int64"), np.column_stack(
            [age, value]) if len(keep) else np.zeros((0, 2))

    def _engagement(self, row: np.ndarray, arrays: tuple[np.ndarray, ...],
                    age_days: float) -> None:
        cfg = self.spec.config
        tcode, ccode, rows, av = arrays
        age = av[:, 0] if len(av) else np.zeros(0)
        value = av[:, 1] if len(av) else np.zeros(0)
        n_types = len(self.types)
        for w in self.windows:
            sel = np.ones(age.size, bool) if w is None else age <= w
            grid = np.bincount(tcode[sel], minlength=n_types).astype("float64")
            self._put(row, self._type_slots[w], grid)
            self._set(row, f"n_events_{self._suffix(w)}", float(grid.sum()))
        n_channels = len(self.spec.channels) + 1
        for w30 in (30, None):
            sel = (ccode >= 0) & (np.ones(age.size, bool) if w30 is None else age <= w30)
            grid = np.bincount(ccode[sel], minlength=n_channels).astype("float64")
            self._put(row, self._channel_slots[w30], grid)
        self._set(row, "days_since_last_event", float(age.min()) if age.size else math.nan)
        since = np.full(n_types, np.inf)
        np.minimum.at(since, tcode, age)
        self._put(row, self._since_slots, np.where(np.isinf(since), np.nan, since))
        decay = np.exp(-np.log(2) * age / cfg.half_life_days)
        self._set(row, "decayed_engagement", float(np.bincount(rows, weights=decay,
                                                                minlength=1)[0]))
        n_all = float(age.size)
        self._set(row, "events_per_day", n_all / np.maximum(age_days, 1.0))
        recent = np.bincount(rows, weights=(age <= cfg.trend_recent_days).astype(float),
                             minlength=1)[0]
        earlier = np.bincount(rows, weights=((age > cfg.trend_recent_days) & (
            age <= cfg.trend_recent_days + cfg.trend_before_days)).astype(float), minlength=1)[0]
        per_recent = cfg.trend_before_days / cfg.trend_recent_days
        self._set(row, "engagement_trend", (recent + 1) / (earlier / per_recent + 1))
        has_value = ~np.isnan(value) & (age <= 30)
        self._set(row, "value_sum_30d", float(np.bincount(
            rows[has_value], weights=value[has_value], minlength=1)[0]))

    def _committee(self, row: np.ndarray, lead: LeadInput, arrays: tuple[np.ndarray, ...],
                   t: int, created: int, account_id: str | None) -> None:
        window = self.spec.config.committee_window_days
        names = ["account_contacts", "account_engaged_contacts", "account_events_30d",
                 "account_days_since_last_event",
                 *(f"account_events_{p}_{window}d" for p in PERSONA_GROUPS),
                 "account_executive_engaged", "account_champion_engaged"]
        if account_id is None:
            for name in names:
                self._set(row, name, math.nan)
            return
        av = arrays[3]
        age = av[:, 0] if len(av) else np.zeros(0)
        self._set(row, "account_contacts", 1.0 if created < t else 0.0)
        recent = age <= window
        self._set(row, "account_engaged_contacts", 1.0 if recent.any() else 0.0)
        self._set(row, "account_events_30d", float((age <= 30).sum()))
        self._set(row, "account_days_since_last_event", float(age.min()) if age.size
                  else math.nan)
        persona = _text(lead.attributes.get("persona")) or "unknown"
        for p in PERSONA_GROUPS:
            count = float(recent.sum()) if persona == p else 0.0
            self._set(row, f"account_events_{p}_{window}d", count)
            if p in ("executive", "champion"):
                self._set(row, f"account_{p}_engaged", 1.0 if count > 0 else 0.0)

    def predict(self, X: np.ndarray) -> np.ndarray:
        raw = np.asarray(self.model.booster.predict(X, num_threads=1))
        return np.interp(raw, self.model.calibration_x, self.model.calibration_y)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.booster.predict(X, pred_contrib=True, num_threads=1))
