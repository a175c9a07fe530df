"""Model quality at a scale the tests cannot afford: the stress export beside its truth.

The stress generator (slow decisions over four years, ~2% buying within 90 days, noise
columns with hundreds of levels) knows each lead's exact probability. The model is trained
with default settings on the export cut at T, scores every lead open at T, and is judged with
what the full export says happened next, beside the Bayes-optimal score. The holdout figures
of the model and of every baseline are printed too (the gate's view).

    .venv/bin/python benchmarks/bench_quality.py --leads 50000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _util import peak_rss_gb
from propensity.export import load_export
from propensity.scoring import score_export
from propensity.synthetic import compare_with_truth, generate_export, stress_config, write_export
from propensity.tables import truncate_export
from propensity.training import TrainConfig, train_export


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--as-of", default="2025-07-01")
    args = parser.parse_args()
    t = pd.Timestamp(args.as_of, tz="UTC")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stress"
        tables, truth = generate_export(stress_config(args.leads, seed=args.seed))
        write_export(tables, truth, path)
        del tables, truth
        full = load_export(path)
        cut = truncate_export(full, t)
        start = time.perf_counter()
        result = train_export(cut, TrainConfig())
        took = time.perf_counter() - start
        report = result.report
        print(f"stress export, {args.leads:,} leads (seed {args.seed}), cut at {t.date()}; "
              f"trained in {took:.0f} s, peak memory {peak_rss_gb():.2f} GB")
        print(f"shipped: {report['selection']['chosen']} ({report['selection']['why']})")
        print("holdout ROC AUC: " + ", ".join(
            f"{k} {v['roc_auc']:.4f}" for k, v in report["metrics"].items()))
        print(f"gate: {'passed' if report['gate']['passed'] else 'refused'}")
        judged = compare_with_truth(path, full, score_export(result.bundle, cut, t), t,
                                    result.bundle.horizon_days or 90)
        print("scored at T, judged by the future: " + judged.line())
        print(f"AUC gap to the truth {judged.truth_auc - judged.model_auc:+.4f}; log loss "
              f"{judged.model_log_loss / judged.truth_log_loss - 1:+.1%} of the truth's")


if __name__ == "__main__":
    main()
