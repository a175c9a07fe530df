"""Entity frames: which leads (or accounts) were open at each snapshot time t, and what came next.

A training row is (lead_id, as_of=t) for a lead created before t and neither converted nor
ended (disqualified / lost) by t, labelled by whether the outcome happened in (t, t + horizon].
Snapshots whose label window reaches past the end of the data are not used for training:
their labels are not known yet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from propensity.funnel.journeys import Journeys
from propensity.problems import PropensityError
from propensity.tables import CrmExport
from propensity.timestamps import DAY_US, NEVER, to_micros

LeadLabel = Callable[[Journeys, np.ndarray, np.ndarray, int, int], np.ndarray]
"""(journeys, rows, each row's stage index at t, t, horizon) -> whether the outcome happened in
(t, t + horizon], per row (times in microseconds): how a lead target's label is read."""


class SnapshotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error

    every_days: int = 14
    horizon_days: int = 90
    first: str | None = None
    """First snapshot time (default: one step after the first lead)."""
    max_rows_per_snapshot: int | None = None
    """Sample at most this many open leads per snapshot (seeded), to bound training time."""
    seed: int = 0
    stale_days: int | None = None
    """A lead idle in its stage longer than this is over (as `--stale-days` in the funnel):
    not open at a snapshot, and not scored. For data that never records a loss (Olist), or
    every lead would stay open, and 'open' would mostly mean 'forgotten'."""


def snapshot_times(first_lead: pd.Timestamp, end: pd.Timestamp,
                   config: SnapshotConfig) -> list[pd.Timestamp]:
    """Every `every_days` from the first lead (`first_lead`: its creation) until the last
    complete label window before `end` (the export's latest time, `CrmExport.latest_time`)."""
    first = (pd.Timestamp(config.first, tz="UTC") if config.first
             else first_lead + pd.Timedelta(days=config.every_days))
    last = end - pd.Timedelta(days=config.horizon_days)
    if first > last:
        raise PropensityError(
            f"the data spans {first_lead:%Y-%m-%d}..{end:%Y-%m-%d}: too "
            f"short for a {config.horizon_days}-day horizon (lower --horizon-days)")
    return list(pd.date_range(first.floor("D"), last, freq=f"{config.every_days}D"))


def holdout_split(times: list[pd.Timestamp], horizon_days: int, holdout_share: float
                  ) -> tuple[list[pd.Timestamp], list[pd.Timestamp]]:
    """(times the evaluation fit learns from, holdout times): the latest times are the
    holdout; a training time's label window must close by the holdout's first time."""
    if len(times) < 4:
        raise PropensityError(f"only {len(times)} snapshot time(s): need 4 or more "
                              "(more history, or a smaller --horizon-days / snapshot spacing)")
    n_test = max(1, round(holdout_share * len(times)))
    test_times = times[-n_test:]
    train_times = [t for t in times if t + pd.Timedelta(days=horizon_days) <= test_times[0]]
    if len(train_times) < 2:
        raise PropensityError("too little history before the holdout for this horizon")
    return train_times, test_times


def current_stage(journeys: Journeys, rows: np.ndarray, t: int) -> np.ndarray:
    """Index of the highest stage each lead reached strictly before t."""
    reached = journeys.reached[rows] < t
    return reached.shape[1] - 1 - np.argmax(reached[:, ::-1], axis=1)


def converted(j: Journeys, rows: np.ndarray, stage: np.ndarray, t: int, h: int) -> np.ndarray:
    """The lead reaches the last stage (or an opportunity of it is won) within the horizon."""
    return j.reached[rows, -1] <= t + h


def advanced(j: Journeys, rows: np.ndarray, stage: np.ndarray, t: int, h: int) -> np.ndarray:
    """The lead reaches the stage above the one it is in within the horizon."""
    nxt = np.minimum(stage + 1, j.reached.shape[1] - 1)
    up = j.reached[rows, nxt]
    return (up != NEVER) & (up > t) & (up <= t + h)


LEAD_LABELS: dict[str, LeadLabel] = {"converted": converted, "advanced": advanced}


def lead_entities(export: CrmExport, times: list[pd.Timestamp], horizon_days: int,
                  *, journeys: Journeys, labelled: bool = True,
                  config: SnapshotConfig | None = None,
                  stale_days: int | None = None,
                  labels: Mapping[str, LeadLabel] = LEAD_LABELS) -> pd.DataFrame:
    """Open leads at each time, with one column per label of `labels` (default: conversion
    and advancement); `journeys`: the export's, built once by the caller."""
    return open_lead_rows(journeys, times, horizon_days, labelled=labelled, config=config,
                          stale_days=stale_days, labels=labels)[0]


def open_lead_rows(journeys: Journeys, times: list[pd.Timestamp], horizon_days: int, *,
                   labelled: bool = True, config: SnapshotConfig | None = None,
                   stale_days: int | None = None,
                   labels: Mapping[str, LeadLabel] = LEAD_LABELS
                   ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """`lead_entities`, with each row's lead position in the journeys and its time in
    microseconds beside the frame: a caller that reads the rows' outcomes takes them from
    here rather than looking the ids it was just given up again."""
    j = journeys
    created = j.reached[:, 0]
    won = j.reached[:, -1]
    h = horizon_days * DAY_US
    rng = np.random.default_rng(config.seed if config else 0)
    stale = stale_days if stale_days is not None else (config.stale_days if config else None)
    parts, positions, stamps = [], [], []
    ids = j.leads["lead_id"].to_numpy()  # once, not per time: a million ids as objects
    for ts in times:
        t = int(to_micros(pd.Series([ts]))[0])
        rows = np.flatnonzero((created < t) & (won > t) & (j.ended > t))
        stage = current_stage(j, rows, t)
        if stale is not None:
            fresh = t - j.reached[rows, stage] <= stale * DAY_US
            rows, stage = rows[fresh], stage[fresh]
        cap = config.max_rows_per_snapshot if config else None
        if cap is not None and rows.size > cap:
            keep = np.sort(rng.choice(rows.size, cap, replace=False))
            rows, stage = rows[keep], stage[keep]
        part = pd.DataFrame({"lead_id": ids[rows],
                             "as_of": ts, "stage_index": stage})
        if labelled:
            for name, label in labels.items():
                part[name] = label(j, rows, stage, t, h).astype("int8")
        parts.append(part)
        positions.append(rows)
        stamps.append(np.full(rows.size, t, dtype="int64"))
    if not parts:
        return (pd.DataFrame(columns=["lead_id", "as_of", "stage_index"]),
                np.zeros(0, dtype="int64"), np.zeros(0, dtype="int64"))
    out = pd.concat(parts, ignore_index=True)
    out["as_of"] = out["as_of"].astype("datetime64[us, UTC]")
    return out, np.concatenate(positions), np.concatenate(stamps)


def account_buy_times(export: CrmExport, journeys: Journeys) -> pd.Series:
    """Earliest purchase per account: a lead of it converts or an opportunity of it is won."""
    leads = journeys.leads
    frame = pd.DataFrame({"account_id": leads["account_id"].astype("str").where(
        leads["account_id"].notna()), "t": journeys.reached[:, -1]}).dropna()
    buys = frame.groupby("account_id")["t"].min()
    opps = export.opportunities
    if opps is not None and len(opps):
        won = opps[(opps["status"].astype("str") == "won") & opps["account_id"].notna()]
        direct = pd.Series(to_micros(won["closed_at"]), index=won["account_id"].astype("str"))
        buys = pd.concat([buys, direct]).groupby(level=0).min()
    return buys


def account_entities(export: CrmExport, times: list[pd.Timestamp], horizon_days: int,
                     *, journeys: Journeys, labelled: bool = True) -> pd.DataFrame:
    """Accounts with a lead before t that had not bought by t, labelled by a buy in the
    horizon; `journeys`: the export's, built once by the caller."""
    j = journeys
    if "account_id" not in j.leads or j.leads["account_id"].isna().all():
        raise PropensityError("an account model needs leads with an account_id")
    acc = j.leads["account_id"].astype("str").where(j.leads["account_id"].notna())
    first = pd.DataFrame({"a": acc, "t": j.reached[:, 0]}).dropna().groupby("a")["t"].min()
    buys = account_buy_times(export, j).reindex(first.index).fillna(NEVER).astype("int64")
    h = horizon_days * DAY_US
    parts = []
    for ts in times:
        t = int(to_micros(pd.Series([ts]))[0])
        open_ = (first.to_numpy() < t) & (buys.to_numpy() > t)
        part = pd.DataFrame({"account_id": first.index[open_], "as_of": ts})
        if labelled:
            part["bought"] = (buys.to_numpy()[open_] <= t + h).astype("int8")
        parts.append(part)
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["account_id", "as_of"])
    out["as_of"] = out["as_of"].astype("datetime64[us, UTC]")
    return out

