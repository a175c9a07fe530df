"""What a lead's outlook costs in process, next to the rest of its score (no HTTP).

`bench_serve.py` gives the outlook's cost as the throughput lost over HTTP, which moves with
whatever else loads the machine; this times the parts of one `score_read` by themselves, in
CPU microseconds per call (the best of 5 blocks' means, one thread): reading the leads
(`read_records`), their matrix, the probability (with and without its reasons), and the
outlook (with and without the amount's reasons), for a batch of 1 and of the sizes the
batcher sends together. The model is trained as `bench_serve.py` trains it (20,000 generated
leads, seed 9), or read from `--bundle DIR` (saved there when it does not exist yet).

    PYTHONPATH=$PWD/src:$PWD .venv/bin/python benchmarks/bench_outlook.py --bundle DIR
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from benchmarks.bench_serve import _lead

from propensity.export_reader import load_export
from propensity.lead_scoring import outlooks, read_records, score_matrix, score_read
from propensity.lifecycle import train
from propensity.models.bundle import ModelBundle
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.thresholds import ThresholdSet
from propensity.training import TrainConfig


def bundle_at(directory: Path) -> ModelBundle:
    """The lead-conversion bundle saved in `directory`, trained there first when absent."""
    if not (directory / "bundle").exists():
        tables, truth = generate_export(SyntheticConfig(n_leads=20_000, seed=9))
        write_export(tables, truth, directory / "export")
        result = train(load_export(directory / "export"), TrainConfig(model="lead-conversion"))
        result.bundle.save(directory / "bundle")
    return ModelBundle.load(directory / "bundle")


def leads(n: int) -> list[dict[str, Any]]:
    """`bench_serve.py`'s lead, n times, each its own id and as-of day (different rows)."""
    out = []
    for i in range(n):
        lead = _lead(pd.Timestamp("2025-06-01", tz="UTC") + pd.Timedelta(days=3 * i))
        out.append({**lead, "lead_id": f"bench-{i}"})
    return out


def micros(work: Callable[[], object], repeat: int, blocks: int = 5) -> float:
    """CPU microseconds of one call of `work`: the least of `blocks` blocks' mean over
    `repeat` calls each (after a warm-up). CPU time, not wall time: on a machine other
    sessions load, a wall clock counts the time this process waited for a core."""
    for _ in range(max(3, repeat // 20)):
        work()
    best = float("inf")
    for _ in range(blocks):
        start = time.process_time()
        for _ in range(repeat):
            work()
        best = min(best, (time.process_time() - start) / repeat)
    return best * 1e6


def table(bundle: ModelBundle, n: int, repeat: int) -> list[str]:
    """One batch size's lines: each part's microseconds per call and per lead."""
    records, now = leads(n), pd.Timestamp("2025-12-01", tz="UTC").to_pydatetime()
    thresholds = ThresholdSet()
    read = read_records(bundle, records, now)
    X = bundle.online.matrix_of(read.inputs)
    quiet = read_records(bundle, records, now, explain=False, outlook=False)
    asked = read_records(bundle, records, now, explain=False, outlook=True)
    parts: dict[str, Callable[[], object]] = {
        "read (read_records)": lambda: read_records(bundle, records, now),
        "matrix (online.matrix_of)": lambda: bundle.online.matrix_of(read.inputs),
        "probability": lambda: score_matrix(bundle, X, explain=False),
        "probability + reasons": lambda: score_matrix(bundle, X, explain=True),
        "outlook": lambda: outlooks(bundle, X, False),
        "outlook + amount reasons": lambda: outlooks(bundle, X, True),
        "score_read, no outlook": lambda: score_read([quiet], thresholds),
        "score_read, outlook": lambda: score_read([asked], thresholds),
    }
    lines = []
    for name, work in parts.items():
        us = micros(work, repeat)
        lines.append(f"  {name:<28} {us:9.1f} us/call {us / n:8.1f} us/lead")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, default=None,
                        help="a directory to keep the trained model in between runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    bundle = bundle_at(args.bundle or Path(tempfile.mkdtemp()))
    assert bundle.outlook is not None, "the model ships no outlook"
    for n in args.sizes:
        print(f"batch of {n}:", flush=True)
        print("\n".join(table(bundle, n, max(20, args.repeat // n))), flush=True)


if __name__ == "__main__":
    main()
