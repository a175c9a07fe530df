"""The durable score log's group commit: requests in flight on a worker share one sync, a
sibling that never commits holds the group back only for `commit_delay`, a lone request is not
held back at all, and a sync the disk refuses refuses every request of its group (none is
acknowledged). A real ScoreLog on SQLite, its journal on disk."""

from __future__ import annotations

import asyncio
import time
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


def _log(tmp_path: Path, delay: float) -> tuple[ScoreLog, Histogram]:
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    migrate(url)
    synced = Histogram("syncs", "requests a sync", registry=CollectorRegistry())
    log = ScoreLog(engine_for(url), spool_dir=tmp_path / "spool", commit_delay=delay,
                   synced=synced)
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


def test_requests_in_flight_share_one_sync_and_are_on_disk_when_answered(
        tmp_path: Path) -> None:
    log, synced = _log(tmp_path, delay=5.0)  # far longer than the test: only siblings end it

    async def request(i: int, scoring: float) -> list[str]:
        with log.in_flight():
            await asyncio.sleep(scoring)  # received, being scored
            await log.commit([_row(i)])
            return _on_disk(log)  # what the answer could say is durable now

    async def main() -> list[list[str]]:
        return await asyncio.gather(request(1, 0.0), request(2, 0.01), request(3, 0.05))

    t0 = time.monotonic()
    seen = asyncio.run(main())
    assert time.monotonic() - t0 < 2.0  # not the 5 s bound: the last sibling ended the wait
    assert _syncs(synced) == (1, 3)
    assert all(sorted(s) == ["G0001", "G0002", "G0003"] for s in seen)
    log.stop()


def test_a_sibling_that_never_commits_holds_the_group_back_at_most_the_delay(
        tmp_path: Path) -> None:
    log, synced = _log(tmp_path, delay=0.2)

    async def main() -> float:
        stalled = asyncio.Event()
        release = asyncio.Event()

        async def sibling() -> None:  # in flight, stuck (e.g. waiting for the database)
            with log.in_flight():
                stalled.set()
                await release.wait()

        task = asyncio.create_task(sibling())
        await stalled.wait()
        t0 = time.monotonic()
        with log.in_flight():
            await log.commit([_row(1)])
        waited = time.monotonic() - t0
        assert _on_disk(log) == ["G0001"]
        release.set()
        await task
        # alone in flight: no wait at all
        t0 = time.monotonic()
        with log.in_flight():
            await log.commit([_row(2)])
        return waited, time.monotonic() - t0

    waited, alone = asyncio.run(main())
    assert 0.19 <= waited < 2.0, waited
    assert alone < 0.19, alone
    assert _syncs(synced) == (2, 2)
    log.stop()


def test_a_sync_the_disk_refuses_refuses_every_request_of_its_group(tmp_path: Path) -> None:
    log, synced = _log(tmp_path, delay=5.0)
    assert log._segment is not None
    # the journal's descriptor reopened read-only: the kernel refuses the write (EBADF)
    log._segment.file.close()
    log._segment.file = log._segment.path.open("rb", buffering=0)

    async def request(i: int) -> BaseException | None:
        with log.in_flight():
            await asyncio.sleep(0.01 * i)
            try:
                await log.commit([_row(i)])
            except OSError as exc:
                return exc
            return None

    async def main() -> list[BaseException | None]:
        return await asyncio.gather(*(request(i) for i in range(3)))

    refused = asyncio.run(main())
    assert all(isinstance(r, OSError) for r in refused), refused
    assert _syncs(synced) == (0, 0) and log.pending == 0
    assert log._segment.path.stat().st_size == 0
    log._segment.file.close()


def test_a_group_its_loop_leaves_behind_is_not_acknowledged_nor_joined_again(
        tmp_path: Path) -> None:
    """A worker's loop ending while a group waits (shutdown): its request is not answered
    (its rows may be written: at least once), and a later loop's commit is not stuck behind
    the group the dead loop left."""
    log, _ = _log(tmp_path, delay=5.0)

    async def ending() -> None:
        async def sibling() -> None:  # in flight, stuck: the group waits for it
            with log.in_flight():
                await asyncio.sleep(10)

        holder = asyncio.create_task(sibling())
        await asyncio.sleep(0)
        with log.in_flight():
            waiting = asyncio.create_task(log.commit([_row(1)]))
            await asyncio.sleep(0.05)
            assert not waiting.done() and log._group is not None
        holder.cancel()
        waiting.cancel()  # as the loop's end cancels every task left
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(ending())

    async def later() -> None:
        with log.in_flight():
            await asyncio.wait_for(log.commit([_row(2)]), timeout=1.0)

    asyncio.run(later())
    assert _on_disk(log)[-1] == "G0002"
    log.stop()
