"""Does drift monitoring cry wolf, and does it find the wolf?

For each seed: a generated export (4,000 leads over two years) and a champion, and the leads
it serves, counted by the same bins the scorer counts (batch executor, every attribute, event,
stage and account row known at the time; parity with the scorer is tested elsewhere):

- `--served after-cut` (default): a champion trained on what was known on 2025-07-01, serving
  the leads open every 14 days for 8 weeks after it; shifted exports change on 2025-07-01.
- `--served at-end`: a champion trained on the whole export, serving the leads open at its end
  T (2026-01-01), as `propensity train` then `serve` would; shifted exports change on
  2025-11-01 (after the last labelled snapshot, so the champion never saw the shift).

Unshifted exports give the false-alarm rate (any alarm of the verdict: score or a top-10
feature over PSI 0.2); shifted ones (referral share, pricing page views) the detection rates
of the score, the source and the pricing-page features.

    .venv/bin/python benchmarks/bench_drift.py --seeds 20
    .venv/bin/python benchmarks/bench_drift.py --seeds 20 --served at-end --leads 8000
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from propensity.export_reader import load_export
from propensity.monitoring.counters import Binning
from propensity.monitoring.drift import period_drift
from propensity.monitoring.report import Limits, verdict
from propensity.scoring import open_entities
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.tables import truncate_export
from propensity.training import TrainConfig, train_export

CUT = pd.Timestamp("2025-07-01", tz="UTC")
AS_OF = [CUT + pd.Timedelta(days=14 * k) for k in range(1, 5)]
END = pd.Timestamp(SyntheticConfig.end, tz="UTC")
LATE_SHIFT = pd.Timestamp("2025-11-01", tz="UTC")
AGEING = ("lead_age_days", "days_in_stage", "account_contacts")
"""Features young in an export's early snapshots: what a reference of all history got wrong."""


def one(seed: int, shift: bool, leads: int, work: Path, served: str) -> dict[str, object]:
    at_end = served == "at-end"
    shift_at = (LATE_SHIFT if at_end else CUT) if shift else None
    config = SyntheticConfig(n_leads=leads, seed=seed,
                             shift_at=None if shift_at is None else str(shift_at.date()))
    tables, truth = generate_export(config)
    folder = work / f"{seed}-{int(shift)}"
    write_export(tables, truth, folder)
    export = load_export(folder)
    result = train_export(export if at_end else truncate_export(export, CUT),
                          TrainConfig.model_validate(
                              {"snapshots": {"every_days": 14, "horizon_days": 90},
                               "search": False}))
    bundle, reference = result.bundle, result.reference
    assert reference is not None
    binning = Binning.of(reference)
    total = np.zeros((len(binning.names), binning.width), dtype="int64")
    for t in [END] if at_end else AS_OF:
        entities = open_entities(bundle, export, t)
        X = bundle.features_for_export(export, entities)
        total += binning.counts(X, bundle.predict(X))
    window = period_drift(reference, dict(zip(binning.names, total, strict=True)), "window")
    v = verdict(window, None, reference, Limits())
    return {"seed": seed, "shift": shift, "served": window.served, "alarm": v.drift,
            "score": window.score_psi > 0.2, "source": "source" in v.drifted,
            "pricing": any("pricing_page_view" in f for f in v.drifted),
            "any_feature": bool(v.drifted), "score_psi": round(window.score_psi, 3),
            "top_psi": {f.feature: round(f.psi, 2) for f in window.features
                        if f.feature in set(reference.top(10)) and f.psi > 0.1},
            **{f.feature: round(f.psi, 3) for f in window.features if f.feature in AGEING}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--shifted-seeds", type=int, default=10)
    parser.add_argument("--leads", type=int, default=4000)
    parser.add_argument("--served", choices=("after-cut", "at-end"), default="after-cut")
    args = parser.parse_args()
    logging.getLogger("lightgbm").setLevel(logging.ERROR)
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for shift, n in ((False, args.seeds), (True, args.shifted_seeds)):
            for seed in range(100, 100 + n):
                rows.append(one(seed, shift, args.leads, Path(tmp), args.served))
                print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    calm, moved = frame[~frame["shift"]], frame[frame["shift"]]
    print(f"\nunshifted, {len(calm)} seeds: false-alarm rate {calm['alarm'].mean():.0%} "
          f"(score over the limit {calm['score'].mean():.0%}; any feature at all over 0.2, "
          f"alarm or not: {calm['any_feature'].mean():.0%}); score PSI median "
          f"{calm['score_psi'].median():.3f}, max {calm['score_psi'].max():.3f}")
    if len(moved):
        print(f"shifted, {len(moved)} seeds: alarm {moved['alarm'].mean():.0%}, score flagged "
              f"{moved['score'].mean():.0%}, source flagged {moved['source'].mean():.0%}, "
              f"pricing page views flagged {moved['pricing'].mean():.0%}; score PSI median "
              f"{moved['score_psi'].median():.3f}, min {moved['score_psi'].min():.3f}")
    print("PSI median (max) on unshifted exports: " + ", ".join(
        f"{c} {calm[c].median():.3f} ({calm[c].max():.3f})" for c in AGEING if c in calm))
    print(f"{len(frame)} runs in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
