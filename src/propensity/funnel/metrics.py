"""Funnel metrics, overall and per group, in one vectorised pass over the journeys.

Cohort mode follows the leads created in the window wherever they went. Period mode counts
what happened inside the window: stage entries, conversions, closes; its step rate is entries
into the next stage / entries into the stage in the window (a flow ratio, which can pass 100%
when many leads entered the lower stage before the window; its interval is then left out).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from propensity.contract import TIMESTAMP_DTYPE
from propensity.funnel.intervals import wilson
from propensity.funnel.journeys import Journeys, build_journeys
from propensity.funnel.report_types import (
    Deals,
    Duration,
    FunnelReport,
    GroupFunnel,
    Mode,
    Rate,
    Step,
)
from propensity.problems import PropensityError
from propensity.tables import CrmExport
from propensity.timestamps import DAY_US, NEVER, to_micros, utc

OVERALL = "(all)"
NO_LEAD = "(no lead)"
MISSING = "(missing)"
PERIODS = {"created_week": "W", "created_month": "M", "created_quarter": "Q",
           "created_year": "Y"}


def _stamp(value: datetime | str | None) -> int | None:
    if value is None:
        return None
    return int(to_micros(pd.Series([utc(value)]))[0])


def group_keys(frame: pd.DataFrame, by: str | None, created: str = "created_at") -> pd.Series:
    """Group label per row: a column's value, or a period of creation ('created_month')."""
    if by is None:
        return pd.Series(OVERALL, index=frame.index)
    if by in PERIODS:
        stamps = frame[created].dt.tz_localize(None)
        return stamps.dt.to_period(PERIODS[by]).astype("str").fillna(MISSING)
    if by not in frame.columns:
        raise PropensityError(
            f"cannot group by {by!r}: not a lead column (columns: {', '.join(frame.columns)}; "
            f"periods: {', '.join(PERIODS)})")
    return frame[by].astype("str").where(frame[by].notna(), MISSING)


def _rates(k: pd.Series, n: pd.Series) -> list[Rate]:
    _, lo, hi = wilson(k.to_numpy(), n.to_numpy())
    out = []
    for i in range(len(k)):
        ok = n.iloc[i] > 0 and k.iloc[i] <= n.iloc[i]
        out.append(Rate(
            numerator=int(k.iloc[i]), denominator=int(n.iloc[i]),
            percent=None if n.iloc[i] <= 0 else round(100 * k.iloc[i] / n.iloc[i], 4),
            low=round(100 * lo[i], 4) if ok else None, high=round(100 * hi[i], 4) if ok else None,
        ))
    return out


def _durations(days: pd.Series, keys: pd.Series, groups: pd.Index) -> dict[str, Duration]:
    """Median, 75th percentile and mean of day counts per group (NaN days are skipped)."""
    frame = pd.DataFrame({"g": keys, "d": days}).dropna()
    agg = frame.groupby("g", observed=True)["d"].agg(["count", "median", "mean"])
    agg["p75"] = frame.groupby("g", observed=True)["d"].quantile(0.75)
    out = {}
    for g in groups:
        if g in agg.index and agg.loc[g, "count"] > 0:
            row = agg.loc[g]
            out[g] = Duration(count=int(row["count"]), median_days=round(float(row["median"]), 4),
                              p75_days=round(float(row["p75"]), 4),
                              mean_days=round(float(row["mean"]), 4))
        else:
            out[g] = Duration(count=0, median_days=None, p75_days=None, mean_days=None)
    return out


def _in_window(t: np.ndarray, lo_v: int, hi_v: int) -> np.ndarray:
    """Times that happened (not NEVER) inside [lo_v, hi_v)."""
    return (t != NEVER) & (t >= lo_v) & (t < hi_v)


def _window(start: datetime | str | None, end: datetime | str | None
            ) -> tuple[int | None, int, int]:
    """The window as microseconds: the given end, and both bounds with open ends filled."""
    lo = _stamp(start)
    hi = _stamp(end)
    lo_v = lo if lo is not None else np.iinfo("int64").min
    hi_v = hi if hi is not None else NEVER
    if lo is not None and hi is not None and lo >= hi:
        raise PropensityError("--start must be before --end")
    return hi, lo_v, hi_v


def _step_columns(
    j: Journeys, s: int, mode: Mode, scope: np.ndarray, lo_v: int, hi_v: int, as_of: int,
    stale_days: int | None,
) -> dict[str, np.ndarray]:
    """Per-lead flags of step s (stage s to s + 1) and the days it took.

    Cohort mode follows the window's leads; period mode counts entries inside the window.
    """
    r = j.reached
    reached_any = r != NEVER
    ended = j.ended != NEVER
    if mode == "cohort":
        reached = scope & reached_any[:, s]
        advanced = reached & reached_any[:, s + 1]
        stopped = reached & ~advanced
        lost = stopped & ended
        flight = stopped & ~ended
    else:
        reached = _in_window(r[:, s], lo_v, hi_v)
        advanced = _in_window(r[:, s + 1], lo_v, hi_v)
        at_stage = reached_any[:, s] & (r[:, s] < hi_v)
        not_next = ~(reached_any[:, s + 1] & (r[:, s + 1] < hi_v))
        lost = at_stage & not_next & _in_window(j.ended, lo_v, hi_v)
        flight = at_stage & not_next & ~(ended & (j.ended < hi_v))
    stale = np.zeros_like(flight)
    if stale_days is not None:
        stale = flight & (as_of - r[:, s] > stale_days * DAY_US)
        lost, flight = lost | stale, flight & ~stale
    # time between actual entries: a skipped stage has no time of its own
    both = advanced & (j.entered[:, s] != NEVER) & (j.entered[:, s + 1] != NEVER)
    took = np.where(both, (r[:, s + 1] - r[:, s]) / DAY_US, np.nan)
    return {f"stale_{s}": stale, f"reached_{s}": reached, f"advanced_{s}": advanced,
            f"lost_{s}": lost, f"flight_{s}": flight, f"days_{s}": took}


def _lead_columns(
    j: Journeys, mode: Mode, lo_v: int, hi_v: int, as_of: int, stale_days: int | None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every per-lead flag the report sums (leads, each step's, converted), and days to convert."""
    r = j.reached
    scope = _in_window(r[:, 0], lo_v, hi_v)  # leads created in the window (lead-to-customer's base)
    cols: dict[str, np.ndarray] = {"leads": scope}
    last = len(j.stages) - 1
    for s in range(last):
        cols.update(_step_columns(j, s, mode, scope, lo_v, hi_v, as_of, stale_days))
    cols["converted"] = (scope & (r[:, last] != NEVER) if mode == "cohort"
                         else _in_window(r[:, last], lo_v, hi_v))
    convert_days = np.where(cols["converted"], (r[:, last] - r[:, 0]) / DAY_US, np.nan)
    return cols, convert_days


def _group_counts(cols: dict[str, np.ndarray], keys: pd.Series, mode: Mode, by: str | None
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.Index]:
    """The per-lead frame, its flags summed per group, and the groups that get a row.

    Cohort mode shows only groups with leads created in the window; no `by`, no groups.
    """
    lead_frame = pd.DataFrame(cols, index=keys.index)
    lead_frame["g"] = keys.to_numpy()
    counts = lead_frame.drop(columns=[c for c in cols if c.startswith("days_")]).groupby(
        "g", observed=True).sum()
    groups = counts.index[counts["leads"] > 0] if mode == "cohort" else counts.index
    if by is None:
        groups = pd.Index([])
    return lead_frame, counts, groups


def _group_funnel(name: str, c: pd.Series, stages: list[str], days: dict[int, Duration],
                  deal: Deals, to_convert: Duration) -> GroupFunnel:
    """One group's funnel from its summed lead flags, step durations and deals."""
    steps = []
    for s in range(len(stages) - 1):
        rate = _rates(pd.Series([c[f"advanced_{s}"]]), pd.Series([c[f"reached_{s}"]]))[0]
        steps.append(Step(
            from_stage=stages[s], to_stage=stages[s + 1], reached=int(c[f"reached_{s}"]),
            advanced=int(c[f"advanced_{s}"]), lost=int(c[f"lost_{s}"]),
            stale=int(c[f"stale_{s}"]),
            in_flight=int(c[f"flight_{s}"]), conversion=rate, time=days[s],
        ))
    worst = max(steps, key=lambda st: st.lost) if steps else None
    return GroupFunnel(
        group=name, leads=int(c["leads"]), steps=steps,
        lead_to_customer=_rates(pd.Series([c["converted"]]), pd.Series([c["leads"]]))[0],
        time_to_convert=to_convert, deals=deal,
        biggest_drop_off=worst.name if worst is not None and worst.lost > 0 else None,
    )


def _ordered(per_group: list[GroupFunnel], mode: Mode, by: str | None) -> list[GroupFunnel]:
    """Rows to show, in order: periods in time order (unplaced last), else biggest first.

    In period mode a group where nothing happened in the window is no row.
    """
    if mode == "period":
        per_group = [gf for gf in per_group if _happened(gf)]
    if by in PERIODS:
        per_group.sort(key=lambda gf: (gf.group.startswith("("), gf.group))
    else:
        per_group.sort(key=lambda gf: (-gf.leads, gf.group))
    return per_group


def funnel_report(
    export: CrmExport,
    *,
    by: str | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    mode: Mode = "cohort",
    journeys: Journeys | None = None,
    stale_days: int | None = None,
) -> FunnelReport:
    """Every funnel metric of the export, overall and per value of `by`.

    `stale_days`: a lead still in a stage this many days after entering it (at the as-of time),
    with no disqualification on record, counts as lost (and as `stale`), not in flight: for
    CRMs, like Olist's, that never record a lead giving up.
    """
    if mode not in ("cohort", "period"):
        raise PropensityError(f"mode is cohort or period, not {mode!r}")
    j = journeys if journeys is not None else build_journeys(export)
    hi, lo_v, hi_v = _window(start, end)
    stages = list(j.stages)
    as_of = hi if hi is not None else to_micros(pd.Series([export.latest_time()]))[0] + 1
    keys = group_keys(j.leads, by)
    cols, convert_days = _lead_columns(j, mode, lo_v, hi_v, as_of, stale_days)
    last = len(stages) - 1
    lead_frame, counts, groups = _group_counts(cols, keys, mode, by)
    overall_counts = counts.sum()
    all_keys = pd.Series(OVERALL, index=j.leads.index)

    opp_keys = _opportunity_keys(export, j, by)
    if by is not None:  # opportunities without a lead are a group of their own
        extra = pd.Index(opp_keys.unique()).difference(groups)
        groups = groups.append(extra)
        counts = counts.reindex(counts.index.union(extra), fill_value=0)
    deals, deals_all = _deals(export, opp_keys, mode, lo_v, hi_v, as_of, groups)
    step_days = {s: _durations(lead_frame[f"days_{s}"], keys, groups) for s in range(last)}
    step_days_all = {s: _durations(lead_frame[f"days_{s}"], all_keys, pd.Index([OVERALL]))
                     for s in range(last)}
    convert = _durations(pd.Series(convert_days, index=keys.index), keys, groups)
    convert_all = _durations(pd.Series(convert_days, index=keys.index), all_keys,
                             pd.Index([OVERALL]))[OVERALL]

    overall = _group_funnel(OVERALL, overall_counts, stages,
                            {s: step_days_all[s][OVERALL] for s in range(last)},
                            deals_all, convert_all)
    per_group = [_group_funnel(str(g), counts.loc[g], stages,
                               {s: step_days[s][g] for s in range(last)}, deals[g], convert[g])
                 for g in groups]
    return FunnelReport(
        mode=mode, by=by, start=pd.Timestamp(start).to_pydatetime() if start else None,
        end=pd.Timestamp(end).to_pydatetime() if end else None,
        as_of=pd.Timestamp(as_of, unit="us", tz="UTC").to_pydatetime(),
        stages=stages, stale_days=stale_days, overall=overall,
        groups=_ordered(per_group, mode, by),
    )


def _happened(group: GroupFunnel) -> bool:
    """Something happened in the window: a lead created, a stage entered, a lead lost or
    converted, an opportunity closed (leads in flight and open deals are states, not events).
    """
    return bool(group.leads or group.lead_to_customer.numerator or group.deals.won
                or group.deals.lost or any(s.reached or s.advanced or s.lost
                                           for s in group.steps))


def _opportunity_keys(export: CrmExport, j: Journeys, by: str | None) -> pd.Series:
    """Group of each opportunity: its own owner/product, else its lead's, else '(no lead)'."""
    opps = _opportunities(export)
    if by is None:
        return pd.Series(OVERALL, index=opps.index)
    if by in opps.columns and by != "lead_id":
        return opps[by].astype("str").where(opps[by].notna(), MISSING)
    pos = export.lead_positions(opps["lead_id"])
    lead_keys = group_keys(j.leads, by).to_numpy()
    return pd.Series(np.where(pos >= 0, lead_keys[np.maximum(pos, 0)], NO_LEAD), index=opps.index)


def _opportunities(export: CrmExport) -> pd.DataFrame:
    if export.opportunities is None:
        return pd.DataFrame({"lead_id": pd.Series(dtype="str"), "status": pd.Series(dtype="str"),
                             "amount": pd.Series(dtype="float64"),
                             "created_at": pd.Series(dtype=TIMESTAMP_DTYPE),
                             "closed_at": pd.Series(dtype=TIMESTAMP_DTYPE)})
    return export.opportunities.reset_index(drop=True)


def _deals(
    export: CrmExport, keys: pd.Series, mode: Mode, lo: int, hi: int, as_of: int,
    groups: pd.Index,
) -> tuple[dict[str, Deals], Deals]:
    """Opportunity metrics per group; pipeline is what is open at `as_of`."""
    opps = _opportunities(export)
    created = to_micros(opps["created_at"])
    closed = to_micros(opps["closed_at"])
    status = opps["status"].astype("str").to_numpy()
    amount = opps["amount"].astype("float64").to_numpy()
    if mode == "cohort":
        scope = (created >= lo) & (created < hi)
        closed_in = scope & (closed != NEVER)
    else:
        closed_in = (closed != NEVER) & (closed >= lo) & (closed < hi)
    is_open = (created < as_of) & ((closed == NEVER) | (closed >= as_of))
    won = closed_in & (status == "won")
    lost = closed_in & (status == "lost")
    hist = (closed != NEVER) & (closed < as_of)
    frame = pd.DataFrame({
        "g": keys.to_numpy(), "won": won, "lost": lost, "open": is_open,
        "won_amount": np.where(won & ~np.isnan(amount), amount, 0.0),
        "won_priced": won & ~np.isnan(amount),
        "open_amount": np.where(is_open & ~np.isnan(amount), amount, 0.0),
        "hist_won": hist & (status == "won"),
        "hist_closed": hist & np.isin(status, ["won", "lost"]),
        "cycle": np.where(won, (closed - created) / DAY_US, np.nan),
    })
    n_hist = frame["hist_closed"].sum()
    overall_rate = frame["hist_won"].sum() / n_hist if n_hist else None

    def make(sub: pd.DataFrame, name: str, cycle: Duration) -> Deals:
        n_won, n_lost, n_open = int(sub["won"].sum()), int(sub["lost"].sum()), int(
            sub["open"].sum())
        rate = _rates(pd.Series([n_won]), pd.Series([n_won + n_lost]))[0]
        priced = int(sub["won_priced"].sum())
        avg = float(sub["won_amount"].sum() / priced) if priced else None
        closed_hist = sub["hist_closed"].sum()
        pipeline = float(sub["open_amount"].sum())
        hist_rate = sub["hist_won"].sum() / closed_hist if closed_hist else overall_rate
        weighted = None if hist_rate is None else round(pipeline * float(hist_rate), 4)
        velocity = None
        if rate.percent is not None and avg is not None and cycle.mean_days:
            velocity = round(n_open * rate.percent / 100 * avg / cycle.mean_days, 4)
        return Deals(won=n_won, lost=n_lost, open=n_open, win_rate=rate,
                     average_deal_size=None if avg is None else round(avg, 4),
                     sales_cycle=cycle, pipeline_value=round(pipeline, 4),
                     weighted_pipeline_value=weighted,
                     sales_velocity_per_day=velocity)

    cycles = _durations(frame["cycle"], frame["g"], groups)
    all_cycle = _durations(frame["cycle"], pd.Series(OVERALL, index=frame.index),
                           pd.Index([OVERALL]))[OVERALL]
    by_group = {g: make(frame[frame["g"] == g], str(g), cycles[g]) for g in groups}
    return by_group, make(frame, OVERALL, all_cycle)

