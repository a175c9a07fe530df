"""The HubSpot workflow action endpoint under a steady 200 req/s, as HubSpot would call it:
every request signed (v3, as the test vectors are computed: hashlib/hmac), each with its own
callbackId, so each is checked, scored and stored. Target: p99 < 20 ms with 2 workers.

Open loop: request k is sent at t0 + k / rate whatever the earlier ones are doing, and its
latency is counted from that planned time, so a stall shows in the tail instead of slowing
the load (no coordinated omission). The server is `propensity serve --workers 2` over
SQLite, started here; beside it, `POST /v1/score` for the same leads at the same rate.

The client must not take the server's CPU (on 2 cores, a Python HTTP client at 200 req/s took
a good share of one): every request is signed and written out as HTTP/1.1 bytes before the
timed run (the v3 timestamps stay well inside HubSpot's 5 minutes for runs of a minute), and
the run only writes those bytes on kept-alive connections (opened as needed: a request
finding none idle opens one, so a slow server never holds the plan back) and reads the
status line and the body. The figures say what the client's and the server's processes used
(CPU ms a request) and the load average: the machine is shared, and a figure taken while
others load it says so.

    PYTHONPATH=src:. .venv/bin/python benchmarks/bench_crm_action.py --seconds 10

`--src DIR` (given more than once) runs the server from each checkout in turn on the same
registry, `--rounds N` repeats the turns (A, B, A, B): a change measured against its base in
one run. On a quiet machine (the figure the issue asks for):

    PYTHONPATH=src:. .venv/bin/python benchmarks/bench_crm_action.py --seconds 30 --rounds 3
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
from dataclasses import dataclass, field
from pathlib import Path

from bench_serve import _cpu_seconds, _stop, free_port, settled, wait
from propensity.export_reader import load_export
from propensity.lifecycle import train_and_register
from propensity.settings import Settings
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.training import TrainConfig

BIN = Path(sys.executable).parent
SECRET = "bench-client-secret"
PATH = "/v1/crm/hubspot/action"
WARM = 40
"""Requests sent one by one before the timed run (connections opened, both workers warm)."""


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


def raw_request(port: int, path: str, payload: bytes, headers: dict[str, str]) -> bytes:
    """One POST as the bytes a client writes (HTTP/1.1, kept alive)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             f"Content-Length: {len(payload)}",
             *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode() + payload


def requests_for(port: int, n: int, first: int, key: str | None) -> list[bytes]:
    """`n` signed action requests (or /v1/score requests with `key`), ready to write."""
    if key is not None:
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        return [raw_request(port, "/v1/score", score_body(first + k), auth) for k in range(n)]
    url = f"http://127.0.0.1:{port}{PATH}"
    return [raw_request(port, PATH, b, signed(url, b))
            for b in (body(first + k) for k in range(n))]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)
    not_success: int = 0

    def count(self, code: int) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1


class Connections:
    """Kept-alive connections to the server; a request that finds none idle opens one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        """Most recently used last, taken first: the others may sit idle long enough for the
        server to close them (its keep-alive), which costs a retry on a new connection."""

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):  # a kept-alive connection the server closed: once more, anew
            conn = self.idle.pop() if self.idle and not attempt else \
                await asyncio.open_connection("127.0.0.1", self.port)
            try:
                answer = await _exchange(*conn, raw)
            except (ConnectionError, asyncio.IncompleteReadError, ValueError):
                conn[1].close()
                if attempt:
                    raise
                continue
            self.idle.append(conn)
            return answer
        raise AssertionError("unreachable")

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    raw: bytes) -> tuple[int, bytes]:
    writer.write(raw)
    line = await reader.readline()
    if not line:
        raise ConnectionResetError("the server closed the connection")
    status = int(line.split(b" ", 2)[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def load(port: int, raws: list[bytes], rate: float, action: bool) -> Tally:
    """Send `raws[WARM:]` at `rate` a second, open loop, after `raws[:WARM]` one by one."""
    conns = Connections(port)
    tally = Tally()

    async def one(raw: bytes, planned: float) -> None:
        try:
            status, answer = await conns.send(raw)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            tally.count(-1)  # a connection error: counted, not fatal
            print(f"connection error: {type(exc).__name__} {exc}", flush=True)
            return
        tally.latencies.append((time.perf_counter() - planned) * 1000)
        tally.count(status)
        if action and status == 200 and b'"SUCCESS"' not in answer:
            tally.not_success += 1

    for raw in raws[:WARM]:
        await one(raw, time.perf_counter())
    tally = Tally()
    tasks = []
    start = time.perf_counter()
    for k, raw in enumerate(raws[WARM:]):
        planned = start + k / rate
        delay = planned - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(raw, planned)))
    await asyncio.gather(*tasks)
    conns.close()
    return tally


def _registry(tmp: Path) -> None:
    """A champion trained on a generated company."""
    tables, truth = generate_export(SyntheticConfig(n_leads=4_000, seed=9))
    write_export(tables, truth, tmp / "export")
    train_and_register(load_export(tmp / "export"), TrainConfig.model_validate(
        {"model": "lead-conversion", "search": False}), tmp / "export", gate="force",
        settings=Settings(models_dir=tmp / "models"))


def _database(path: Path, env: dict[str, str]) -> tuple[str, str]:
    """A database with a score key, migrated by the checkout that will serve it (another
    checkout's schema may be ahead: its migrations would not be known to this one)."""
    db = f"sqlite:///{path}"
    key = subprocess.run(
        [sys.executable, "-c", "import sys; from propensity.database import engine_for, "
         "migrate; from propensity.api_keys import create_key; migrate(sys.argv[1]); "
         "print(create_key(engine_for(sys.argv[1]), 'bench', ['score']))", db],
        env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return db, key


def _run(port: int, server: subprocess.Popen[bytes], key: str | None, args: argparse.Namespace,
         first: int) -> str:
    n = WARM + int(args.rate * args.seconds)
    raws = requests_for(port, n, first, key)  # signed before the clock starts
    client0, server0 = time.process_time(), _cpu_seconds(server)
    tally = asyncio.run(load(port, raws, args.rate, key is None))
    client_ms = (time.process_time() - client0) * 1e3 / (n - WARM)
    server_ms = (_cpu_seconds(server) - server0) * 1e3 / (n - WARM)
    lat = tally.latencies
    q = (statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1
         else [float("nan")] * 99)
    label = "HubSpot action (v3)" if key is None else "POST /v1/score (same leads)"
    return (f"{label:<28} {args.rate:.0f} req/s x {args.seconds:.0f} s: "
            f"p50 {statistics.median(lat):7.1f} ms  p99 {q[98]:8.1f} ms  "
            f"max {max(lat):8.1f} ms  status {dict(sorted(tally.codes.items()))}  "
            f"not SUCCESS {tally.not_success}  CPU/req server {server_ms:.2f} ms "
            f"client {client_ms:.2f} ms  load {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--src", type=Path, action="append", default=None,
                        help="a checkout to run the server from (again for another)")
    parser.add_argument("--no-reference", action="store_true",
                        help="leave out POST /v1/score")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    lines: list[str] = []
    try:
        _registry(tmp)
        srcs: list[Path | None] = [p.resolve() for p in args.src] if args.src else [None]
        first = 0
        for turn, src in enumerate([s for _ in range(args.rounds) for s in srcs]):
            env = {**os.environ, "PROPENSITY_MODELS_DIR": str(tmp / "models"),
                   "PROPENSITY_HUBSPOT_CLIENT_SECRET": SECRET}
            if src is not None:
                env["PYTHONPATH"] = f"{src / 'src'}:{src}"
            db, key = _database(tmp / f"scores-{turn}.db", env)
            env["PROPENSITY_DATABASE_URL"] = db
            port = free_port()
            log = (tmp / "server.log").open("ab")
            server = subprocess.Popen([str(BIN / "propensity"), "serve", "--port", str(port),
                                       "--workers", str(args.workers)], env=env, cwd=tmp,
                                      stdout=log, stderr=subprocess.STDOUT)
            try:
                wait(f"http://127.0.0.1:{port}/readyz", seconds=600)
                settled(server, seconds=600)
                for k in [None] if args.no_reference else [None, key]:
                    line = _run(port, server, k, args, first)
                    first += 1_000_000
                    lines.append(f"{'' if src is None else src.name + ': '}{args.workers} w, "
                                 + line)
                    print(lines[-1], flush=True)
            finally:
                _stop(server)
        errors = [line for line in (tmp / "server.log").read_text().splitlines()
                  if "Error" in line or "Traceback" in line]
        print(f"\nserver log: {len(errors)} error lines", *errors[-10:], sep="\n")
        print("\n".join(lines))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
