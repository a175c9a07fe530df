"""The forecast over a large export: 1,000,000 leads / ~23M events, stage by stage.

Generates the export once with `propensity generate`'s settings (default profile, parquet)
into a cache folder and reports that time apart; then times what `propensity forecast EXPORT`
does: load, fit every model as of T, each open lead's outlook and the simulation. Each stage
prints its wall time and this process's CPU time: the machine is shared, and on a loaded one
the wall time measures the other jobs too, while the CPU time (single-threaded LightGBM) is
what the forecast would take on the machine alone.

    nice -n 10 .venv/bin/python benchmarks/bench_forecast_scale.py --leads 1000000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from propensity.export_reader import load_export
from propensity.forecast.forecaster import fit_forecaster
from propensity.forecast.report import forecast_from
from propensity.synthetic import PROFILES, generate_export, write_export


class Clock:
    """Wall and CPU seconds of each stage: `stage(name)` closes the running one (printing
    its times) and starts `name` (the forecast's progress notes name a stage as it starts)."""

    def __init__(self) -> None:
        self.start_wall = self.wall = time.perf_counter()
        self.start_cpu = self.cpu = time.process_time()
        self.current = "load"

    def stage(self, text: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        print(f"  {wall - self.wall:7.1f} s wall {cpu - self.cpu:7.1f} s cpu  {self.current}",
              flush=True)
        self.wall, self.cpu, self.current = wall, cpu, text

    def total(self) -> tuple[float, float]:
        return time.perf_counter() - self.start_wall, time.process_time() - self.start_cpu


def cached_export(leads: int, seed: int, cache: Path) -> Path:
    """The export under `cache`, generated once (its time printed apart from the forecast's)."""
    folder = cache / f"leads-{leads}-seed-{seed}"
    if (folder / "manifest.json").exists():
        print(f"export: {folder} (cached)")
        return folder
    start = time.perf_counter()
    tables, truth = generate_export(PROFILES["default"](n_leads=leads, seed=seed))
    write_export(tables, truth, folder)
    print(f"export: generated {folder} in {time.perf_counter() - start:.0f} s: "
          + ", ".join(f"{len(t):,} {n}" for n, t in tables.items()), flush=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--weeks", type=int, default=13)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/propensity-forecast-scale"))
    args = parser.parse_args()
    folder = cached_export(args.leads, args.seed, args.cache)
    clock = Clock()
    export = load_export(folder)
    n_events = 0 if export.events is None else len(export.events)
    clock.stage(f"({len(export.leads):,} leads, {n_events:,} events) cut at T")
    as_of = export.latest_time().floor("D") + pd.Timedelta(days=1)
    model = fit_forecaster(export, as_of, seed=args.seed, progress=clock.stage)
    clock.stage("each open lead's curve and amount, the simulation")
    result, _ = forecast_from(model, args.weeks, seed=args.seed)
    clock.stage("")
    wall, cpu = clock.total()
    c = result.total.customers
    print(f"forecast as of {as_of:%Y-%m-%d}: {c.expected:,.1f} customers "
          f"[80% {c.low80:,.0f}-{c.high80:,.0f}] over {args.weeks} weeks")
    print(f"total: {wall:.1f} s wall, {cpu:.1f} s cpu (load average "
          f"{Path('/proc/loadavg').read_text().split()[0]})")


if __name__ == "__main__":
    main()
