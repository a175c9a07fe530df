"""`propensity validate` on a large export: time and peak memory (target: 1M leads in < 1 min).

    .venv/bin/python benchmarks/bench_generate.py --leads 1000000 --out /tmp/synthetic-1m
    .venv/bin/python benchmarks/bench_validate.py /tmp/synthetic-1m
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _util import peak_rss_gb
from propensity.export_reader import read_export


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/propensity-bench-export")
    start = time.perf_counter()
    export = read_export(path)
    took = time.perf_counter() - start
    sizes = {n: len(f) for n in ("leads", "events", "stage_history", "opportunities", "accounts")
             if (f := export.table(n)) is not None}
    print(", ".join(f"{v:,} {k}" for k, v in sizes.items()))
    print(f"problems: {export.report.error_count} errors, {export.report.warning_count} warnings")
    print(f"read + validate: {took:.1f} s, peak memory {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
