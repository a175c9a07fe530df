"""The scorer under load, beside `mlflow models serve` on the same registered model.

Targets: one lead with 50 events, reasons included, at concurrency 8 on this 2-core machine:
>= 500 requests/s, p99 < 50 ms, >= 10x the throughput of `mlflow models serve`; a batch of
1,000 leads scored in < 1 s. Load comes from wrk, a separate process, on 127.0.0.1, for a
bounded time. Needs wrk (Debian: `apt-get install wrk`).

    .venv/bin/python benchmarks/bench_serve.py --seconds 15
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd

from propensity.api_keys import create_key
from propensity.database import engine_for, migrate
from propensity.export import load_export
from propensity.models.bundle import from_training
from propensity.models.online import example_rows
from propensity.models.registry import log_and_register, promote
from propensity.settings import Settings
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.training import TrainConfig, train_export

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


def wrk(url: str, body: dict, headers: dict[str, str], seconds: int, conns: int) -> dict:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    lines.append(f"wrk.body = [==[{json.dumps(body)}]==]")
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True,
                         timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if m is None:
            return float("nan")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": ms("50"), "p99_ms": ms("99"),
            "errors": int(non2xx.group(1)) if non2xx else 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp())
    tables, truth = generate_export(SyntheticConfig(n_leads=20_000, seed=9))
    write_export(tables, truth, tmp / "export")
    export = load_export(tmp / "export")
    settings = Settings(models_dir=tmp / "models")
    for name in ("lead-conversion", "stage-advancement"):
        result = train_export(export, TrainConfig(model=name))  # type: ignore[arg-type]
        log_and_register(result, from_training(result, "export"), data={"path": "bench"},
                         input_example=example_rows(export, result.holdout), settings=settings)
        promote(name, settings=settings)
    db = f"sqlite:///{tmp / 'scores.db'}"
    migrate(db)
    key = create_key(engine_for(db), "bench", ["score"])
    # one lead with 50 events, the last 120 days before as_of
    as_of = pd.Timestamp("2025-06-01", tz="UTC")
    types = ["page_view", "email_open", "pricing_page_view", "email_click", "webinar_attended",
             "demo_request", "content_download", "form_submit", "meeting", "call"]
    lead = {"lead_id": "bench-1", "created_at": "2025-01-15T09:00:00Z", "source": "referral",
            "persona": "champion", "account_id": "ACME", "job_function": "it",
            "account": {"industry": "software", "employees": 250},
            "stage": "mql", "stage_entered_at": "2025-03-01T00:00:00Z",
            "as_of": as_of.isoformat(),
            "events": [{"occurred_at": (as_of - pd.Timedelta(hours=57 * i + 3)).isoformat(),
                        "event_type": types[i % len(types)], "channel": "web",
                        "value": float(i)} for i in range(50)]}
    env = {**os.environ, "PROPENSITY_MODELS_DIR": str(tmp / "models"),
           "PROPENSITY_DATABASE_URL": db}
    port = free_port()
    ours = subprocess.Popen([str(BIN / "propensity"), "serve", "--port", str(port),
                             "--workers", str(args.workers)], env=env, cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mport = free_port()
    mlflow_env = {**env, "MLFLOW_TRACKING_URI": settings.tracking_uri,
                  "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}  # it execs `uvicorn`
    theirs = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m",
                               "models:/lead-conversion@champion", "-p", str(mport),
                               "--env-manager", "local", "--workers", "1"], env=mlflow_env,
                              cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait(f"http://127.0.0.1:{port}/readyz")
        wait(f"http://127.0.0.1:{mport}/ping")
        auth = {"Authorization": f"Bearer {key}"}
        check = httpx.post(f"http://127.0.0.1:{port}/v1/score", json={"leads": [lead]},
                           headers=auth, timeout=30)
        check.raise_for_status()
        assert check.json()["scores"][0]["reasons"]["positive"], check.text
        ours_r = wrk(f"http://127.0.0.1:{port}/v1/score", {"leads": [lead]}, auth,
                     args.seconds, args.connections)
        row = {k: v for k, v in lead.items() if k not in ("events", "account")}
        row["events"] = json.dumps(lead["events"])
        row["account"] = json.dumps(lead["account"])
        row["stage_history"] = "[]"
        theirs_body = {"dataframe_records": [row]}
        probe = httpx.post(f"http://127.0.0.1:{mport}/invocations", json=theirs_body,
                           timeout=60)
        probe.raise_for_status()
        theirs_r = wrk(f"http://127.0.0.1:{mport}/invocations", theirs_body, {}, args.seconds,
                       args.connections)
        batch = {"leads": [{**lead, "lead_id": f"b{i}"} for i in range(1000)]}
        times = []
        with httpx.Client(timeout=60) as http:
            for _ in range(5):
                t0 = time.perf_counter()
                r = http.post(f"http://127.0.0.1:{port}/v1/score", json=batch, headers=auth)
                times.append(time.perf_counter() - t0)
                r.raise_for_status()
        print(f"propensity serve ({args.workers} workers, httptools): "
              f"{ours_r['rps']:,.0f} req/s, p50 {ours_r['p50_ms']:.1f} ms, "
              f"p99 {ours_r['p99_ms']:.1f} ms, non-2xx {ours_r['errors']}")
        print(f"mlflow models serve (1 worker):   {theirs_r['rps']:,.1f} req/s, "
              f"p50 {theirs_r['p50_ms']:.1f} ms, p99 {theirs_r['p99_ms']:.1f} ms, "
              f"non-2xx {theirs_r['errors']}")
        print(f"ratio: {ours_r['rps'] / max(theirs_r['rps'], 1e-9):,.1f}x")
        print(f"batch of 1,000 leads x 50 events: median {statistics.median(times):.3f} s, "
              f"best {min(times):.3f} s (5 runs, JSON in and out included)")
        print(f"(single lead, 50 events, reasons and next_stage included; wrk -t2 "
              f"-c{args.connections} -d{args.seconds}s on 127.0.0.1)")
    finally:
        for p in (ours, theirs):
            p.send_signal(signal.SIGTERM)
        for p in (ours, theirs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
