"""The score log: every score served is on local disk before it is answered, then written to
the database in batches off the request path.

Acknowledged means durable (`durable=True`, the default): `commit` returns once the rows are
appended to this worker's spool segment and fdatasynced (`serving.spool`), in one `write` to a
file opened O_DSYNC for the requests the fast path scored together (its batch: those that
arrived together share the sync), made on the event loop's thread: a thread of its own cost
more in hops than the ~0.1 ms write (see `commit`). A
`kill -9` of a worker or of the whole server then loses nothing: a segment whose writer is
gone is replayed by another worker, or by the next start. With `durable=False` the rows wait
in memory until the next flush (faster; a crash loses up to `flush_seconds` of them).

A writer thread inserts what has gathered every `flush_seconds` in one transaction; the
segment it came from is deleted once it is in. What can go wrong, and what happens then:

- the database refuses some rows (a NUL in a lead id on PostgreSQL, a value too long): the
  batch is split in halves until the refused rows are alone; they go to `quarantine.jsonl`
  in the spool folder with the database's reason, and the rest is written.
- bytes in a segment that are not a whole record (a write cut by a full disk before this
  format, a damaged disk): moved to `quarantine.jsonl` with their file and offset, reported;
  every readable row around them is written.
- the database is down (or locked, or its disk full): the rows stay in their segments on
  local disk, the log reports itself degraded, and once the database answers the segments are
  written oldest first. Scoring goes on meanwhile.
- the spool's disk is full: `commit` raises `OSError` and the request is refused (503), never
  acknowledged and then lost. Past `max_spool_bytes` (with the database down), or past
  `max_memory_rows` in memory (`durable=False`), `accepting` turns false: 503 too.

Replay is at least once: a crash between a committed insert and the removal of its segment
writes those rows twice, never zero times. Nothing leaves memory before it is somewhere
durable: every path that takes rows for the database leaves them in their segment (or puts
them back) until the insert is committed.
The served histograms (drift's counters) are added to their stored counts every
`COUNTER_SECONDS`; while the database is down they wait in memory (bounded by the bins).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client import Histogram

from propensity.database import score_log, served_histograms, upsert_adding
from propensity.lead_scoring import logged_outlook
from propensity.monitoring.counters import ServedCounters
from serving.spool import PENDING, WAITING, Segment, Unreadable, encode, jsonable, segments

log = logging.getLogger("propensity.scorelog")
QUARANTINE = "quarantine.jsonl"
REPLAY_CHUNK = 1000
WRITE_CHUNK = 64
"""Rows per insert. The writer holds the GIL while SQLAlchemy prepares an insert's rows
(~8 us a row on SQLite), and a request waiting for it waits out the switch interval (5 ms):
between chunks the writer lets go, so a flush delays a request by one chunk at most."""
COUNTER_SECONDS = 5.0
"""How often the writer adds the served histograms to their stored counts."""
UNREADABLE = "unreadable spool bytes"

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


ADDED_COLUMNS: dict[str, Any] = logged_outlook(None)
"""Columns of a log row added after rows could already be spooled (migration 0010), null in
a row that lacks them."""


class _Outage(Exception):
    def __init__(self, cause: BaseException, unwritten: list[dict[str, Any]]) -> None:
        super().__init__(reason_of(cause))
        self.unwritten = unwritten


class ScoreLog:
    def __init__(self, engine: sa.Engine, flush_seconds: float = 0.2,
                 spool_dir: Path | None = None, max_spool_bytes: int = 256 * 1024 * 1024,
                 counters: ServedCounters | None = None, durable: bool = True,
                 max_memory_rows: int = 100_000, synced: Histogram | None = None) -> None:
        self.engine = engine
        self.counters = counters or ServedCounters()
        self.flush_seconds = flush_seconds
        self.spool_dir = spool_dir
        self.max_spool_bytes = max_spool_bytes
        self.durable = durable and spool_dir is not None
        self.max_memory_rows = max_memory_rows
        self._rows: list[dict[str, Any]] = []
        """Rows not yet in the database; when durable, also in `_segment`."""
        self._lock = threading.Lock()  # _rows, _segment, _behind, backlog
        self._io = threading.Lock()  # one database writer at a time: the thread, or stop()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._segment: Segment | None = None
        """Durable: where commits append."""
        self._behind = False
        """Durable: `_segment` holds rows `_rows` let go of (during an outage)."""
        self._spooled: list[Segment] = []
        """This worker's segments closed for commits, oldest first, waiting for the database."""
        self._closing = False
        self.backlog = 0
        """Rows this worker acknowledged that are not in the database yet."""
        self.written = 0
        self._quarantined = 0  # without a spool folder: counted here only
        self._counted: tuple[tuple[int, int], int] = ((-1, -1), 0)
        self.outage: str | None = None
        """Why the last write found the database unreachable; None once one succeeds."""
        self.newest_at: datetime | None = None
        """The latest time a row this worker committed describes (as_of, else scored_at):
        a monitoring window ending after it cannot be moved by what waits for the database."""
        self._synced = synced
        """Requests each sync made durable (its count is the syncs)."""
        if spool_dir is not None:
            spool_dir.mkdir(parents=True, exist_ok=True)

    # -- what requests call -------------------------------------------------------------------

    def append(self, rows: list[dict[str, Any]]) -> None:
        """`commit` for a caller without an event loop: durable, it appends and fdatasyncs
        these rows alone, waiting; else they wait in memory for the next flush."""
        if self.durable:
            self._journal(rows)
            return
        with self._lock:
            self._rows.extend(rows)
            self.backlog += len(rows)
        self._saw(rows)

    def _saw(self, rows: list[dict[str, Any]]) -> None:
        newest = max((row.get("as_of") or row["scored_at"] for row in rows), default=None)
        if newest is not None and (self.newest_at is None or newest > self.newest_at):
            self.newest_at = newest

    def _journal(self, rows: list[dict[str, Any]]) -> None:
        """Rows on local disk (this worker's journal), and in memory for the writer."""
        data = b"".join(encode(row) for row in rows)
        with self._lock:
            if self._segment is None:
                assert self.spool_dir is not None
                self._segment = Segment.create(self.spool_dir)
            self._segment.append(data)
            if len(self._rows) + len(rows) > self.max_memory_rows:
                self._rows, self._behind = [], True  # on disk already: read back later
            if not self._behind:
                self._rows.extend(rows)
            self.backlog += len(rows)
        self._saw(rows)

    async def commit(self, rows: list[dict[str, Any]], requests: int = 1) -> None:
        """Return once the rows are durable (on local disk, or in memory when not durable);
        OSError when the disk refuses them: the caller must not acknowledge them.

        Durable: one `write` of the batch's rows to the journal opened O_DSYNC, on the event
        loop's thread. An append costs ~0.1 ms of CPU however few rows it holds; the fast
        path's batch (the requests that arrived together) is what shares it. A group commit
        that also waited for the requests in flight beside a batch (up to 2 ms) was measured
        and removed: it merged 7-15% of the syncs and moved neither the throughput nor the
        CPU a request (docs/scorer.md). A commit thread cost more than it saved: each batch
        woke it and was woken back (two thread hops, and the commit thread's wait for the GIL
        while the loop computed scores, up to a switch interval). The price of the loop's own
        write: a disk that stalls stalls this worker's loop, as it would every request it
        answers anyway. A coroutine, so that callers need not change should the wait leave
        the loop."""
        if not self.durable:
            self.append(rows)
            return
        if self._closing:
            raise OSError("the score log is shut down")
        self._sync(rows, requests)

    def _sync(self, rows: list[dict[str, Any]], requests: int) -> None:
        """One append and its sync for these rows, counted; raises when the disk refuses."""
        try:
            self._journal(rows)
        except Exception as exc:  # the requests are refused, never acknowledged
            log.error("score log: %d rows cannot be kept on local disk (%s): refused",
                      len(rows), reason_of(exc))
            raise
        if self._synced is not None:
            self._synced.observe(requests)

    @property
    def pending(self) -> int:
        """Rows this worker acknowledged that the database does not hold yet."""
        return self.backlog

    @property
    def spooled_bytes(self) -> int:
        """Bytes of rows that wait for the database on local disk (every worker's)."""
        total = 0
        for p in [] if self.spool_dir is None else segments(self.spool_dir, WAITING):
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
        return total

    def _spool_paths(self) -> list[Path]:
        return [] if self.spool_dir is None else segments(self.spool_dir)

    @property
    def accepting(self) -> bool:
        """False when what is acknowledged could not be kept: rows in memory past their bound,
        or the database down with the spool full. Refuse (503), do not lose."""
        if not self.durable and len(self._rows) >= self.max_memory_rows:
            return False
        return self.outage is None or self.spooled_bytes < self.max_spool_bytes

    @property
    def quarantined(self) -> int:
        """Records in quarantine, counted in the spool folder every worker shares (so each
        worker reports the same count, whoever quarantined them)."""
        if self.spool_dir is None:
            return self._quarantined
        path = self.spool_dir / QUARANTINE
        try:
            st = path.stat()
        except FileNotFoundError:
            return 0
        key, count = self._counted
        if key != (st.st_size, st.st_mtime_ns):
            with path.open("rb") as f:
                count = sum(1 for _ in f)
            self._counted = ((st.st_size, st.st_mtime_ns), count)
        return count

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
                log.exception("served histograms write failed; %d counts kept", len(rows))

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
                self._quarantine({"row": jsonable(rows[0])}, reason_of(exc))
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

    def _insert_yielding(self, rows: list[dict[str, Any]], chunk: int = WRITE_CHUNK) -> None:
        """`_insert` a chunk at a time, letting the requests run between chunks."""
        for at in range(0, len(rows), chunk):
            try:
                self._insert(rows[at:at + chunk])
            except _Outage as out:
                out.unwritten = out.unwritten + rows[at + chunk:]
                raise
            time.sleep(0)  # releases the GIL: a request waiting for it takes it now

    def _quarantine(self, record: dict[str, Any], reason: str) -> None:
        """Keep what the log cannot write, with why; OSError (as an outage) when the disk
        refuses even that, so the caller keeps it where it was."""
        self._quarantined += 1
        log.error("score log: %s; kept in %s", reason,
                  self.spool_dir / QUARANTINE if self.spool_dir else "nowhere (no spool)")
        if self.spool_dir is None:
            return
        line = json.dumps({"reason": reason, "at": datetime.now(UTC).isoformat(), **record})
        try:
            with (self.spool_dir / QUARANTINE).open("a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise _Outage(exc, []) from exc

    def _set_aside(self, segment: Segment, bad: list[Unreadable]) -> None:
        for b in bad:
            self._quarantine({"file": segment.path.name, "offset": b.offset,
                              "bytes": b.data.decode("utf-8", "backslashreplace")},
                             f"{UNREADABLE}: {b.reason}")

    def _write_segment(self, segment: Segment, own: bool) -> None:
        """Write a segment's rows and remove it; at an outage it keeps what is not written
        (rewritten without what is, so a replay repeats nothing) and raises."""
        rows = segment.rows
        if rows is None:
            rows, bad = segment.read()
            if bad:  # moved out first: a later pass must not find them again
                self._set_aside(segment, bad)
                segment.replace(rows)
            # rows spooled by an earlier version lack the columns added since (the outlook's):
            # null there, so that one insert statement takes old and new rows together
            rows = [{**ADDED_COLUMNS, **r} for r in rows]
        done = 0
        try:
            for at in range(0, len(rows), REPLAY_CHUNK):
                chunk = rows[at:at + REPLAY_CHUNK]
                try:
                    self._insert_yielding(chunk, REPLAY_CHUNK if not own else WRITE_CHUNK)
                except _Outage as out:  # the chunk's head may be in (a refusal split it)
                    done += len(chunk) - len(out.unwritten)
                    raise
                done += len(chunk)
        except _Outage:
            if done:
                segment.replace(rows[done:])
            raise
        finally:
            if own:
                with self._lock:
                    self.backlog = max(0, self.backlog - done)
        segment.remove()
        if not own and rows:
            log.warning("score log: %d rows spooled by an earlier process written (%s)",
                        len(rows), segment.path.name)

    def _ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def _write(self) -> None:
        """One pass: this worker's spooled segments (oldest), those of gone workers, then the
        rows committed since the last pass."""
        if self.outage is not None:  # no segment is read while the database cannot take it
            try:
                self._ping()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                raise _Outage(exc, []) from exc
        while self._spooled:
            self._write_segment(self._spooled[0], own=True)
            self._spooled.pop(0)
        for path in self._spool_paths():
            segment = None if self._is_mine(path) else Segment.claim(path)
            if segment is None:
                continue
            try:
                self._write_segment(segment, own=False)
            finally:
                segment.file.close()  # a no-op once removed; else released for a later pass
        if self.durable:
            self._rotate()
            return
        with self._lock:
            rows, self._rows = self._rows, []
        try:
            self._insert_yielding(rows)
        except _Outage as out:
            self._spill(out.unwritten, written=len(rows) - len(out.unwritten))
            raise
        except BaseException:
            with self._lock:
                self._rows[:0] = rows
            raise
        with self._lock:
            self.backlog = max(0, self.backlog - len(rows))

    def _is_mine(self, path: Path) -> bool:
        return path in {s.path for s in self._spooled} or (
            self._segment is not None and self._segment.path == path)

    def _rotate(self) -> None:
        """The commits' segment joins the spooled ones and is written; commits go on in a
        new one (created before, so a commit never waits for a file creation)."""
        if self._segment is None or (not self._rows and not self._behind):
            return
        assert self.spool_dir is not None
        fresh = Segment.create(self.spool_dir)
        with self._lock:
            old, self._segment = self._segment, fresh
            old.rows = None if self._behind else self._rows
            self._rows, self._behind = [], False
        self._spooled.append(old)
        self._write_segment(old, own=True)
        self._spooled.pop()

    def _spill(self, rows: list[dict[str, Any]], written: int = 0) -> None:
        """Not durable: rows the database did not take go to a spool segment; should the
        disk refuse, back to memory (bounded: `accepting` refuses past `max_memory_rows`)."""
        with self._lock:
            self.backlog = max(0, self.backlog - written)
        if not rows:
            return
        if self.spool_dir is not None:
            try:
                if not self._spooled:
                    self._spooled.append(Segment.create(self.spool_dir, PENDING))
                self._spooled[-1].append(b"".join(encode(r) for r in rows))
                self._spooled[-1].rows = None
                return
            except OSError:
                log.exception("score log: the spool cannot be written; %d rows kept in memory",
                              len(rows))
        with self._lock:
            self._rows[:0] = rows

    def _hold(self) -> None:
        """At an outage: what waits for the database stays on disk, not in memory, in
        segments named pending (the spool `/readyz` reports)."""
        for segment in self._spooled:
            segment.rows = None
        if self.durable:
            with self._lock:
                if self._rows:
                    self._rows, self._behind = [], True
                if self._behind and self._segment is not None:
                    self._segment.waiting()
            for segment in self._spooled:
                segment.waiting()
        else:
            with self._lock:
                rows, self._rows = self._rows, []
            self._spill(rows)

    def flush(self, counters: bool = True) -> int:
        """One pass: the spool first (older), then what requests committed since; and the
        served histograms, which are only binned and kept when `counters` is false."""
        if counters:
            self._flush_counters()
        else:
            self.counters.fold()
        with self._io:
            before = self.written
            try:
                try:
                    self._write()
                except OSError as exc:  # the spool's disk refuses: try again next pass
                    raise _Outage(exc, []) from exc
            except _Outage as out:
                if self.outage is None:
                    log.error("score log: the database is unreachable (%s); rows wait in %s",
                              out, self.spool_dir)
                self.outage = str(out)
                self._hold()
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
        if self.durable:
            assert self.spool_dir is not None
            self._segment = Segment.create(self.spool_dir)
        self._thread = threading.Thread(target=self._run, name="score-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is left; what the database will not take now stays spooled on disk."""
        self._closing = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
        if self._rows and not self.durable and self.spool_dir is None:
            log.error("score log: %d rows could not be written at shutdown and there is no "
                      "spool folder", len(self._rows))
        elif self.outage is not None:
            log.error("score log: the database is unreachable at shutdown; %d bytes of rows "
                      "kept in %s for the next start", self.spooled_bytes, self.spool_dir)
        for segment in [*self._spooled, *([self._segment] if self._segment else [])]:
            segment.close()  # releases the lock: the next start replays what is left
        self._spooled, self._segment = [], None
