"""Is the generator's truth the truth? Its probabilities against what its chain then does.

Every "judged against the truth" figure of `bench_quality.py` and docs/training.md reads the
generator's probability that a lead open at T converts in the 90 days after T (from its stage
at T, by the export's own stage history: `truth_rows`) as the chance the process that draws
the outcomes gives it. This checks that, without training anything: per seed, the leads (and
accounts, `account_truth`) open at T, the sum of their probabilities against how many
converted, overall, per stage at T and per band of the probability, with a z-score (realised
minus expected, over sqrt(sum p(1 - p))). Then the truth read as a model: its own top decile
(ranked by the truth) against its realised rate, per seed, for the leads (the issue's 15%
target) and the accounts (20%): how often even a perfect model misses the target at this size
is what the draw allows. `--window`: the same sum over the rows a shipped model is calibrated
on (the labelled snapshots of the latest third of the snapshot times of the export cut at T,
`fitting._recent`), whose draw sets the level the model carries to T. A seed of 20,000
long-lived leads takes a few seconds.

    .venv/bin/python benchmarks/bench_truth.py --profile long-lived --leads 20000 --seeds 40
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from propensity.export_reader import load_export
from propensity.funnel.journeys import build_journeys
from propensity.models.fitting import _recent
from propensity.snapshots import SnapshotConfig, account_entities, lead_entities, snapshot_times
from propensity.synthetic import (
    LONG_LIVED_T,
    PROFILES,
    account_truth,
    generate_export,
    read_truth,
    truth_probability,
    truth_rows,
    write_export,
)
from propensity.tables import CrmExport, truncate_export
from propensity.timestamps import to_micros

BANDS = [0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]


def one_seed(profile: str, leads: int, seed: int, t: pd.Timestamp, horizon: int,
             window: bool) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """The leads open at T (stage, truth, converted), the accounts (truth, bought) and, with
    `window`, the labelled rows of the calibration window before T (truth, converted)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / profile
        write_export(*generate_export(PROFILES[profile](n_leads=leads, seed=seed)), path)
        full = load_export(path)
        journeys = build_journeys(full)
        ids = lead_entities(full, [t], horizon, labelled=False, journeys=journeys)[["lead_id"]]
        rows = truth_rows(path, full, ids.assign(probability=0.0), t, horizon)
        accounts = account_entities(full, [t], horizon, journeys=journeys).merge(
            account_truth(path, full, t, horizon), on="account_id")
        recent = calibration_window(path, full, t, horizon) if window else None
    return rows.assign(seed=seed), accounts.assign(seed=seed), recent


def calibration_window(path: Path, full: CrmExport, t: pd.Timestamp,
                       horizon: int) -> pd.DataFrame:
    """The labelled lead rows of the export cut at T that a shipped model is calibrated on
    (the latest third of its snapshot times, as `fitting._recent` picks them), with the truth
    at each row's snapshot time."""
    cut = truncate_export(full, t)
    times = snapshot_times(cut.leads["created_at"].min(), cut.latest_time(),
                           SnapshotConfig(horizon_days=horizon))
    rows = lead_entities(cut, times, horizon, journeys=build_journeys(cut))
    keep = _recent(to_micros(rows["as_of"]), rows["converted"].to_numpy())
    rows = rows[keep]
    intent, means = read_truth(path)
    known = intent.loc[rows["lead_id"]]
    return rows.assign(truth=truth_probability(
        known["intent"].to_numpy(), rows["stage_index"].to_numpy(), horizon, means,
        known["pace"].to_numpy()))


def z_line(name: str, p: pd.Series, y: pd.Series) -> str:
    expected, realised = float(p.sum()), int(y.sum())
    z = (realised - expected) / np.sqrt(float((p * (1 - p)).sum()))
    return (f"{name:>18}: {len(p):8,} open, expected {expected:9.1f}, realised {realised:6,}, "
            f"z {z:+.2f}")


def own_top(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Per seed: the truth's own top decile, its mean probability against its realised rate."""
    out = []
    for seed, part in frame.groupby("seed"):
        top = part.nlargest(max(1, round(0.1 * len(part))), "truth")
        out.append({"seed": seed, "n": len(top), "truth": top["truth"].mean(),
                    "realised": top[label].mean(), "buyers": int(top[label].sum())})
    own = pd.DataFrame(out)
    own["rel"] = own["truth"] / own["realised"] - 1
    return own


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", choices=list(PROFILES), default="long-lived")
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--as-of", default=LONG_LIVED_T)
    parser.add_argument("--horizon", type=int, default=90)
    parser.add_argument("--window", action="store_true",
                        help="also the draw of each seed's calibration window before T")
    args = parser.parse_args()
    t = pd.Timestamp(args.as_of, tz="UTC")
    parts = [one_seed(args.profile, args.leads, s, t, args.horizon, args.window)
             for s in range(args.first_seed, args.first_seed + args.seeds)]
    leads = pd.concat([p[0] for p in parts], ignore_index=True)
    accounts = pd.concat([p[1] for p in parts], ignore_index=True)
    print(f"{args.profile}, {args.leads:,} leads, seeds {args.first_seed}-"
          f"{args.first_seed + args.seeds - 1}, open at {t.date()}, {args.horizon} days after")
    print(z_line("leads", leads["truth"], leads["converted"]))
    for stage, part in leads.groupby("stage_index"):
        print(z_line(f"stage {stage}", part["truth"], part["converted"]))
    for band, part in leads.groupby(pd.cut(leads["truth"], BANDS), observed=True):
        print(z_line(f"p in {band}", part["truth"], part["converted"]))
    print(z_line("accounts", accounts["truth"], accounts["bought"]))
    for name, frame, label, target in (("lead", leads, "converted", 0.15),
                                       ("account", accounts, "bought", 0.20)):
        own = own_top(frame, label)
        print(f"\nthe truth's own {name} top decile (truth / realised, buyers of n):")
        print(" ".join(f"{r.seed}:{r.truth:.3f}/{r.realised:.3f}({r.buyers}/{r.n}, {r.rel:+.0%})"
                       for r in own.itertuples()))
        print(f"within {target:.0%} of realised on {int((own['rel'].abs() <= target).sum())} "
              f"of {len(own)} seeds; relative error sd {own['rel'].std():.3f}, worst "
              f"{own['rel'].abs().max():+.3f}")
    if args.window:
        print("\nthe calibration window before T (its first snapshot time, rows): realised / "
              "expected by the truth - 1, z as if the rows were independent (a lead's "
              "snapshots are not: the true z is smaller)")
        for seed, (_, _, rows) in zip(range(args.first_seed, args.first_seed + args.seeds),
                                      parts, strict=True):
            assert rows is not None
            print(z_line(f"seed {seed} from {rows['as_of'].min().date()}", rows["truth"],
                         rows["converted"]) + f", realised / expected - 1 "
                  f"{rows['converted'].sum() / rows['truth'].sum() - 1:+.3f}")


if __name__ == "__main__":
    main()
