"""Unauthenticated stalled uploads against a real `propensity serve` worker (issue 27, item 3).

N clients (1,000 by default) open a connection each, send the headers of a POST /v1/score
that declares 16 MB without a key, send part of the body (0.25 MB) and stall. Meanwhile an
authenticated client scores one lead at a time over its own keep-alive connection. Printed:
the worker's RSS growth (peak during the attack minus before it), how many of the stalled
connections the server closed and how long the last one took, and the authenticated
client's score latency (p50, p99) before and during the attack, the CPU time the worker
spent while the attack lasted (per upload), and the longest stretch of CPU time the event
loop's thread spent between two ticks of a 1 ms timer (a probe the script puts in the
server's `sitecustomize`): on a loaded machine wall-clock latencies stretch with the load,
while this is the work a keyed request read in the same turn waits behind. Targets: RSS
growth < 50 MB, every connection closed within 15 s, p99 < 20 ms.

`--src DIR` runs the server from another checkout (e.g. a worktree of an older commit), to
compare before and after in one run:

    .venv/bin/python benchmarks/bench_hostile.py --src /tmp/before --src .
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from bench_serve import _lead, free_port, settled, wait
from propensity.api_keys import create_key
from propensity.database import engine_for, migrate
from propensity.export_reader import load_export
from propensity.lifecycle import train_and_register
from propensity.settings import Settings
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.training import TrainConfig

DECLARED = 16_000_000
PROBE = '''"""bench_hostile's probe, the server's sitecustomize: from SIGUSR1 to SIGUSR2, the CPU
time the event loop's thread spends between two ticks of a 1 ms timer, as JSON to
$BENCH_PROBE_OUT. A machine's load stretches wall-clock latencies; this is the work a request
read in the same turn waits behind, however loaded the machine is."""
import asyncio, json, os, signal, time

_gaps, _on = [], [False]


def _tick(last):
    if _on[0]:
        now = time.thread_time()
        _gaps.append(now - last)
        asyncio.get_running_loop().call_later(0.001, _tick, now)


def _start(*_):
    _gaps.clear()
    _on[0] = True
    asyncio.get_running_loop().call_soon(_tick, time.thread_time())


def _stop(*_):
    _on[0] = False
    with open(os.environ["BENCH_PROBE_OUT"], "w") as out:
        json.dump(_gaps, out)


if os.environ.get("BENCH_PROBE_OUT"):
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
'''


async def _stalled(port: int, send: bytes, stall: float) -> float | None:
    """One stalled upload: seconds until the server closed it, None if still open after
    `stall` seconds."""
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return time.monotonic() - start  # refused at the door
    head = (f"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {DECLARED}\r\n\r\n").encode()
    try:
        writer.write(head + send)
        async with asyncio.timeout(stall):
            await writer.drain()
            while await reader.read(65536):
                pass
        return time.monotonic() - start
    except TimeoutError:
        return None
    except OSError:  # reset: closed by the server while we were sending
        return time.monotonic() - start
    finally:
        writer.close()


def _score_loop(url: str, key: str, lead: dict, stop: threading.Event, out: list[float],
                refused: list[int]) -> None:
    """One lead at a time over one keep-alive connection (a new one if the server closed
    it); a 503 (the worker's connection cap, when that connection had to be reopened during
    the attack) is counted and retried after its Retry-After."""
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:
        while not stop.is_set():
            t0 = time.perf_counter()
            answer = http.post(url, json={"leads": [lead], "explain": True})
            if answer.status_code == 503:
                refused.append(1)
                time.sleep(float(answer.headers.get("retry-after", "1")))
                continue
            answer.raise_for_status()
            out.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.005)


def _stalls(out: Path) -> str:
    """The probe's figures: the longest CPU stretches of the event loop between two ticks."""
    deadline = time.monotonic() + 10
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    gaps = sorted(g * 1000 for g in json.loads(out.read_text())) if out.exists() else []
    if not gaps:
        return "event loop probe: no figures"
    return (f"event loop CPU between two 1 ms ticks: max {gaps[-1]:.1f} ms, "
            f"{sum(g > 5 for g in gaps)} stretches over 5 ms")


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else float("nan")


def run(src: Path, models: Path, db: str, key: str, lead: dict, n: int, send_mb: float,
        stall: float, work: Path) -> str:
    port = free_port()
    probe = work / "probe"
    probe.mkdir(exist_ok=True)
    (probe / "sitecustomize.py").write_text(PROBE)
    env = {**os.environ, "PROPENSITY_MODELS_DIR": str(models), "PROPENSITY_DATABASE_URL": db,
           "PYTHONPATH": f"{probe}:{src / 'src'}:{src}",
           "BENCH_PROBE_OUT": str(probe / f"gaps-{port}.json")}
    proc = subprocess.Popen([sys.executable, "-c", "from propensity.cli import main; main()",
                             "serve", "--port", str(port)], env=env, cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait(f"http://127.0.0.1:{port}/readyz")
        settled(proc)
        worker = psutil.Process(proc.pid)
        url = f"http://127.0.0.1:{port}/v1/score"
        quiet: list[float] = []
        stop = threading.Event()
        refused: list[int] = []
        t = threading.Thread(target=_score_loop, args=(url, key, lead, stop, quiet, refused))
        t.start()
        time.sleep(5)
        stop.set()
        t.join()
        before = worker.memory_info().rss
        peak = [before]
        attacked: list[float] = []
        stop = threading.Event()
        sampler_stop = threading.Event()

        def sample() -> None:
            while not sampler_stop.is_set():
                peak[0] = max(peak[0], worker.memory_info().rss)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        scorer = threading.Thread(target=_score_loop,
                                  args=(url, key, lead, stop, attacked, refused))
        scorer.start()
        time.sleep(1)  # its connection open before the attack's
        body = b"[" * int(send_mb * 1_000_000)

        async def attack() -> list[float | None]:
            return list(await asyncio.gather(*(_stalled(port, body, stall) for _ in range(n))))

        cpu = worker.cpu_times()
        proc.send_signal(signal.SIGUSR1)
        closed = asyncio.run(attack())
        proc.send_signal(signal.SIGUSR2)
        cpu_after = worker.cpu_times()
        stop.set()
        scorer.join()
        sampler_stop.set()
        sampler.join()
        done = [c for c in closed if c is not None]
        stalls = _stalls(Path(env["BENCH_PROBE_OUT"]))
        grown = (peak[0] - before) / 2**20
        user, system = (cpu_after.user - cpu.user) * 1000, (cpu_after.system - cpu.system) * 1000
        spent = user + system
        p99 = _p(attacked, 99)
        met = {"RSS growth < 50 MB": grown < 50,
               f"all {n} closed within 15 s": len(done) == n and max(done, default=99) <= 15,
               "a concurrent client's score p99 < 20 ms": p99 < 20}
        verdict = ", ".join(f"{k}: {'met' if ok else 'NOT met'}" for k, ok in met.items())
        return (f"{src}: {verdict}\n  RSS +{grown:.0f} MB (peak during the attack); "
                f"{len(done)}/{n} closed by the server within {stall:g} s, the last after "
                f"{max(done, default=float('nan')):.2f} s; score p50/p99 "
                f"{_p(quiet, 50):.1f}/{_p(quiet, 99):.1f} ms quiet ({len(quiet)}), "
                f"{_p(attacked, 50):.1f}/{p99:.1f} ms during ({len(attacked)}, "
                f"{len(refused)} refused 503); worker CPU during the attack {spent:.0f} ms "
                f"(user {user:.0f}, system {system:.0f}; {spent * 1000 / n:.0f} us an upload, "
                f"the keyed client's requests included); {stalls}; "
                f"load average {os.getloadavg()[0]:.1f}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", type=Path, action="append", default=None,
                        help="checkout to serve from (repeat to compare); default: this one")
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--send-mb", type=float, default=0.25,
                        help="body bytes each stalled upload sends before it stalls")
    parser.add_argument("--stall", type=float, default=15.0,
                        help="how long a stalled upload waits for the server to close it")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    tables, truth = generate_export(SyntheticConfig(n_leads=3000, seed=9))
    write_export(tables, truth, tmp / "export")
    export = load_export(tmp / "export")
    settings = Settings(models_dir=tmp / "models")
    train_and_register(export, TrainConfig(model="lead-conversion"), tmp / "export",
                       gate="force", settings=settings)
    db = f"sqlite:///{tmp / 'scores.db'}"
    migrate(db)
    key = create_key(engine_for(db), "bench", ["score"])
    import pandas as pd

    lead = _lead(pd.Timestamp("2025-06-01", tz="UTC"))
    for src in args.src or [Path.cwd()]:
        print(run(src.resolve(), tmp / "models", db, key, lead, args.uploads, args.send_mb,
                  args.stall, tmp), flush=True)


if __name__ == "__main__":
    main()
