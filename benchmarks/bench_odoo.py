"""Odoo's table as a shipped learner: what scoring a request costs, the scorer's per-level
lookups (`OdooScorer`) against `odoo_pls.log_odds` on the matrix's decoded leads (the one
definition it is built from), in the same run, and the largest difference between the two.

    .venv/bin/python benchmarks/bench_odoo.py --leads 4000 --rounds 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from propensity.export_reader import load_export
from propensity.features import FeaturePlan, fit_feature_spec
from propensity.features.batch import lead_feature_matrix
from propensity.funnel.journeys import build_journeys
from propensity.models.odoo_learner import OdooScorer
from propensity.models.odoo_pls import fit_as_of, log_odds, matrix_leads
from propensity.odoo_history import OdooPlsConfig
from propensity.snapshots import lead_entities
from propensity.synthetic import SyntheticConfig, generate_export, write_export


def _per_call_ms(f: object, rounds: int) -> float:
    assert callable(f)
    f()
    start = time.perf_counter()
    for _ in range(rounds):
        f()
    return (time.perf_counter() - start) / rounds * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tables, truth = generate_export(SyntheticConfig(n_leads=args.leads, seed=args.seed))
        write_export(tables, truth, Path(tmp))
        export = load_export(Path(tmp))
    t = export.latest_time().normalize() - pd.Timedelta(days=120)
    plan = FeaturePlan(fit_feature_spec(export))
    journeys = build_journeys(export)
    X = lead_feature_matrix(export, plan, lead_entities(export, [t], 90, labelled=False,
                                                         journeys=journeys))
    config = OdooPlsConfig()
    table = fit_as_of(export, t, config, journeys=journeys)
    start = time.perf_counter()
    scorer = OdooScorer(plan.columns, table, config)
    built = (time.perf_counter() - start) * 1e3

    def reference(rows: np.ndarray) -> np.ndarray:
        bias, terms = log_odds(table, matrix_leads(rows, plan.columns, config))
        return bias + np.bincount(terms["lead"], weights=terms["log_odds"],
                                  minlength=len(rows))

    print(f"{len(X):,} open leads at {t:%Y-%m-%d}, {len(table.cells):,} cells; "
          f"lookups built in {built:.1f} ms")
    for n in (1, 8, len(X)):
        rows = X[:n]
        fast = _per_call_ms(lambda r=rows: scorer.contributions(r), args.rounds)
        slow = _per_call_ms(lambda r=rows: reference(r), max(3, args.rounds // 5))
        print(f"{n:>6} rows: lookups {fast:8.3f} ms, log_odds per call {slow:8.3f} ms")
    diff = np.abs(scorer.margin(X) - reference(X)).max()
    print(f"largest margin difference over {len(X):,} leads: {diff:.2e}")


if __name__ == "__main__":
    main()
