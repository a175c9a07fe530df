"""Training end to end on a large synthetic export: the issue's budget is 5 minutes.

End to end means what `propensity train` does: read and validate the export, snapshots, the
features of both phases (evaluation vocabulary and shipping vocabulary), the learner search on
time-ordered folds, the evaluation fit and baselines on the holdout, the out-of-fold calibration
and refit on all labelled rows, and MLflow logging and registration.

    .venv/bin/python benchmarks/bench_train.py --leads 200000
    .venv/bin/python benchmarks/bench_train.py --leads 200000 --profile stress
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _util import peak_rss_gb, timed
from propensity.export_reader import fingerprint, load_export
from propensity.registry import log_and_register
from propensity.rows import lead_rows
from propensity.settings import Settings
from propensity.synthetic import PROFILES, generate_export, write_export
from propensity.training import TrainConfig, train_export


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=200_000)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export"
        tables, truth = generate_export(PROFILES[args.profile](n_leads=args.leads, seed=3))
        write_export(tables, truth, path)
        print(f"export ({args.profile}): {args.leads:,} leads, "
              f"{tables['events'].num_rows:,} events", flush=True)
        del tables, truth
        start = time.perf_counter()
        with timed("load + validate"):
            export = load_export(path)

        def stage(text: str) -> None:
            print(f"  [{time.perf_counter() - start:6.1f} s] {text}", flush=True)

        with timed("snapshots, features, search, evaluation, refit, calibration"):
            result = train_export(export, TrainConfig(), progress=stage)
        with timed("MLflow logging + registration"):
            log_and_register(result, data={"path": str(path), "fingerprint": fingerprint(path)},
                             input_example=lead_rows(export, result.holdout.head(3)),
                             settings=Settings(models_dir=Path(tmp) / "models"))
        total = time.perf_counter() - start
        report = result.report
        print(f"train end to end: {total:.1f} s, peak memory {peak_rss_gb():.2f} GB")
        print(f"chosen: {report['selection']['chosen']} ({report['selection']['why']})")
        for c in report["selection"]["candidates"]:
            print(f"  {c['name']}: mean fold AUC {c['mean_auc']:.4f} ({c['seconds']:.0f} s)")
        print("holdout ROC AUC: " + ", ".join(
            f"{k} {v['roc_auc']:.4f}" for k, v in report["metrics"].items()))
        print(f"rows: {report['rows']}")


if __name__ == "__main__":
    main()
