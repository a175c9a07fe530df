"""The forecast judged where the truth is known: seeds x (realistic, long-lived) profiles.

Each (profile, seed): an export is generated; the models are fitted on it as it was at T
(realistic: 2025-07-01, so 180 days of outcome follow; long-lived: 2025-10-01) and every lead
open at T is judged against the generator's own P(converted by t) for its intent, stage and
pace (ECE over 15 equal-mass bins per horizon), its won amount (the 80% interval's coverage),
and per account the revenue realised in the 90 days after T (Spearman of expected revenue,
beside the rule-based reference: stage rate x segment median amount). Then the backtest over
every past quarter start: mean absolute percentage error of the 13-week customer count for
the model and the two rule-based forecasts, and the 80% / 95% coverage; beside them the MAPE
of the generator's exact expected counts (a perfect model's: the floor the coin flips set).
The long-lived backtest runs on the same world generated from `--long-lived-start` (default
2024-01-01): its one year before T leaves two quarters with the 20 buyers the models need.

    nice -n 10 .venv/bin/python benchmarks/bench_forecast.py --leads 5000 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from propensity.export_reader import load_export
from propensity.forecast.backtest import Period, backtest
from propensity.forecast.forecaster import REVENUE_DAYS, fit_forecaster, lead_outlook
from propensity.forecast.hazard import HORIZONS
from propensity.funnel.journeys import build_journeys
from propensity.models.evaluation import equal_mass_ece, equal_mass_ece_floor
from propensity.snapshots import lead_entities
from propensity.synthetic import (
    LONG_LIVED_T,
    PROFILES,
    generate_export,
    long_lived_config,
    read_truth,
    truth_probability,
    write_export,
)
from propensity.tables import CrmExport

PROFILE_T = {"default": "2025-07-01", "long-lived": LONG_LIVED_T}
NAMES = {"default": "realistic", "long-lived": "long-lived"}


def won_after(full: CrmExport, t: pd.Timestamp, days: float | None) -> pd.DataFrame:
    """Won opportunities closed in (t, t + days] (days None: any time after t)."""
    opps = full.opportunities
    assert opps is not None
    won = opps[opps["status"].astype("str") == "won"]
    closed = won["closed_at"]
    keep = closed > t
    if days is not None:
        keep &= closed <= t + pd.Timedelta(days=days)
    return won[keep]


def judge(directory: Path, full: CrmExport, t: pd.Timestamp, seed: int) -> dict[str, float]:
    model = fit_forecaster(full, t, seed=seed)
    outlook, _ = lead_outlook(model)
    truth, means = read_truth(directory)
    known = truth.loc[outlook["lead_id"]]
    out: dict[str, float] = {"open": len(outlook)}
    end = full.latest_time()
    conv = known["converted_at"]
    for h in HORIZONS:
        p_true = truth_probability(known["intent"].to_numpy(), outlook["stage_index"].to_numpy(),
                                   h, means, known["pace"].to_numpy())
        p = outlook[f"p_by_{h}"].to_numpy()
        out[f"ece{h}"] = equal_mass_ece(p_true, p)
        out[f"floor{h}"] = equal_mass_ece_floor(p_true, p)
        if t + pd.Timedelta(days=h) <= end:
            y = ((conv > t) & (conv <= t + pd.Timedelta(days=h))).to_numpy(dtype="float64")
            out[f"ece{h}_realised"] = equal_mass_ece(y, p)
            # the truth's own check: the generator's exact probabilities read against what
            # happened, binned as the model is: what a perfect model reads at this size
            out[f"own{h}"] = equal_mass_ece(y, p_true)
        out[f"bias{h}"] = float(p.mean() - p_true.mean())
    won = won_after(full, t, None)
    amounts = won.groupby(won["lead_id"].astype("str"))["amount"].sum()
    rows = outlook.set_index("lead_id").reindex(amounts.index).dropna(subset=["amount_low"])
    a = amounts.loc[rows.index]
    out["won_judged"] = len(rows)
    out["amount_cover80"] = float(((a >= rows["amount_low"]) & (a <= rows["amount_high"])).mean())
    # accounts: expected vs realised revenue in the 90 days after T
    leads = full.leads.set_index(full.leads["lead_id"].astype("str"))
    acc = leads["account_id"].reindex(outlook["lead_id"].astype("str")).to_numpy()
    frame = outlook.assign(account=acc).dropna(subset=["account"])
    frame["reference"] = frame["rule_probability"] * frame["segment_amount"]
    realised = won_after(full, t, REVENUE_DAYS)
    realised = realised[realised["lead_id"].astype("str").isin(set(frame["lead_id"]))]
    per_lead = realised.groupby(realised["lead_id"].astype("str"))["amount"].sum()
    frame["realised"] = per_lead.reindex(frame["lead_id"].astype("str")).fillna(0).to_numpy()
    g = frame.groupby("account")[["expected_revenue", "reference", "realised"]].sum()
    out["accounts"] = len(g)
    out["spearman_model"] = float(spearmanr(g["expected_revenue"], g["realised"]).statistic)
    out["spearman_reference"] = float(spearmanr(g["reference"], g["realised"]).statistic)
    return out


def truth_forecasts(directory: Path, full: CrmExport, starts: list[str],
                    weeks: int) -> list[float]:
    """Per backtest quarter: the generator's exact expected count of conversions within the
    window among the leads open at its start (what a perfect model would forecast): its
    MAPE is the floor the coin flips alone put under any forecast's."""
    truth, means = read_truth(directory)
    journeys = build_journeys(full)
    out = []
    for start in starts:
        at = pd.Timestamp(start, tz="UTC")
        open_at = lead_entities(full, [at], 1, journeys=journeys, labelled=False)
        known = truth.loc[open_at["lead_id"]]
        out.append(float(truth_probability(
            known["intent"].to_numpy(), open_at["stage_index"].to_numpy(), 7 * weeks, means,
            known["pace"].to_numpy()).sum()))
    return out


def off_truth(periods: list[Period], perfect: list[float]) -> dict[str, float]:
    """Mean absolute relative error of the model's and the stage rule's count against the
    generator's exact expected count: the forecasts' own error, without the quarters' luck
    that the MAPE against the actual count carries."""
    def off(values: list[float]) -> float:
        return float(np.mean([abs(v - x) / x for v, x in zip(values, perfect, strict=True)]))
    return {"off_model": off([p.forecast for p in periods]),
            "off_stage_rates": off([p.stage_rates for p in periods])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=5000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--profiles", nargs="+", default=["default", "long-lived"])
    parser.add_argument("--no-backtest", action="store_true")
    parser.add_argument("--long-lived-start", default="2024-01-01",
                        help="history start of the long-lived export the backtest runs on "
                             "(its judged export keeps the profile's year before T); "
                             "empty: the same export")
    args = parser.parse_args()
    start = time.perf_counter()
    judged, tested = [], []
    for profile in args.profiles:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                tables, truth = generate_export(PROFILES[profile](n_leads=args.leads,
                                                                  seed=seed))
                write_export(tables, truth, Path(tmp))
                full = load_export(Path(tmp))
                t = pd.Timestamp(PROFILE_T[profile], tz="UTC")
                j = judge(Path(tmp), full, t, seed)
                j.update(profile=NAMES[profile], seed=seed)
                judged.append(j)
                print(f"[{time.perf_counter() - start:6.0f}s] {NAMES[profile]} seed {seed}: "
                      + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in j.items() if k not in ("profile", "seed")),
                      flush=True)
                if args.no_backtest:
                    continue
                if profile == "long-lived" and args.long_lived_start:
                    # the same world with a longer history (more quarters); as many leads
                    # per day as the judged export (leads arrive evenly over the span)
                    same = long_lived_config(n_leads=args.leads, seed=seed)
                    days = (pd.Timestamp(same.end) - pd.Timestamp(args.long_lived_start)).days
                    per_day = args.leads / (pd.Timestamp(same.end)
                                            - pd.Timestamp(same.start)).days
                    tables, truth = generate_export(long_lived_config(
                        n_leads=round(per_day * days), seed=seed,
                        start=args.long_lived_start))
                    write_export(tables, truth, Path(tmp))
                    full = load_export(Path(tmp))
                bt = backtest(full, seed=seed)
                perfect = truth_forecasts(Path(tmp), full, [p.start for p in bt.periods],
                                          bt.weeks)
                for p, exact in zip(bt.periods, perfect, strict=True):
                    print(f"    {p.start}: actual {p.actual}, truth {exact:.1f}, "
                          f"forecast {p.forecast:.1f} "
                          f"[80% {p.low80:g}-{p.high80:g}, 95% {p.low95:g}-{p.high95:g}], "
                          f"stage rates {p.stage_rates:.1f}, pipeline {p.pipeline:.1f}; "
                          f"revenue {p.actual_revenue:,.0f} vs {p.forecast_revenue:,.0f} "
                          f"[80% {p.revenue_low80:,.0f}-{p.revenue_high80:,.0f}]", flush=True)
                for line in bt.skipped:
                    print(f"    skipped {line}")
                s = bt.summary()
                s.update(profile=NAMES[profile], seed=seed, mape_truth=float(np.mean(
                    [p.ape(x) for p, x in zip(bt.periods, perfect, strict=True)])),
                    **off_truth(bt.periods, perfect))
                tested.append(s)
    print("\n| profile | seed | open at T | ECE 30 (floor) | ECE 60 | ECE 90 | ECE 180 "
          "| ECE 90 realised | truth's own ECE 30/60/90/180 realised "
          "| amount 80% cover (won) | Spearman accounts model / reference (accounts) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for j in judged:  # each ECE with its judging floor (`equal_mass_ece_floor`)
        eces = " | ".join(f"{j[f'ece{h}']:.4f} ({j[f'floor{h}']:.4f})" for h in HORIZONS)
        print(f"| {j['profile']} | {j['seed']} | {j['open']:,} | {eces} | "
              f"{j.get('ece90_realised', float('nan')):.4f} | "
              + " / ".join(f"{j.get(f'own{h}', float('nan')):.4f}" for h in HORIZONS)
              + f" | {j['amount_cover80']:.3f} "
              f"({j['won_judged']}) | {j['spearman_model']:.3f} / "
              f"{j['spearman_reference']:.3f} ({j['accounts']:,}) |")
    if tested:
        print("\n| profile | seed | quarters | MAPE truth | MAPE model | MAPE stage rates "
              "| MAPE pipeline | off truth model / stage rates "
              "| 80% coverage | 95% coverage | revenue 80% coverage |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for s in tested:
            print(f"| {s['profile']} | {s['seed']} | {s['periods']} | {s['mape_truth']:.1%} | "
                  f"{s['mape_model']:.1%} | "
                  f"{s['mape_stage_rates']:.1%} | {s['mape_pipeline']:.1%} | "
                  f"{s['off_model']:.1%} / {s['off_stage_rates']:.1%} | "
                  f"{s['coverage80']:.0%} | {s['coverage95']:.0%} | "
                  f"{s['revenue_coverage80']:.0%} |")
    print(f"\n{time.perf_counter() - start:.0f} s in all", flush=True)


if __name__ == "__main__":
    main()
