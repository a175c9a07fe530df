"""The scorer under load, beside `mlflow models serve` on the same registered model, at the
same worker counts (1 and 2), in one run.

The request is what a CRM sends for a lead at a buying committee: one lead with 50 events,
its stage history, an open opportunity, and its account with 5 other contacts and their
events. Targets at concurrency 8 on this 2-core machine: >= 2,000 req/s with reasons,
>= 3,500 req/s with `explain=false`, p99 < 10 ms, no errors. Load comes from wrk, a separate
process, on 127.0.0.1, for a bounded time (needs wrk: `apt-get install wrk`). A batch of
1,000 such leads is timed too, and `GET /healthz` (a route that does nothing) shows what the
framework and the machine cost that day: this shared machine runs the same code ~20% faster
on some days than on others.

    .venv/bin/python benchmarks/bench_serve.py --seconds 15

Each worker count runs the scorer twice, with the durable score log (the default: a score is
answered once its row is fdatasynced to local disk) and without (`PROPENSITY_LOG_DURABLE=
false`: rows wait in memory for the next flush), so the durable log's cost is measured beside
what it costs nothing, in one run. `--log durable` (or `fast`) runs one of them only;
`--no-mlflow` leaves out `mlflow models serve`.

`--src DIR` (given more than once) runs the scorer from each checkout in turn, on the same
registry, and `--rounds N` repeats the turns (A, B, A, B): a change's cost measured against
its base in one run, interleaved so that what else loads the machine falls on both alike.

    .venv/bin/python benchmarks/bench_serve.py --workers 2 --log durable --no-mlflow \
        --rounds 2 --src ../main --src .
"""

from __future__ import annotations

import argparse
import contextlib
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
import psutil

from propensity.api_keys import create_key
from propensity.database import engine_for, migrate
from propensity.export_reader import load_export
from propensity.lifecycle import train_and_register
from propensity.settings import Settings
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.training import TrainConfig

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


def settled(proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    """Wait until the server's processes are idle: every worker has loaded its models.

    `/readyz` answers as soon as one worker is up. wrk opens its connections at its start
    and keeps them, so a worker still loading then gets none of them for the whole run: the
    first 2-worker figure was once one worker's (777 req/s, below the 1-worker 855)."""
    tree = psutil.Process(proc.pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        procs = [tree, *tree.children(recursive=True)]
        for p in procs:
            p.cpu_percent()
        time.sleep(1.0)
        busy = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):  # a process that has just ended
                busy += p.cpu_percent()
        if busy < 10:
            return
    raise RuntimeError("the server's workers did not settle")


def wrk(url: str, body: dict | None, headers: dict[str, str], seconds: int, conns: int
        ) -> dict:
    """wrk's figures for POSTing `body` to `url` (a plain GET without one)."""
    script: list[str] = []
    if body is not None:
        path = Path(tempfile.mkstemp(suffix=".lua")[1])
        lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
        lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
        lines.append(f"wrk.body = [==[{json.dumps(body)}]==]")
        path.write_text("\n".join(lines) + "\n")
        script = ["-s", str(path)]
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency", *script,
                          url], capture_output=True, text=True, check=True,
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


def _lead(as_of: pd.Timestamp) -> dict:
    types = ["page_view", "email_open", "pricing_page_view", "email_click", "webinar_attended",
             "demo_request", "content_download", "form_submit", "meeting", "call"]
    personas = ["executive", "champion", "end_user", "end_user", "executive"]
    return {
        "lead_id": "bench-1", "created_at": "2025-01-15T09:00:00Z", "source": "referral",
        "persona": "champion", "account_id": "ACME", "job_function": "it", "owner_id": "rep_03",
        "stage_history": [{"stage": "mql", "entered_at": "2025-02-01T00:00:00Z"},
                          {"stage": "sql", "entered_at": "2025-03-01T00:00:00Z"}],
        "as_of": as_of.isoformat(),
        "events": [{"occurred_at": (as_of - pd.Timedelta(hours=57 * i + 3)).isoformat(),
                    "event_type": types[i % len(types)], "channel": "web", "value": float(i)}
                   for i in range(50)],
        "opportunities": [{"opportunity_id": "O-1", "created_at": "2025-05-01T00:00:00Z",
                           "closed_at": None, "amount": 25000.0, "status": "open"}],
        "account": {"industry": "software", "employees": 250, "contacts": [
            {"lead_id": f"c{k}", "persona": personas[k],
             "created_at": "2025-01-05T00:00:00Z",
             "events": [{"occurred_at": (as_of - pd.Timedelta(days=3 * j + k)).isoformat(),
                         "event_type": types[(j + k) % len(types)]} for j in range(6)]}
            for k in range(5)]},
    }


def _start(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _line(label: str, r: dict) -> str:
    cpu = f"   CPU {r['cpu_ms']:.2f} ms a request" if "cpu_ms" in r else ""
    cpu += f"   {r['per_sync']:.2f} requests a sync" if "per_sync" in r else ""
    return (f"{label:<44} {r['rps']:>9,.0f} req/s   p50 {r['p50_ms']:6.1f} ms   "
            f"p99 {r['p99_ms']:6.1f} ms   non-2xx {r['errors']}{cpu}   "
            f"load {os.getloadavg()[0]:.1f}")


def _cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    """CPU time the server's processes have used: on a machine other sessions load, CPU a
    request moves far less than requests a second do."""
    tree = psutil.Process(proc.pid)
    total = 0.0
    for p in [tree, *tree.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _syncs(url: str, workers: int) -> tuple[float, float] | None:
    """(syncs of the durable score log, requests they made durable), summed over the workers,
    or None when not every worker answered. Each worker keeps its own /metrics: it is read
    over fresh connections until as many distinct answers as workers have come (the check
    request before a run went to one worker, so their counts differ)."""
    seen: set[tuple[float, float]] = set()
    for _ in range(60):
        text = httpx.get(url, timeout=10).text
        found = [float(m.group(1)) if m else 0.0 for m in (
            re.search(rf"^propensity_score_log_sync_requests_{k} (\S+)$", text, re.M)
            for k in ("count", "sum"))]
        seen.add((found[0], found[1]))
        if len(seen) == workers:
            return sum(c for c, _ in seen), sum(r for _, r in seen)
    return None


def _wrk_cpu(proc: subprocess.Popen[bytes], url: str, body: dict | None,
             headers: dict[str, str], seconds: int, conns: int, workers: int = 0) -> dict:
    """wrk's figures, the server's CPU a request and, given `workers`, the durable log's
    requests a sync: figures the load moves far less than the throughput."""
    metrics = url.replace("/v1/score", "/metrics")
    before = _syncs(metrics, workers) if workers else None
    cpu = _cpu_seconds(proc)
    r = wrk(url, body, headers, seconds, conns)
    r["cpu_ms"] = (_cpu_seconds(proc) - cpu) * 1e3 / max(r["rps"] * seconds, 1.0)
    after = _syncs(metrics, workers) if before is not None else None
    if before is not None and after is not None and after[0] > before[0]:
        r["per_sync"] = (after[1] - before[1]) / (after[0] - before[0])
    return r


def _bodies(url: str, lead: dict, auth: dict[str, str]) -> list[tuple[bool, dict]]:
    """The requests timed: with and without reasons, as the scorer answers by default, and
    again with `"outlook": true` when the checkout's scorer knows the option (the outlook's
    cost is then the difference, in one run; a scorer without it answers a 422)."""
    out = [(explain, {"leads": [lead], "explain": explain}) for explain in (True, False)]
    probe = httpx.post(url, json={"leads": [lead], "outlook": True}, headers=auth, timeout=30)
    if probe.status_code == 200:
        assert probe.json()["scores"][0]["horizons"], probe.text
        out += [(explain, {**body, "outlook": True}) for explain, body in out]
    return out


def durable_cost(runs: dict[tuple[str, bool, str], list[dict]]) -> list[str]:
    """The issue's figure: what the durable log costs of the throughput of the log kept in
    memory, from the same run (the mean of each mode's rounds, which alternate)."""
    out = []
    for (where, durable, body), durable_runs in runs.items():
        fast_runs = runs.get((where, False, body))
        if not durable or not fast_runs:
            continue
        d, f = (statistics.mean(r["rps"] for r in rs) for rs in (durable_runs, fast_runs))
        dc, fc = (statistics.mean(r["cpu_ms"] for r in rs) for rs in (durable_runs, fast_runs))
        per_sync = [r["per_sync"] for r in durable_runs if "per_sync" in r]
        syncs = f", {statistics.mean(per_sync):.2f} requests a sync" if per_sync else ""
        out.append(f"durable log's cost, {where}, {body}: {1 - d / f:+.1%} of throughput "
                   f"({d:,.0f} vs {f:,.0f} req/s), CPU a request {dc:.2f} vs {fc:.2f} ms"
                   f"{syncs} ({len(durable_runs)} + {len(fast_runs)} runs)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--log", choices=["both", "durable", "fast"], default="both")
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the log modes (and checkouts) this many times, alternating")
    parser.add_argument("--src", type=Path, action="append", default=None,
                        help="a checkout to run the scorer from (again for another)")
    parser.add_argument("--no-batch", action="store_true",
                        help="leave out the batch of 1,000 leads")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp())
    tables, truth = generate_export(SyntheticConfig(n_leads=20_000, seed=9))
    write_export(tables, truth, tmp / "export")
    export = load_export(tmp / "export")
    settings = Settings(models_dir=tmp / "models")
    for name in ("lead-conversion", "stage-advancement"):
        result = train_and_register(export, TrainConfig(model=name), tmp / "export",
                                    gate="force", settings=settings).result
        if name == "lead-conversion":
            print(f"model: {result.report['selection']['chosen']}", flush=True)
    db = f"sqlite:///{tmp / 'scores.db'}"
    migrate(db)
    key = create_key(engine_for(db), "bench", ["score"])
    lead = _lead(pd.Timestamp("2025-06-01", tz="UTC"))
    auth = {"Authorization": f"Bearer {key}"}
    env = {**os.environ, "PROPENSITY_MODELS_DIR": str(tmp / "models"),
           "PROPENSITY_DATABASE_URL": db}
    mlflow_env = {**env, "MLFLOW_TRACKING_URI": settings.tracking_uri,
                  "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}  # it execs `uvicorn`
    row = {k: v for k, v in lead.items()
           if k not in ("events", "account", "stage_history", "opportunities")}
    for k in ("events", "account", "stage_history", "opportunities"):
        row[k] = json.dumps(lead[k])
    theirs_body = {"dataframe_records": [row]}
    lines = []
    runs: dict[tuple[str, bool, str], list[dict]] = {}
    try:
        modes = {"both": [True, False], "durable": [True], "fast": [False]}[args.log]
        srcs: list[Path | None] = [p.resolve() for p in args.src] if args.src else [None]
        for workers in args.workers:
            for src, durable in [(src, d) for _ in range(args.rounds) for src in srcs
                                 for d in modes]:
                log_env = {**env, "PROPENSITY_LOG_DURABLE": str(durable).lower()}
                if src is not None:
                    log_env["PYTHONPATH"] = f"{src / 'src'}:{src}"
                mode = ("durable log" if durable else "log not durable") + (
                    "" if src is None else f", {src.name}")
                port = free_port()
                ours = _start([str(BIN / "propensity"), "serve", "--port", str(port),
                               "--workers", str(workers)], log_env, tmp)
                try:
                    wait(f"http://127.0.0.1:{port}/readyz")
                    settled(ours)
                    url = f"http://127.0.0.1:{port}/v1/score"
                    check = httpx.post(url, json={"leads": [lead]}, headers=auth, timeout=30)
                    check.raise_for_status()
                    assert check.json()["scores"][0]["reasons"]["positive"], check.text
                    for explain, body in _bodies(url, lead, auth):
                        r = _wrk_cpu(ours, url, body, auth, args.seconds, args.connections,
                                     workers if durable else 0)
                        name = (("reasons" if explain else "explain=false")
                                + ("" if "outlook" not in body else ", outlook=true"))
                        lines.append(_line(f"ours, {workers} w, {mode}, {name}", r))
                        print(lines[-1], flush=True)
                        runs.setdefault((f"{workers} w{'' if src is None else ', ' + src.name}",
                                         durable, name), []).append(r)
                    # the framework's and the machine's share (see the module's docstring)
                    r = _wrk_cpu(ours, f"http://127.0.0.1:{port}/healthz", None, {},
                                 args.seconds, args.connections)
                    lines.append(_line(f"ours, {workers} w, {mode}, GET /healthz", r))
                    print(lines[-1], flush=True)
                    if workers == max(args.workers) and not args.no_batch:
                        batch = {"leads": [{**lead, "lead_id": f"b{i}"} for i in range(1000)]}
                        times = []
                        with httpx.Client(timeout=60) as http:
                            for _ in range(5):
                                t0 = time.perf_counter()
                                http.post(url, json=batch, headers=auth).raise_for_status()
                                times.append(time.perf_counter() - t0)
                        lines.append(f"a batch of 1,000 such leads: median "
                                     f"{statistics.median(times):.3f} s, best {min(times):.3f} s "
                                     "(5 runs, JSON in and out included)")
                        print(lines[-1], flush=True)
                finally:
                    _stop(ours)
            if args.no_mlflow:
                continue
            mport = free_port()
            theirs = _start([str(BIN / "mlflow"), "models", "serve", "-m",
                             "models:/lead-conversion@champion", "-p", str(mport),
                             "--env-manager", "local", "--workers", str(workers)],
                            mlflow_env, tmp)
            try:
                wait(f"http://127.0.0.1:{mport}/ping")
                settled(theirs)
                murl = f"http://127.0.0.1:{mport}/invocations"
                httpx.post(murl, json=theirs_body, timeout=60).raise_for_status()
                r = wrk(murl, theirs_body, {}, args.seconds, args.connections)
                lines.append(_line(f"mlflow models serve, {workers} worker(s)", r))
                print(lines[-1], flush=True)
            finally:
                _stop(theirs)
        print(f"\n(one lead, 50 events, 5 contacts, an open opportunity; wrk -t2 "
              f"-c{args.connections} -d{args.seconds}s on 127.0.0.1)")
        print("\n".join(lines))
        for line in durable_cost(runs):
            print(line)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
