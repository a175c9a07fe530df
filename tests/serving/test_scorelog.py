"""The score log writes a flush a chunk at a time (so that a request waiting for the GIL waits
one chunk, not the whole flush): a row the database refuses, or a database that locks up
between two chunks, still leaves every row in the table exactly once. Its spool never poisons
itself: bytes that are not a whole record are quarantined with their offset, the rest written."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from propensity.database import engine_for, migrate
from serving.scorelog import QUARANTINE, WRITE_CHUNK, ScoreLog
from serving.spool import Segment, encode


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

    # the replay: the spooled rows are refused (the NULL) and split, some go in, and the
    # lock is back before the rest: what was written must not be replayed again
    checkins, lock_at = 0, 3
    log.flush(counters=False)
    assert log.outage is not None
    logged = _logged(engine)[len(want):]
    assert len(logged) > WRITE_CHUNK and len(set(logged)) == len(logged)
    assert logged == [r["lead_id"] for r in more if r["lead_id"] is not None][:len(logged)]
    locker.execute("ROLLBACK")
    lock_at = 0
    log.flush(counters=False)  # the spool first, then anything new
    assert log.outage is None and log.spooled_bytes == 0
    assert _logged(engine) == want + [r["lead_id"] for r in more if r["lead_id"] is not None]
    lines = (tmp_path / "spool" / QUARANTINE).read_text().splitlines()
    assert [json.loads(line)["row"]["lead_id"] for line in lines] == [None, None]


def test_unreadable_spool_bytes_are_quarantined_with_their_offset(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    migrate(url)
    engine = engine_for(url)
    spool = tmp_path / "spool"
    spool.mkdir()
    good = [_row(i) for i in range(5)]
    damaged = encode(_row(90)).replace(b"L0090", b"L0091")  # its checksum no longer matches
    legacy = json.dumps({**_row(7), "scored_at": "2026-12-06T03:00:00+00:00",
                         "as_of": "2026-12-06T03:00:00+00:00"}).encode() + b"\n"
    partial = b'{"scored_at": "2026-12-06T03:00:00+00:00", "lead_id": "trunc'
    data = encode(good[0]) + damaged + encode(good[1]) + legacy + b"".join(
        encode(r) for r in good[2:]) + partial
    (spool / "pending-1-dead.jsonl").write_bytes(data)
    log = ScoreLog(engine, spool_dir=spool)
    log.append([_row(100)])  # this worker's own rows go in beside them
    log.flush(counters=False)
    assert log.outage is None
    assert sorted(_logged(engine)) == ["L0000", "L0001", "L0002", "L0003", "L0004", "L0007",
                                       "L0100"]
    records = [json.loads(line) for line in (spool / QUARANTINE).read_text().splitlines()]
    assert [(r["file"], r["offset"]) for r in records] == [
        ("pending-1-dead.jsonl", len(encode(good[0]))),
        ("pending-1-dead.jsonl", len(data) - len(partial))]
    assert "checksum" in records[0]["reason"] and records[1]["bytes"] == partial.decode()
    assert log.quarantined == 2 and log.pending == 0
    assert not list(spool.glob("pending-*"))
    log.stop()
    assert not list(spool.glob("*.spool"))  # an empty journal leaves nothing behind


def test_a_row_reads_back_from_the_spool_as_it_was_written(tmp_path: Path) -> None:
    """The records are written by pydantic's serialiser (and by `json` for what it refuses):
    times in any zone, non-ASCII, a NUL, a lone surrogate and a float's last digit come back
    equal, and appends after a reread go on where the file ends."""
    spool = tmp_path / "spool"
    spool.mkdir()
    paris = datetime(2025, 6, 1, 9, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    rows = [_row(1), {**_row(2), "lead_id": "é\x00ü", "probability": 0.1 + 0.2,
                      "as_of": paris}, {**_row(3), "lead_id": "\ud800", "as_of": None}]
    segment = Segment.create(spool)
    segment.append(encode(rows[0]))
    assert segment.read() == ([rows[0]], [])
    segment.append(b"".join(encode(r) for r in rows[1:]))
    back, bad = segment.read()
    assert bad == [] and back == rows
    assert back[1]["as_of"].utcoffset() == timedelta(hours=2)
    assert segment.size == sum(len(encode(r)) for r in rows)
    segment.close()


def test_rows_spooled_before_the_outlook_columns_go_in_beside_new_ones(tmp_path: Path) -> None:
    """An upgrade with rows still in the spool: a row written before migration 0010 (no
    outlook keys) and one written after share a segment; one insert takes both, nothing is
    quarantined and the old row's outlook columns are null."""
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    migrate(url)
    engine = engine_for(url)
    spool = tmp_path / "spool"
    spool.mkdir()
    new = {**_row(2), "p_by_90": 0.25, "expected_days": 40.0, "expected_amount": 1200.0}
    (spool / "pending-1-dead.jsonl").write_bytes(encode(_row(1)) + encode(new))
    log = ScoreLog(engine, spool_dir=spool)
    log.flush(counters=False)
    assert log.outage is None and log.quarantined == 0
    with engine.connect() as conn:
        got = conn.execute(sa.text("SELECT lead_id, p_by_90, expected_amount FROM score_log "
                                   "ORDER BY lead_id")).all()
    assert [tuple(r) for r in got] == [("L0001", None, None), ("L0002", 0.25, 1200.0)]
    log.stop()
