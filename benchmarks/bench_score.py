"""Batch scoring end to end, as `propensity score EXPORT --as-of T --out FILE` does it.

A champion is trained on a 100,000-lead export, then a 1,000,000-lead export (~20M events)
is scored through the real CLI: read and validate, the leads open at T, their features
(batch executor), the learner, calibration, and the Parquet file written. The figure asked
for is >= 50,000 leads/s end to end; both rates are printed (leads in the export, and leads
open at T that get a score), with the peak memory of the CLI process.

    .venv/bin/python benchmarks/bench_score.py --leads 1000000
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from propensity.export_reader import load_export
from propensity.lifecycle import train_and_register
from propensity.settings import Settings
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.training import TrainConfig

BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--train-leads", type=int, default=100_000)
    parser.add_argument("--as-of", default="2025-10-01")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(models_dir=root / "models")
        tables, truth = generate_export(SyntheticConfig(n_leads=args.train_leads, seed=5))
        write_export(tables, truth, root / "train")
        export = load_export(root / "train")
        trained = train_and_register(export, TrainConfig(), root / "train", gate="force",
                                     settings=settings)
        assert trained.promotion is not None
        print(f"champion: {trained.result.report['selection']['chosen']}; "
              f"{trained.promotion.reason}", flush=True)
        del export, tables, truth
        tables, truth = generate_export(SyntheticConfig(n_leads=args.leads, seed=9))
        write_export(tables, truth, root / "big")
        n_events = tables["events"].num_rows
        del tables, truth
        env = {**os.environ, "PROPENSITY_MODELS_DIR": str(settings.models_dir)}
        env.pop("MLFLOW_TRACKING_URI", None)
        out = root / "scores.parquet"
        start = time.perf_counter()
        subprocess.run([str(BIN / "propensity"), "score", str(root / "big"), "--as-of",
                        args.as_of, "--out", str(out)], env=env, check=True)
        took = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        scored = len(pd.read_parquet(out))
        print(f"propensity score: {args.leads:,} leads / {n_events:,} events in {took:.1f} s "
              f"= {args.leads / took:,.0f} leads/s of the export; {scored:,} open at "
              f"{args.as_of} scored = {scored / took:,.0f} scored leads/s; peak memory of "
              f"the CLI {peak:.2f} GB")


if __name__ == "__main__":
    main()
