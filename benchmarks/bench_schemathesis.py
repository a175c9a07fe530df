"""schemathesis at issue 27's budget against a real `propensity serve`: every check, at least
1,000 examples per operation, the stateful phase included.

`tests/serving/test_schema.py` runs the same schemathesis (same config, `schemathesis.toml`,
same seed) in CI at 25 examples; at 1,000 one process takes hours on a loaded machine, so
here the operations are split into `--groups` processes that run at once (the unit phases,
examples, coverage and fuzzing, test each operation on its own), then the stateful phase
runs over every operation for `--stateful-seconds` (schemathesis repeats its scenarios
until the budget is spent). The server is the CI test's: the three champions trained on the
4,000-lead synthetic export (seed 21), SQLite, one worker.

Printed: per operation, the cases generated in the coverage and in the fuzzing phase (an
operation that takes no input has one possible request, and gets one) and the failed
checks; the stateful scenarios, steps and links covered; the wall time and load average.
Exit 1 on any failure.

    PYTHONPATH=$PWD/src:$PWD .venv/bin/python benchmarks/bench_schemathesis.py \
        [--examples 1000] [--groups 3] [--stateful-seconds 600] [--seed 14] [--only REGEX]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from propensity.export_reader import load_export
from propensity.settings import Settings
from propensity.targets import ACCOUNT_PROPENSITY, LEAD_CONVERSION, STAGE_ADVANCEMENT
from tests.conftest import synthetic_export
from tests.serving.conftest import Server, register, start_server

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "serving" / "schemathesis.toml"
BIN = Path(sys.executable).parent / "schemathesis"


def serve(tmp: Path) -> Server:
    """The CI test's server: `registry` and `server` of tests/serving/conftest.py."""
    data = tmp / "export"
    synthetic_export(data, 4000, seed=21)
    export, settings = load_export(data), Settings(models_dir=tmp / "models")
    for name in (LEAD_CONVERSION, STAGE_ADVANCEMENT, ACCOUNT_PROPENSITY):
        register(export, data, settings, model=name, gate="always")
    return start_server(tmp / "models", f"sqlite:///{tmp / 'scores.db'}", tmp, data=data,
                        ready_seconds=600)  # a loaded machine starts it slowly


def schemathesis(server: Server, out: Path, args: list[str]) -> subprocess.Popen[bytes]:
    """One schemathesis run, its NDJSON events and its text in `out`."""
    out.mkdir(parents=True)
    command = [str(BIN), "--config-file", str(CONFIG), "run", f"{server.url}/openapi.json",
               "--checks", "all", "--header", f"Authorization: Bearer {server.admin_key}",
               "--report", "ndjson", "--report-dir", str(out), "--no-color", *args]
    return subprocess.Popen(command, cwd=out, stdout=(out / "out.txt").open("wb"),
                            stderr=subprocess.STDOUT)


def groups(server: Server, n: int, only: str | None = None) -> list[str]:
    """The schema's paths (those `only` matches, if given) in `n` groups, as
    `--include-path-regex` patterns."""
    with server.client() as http:
        paths = sorted(p for p in http.get("/openapi.json").json()["paths"]
                       if only is None or re.search(only, p))
    n = min(n, len(paths))
    return ["^(" + "|".join(re.escape(p) for p in paths[i::n]) + ")$" for i in range(n)]


def events(out: Path) -> tuple[dict[tuple[str, str], list[int]], list[str]]:
    """Per (phase, operation): [scenarios, cases, failed checks]; and the errors reported."""
    seen: dict[tuple[str, str], list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    errors: list[str] = []
    for line in next(out.glob("*.ndjson")).read_text().splitlines():
        kind, event = next(iter(json.loads(line).items()))
        if kind == "NonFatalError":
            errors.append(str(event)[:300])
        if kind != "ScenarioFinished":
            continue
        recorder = event.get("recorder") or {}
        stateful = event["phase"] == "stateful"  # its scenarios span operations
        counts = seen[(event["phase"], "stateful" if stateful else recorder.get("label", "?"))]
        counts[0] += 1
        counts[1] += len(recorder.get("cases") or {})
        counts[2] += sum(c["status"] == "failure" for cs in (recorder.get("checks") or {})
                         .values() for c in cs)
    return seen, errors


def report(unit: list[Path], stateful: Path, codes: list[int], seconds: float) -> int:
    """Print the figures; the number of failures (failed checks, errors, non-zero exits)."""
    rows: dict[str, dict[str, int]] = collections.defaultdict(dict)
    failures, errors = 0, []
    for out in [*unit, stateful]:
        seen, errs = events(out)
        errors += errs
        for (phase, label), (_, cases, failed) in seen.items():
            rows[label][phase] = rows[label].get(phase, 0) + cases
            failures += failed
    print(f"{'operation':<36} {'coverage':>9} {'fuzzing':>8}")
    for label in sorted(set(rows) - {"stateful"}):
        print(f"{label:<36} {rows[label].get('coverage', 0):>9} "
              f"{rows[label].get('fuzzing', 0):>8}")
    text = (stateful / "out.txt").read_text()
    links = re.search(r"API Links:\s+(\d+ covered / \d+ selected)", text)
    scenarios = re.search(r"Scenarios:\s+(\d+)", text)
    print(f"stateful: {scenarios[1] if scenarios else '?'} scenarios, "
          f"{rows['stateful'].get('stateful', 0)} steps, links "
          f"{links[1] if links else '?'}")
    bad_exits = sum(code != 0 for code in codes)
    print(f"operations: {len(set(rows) - {'stateful'})}; failed checks: {failures}; errors: "
          f"{len(errors)}; schemathesis exits not 0: {bad_exits}; wall {seconds:.0f} s; "
          f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for error in errors:
        print("  error:", error)
    return failures + len(errors) + bad_exits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--stateful-seconds", type=int, default=600)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--only", help="a regex: fuzz only the paths it matches (to finish a "
                        "long run in parts; the stateful phase still spans every operation)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = serve(Path(tmp))
        try:
            start = time.monotonic()
            common = ["--max-examples", str(args.examples), "--seed", str(args.seed)]
            patterns = groups(server, args.groups, args.only)
            unit = [Path(tmp) / f"unit-{i}" for i in range(len(patterns))]
            runs = [schemathesis(server, out, [*common, "--phases", "examples,coverage,"
                                               "fuzzing", "--include-path-regex", pattern])
                    for out, pattern in zip(unit, patterns, strict=True)]
            codes = [run.wait() for run in runs]
            stateful = Path(tmp) / "stateful"
            codes.append(schemathesis(server, stateful, [
                *common, "--phases", "stateful",
                "--max-time", str(args.stateful_seconds)]).wait())
            failed = report(unit, stateful, codes, time.monotonic() - start)
            with server.client() as http:  # still standing, and no 5xx was counted
                fives = re.findall(r'status="5\d\d"', http.get("/metrics").text)
                print(f"after: /readyz {http.get('/readyz').status_code}, 5xx in /metrics: "
                      f"{len(fives)}")
        finally:
            server.stop()
    sys.exit(1 if failed or fives else 0)


if __name__ == "__main__":
    main()
