"""`GET /v1/monitoring` over a big score log, and what it does to a normal score beside it.

A champion trained on a small generated export; a score log of `--rows` (1,000,000) scores
bulk-inserted with their as_of spread over the default window (the last 28 days), 5% of them
a lead and as_of scored again, and conversions reported for 3% of the leads; a real uvicorn
(one worker) on it. Printed: the first call (it folds the whole log into the daily
aggregates), then the steady calls; and a one-lead score's latency alone, then while three
other processes loop on `/v1/monitoring`. A worker sends a report at most every
`PACE_SECONDS` (0.1 s): the steady calls, one after the other, wait for their turn.

    .venv/bin/python benchmarks/bench_monitoring.py --rows 1000000 --db sqlite
    .venv/bin/python benchmarks/bench_monitoring.py --rows 1000000 --db postgresql
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

from propensity.api_keys import SCOPES, create_key
from propensity.database import engine_for, migrate, outcomes, score_log, served_histograms
from propensity.export_reader import load_export
from propensity.lifecycle import train_and_register
from propensity.monitoring.reference import Reference
from propensity.rows import lead_rows
from propensity.scoring import open_entities
from propensity.settings import Settings
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.thresholds import to_score
from propensity.training import TrainConfig
from tests.conftest import fresh_postgres
from tests.serving.conftest import start_server
from tests.worlds import request_lead

MODEL = "lead-conversion"


def fill(url: str, rows: int, reference: Reference, seed: int = 0) -> None:
    """`rows` logged scores, the conversions of 3% of their leads, and the served histograms
    of the same days (as the scorer's counters would have stored them), inserted in bulk."""
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    leads = max(1, rows // 3)
    engine = engine_for(url)
    chunk = 100_000
    with engine.begin() as conn:
        for at in range(0, rows, chunk):
            n = min(chunk, rows - at)
            lead = rng.integers(0, leads, n)
            as_of = now - timedelta(days=28) + (rng.random(n) * 28 * 86400e6).astype(
                "timedelta64[us]").astype(object)
            again = rng.random(n) < 0.05  # the same lead and as_of as the row before
            lead[1:][again[1:]] = lead[:-1][again[1:]]
            as_of[1:][again[1:]] = as_of[:-1][again[1:]]
            p = rng.beta(1.2, 6, n)
            values = [{"scored_at": t + timedelta(minutes=1), "lead_id": f"L{k}",
                       "probability": float(q), "score": to_score(float(q)), "grade": "C",
                       "mql": False, "model_name": MODEL, "model_version": "1",
                       "threshold_version": 0, "input_hash": "-", "as_of": t}
                      for k, t, q in zip(lead, as_of, p, strict=True)]
            if engine.dialect.name == "sqlite":  # the driver's executemany: 5x faster
                stamp = "%Y-%m-%d %H:%M:%S.%f"
                columns = list(values[0])
                conn.exec_driver_sql(
                    f"INSERT INTO score_log ({', '.join(columns)}) VALUES "
                    f"({', '.join('?' * len(columns))})",
                    [tuple(v.strftime(stamp) if isinstance(v, datetime) else v
                           for v in row.values()) for row in values])
            else:
                conn.execute(score_log.insert(), values)
        won = rng.choice(leads, leads * 3 // 100, replace=False)
        conn.execute(outcomes.insert(), [
            {"lead_id": f"L{k}", "stage": "won", "at": now - timedelta(days=float(d)),
             "opportunity_id": f"O{k}", "amount": 1000.0, "received_at": now}
            for k, d in zip(won, rng.random(len(won)) * 20, strict=True)])
        per_day = rows // 28
        conn.execute(served_histograms.insert(), [
            {"model_name": MODEL, "model_version": "1", "day": (now - timedelta(days=k)).date(),
             "feature": b.name, "bin": i, "count": int(c)}
            for k in range(28) for b in [*reference.features, reference.score]
            for i, c in enumerate(rng.multinomial(per_day, np.asarray(b.counts) / sum(b.counts)))
            if c])
    engine.dispose()


def loop_monitoring(url: str, key: str, stop_at: float, counts: mp.Queue) -> None:
    n = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                      timeout=120) as http:
        while time.time() < stop_at:
            assert http.get("/v1/monitoring").status_code == 200
            n += 1
    counts.put(n)


def score_latencies(url: str, key: str, body: dict, seconds: float) -> list[float]:
    out = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as http:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            r = http.post("/v1/score", json=body)
            out.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
            time.sleep(0.005)
    return out


def load() -> str:
    """The machine's load average, printed beside each figure (the machine is shared)."""
    return f"load {os.getloadavg()[0]:.1f}"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


@contextlib.contextmanager
def database(kind: str, work: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{work / 'scores.db'}"
    else:
        with fresh_postgres() as url:
            yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    logging.getLogger("lightgbm").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, database(args.db, Path(tmp)) as url:
        work = Path(tmp)
        tables, truth = generate_export(SyntheticConfig(n_leads=1500, seed=3))
        write_export(tables, truth, work / "export")
        export = load_export(work / "export")
        settings = Settings(models_dir=work / "models")
        result = train_and_register(export, TrainConfig.model_validate({"search": False}),
                                    work / "export", gate="force", settings=settings).result
        entities = open_entities(result.bundle, export, export.latest_time()).head(1)
        body = {"leads": [request_lead(lead_rows(export, entities).to_dict("records")[0])],
                "explain": False}
        migrate(url)
        t = time.perf_counter()
        assert result.reference is not None
        fill(url, args.rows, result.reference)
        print(f"{args.rows:,} scores logged ({args.db}) in {time.perf_counter() - t:.1f} s",
              flush=True)
        server = start_server(work / "models", url, work)
        engine = engine_for(url)
        key = create_key(engine, "dashboard", ["monitor"] if "monitor" in SCOPES else ["admin"])
        engine.dispose()
        try:
            with httpx.Client(base_url=server.url, timeout=600,
                              headers={"Authorization": f"Bearer {key}"}) as http:
                t = time.perf_counter()
                r = http.get("/v1/monitoring")
                first = time.perf_counter() - t
                assert r.status_code == 200, r.text
                perf = r.json()["performance"]
                print(f"first call (folds the log into the daily aggregates): {first:.2f} s; "
                      f"{perf['overall']['leads']:,} deduplicated scores in the window, "
                      f"{r.json()['window']['served']:,} in the histograms", flush=True)
                time.sleep(6)  # PostgreSQL folds ids once they have settled (5 s)
                http.get("/v1/monitoring")
                end = datetime.fromisoformat(r.json()["end"])
                for label, fresh in (("fresh (a window not asked for before)", True),
                                     ("the same window again (reused for 5 s)", False)):
                    took = []
                    for k in range(args.calls):  # 28 to 42 days: the log's days, each new
                        start = end - timedelta(days=28 + (k if fresh else 0))
                        t = time.perf_counter()
                        r = http.get("/v1/monitoring", params={"start": start.isoformat(),
                                                               "end": end.isoformat()})
                        took.append((time.perf_counter() - t) * 1000)
                        assert r.status_code == 200, r.text
                    print(f"calls, {label}: median {statistics.median(took):.0f} ms, p90 "
                          f"{pct(took, 90):.0f} ms, max {max(took):.0f} ms over {args.calls} "
                          f"({len(r.content) / 1e3:.0f} kB each); {load()}", flush=True)
            alone = score_latencies(server.url, server.score_key, body, args.seconds)
            alone_load = load()
            stop_at = time.time() + args.seconds + 1
            counts: mp.Queue = mp.Queue()
            loopers = [mp.Process(target=loop_monitoring, args=(server.url, key, stop_at, counts))
                       for _ in range(3)]
            for p in loopers:
                p.start()
            time.sleep(0.5)
            beside = score_latencies(server.url, server.score_key, body, args.seconds)
            beside_load = load()
            for p in loopers:
                p.join()
            reports = sum(counts.get() for _ in loopers)
            for label, lat, at in (("alone", alone, alone_load),
                                   ("3 clients looping on /v1/monitoring", beside, beside_load)):
                print(f"one-lead score, {label}: p50 {pct(lat, 50):.1f} ms, p90 "
                      f"{pct(lat, 90):.1f} ms, p99 {pct(lat, 99):.1f} ms ({len(lat)} requests); "
                      f"{at}", flush=True)
            print(f"a normal score's p99 beside the loopers: {pct(beside, 99):.1f} ms vs "
                  f"{pct(alone, 99):.1f} ms alone ({pct(beside, 99) - pct(alone, 99):+.1f} ms); "
                  f"the loopers got {reports} reports in {args.seconds:.0f} s", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
