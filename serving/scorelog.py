"""The score log: every score served, written in batches off the request path, never lost.

A request appends its rows to memory and returns; a writer thread inserts what has gathered
every `flush_seconds` in one transaction. What can go wrong, and what happens then:

- the database refuses some rows (a NUL in a lead id on PostgreSQL, a value too long): the
  batch is split in halves until the refused rows are alone; they go to `quarantine.jsonl`
  in the spool folder with the database's reason, are counted, and the rest is written. One
  bad row never blocks the others.
- the database is down (or locked): the rows are appended to a spool file on local disk and
  the log reports itself degraded; once the database answers again, the spool is replayed
  first, oldest first, and deleted. Scoring goes on meanwhile.
- shutdown (SIGTERM: uvicorn finishes the requests in flight, then the lifespan ends here):
  what cannot be written is spooled, and the next start replays it.

Replay is at least once: a crash between a committed insert and the spool file's rewrite
writes those rows twice, never zero times. The spool is bounded (`max_spool_bytes`): full, and
with the database down, `accepting` turns false and the scorer answers 503 instead of
acknowledging scores it could not keep.
The served histograms (drift's counters) are added to their stored counts on the same
beat; while the database is down they wait in memory (bounded by the bins, not by traffic).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from propensity.database import score_log, served_histograms, upsert_adding
from propensity.monitoring.counters import ServedCounters

log = logging.getLogger("propensity.scorelog")
QUARANTINE = "quarantine.jsonl"
REPLAY_CHUNK = 1000
WRITE_CHUNK = 64
"""Rows per insert. The writer holds the GIL while SQLAlchemy prepares an insert's rows
(~8 us a row on SQLite), and a request waiting for it waits out the switch interval (5 ms):
between chunks the writer lets go, so a flush delays a request by one chunk at most."""
COUNTER_SECONDS = 5.0
"""How often the writer adds the served histograms to their stored counts."""


def is_outage(exc: BaseException) -> bool:
    """The database is unreachable or busy (try again later), not refusing these rows."""
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError,
                        OSError)):
        return True
    return bool(getattr(exc, "connection_invalidated", False))


def reason_of(exc: BaseException) -> str:
    """The database's own words, without the statement or its parameters (lead ids)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return f"{type(orig or exc).__name__}: {text[0] if text else ''}"[:500]


def _encode(row: dict[str, Any]) -> str:
    return json.dumps({k: v.isoformat() if isinstance(v, datetime) else v
                       for k, v in row.items()})


_TIMES = ("scored_at", "as_of")
"""The score log's time columns: JSON holds them as text, and SQLite's driver takes only
datetimes (a replayed as_of left as text had every spooled row quarantined on SQLite)."""


def _decode(line: str) -> dict[str, Any]:
    row: dict[str, Any] = json.loads(line)
    for name in _TIMES:
        if row.get(name) is not None:
            row[name] = datetime.fromisoformat(row[name])
    return row


class _Outage(Exception):
    def __init__(self, cause: BaseException, unwritten: list[dict[str, Any]]) -> None:
        super().__init__(reason_of(cause))
        self.unwritten = unwritten


class ScoreLog:
    def __init__(self, engine: sa.Engine, flush_seconds: float = 0.2,
                 spool_dir: Path | None = None, max_spool_bytes: int = 256 * 1024 * 1024,
                 counters: ServedCounters | None = None) -> None:
        self.engine = engine
        self.counters = counters or ServedCounters()
        self.flush_seconds = flush_seconds
        self.spool_dir = spool_dir
        self.max_spool_bytes = max_spool_bytes
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._io = threading.Lock()  # one writer at a time: the thread, or stop()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._own_file: IO[str] | None = None
        self.written = 0
        self.failures = 0
        self.quarantined = 0
        self.outage: str | None = None
        """Why the last write found the database unreachable; None once one succeeds."""
        if spool_dir is not None:
            spool_dir.mkdir(parents=True, exist_ok=True)
            quarantine = spool_dir / QUARANTINE
            if quarantine.exists():
                with quarantine.open("rb") as f:
                    self.quarantined = sum(1 for _ in f)

    def append(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._rows.extend(rows)

    @property
    def pending(self) -> int:
        return len(self._rows)

    def _flush_counters(self) -> None:
        rows = self.counters.drain()
        if not rows:
            return
        try:
            upsert_adding(self.engine, served_histograms, rows, ["model_name", "model_version",
                                                                 "day", "feature", "bin"],
                          "count")
        except Exception as exc:
            self.counters.restore(rows)  # kept for the next pass, outage or not
            if not is_outage(exc):
                self.failures += 1
                log.exception("served histograms write failed; %d counts kept", len(rows))

    def _spool_paths(self) -> list[Path]:
        if self.spool_dir is None:
            return []
        found = []
        for p in self.spool_dir.glob("pending-*.jsonl"):
            with contextlib.suppress(FileNotFoundError):  # another worker just finished it
                found.append((p.stat().st_mtime, p))
        return [p for _, p in sorted(found)]

    @property
    def spooled_bytes(self) -> int:
        total = 0
        for p in self._spool_paths():
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
        return total

    @property
    def accepting(self) -> bool:
        """False while the database is down and the spool is full: refuse, do not lose."""
        return self.outage is None or self.spooled_bytes < self.max_spool_bytes

    # -- writing ------------------------------------------------------------------------------

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert rows; quarantine the ones the database refuses; _Outage when it is down."""
        if not rows:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(score_log.insert(), rows)
        except Exception as exc:
            if is_outage(exc):
                raise _Outage(exc, rows) from exc
            if len(rows) == 1:
                self._quarantine(rows[0], reason_of(exc))
                return
            half = len(rows) // 2
            try:
                self._insert(rows[:half])
            except _Outage as out:
                out.unwritten = out.unwritten + rows[half:]
                raise
            self._insert(rows[half:])
            return
        self.written += len(rows)

    def _insert_yielding(self, rows: list[dict[str, Any]]) -> None:
        """`_insert` a chunk at a time, letting the requests run between chunks."""
        for at in range(0, len(rows), WRITE_CHUNK):
            try:
                self._insert(rows[at:at + WRITE_CHUNK])
            except _Outage as out:
                out.unwritten = out.unwritten + rows[at + WRITE_CHUNK:]
                raise
            time.sleep(0)  # releases the GIL: a request waiting for it takes it now

    def _quarantine(self, row: dict[str, Any], reason: str) -> None:
        self.quarantined += 1
        log.error("score log: the database refused a row (%s); kept in %s", reason,
                  self.spool_dir / QUARANTINE if self.spool_dir else "memory (no spool)")
        if self.spool_dir is None:
            return
        record = json.dumps({"reason": reason, "at": datetime.now(UTC).isoformat(),
                             "row": json.loads(_encode(row))})
        with (self.spool_dir / QUARANTINE).open("a", encoding="utf-8") as f:
            f.write(record + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _own(self) -> IO[str]:
        """This worker's spool file, opened at the first outage and locked while it lives:
        another worker replays it only once this one is gone (its lock with it)."""
        if self._own_file is None:
            assert self.spool_dir is not None
            name = f"pending-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
            f = (self.spool_dir / name).open("a+", encoding="utf-8")
            fcntl.flock(f, fcntl.LOCK_EX)
            self._own_file = f
        return self._own_file

    def _spill(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.spool_dir is None:  # nowhere to put them: keep them in memory
            with self._lock:
                self._rows[:0] = rows
            return
        try:
            f = self._own()
            f.seek(0, os.SEEK_END)
            f.write("".join(_encode(r) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())
        except OSError:  # the disk refuses too: memory is the last place left
            log.exception("score log: the spool cannot be written; %d rows kept in memory",
                          len(rows))
            with self._lock:
                self._rows[:0] = rows

    def _replay_file(self, f: IO[str]) -> None:
        """Write a locked spool file's rows and empty it; at an outage it keeps the rest."""
        f.seek(0)
        lines = [line for line in f.read().splitlines() if line.strip()]
        done = 0
        try:
            while done < len(lines):
                chunk = [_decode(line) for line in lines[done:done + REPLAY_CHUNK]]
                try:
                    self._insert(chunk)
                except _Outage as out:  # the chunk's head may be in (a refusal split it)
                    done += len(chunk) - len(out.unwritten)
                    raise
                done += len(chunk)
        finally:
            if done:
                f.seek(0)
                f.truncate()
                f.write("".join(line + "\n" for line in lines[done:]))
                f.flush()
                os.fsync(f.fileno())
        if lines:
            log.warning("score log: %d spooled rows written", len(lines))

    def _replay(self) -> None:
        """Write the spooled rows, this worker's and those left by gone workers or runs;
        stops at an outage, keeping what is not written."""
        if self._own_file is not None:
            self._replay_file(self._own_file)
        own = None if self._own_file is None else Path(self._own_file.name).name
        for path in self._spool_paths():
            if path.name == own:
                continue
            try:
                f = path.open("r+", encoding="utf-8")
            except FileNotFoundError:
                continue
            with f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live worker's: it replays it itself
                try:
                    if os.fstat(f.fileno()).st_ino != path.stat().st_ino:
                        continue  # replaced while we waited
                except FileNotFoundError:
                    continue  # another worker finished it
                self._replay_file(f)
                path.unlink()

    def flush(self, counters: bool = True) -> int:
        """One pass: the spool first (older), then what requests appended since; and the
        served histograms, which are only binned and kept when `counters` is false."""
        if counters:
            self._flush_counters()
        else:
            self.counters.fold()
        with self._io:
            with self._lock:
                rows, self._rows = self._rows, []
            before = self.written
            try:
                try:
                    self._replay()
                except _Outage as out:  # none of this pass's rows were tried: keep them all
                    out.unwritten = rows
                    raise
                self._insert_yielding(rows)
            except _Outage as out:
                self.failures += 1
                if self.outage is None:
                    log.error("score log: the database is unreachable (%s); spooling to %s",
                              out, self.spool_dir)
                self.outage = str(out)
                self._spill(out.unwritten)
                return self.written - before
            if self.outage is not None:
                log.warning("score log: the database is back")
            self.outage = None
            return self.written - before

    def _run(self) -> None:
        # the histograms' upsert costs the same whatever the traffic (every cell a request
        # touched, ~1,000 for one lead): on every pass it took a worker's GIL for ~4 ms, and
        # drift is read by the day, so it runs every COUNTER_SECONDS; the passes between bin
        # what was served and let the matrices go
        every = max(1, round(COUNTER_SECONDS / max(self.flush_seconds, 1e-3)))
        passes = 0
        while not self._stop.wait(self.flush_seconds):
            passes += 1
            try:
                self.flush(counters=passes % every == 0)
            except Exception:  # the writer must outlive anything one pass meets
                log.exception("score log: unexpected error in the writer")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="score-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is left; what the database will not take now stays spooled on disk."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
        if self._rows:
            log.error("score log: %d rows could not be written at shutdown and there is no "
                      "spool folder", len(self._rows))
        elif self.outage is not None:
            log.error("score log: the database is unreachable at shutdown; %d bytes of rows "
                      "kept in %s for the next start", self.spooled_bytes, self.spool_dir)
        if self._own_file is not None:
            path = Path(self._own_file.name)
            if os.fstat(self._own_file.fileno()).st_size == 0:
                path.unlink(missing_ok=True)
            self._own_file.close()  # releases the lock: the next start replays what is left
            self._own_file = None
