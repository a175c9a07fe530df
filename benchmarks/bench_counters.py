"""What drift's counters add to a scoring request: the scorer's own work for one lead before,
and the counters after, timed in one process on the same lead. Target: under 5% of the
request's scoring cost.

A request only appends its matrix (`ServedCounters.add`); the score log's writer bins what
gathered in one beat at once. Both parts are timed: the append on the request path, and the
writer's binning per lead at 500 single-lead requests a beat (1,000 requests a second).

The request's work is timed as the route does it: the online feature matrix and the model's
probabilities and reasons (`score_matrix`, explain on and off). HTTP parsing, the threshold
lookup and the response make a real request dearer still, so the share printed is an upper
bound.

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

from propensity.export_reader import load_export
from propensity.lead_input import online_lead
from propensity.lead_scoring import score_matrix
from propensity.monitoring.counters import Binning, ServedCounters
from propensity.rows import lead_rows
from propensity.scoring import open_entities
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
    leads = [online_lead(r, now)[0] for r in lead_rows(export, entities).to_dict("records")]
    print(f"{len(binning.names) - 1} features + the score, up to {binning.width} bins each")
    day = date(2025, 9, 1)
    one = score_matrix(bundle, bundle.online.matrix(leads[:1]), explain=False)
    counters = ServedCounters()

    def request_part() -> None:
        counters.add(("m", "1", day), binning, one.X, one.probability)

    on_request = per_call(request_part, args.seconds / 2)
    counters.drain()
    beat = 500  # single-lead requests gathered in one half-second beat (1,000 a second)

    def writer_part() -> None:
        for _ in range(beat):
            counters.add(("m", "1", day), binning, one.X, one.probability)
        counters.drain()

    per_lead = per_call(writer_part, args.seconds) / beat - on_request
    for explain in (True, False):
        work = per_call(lambda flag=explain: score_matrix(
            bundle, bundle.online.matrix(leads[:1]), explain=flag), args.seconds)
        print(f"1 lead, explain={explain!s:<5}: scoring {work:8.1f} us; counters on the request "
              f"path {on_request:5.2f} us (+{on_request / work:.2%}), binned by the writer "
              f"{per_lead:5.1f} us a lead (+{per_lead / work:.1%}); together "
              f"+{(on_request + per_lead) / work:.1%}", flush=True)
    direct = per_call(lambda: binning.counts(one.X, one.probability), args.seconds / 2)
    print(f"(binning one lead at a time on the request path instead: {direct:.1f} us)")

if __name__ == "__main__":
    main()
