"""Funnel report on a large export, grouped by source (target: 1M leads in < 30 s).

    .venv/bin/python benchmarks/bench_generate.py --leads 1000000 --out /tmp/synthetic-1m
    .venv/bin/python benchmarks/bench_funnel.py /tmp/synthetic-1m
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _util import peak_rss_gb
from propensity.export_reader import load_export
from propensity.funnel import funnel_report
from propensity.funnel.render import to_frame


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/propensity-bench-export")
    start = time.perf_counter()
    export = load_export(path)
    loaded = time.perf_counter()
    report = funnel_report(export, by="source")
    to_frame(report)
    done = time.perf_counter()
    print(f"{len(export.leads):,} leads; load + validate {loaded - start:.1f} s; "
          f"funnel by source {done - loaded:.1f} s; total {done - start:.1f} s; "
          f"peak memory {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
