"""What drift's counters add to a scoring request: the scorer's own work for one lead (and for
a batch of 1,000) before, and the counters' `add` after, timed in one process on the same
leads. Target: under 5% of the request's scoring cost.

The request's work is timed as the route does it: the online feature matrix and the model's
probabilities and reasons (`score_leads`, explain on and off). HTTP parsing, the threshold
lookup and the response make a real request dearer still, so the share printed is an upper
bound. The counters' flush runs in the score log's writer thread, off the request path.

    .venv/bin/python benchmarks/bench_counters.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd

from propensity.export import load_export
from propensity.monitoring.counters import Binning, ServedCounters
from propensity.rows import lead_from_row, lead_rows
from propensity.scoring import open_entities, score_leads
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.training import TrainConfig, train_export


def per_call(fn: Callable[[], object], seconds: float) -> float:
    """Median over rounds of the mean time per call, in microseconds."""
    rounds = []
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            fn()
            n += 1
        rounds.append((time.perf_counter() - start) / n * 1e6)
    return sorted(rounds)[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tables, truth = generate_export(SyntheticConfig(n_leads=4000, seed=3))
        write_export(tables, truth, Path(tmp))
        export = load_export(Path(tmp))
    result = train_export(export, TrainConfig.model_validate(
        {"snapshots": {"every_days": 14, "horizon_days": 90}, "search": False}))
    bundle, reference = result.bundle, result.reference
    assert reference is not None
    binning = Binning.of(reference)
    t = pd.Timestamp("2025-09-01", tz="UTC")
    entities = open_entities(bundle, export, t).head(1000)
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    leads = [lead_from_row(r, now) for r in lead_rows(export, entities).to_dict("records")]
    print(f"{len(binning.names) - 1} features + the score, up to {binning.width} bins each")
    for size in (1, len(leads)):
        batch = leads[:size]
        scored = score_leads(bundle, batch, explain=False)
        counters = ServedCounters()
        day = date(2025, 9, 1)
        X, p = scored.X, scored.probability
        add = per_call(lambda: counters.add(("m", "1", day), binning, X, p),  # noqa: B023
                       args.seconds)
        for explain in (True, False):
            work = per_call(lambda: score_leads(bundle, batch, explain=explain),  # noqa: B023
                            args.seconds)
            print(f"{size:>5} lead(s), explain={explain!s:<5}: scoring {work:9.1f} us, counters "
                  f"{add:7.1f} us = +{add / work:.1%}", flush=True)


if __name__ == "__main__":
    main()
