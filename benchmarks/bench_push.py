"""`propensity push` at scale against the CRM stand-ins (tests/crm_write_standins.py): 50,000
records, 10% of requests answered 429 with `Retry-After`, 1% of records refused, the pushing
process killed (SIGKILL) halfway and the push run again. Target: every record written
exactly once or reported; re-written only what was in flight when the process died (at most
one batch); the time honest about the 429 waits (Retry-After 1 s by default).

The records carry score-like values (`plan_of`): this measures the writing, the cursor and
the resume, not the scoring (`bench_score.py` measures that).

    PYTHONPATH=src:. .venv/bin/python benchmarks/bench_push.py [--records 50000] [--crm both]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from propensity.database import engine_for, migrate
from propensity.push.records import Crm
from propensity.push.run import push
from propensity.push.writers import HubSpotWriter, SalesforceWriter, Writer
from tests.crm_write_standins import (
    TOKEN,
    HubSpotStandIn,
    SalesforceStandIn,
    StandIn,
    plan_of,
    self_signed,
)


def writer_of(crm: Crm, url: str) -> Writer:
    return (HubSpotWriter(TOKEN, "contacts", url) if crm == "hubspot" else
            SalesforceWriter(url, TOKEN, "Lead"))


def run(crm: Crm, n: int, retry_after: str, work: Path, tls: tuple[Path, Path]) -> None:
    plan = plan_of(crm, n)
    ids = [o.record_id for o in plan]
    refuse = set(ids[::100])
    standin: StandIn = (HubSpotStandIn if crm == "hubspot" else SalesforceStandIn)(
        ids, rate_429=0.10, retry_after=retry_after, refuse=refuse, seed=11)
    url = standin.start(None if crm == "hubspot" else tls)
    db = f"sqlite:///{work / f'{crm}.db'}"
    migrate(db)
    batches = -(-n // (100 if crm == "hubspot" else 200))
    script = textwrap.dedent(f"""
        from propensity.database import engine_for
        from propensity.push.run import push
        from benchmarks.bench_push import writer_of
        from tests.crm_write_standins import plan_of
        push(engine_for({db!r}), {crm!r}, plan_of({crm!r}, {n}), writer_of({crm!r}, {url!r}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    start = time.perf_counter()
    worker = subprocess.Popen([sys.executable, "-c", script], env=env)
    while standin.accepted < batches // 2 and worker.poll() is None:
        time.sleep(0.005)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    first = time.perf_counter() - start
    at_kill = sum(standin.writes.values())
    resumed = time.perf_counter()
    result = push(engine_for(db), crm, plan, writer_of(crm, url))
    second = time.perf_counter() - resumed
    once = sum(1 for i in ids if standin.writes[i] == 1)
    rewritten = sum(1 for i in ids if standin.writes[i] > 1)
    lost = [i for i in ids if standin.writes[i] == 0 and i not in result.refused]
    print(f"{crm}: {n:,} records, {standin.statuses[429]:,} answers 429 (Retry-After "
          f"{retry_after} s) of {len(standin.log):,} requests; killed after {at_kill:,} "
          f"written ({first:.1f} s), resumed at record {result.resumed_at:,} ({second:.1f} s)",
          flush=True)
    print(f"  written once {once:,}; reported {len(result.refused):,} (refused: "
          f"{len(refuse):,}); re-written {rewritten:,}; neither written nor reported "
          f"{len(lost):,}; total {first + second:.1f} s", flush=True)
    standin.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--crm", choices=["hubspot", "salesforce", "both"], default="both")
    parser.add_argument("--retry-after", default="1")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tls = self_signed(Path(tmp))
        os.environ["REQUESTS_CA_BUNDLE"] = str(tls[0])  # simple-salesforce speaks HTTPS only
        for crm in (["hubspot", "salesforce"] if args.crm == "both" else [args.crm]):
            run(crm, args.records, args.retry_after, Path(tmp), tls)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
