"""The score log: every score served, written in batches off the request path.

A request appends its rows to memory and returns; a writer thread inserts what has gathered
every `flush_seconds` in one transaction. A failed insert keeps the rows for the next try.
`stop()` (the app's shutdown, which uvicorn runs on SIGTERM after in-flight requests finish)
writes everything left, so no acknowledged score is lost. The served histograms (drift's
counters) are added to their stored counts on the same beat.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import sqlalchemy as sa

from propensity.database import score_log, served_histograms, upsert_adding
from propensity.monitoring.counters import ServedCounters

log = logging.getLogger("propensity.scorelog")


class ScoreLog:
    def __init__(self, engine: sa.Engine, flush_seconds: float = 0.2,
                 counters: ServedCounters | None = None) -> None:
        self.engine = engine
        self.counters = counters or ServedCounters()
        self.flush_seconds = flush_seconds
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.failures = 0

    def append(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._rows.extend(rows)

    @property
    def pending(self) -> int:
        return len(self._rows)

    def _flush_counters(self) -> None:
        rows = self.counters.drain()
        try:
            upsert_adding(self.engine, served_histograms, rows, ["model_name", "model_version",
                                                                 "day", "feature", "bin"],
                          "count")
        except Exception:
            self.failures += 1
            log.exception("served histograms write failed; %d counts kept", len(rows))
            self.counters.restore(rows)

    def flush(self) -> int:
        self._flush_counters()
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        try:
            with self.engine.begin() as conn:
                conn.execute(score_log.insert(), rows)
        except Exception:
            self.failures += 1
            log.exception("score log write failed; %d rows kept for the next try", len(rows))
            with self._lock:
                self._rows[:0] = rows
            return 0
        self.written += len(rows)
        return len(rows)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="score-log", daemon=True)
        self._thread.start()

    def stop(self, attempts: int = 5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for _ in range(attempts):
            self.flush()
            if not self._rows and not self.counters.pending:
                return
        log.error("score log: %d rows could not be written at shutdown", len(self._rows))
