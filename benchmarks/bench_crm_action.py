"""The HubSpot workflow action endpoint under a steady 200 req/s, as HubSpot would call it:
every request signed (v3, as the test vectors are computed: hashlib/hmac), each with its own
callbackId, so each is checked, looked up, scored and stored. Target: p99 < 20 ms with 2
workers on this 2-core machine.

Open loop: request k is sent at t0 + k / rate whatever the earlier ones are doing, and its
latency is counted from that planned time, so a stall shows in the tail instead of slowing
the load (no coordinated omission). The client is this process (httpx, asyncio); the
server is `propensity serve --workers 2` over SQLite, started here.

    PYTHONPATH=src:. .venv/bin/python benchmarks/bench_crm_action.py --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench_serve import _stop, free_port, settled, wait
from propensity.api_keys import create_key
from propensity.database import engine_for, migrate
from propensity.export_reader import load_export
from propensity.lifecycle import train_and_register
from propensity.settings import Settings
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.training import TrainConfig

BIN = Path(sys.executable).parent
SECRET = "bench-client-secret"
PATH = "/v1/crm/hubspot/action"


def body(k: int) -> bytes:
    return json.dumps({
        "callbackId": f"bench-{k}", "origin": {"portalId": 62515},
        "object": {"objectId": f"L{k % 3000 + 1:07d}", "objectType": "CONTACT"},
        "inputFields": {"createdate": "1704099939000", "hs_analytics_source": "direct",
                        "country": "BR", "job_function": "marketing",
                        "hs_lifecyclestage_marketingqualifiedlead_date": "1704199939000"},
    }).encode()


def score_body(k: int) -> bytes:
    """The same lead as `body(k)`, as /v1/score takes it (the reference beside it)."""
    return json.dumps({"leads": [{
        "lead_id": f"L{k % 3000 + 1:07d}", "created_at": "2024-01-01T09:05:39Z",
        "source": "direct", "country": "BR", "job_function": "marketing",
        "stage_history": [{"stage": "mql", "entered_at": "2024-01-02T12:52:19Z"}]}]}).encode()


def signed(url: str, payload: bytes) -> dict[str, str]:
    stamp = str(int(time.time() * 1000))
    mac = hmac.new(SECRET.encode(), b"POST" + url.encode() + payload + stamp.encode(),
                   hashlib.sha256).digest()
    return {"X-HubSpot-Signature-v3": base64.b64encode(mac).decode(),
            "X-HubSpot-Request-Timestamp": stamp, "Content-Type": "application/json"}


async def load(url: str, rate: float, seconds: float, key: str | None = None
               ) -> tuple[list[float], dict[int, int], int]:
    """Latencies (ms, from each request's planned time), status counts, FAIL_CONTINUEs."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    failed = 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        async def one(k: int, planned: float) -> None:
            nonlocal failed
            payload = body(k) if key is None else score_body(k)
            headers = signed(url, payload) if key is None else {
                "Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            try:
                r = await http.post(url, content=payload, headers=headers)
            except httpx.TransportError as exc:  # counted, not fatal: the figures still come
                codes[-1] = codes.get(-1, 0) + 1  # -1: a connection error
                print(f"request {k}: {type(exc).__name__} {exc}", flush=True)
                return
            latencies.append((time.perf_counter() - planned) * 1000)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if key is None and r.status_code == 200 and (
                    r.json()["outputFields"]["hs_execution_state"] != "SUCCESS"):
                failed += 1

        for k in range(20):  # warm the connections and both workers
            await one(10_000_000 + k, time.perf_counter())
        latencies.clear()
        codes.clear()
        start = time.perf_counter()
        tasks = []
        n = int(rate * seconds)
        for k in range(n):
            planned = start + k / rate
            delay = planned - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(k, planned)))
        await asyncio.gather(*tasks)
    return latencies, codes, failed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        tables, truth = generate_export(SyntheticConfig(n_leads=4_000, seed=9))
        write_export(tables, truth, tmp / "export")
        export = load_export(tmp / "export")
        settings = Settings(models_dir=tmp / "models")
        train_and_register(export, TrainConfig.model_validate(
            {"model": "lead-conversion", "search": False}), tmp / "export", gate="force",
            settings=settings)
        db = f"sqlite:///{tmp / 'scores.db'}"
        migrate(db)
        key = create_key(engine_for(db), "bench", ["score"])
        env = {**os.environ, "PROPENSITY_MODELS_DIR": str(tmp / "models"),
               "PROPENSITY_DATABASE_URL": db, "PROPENSITY_HUBSPOT_CLIENT_SECRET": SECRET}
        port = free_port()
        log = (tmp / "server.log").open("wb")
        server = subprocess.Popen([str(BIN / "propensity"), "serve", "--port", str(port),
                                   "--workers", str(args.workers)], env=env, cwd=tmp,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            wait(f"http://127.0.0.1:{port}/readyz")
            settled(server)
            for label, url, k in (
                    ("HubSpot action (signed v3, new callbackId each)",
                     f"http://127.0.0.1:{port}{PATH}", None),
                    ("POST /v1/score, the same leads (reference)",
                     f"http://127.0.0.1:{port}/v1/score", key)):
                lat, codes, failed = asyncio.run(load(url, args.rate, args.seconds, k))
                q = statistics.quantiles(lat, n=100)
                print(f"{label:<50} {args.workers} workers, {args.rate:.0f} req/s for "
                      f"{args.seconds:.0f} s ({len(lat)} requests): "
                      f"p50 {statistics.median(lat):.1f} ms  p99 {q[98]:.1f} ms  "
                      f"max {max(lat):.1f} ms  status {dict(sorted(codes.items()))}  "
                      f"FAIL_CONTINUE {failed}", flush=True)
        finally:
            _stop(server)
            errors = [line for line in (tmp / "server.log").read_text().splitlines()
                      if "Error" in line or "Traceback" in line]
            print(f"server log: {len(errors)} error lines", *errors[-10:], sep="\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
