"""Synthetic export: time and peak memory to generate and write N leads.

Target: 1,000,000 leads (~20M events) in under 3 minutes and 8 GB.

    .venv/bin/python benchmarks/bench_generate.py --leads 1000000 --out /tmp/synthetic-1m
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _util import peak_rss_gb, timed
from propensity.synthetic import SyntheticConfig, generate_export, write_export


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("/tmp/propensity-bench-export"))
    args = parser.parse_args()
    start = time.perf_counter()
    with timed("generate"):
        tables, truth = generate_export(SyntheticConfig(n_leads=args.leads, seed=args.seed))
    with timed("write parquet"):
        write_export(tables, truth, args.out)
    total = time.perf_counter() - start
    print(f"leads={args.leads:,} events={tables['events'].num_rows:,} "
          f"stage_rows={tables['stage_history'].num_rows:,} "
          f"opportunities={tables['opportunities'].num_rows:,}")
    print(f"total {total:.1f} s, peak memory {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
