"""Training end to end on a large synthetic export, then batch-scoring speed.

Targets: 200,000 leads (~4M events) train end to end (features, LightGBM, calibration,
evaluation, registration) in < 5 min and < 8 GB; batch scoring of 1,000,000 open leads at
>= 50,000 leads/s once features are built.

    .venv/bin/python benchmarks/bench_train.py --leads 200000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _util import peak_rss_gb, timed
from propensity.export import fingerprint, load_export
from propensity.models.bundle import from_training
from propensity.models.online import example_rows
from propensity.models.registry import log_and_register
from propensity.settings import Settings
from propensity.snapshots import lead_entities
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.training import TrainConfig, train_export


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=200_000)
    parser.add_argument("--score-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export"
        tables, truth = generate_export(SyntheticConfig(n_leads=args.leads, seed=3))
        write_export(tables, truth, path)
        print(f"export: {args.leads:,} leads, {tables['events'].num_rows:,} events")
        del tables, truth
        start = time.perf_counter()
        with timed("load + validate"):
            export = load_export(path)
        with timed("snapshots + features + LightGBM + calibration + baselines + evaluation"):
            result = train_export(export, TrainConfig())
        bundle = from_training(result, "export")
        with timed("MLflow logging + registration"):
            log_and_register(result, bundle, data={"path": str(path),
                                                   "fingerprint": fingerprint(path)},
                             input_example=example_rows(export, result.holdout),
                             settings=Settings(models_dir=Path(tmp) / "models"))
        total = time.perf_counter() - start
        print(f"train end to end: {total:.1f} s, peak memory {peak_rss_gb():.2f} GB, "
              f"holdout ROC AUC {result.holdout_auc:.4f}, rows {result.report['rows']}")

        times = list(pd.date_range("2024-03-01", "2025-12-01", freq="7D", tz="UTC"))
        entities = lead_entities(export, times, 90, labelled=False)[["lead_id", "as_of"]]
        t0 = time.perf_counter()
        X = bundle.features_for_export(export, entities)
        built = time.perf_counter() - t0
        print(f"features for {len(X):,} open-lead rows: {built:.1f} s "
              f"({len(X) / built:,.0f} rows/s)")
        reps = -(-args.score_rows // len(X))
        big = pd.concat([X] * reps, ignore_index=True).iloc[: args.score_rows]
        bundle.predict_features(big.head(1000))  # warm-up
        t0 = time.perf_counter()
        p = bundle.predict_features(big)
        took = time.perf_counter() - t0
        print(f"batch scoring {len(p):,} leads from built features: {took:.2f} s = "
              f"{len(p) / took:,.0f} leads/s; peak memory {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
