"""The score log writes a flush a chunk at a time (so that a request waiting for the GIL waits
one chunk, not the whole flush): a row the database refuses, or a database that locks up
between two chunks, still leaves every row in the table exactly once."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from propensity.database import engine_for, migrate
from serving.scorelog import QUARANTINE, WRITE_CHUNK, ScoreLog


def _row(i: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"scored_at": now, "lead_id": f"L{i:04d}", "probability": 0.5, "score": 50,
            "grade": "B", "mql": False, "model_name": "lead-conversion", "model_version": "1",
            "threshold_version": 0, "input_hash": "-", "as_of": now}


def _logged(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT lead_id FROM score_log ORDER BY id")).scalars())


def test_a_refused_row_and_a_lock_between_chunks_lose_and_repeat_nothing(tmp_path: Path) -> None:
    path = tmp_path / "scores.db"
    migrate(f"sqlite:///{path}")
    engine = engine_for(f"sqlite:///{path}")

    @sa.event.listens_for(engine, "connect")
    def _impatient(conn: Any, _: Any) -> None:  # after engine_for's: a lock is an outage soon
        conn.execute("PRAGMA busy_timeout=50")

    log = ScoreLog(engine, spool_dir=tmp_path / "spool")
    rows = [_row(i) for i in range(3 * WRITE_CHUNK + 5)]
    rows[WRITE_CHUNK + 3]["lead_id"] = None  # NOT NULL: refused, in the second chunk
    log.append(rows)
    log.flush(counters=False)
    want = [r["lead_id"] for r in rows if r["lead_id"] is not None]
    assert _logged(engine) == want
    quarantined = [json.loads(line) for line in
                   (tmp_path / "spool" / QUARANTINE).read_text().splitlines()]
    assert [q["row"]["lead_id"] for q in quarantined] == [None] and log.quarantined == 1

    # another process takes the write lock once the first chunk of the next flush is in
    locker = sqlite3.connect(path, isolation_level=None)
    checkins, lock_at = 0, 1

    @sa.event.listens_for(engine, "checkin")
    def _lock(*_: Any) -> None:
        nonlocal checkins
        checkins += 1
        if checkins == lock_at:
            locker.execute("BEGIN IMMEDIATE")

    more = [_row(i) for i in range(1000, 1000 + 2 * WRITE_CHUNK + 7)]
    spilled = more[WRITE_CHUNK:]
    spilled[50]["lead_id"] = None  # refused when the spool is replayed, in its second half
    log.append(more)
    log.flush(counters=False)
    assert log.outage is not None and "locked" in log.outage
    assert _logged(engine)[len(want):] == [r["lead_id"] for r in more[:WRITE_CHUNK]]
    assert log.spooled_bytes > 0
    locker.execute("ROLLBACK")

    # the replay: the whole spool is refused (the NULL), its first half goes in, and the lock
    # is back before the second: the half written must not be replayed again
    checkins, lock_at = 0, 2
    log.flush(counters=False)
    assert log.outage is not None
    written = [r["lead_id"] for r in more[:WRITE_CHUNK]] + [
        r["lead_id"] for r in spilled[:len(spilled) // 2]]
    assert _logged(engine)[len(want):] == written
    locker.execute("ROLLBACK")
    lock_at = 0
    log.flush(counters=False)  # the spool first, then anything new
    assert log.outage is None and log.spooled_bytes == 0
    assert _logged(engine) == want + [r["lead_id"] for r in more if r["lead_id"] is not None]
    lines = (tmp_path / "spool" / QUARANTINE).read_text().splitlines()
    assert [json.loads(line)["row"]["lead_id"] for line in lines] == [None, None]
