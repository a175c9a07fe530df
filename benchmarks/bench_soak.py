"""A soak: the scorer under mixed load with some hostile requests, for minutes, then checked.

Sixteen concurrent clients for `--seconds` (600 for the issue's target) on 127.0.0.1 send a
mix of what CRMs and marketing ops send (one lead with reasons, ten leads without, an account,
thresholds, the funnel, health and metrics) and, one request in a hundred, something wrong
(no key, malformed or non-finite JSON, text/plain, a body over the limit, unknown paths).
Printed: requests a second, answers by status, 5xx and transport errors (targets: 0), the
server's resident memory after a warm-up and at the end (target: under 5% growth), and after
a SIGTERM whether every score acknowledged with a 200 is in the score log (target: all).

    .venv/bin/python benchmarks/bench_soak.py --seconds 600
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd
import sqlalchemy as sa

from bench_serve import _lead, free_port, wait
from propensity.api_keys import create_key
from propensity.database import engine_for, migrate, score_log
from propensity.export_reader import load_export
from propensity.lifecycle import train_and_register
from propensity.settings import Settings
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.training import TrainConfig

BIN = Path(sys.executable).parent


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _train(tmp: Path) -> Settings:
    tables, truth = generate_export(SyntheticConfig(n_leads=6000, seed=14))
    write_export(tables, truth, tmp / "export")
    export = load_export(tmp / "export")
    settings = Settings(models_dir=tmp / "models")
    for name in ("lead-conversion", "account-propensity"):
        train_and_register(export, TrainConfig.model_validate(
            {"model": name, "search": False,
             "snapshots": {"every_days": 14, "horizon_days": 90}}), tmp / "export",
            gate="force", settings=settings)
    return settings


class Load:
    """The request mix; every 200 from /v1/score adds its lead ids to `acknowledged`."""

    def __init__(self, key: str, admin: str, lead: dict) -> None:
        self.auth = {"Authorization": f"Bearer {key}"}
        self.admin = {"Authorization": f"Bearer {admin}"}
        self.lead = lead
        self.n = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.transport_errors = 0
        self.cut_off = 0
        self.acknowledged: set[str] = set()

    def _next_id(self) -> str:
        self.n += 1
        return f"soak-{self.n}"

    async def one(self, http: httpx.AsyncClient, rng: random.Random) -> None:
        roll = rng.random()
        ids: list[str] = []
        try:
            if roll < 0.01:
                r = await self._bad(http, rng)
            elif roll < 0.60:
                ids = [self._next_id()]
                r = await http.post("/v1/score", headers=self.auth, json={
                    "leads": [{**self.lead, "lead_id": ids[0]}]})
            elif roll < 0.75:
                ids = [self._next_id() for _ in range(10)]
                r = await http.post("/v1/score", headers=self.auth, json={
                    "leads": [{**self.lead, "lead_id": i} for i in ids], "explain": False})
            elif roll < 0.80:
                r = await http.post("/v1/accounts/score", headers=self.auth, json={
                    "account_id": "ACME", "attributes": {"industry": "software"},
                    "contacts": self.lead["account"]["contacts"]})
            elif roll < 0.88:
                r = await http.get("/v1/thresholds", headers=self.auth)
            elif roll < 0.93:
                by = rng.choice(["source", "persona", None])
                r = await http.get("/v1/funnel", headers=self.auth,
                                   params=None if by is None else {"by": by})
            elif roll < 0.97:
                r = await http.get("/readyz")
            else:
                r = await http.get("/metrics")
        except httpx.HTTPError:
            if roll < 0.01:  # an oversized upload cut off by its 413: the point of the limit
                self.cut_off += 1
            else:
                self.transport_errors += 1
            return
        self.statuses[r.status_code] += 1
        if r.status_code == 200 and ids:
            self.acknowledged.update(ids)

    async def _bad(self, http: httpx.AsyncClient, rng: random.Random) -> httpx.Response:
        kind = rng.randrange(6)
        json_ct = {"Content-Type": "application/json"}
        if kind == 0:  # no key, a body that is not even JSON
            return await http.post("/v1/score", content=b'{"leads":[', headers=json_ct)
        if kind == 1:
            return await http.post("/v1/score", content=b'{"leads":[{"lead_id":"x","v":NaN}]}',
                                   headers={**self.auth, **json_ct})
        if kind == 2:
            return await http.post("/v1/score", content=b"leads=1",
                                   headers={**self.auth, "Content-Type": "text/plain"})
        if kind == 3:
            return await http.post("/v1/score", content=b"[" * (17 * 1024 * 1024),
                                   headers={**self.auth, **json_ct})
        if kind == 4:
            return await http.get(f"/no/such/{rng.randrange(10**9)}")
        return await http.put("/v1/thresholds", headers={**self.admin, **json_ct},
                              content=b'{"mql": 1e309, "reason": "overflow"}')


async def run(url: str, load: Load, seconds: float, concurrency: int,
              on_warm: asyncio.Event) -> float:
    deadline = time.monotonic() + seconds
    warm_at = time.monotonic() + min(60.0, seconds / 10)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
            while time.monotonic() < deadline:
                await load.one(http, rng)
                if not on_warm.is_set() and time.monotonic() >= warm_at:
                    on_warm.set()

    start = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        _train(tmp)
        db = f"sqlite:///{tmp / 'scores.db'}"
        migrate(db)
        engine = engine_for(db)
        key, admin = create_key(engine, "soak", ["score"]), create_key(engine, "ops", ["admin"])
        port = free_port()
        env = {**os.environ, "PROPENSITY_MODELS_DIR": str(tmp / "models"),
               "PROPENSITY_DATABASE_URL": db, "PROPENSITY_DATA_PATH": str(tmp / "export")}
        server = subprocess.Popen([str(BIN / "propensity"), "serve", "--port", str(port)],
                                  env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                                  stderr=open(tmp / "server.log", "wb"))  # noqa: SIM115
        url = f"http://127.0.0.1:{port}"
        wait(f"{url}/readyz")
        load = Load(key, admin, _lead(pd.Timestamp("2025-06-01", tz="UTC")))
        warm = asyncio.Event()
        rss: dict[str, int] = {"start": rss_kb(server.pid)}

        async def soak() -> float:
            async def mark() -> None:
                await warm.wait()
                rss["warm"] = rss_kb(server.pid)

            marker = asyncio.create_task(mark())
            took = await run(url, load, args.seconds, args.concurrency, warm)
            await marker
            return took

        took = asyncio.run(soak())
        rss["end"] = rss_kb(server.pid)
        server.send_signal(signal.SIGTERM)
        graceful = server.wait(timeout=120) in (0, -signal.SIGTERM)
        with engine.connect() as conn:
            logged = set(conn.execute(sa.select(score_log.c.lead_id)).scalars())
        missing = load.acknowledged - logged
        total = sum(load.statuses.values())
        five = sum(n for code, n in load.statuses.items() if code >= 500)
        growth = 100 * (rss["end"] - rss["warm"]) / rss["warm"]
        print(f"{total:,} requests in {took:.0f} s: {total / took:,.0f} req/s at concurrency "
              f"{args.concurrency}")
        print("answers: " + ", ".join(f"{c}: {n:,}" for c, n in sorted(load.statuses.items())))
        print(f"5xx: {five}   transport errors: {load.transport_errors} (and {load.cut_off} bad "
              "uploads cut off by the server's 413 before the client finished sending)")
        print(f"server RSS: {rss['start'] / 1024:.0f} MB at start, {rss['warm'] / 1024:.0f} MB "
              f"after warm-up, {rss['end'] / 1024:.0f} MB at the end ({growth:+.1f}%)")
        print(f"scores acknowledged: {len(load.acknowledged):,}; in the log after SIGTERM: "
              f"{len(load.acknowledged) - len(missing):,}; missing: {len(missing)}; graceful "
              f"shutdown: {graceful}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
