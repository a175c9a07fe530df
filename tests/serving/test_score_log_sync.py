"""The durable score log's sync per batch: the requests the fast path scored together share
one sync and are on disk when `commit` returns, a commit never waits for a turn of the event
loop (no request is held back for another: a group commit that waited for the requests in
flight beside a batch was measured to save 7-15% of the syncs and no throughput, and was
removed), and a sync the disk refuses refuses every request of its batch (none is
acknowledged). A real ScoreLog on SQLite, its journal on disk."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from propensity.database import engine_for, migrate
from serving.scorelog import ScoreLog
from serving.spool import Segment


def _row(i: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"scored_at": now, "lead_id": f"G{i:04d}", "probability": 0.5, "score": 50,
            "grade": "B", "mql": False, "model_name": "lead-conversion", "model_version": "1",
            "threshold_version": 0, "input_hash": "-", "as_of": now}


def _log(tmp_path: Path) -> tuple[ScoreLog, Histogram]:
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    migrate(url)
    synced = Histogram("syncs", "requests a sync", registry=CollectorRegistry())
    log = ScoreLog(engine_for(url), spool_dir=tmp_path / "spool", synced=synced)
    log._segment = Segment.create(tmp_path / "spool")  # as start() does, without the writer
    return log, synced


def _syncs(synced: Histogram) -> tuple[float, float]:
    """(syncs, requests they made durable)."""
    values = {s.name: s.value for m in synced.collect() for s in m.samples}
    return values["syncs_count"], values["syncs_sum"]


def _on_disk(log: ScoreLog) -> list[str]:
    assert log._segment is not None
    rows, bad = Segment(log._segment.path, log._segment.file).read()
    assert bad == []
    return [r["lead_id"] for r in rows]


def test_a_batch_shares_one_sync_and_is_on_disk_when_commit_returns(tmp_path: Path) -> None:
    log, synced = _log(tmp_path)
    asyncio.run(log.commit([_row(1), _row(2), _row(3)], requests=3))
    assert _on_disk(log) == ["G0001", "G0002", "G0003"]
    assert _syncs(synced) == (1, 3)
    asyncio.run(log.commit([_row(4)]))
    assert _on_disk(log)[-1] == "G0004" and _syncs(synced) == (2, 4)
    assert log.pending == 4
    log.stop()


def test_a_commit_never_waits_for_the_loop(tmp_path: Path) -> None:
    """Its coroutine ends at its first step: no turn of the loop, no timer, no sibling."""
    log, synced = _log(tmp_path)
    step = log.commit([_row(1)])
    with pytest.raises(StopIteration):
        step.send(None)
    assert _on_disk(log) == ["G0001"] and _syncs(synced) == (1, 1)
    log.stop()


def test_a_sync_the_disk_refuses_refuses_every_request_of_its_batch(tmp_path: Path) -> None:
    log, synced = _log(tmp_path)
    assert log._segment is not None
    # the journal's descriptor reopened read-only: the kernel refuses the write (EBADF)
    log._segment.file.close()
    log._segment.file = log._segment.path.open("rb", buffering=0)
    with pytest.raises(OSError):
        asyncio.run(log.commit([_row(i) for i in range(3)], requests=3))
    assert _syncs(synced) == (0, 0) and log.pending == 0
    assert log._segment.path.stat().st_size == 0
    log._segment.file.close()


def test_a_commit_after_shutdown_is_refused(tmp_path: Path) -> None:
    log, synced = _log(tmp_path)
    log.stop()
    with pytest.raises(OSError, match="shut down"):
        asyncio.run(log.commit([_row(1)]))
    assert _syncs(synced) == (0, 0)
