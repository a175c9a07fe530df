"""`serving/routes/monitoring.py`: the per-worker report cache keeps each report under the
champion and threshold it was built with, and a client looping on the report is answered from
it without a pass of the score log's writer.

A real SQLite score log and a real threshold store; another admin's change lands between two
reads of the active thresholds (the race a second read in `report_for` opened).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from propensity.api_keys import KeyRing
from propensity.database import engine_for, migrate, score_log
from propensity.settings import Settings
from propensity.targets import LEAD_CONVERSION
from propensity.threshold_store import ThresholdStore
from propensity.thresholds import ThresholdSet
from serving.config import ServingSettings
from serving.deps import AppState
from serving.metrics import Metrics
from serving.model_store import ModelStore
from serving.routes import monitoring
from serving.scorelog import ScoreLog


class ChangedAfterFirstRead(ThresholdStore):
    """Thresholds another admin changes (for real, in the database) right after this worker's
    first read: every read after that one sees the new MQL threshold."""

    def __init__(self, engine: object, bump: float) -> None:
        super().__init__(engine, ttl=0.0)  # type: ignore[arg-type]
        self.bump = bump
        self.raced = False

    def active(self, model: str = LEAD_CONVERSION) -> ThresholdSet:
        got = super().active(model)
        if not self.raced:
            self.raced = True
            changed = got.model_copy(update={"mql": got.mql + self.bump})
            self.set(changed, "another admin", "a change between two reads", got.version)
        return got


def _rows(at: datetime, *ids: str) -> list[dict[str, Any]]:
    return [{"scored_at": at, "lead_id": i, "probability": 0.3, "score": 30, "grade": "C",
             "mql": False, "model_name": LEAD_CONVERSION, "model_version": "1",
             "threshold_version": 0, "input_hash": "-", "as_of": at} for i in ids]


def _state(tmp_path: Path, engine: Any, thresholds: ThresholdStore, log: ScoreLog) -> AppState:
    return AppState(settings=ServingSettings(), store=ModelStore(Settings(
        models_dir=tmp_path / "models"), [LEAD_CONVERSION]), keys=KeyRing(engine), log=log,
        metrics=Metrics(), thresholds=thresholds)


def test_a_looping_client_is_answered_the_report_without_flushing_the_log(
        tmp_path: Path) -> None:
    """Scores wait for the database on this worker all the time while it serves: the route
    flushed the log (and upserted the served histograms) before every reused report. Now a
    row that cannot move the window leaves the log alone; one past the window's end (a new
    day, which moves the default window) still flushes and is in the next report."""
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    migrate(url)
    engine = engine_for(url)
    day = datetime(2026, 3, 10, 12, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(score_log.insert(), _rows(day, "L0", "L1", "L2"))
    log = ScoreLog(engine, spool_dir=tmp_path / "spool", durable=False)
    state = _state(tmp_path, engine, ThresholdStore(engine), log)

    def report() -> dict[str, Any]:
        answer = asyncio.run(monitoring.monitoring(state, None, None, None))  # type: ignore[arg-type]
        return dict(json.loads(answer.body))

    monitoring._recent.clear()
    try:
        first = report()
        assert first["end"].startswith("2026-03-11")
        log.append(_rows(day + timedelta(hours=1), "L3"))  # the same day: the same window
        assert report() == first and log.pending == 1  # reused, nothing flushed
        log.append(_rows(day + timedelta(days=1), "L4"))  # the next day: the window moves
        moved = report()
        assert log.pending == 0 and moved["end"].startswith("2026-03-12")
        assert moved["performance"]["overall"]["leads"] == 5
    finally:
        monitoring._recent.clear()
        monitoring._json.clear()
        engine.dispose()


def test_a_report_is_kept_under_the_threshold_it_was_built_with(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    migrate(url)
    engine = engine_for(url)
    at = datetime(2026, 3, 10, 12, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(score_log.insert(), [
            {"scored_at": at, "lead_id": f"L{i}", "probability": p, "score": round(p * 100),
             "grade": "C", "mql": False, "model_name": LEAD_CONVERSION, "model_version": "1",
             "threshold_version": 0, "input_hash": "-", "as_of": at}
            for i, p in enumerate((0.1, 0.4, 0.7))])
    thresholds = ChangedAfterFirstRead(engine, bump=7.0)
    first_mql = thresholds.current().mql
    state = _state(tmp_path, engine, thresholds, ScoreLog(engine))
    start, end = at - timedelta(days=1), at + timedelta(days=1)
    try:
        built = monitoring.report_for(state, start, end)
        assert built.performance is not None
        assert built.performance.mql_threshold == first_mql
        # asked again within the reuse time: the threshold is another now, so is the report
        again = monitoring.report_for(state, start, end)
        assert again.performance is not None
        assert again.performance.mql_threshold == first_mql + 7.0, (
            "a report built with the old threshold was answered under the new one")
    finally:
        monitoring._recent.clear()
        monitoring._json.clear()
        engine.dispose()


def test_clients_looping_on_the_report_are_paced(tmp_path: Path) -> None:
    """Four clients at once get the report one turn apart (each ~1 MB of JSON the event loop
    writes beside the scores), not all together once it is built."""
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    migrate(url)
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(score_log.insert(), _rows(datetime(2026, 3, 10, 12, tzinfo=UTC), "L0"))
    state = _state(tmp_path, engine, ThresholdStore(engine), ScoreLog(engine))

    done: list[float] = []
    began = time.monotonic()

    async def one() -> bytes:
        answer = await monitoring.monitoring(state, None, None, None)  # type: ignore[arg-type]
        done.append(time.monotonic())
        return bytes(answer.body)

    async def four() -> None:
        answers = await asyncio.gather(*(one() for _ in range(4)))
        assert len(set(answers)) == 1  # one report, reused

    try:
        asyncio.run(four())
        gaps = [b - a for a, b in itertools.pairwise(done)]
        # the last two are answered from the report built for the first, a turn apart
        assert done[-1] - began >= 3 * monitoring.PACE_SECONDS, gaps
        assert gaps[-1] >= 0.5 * monitoring.PACE_SECONDS, gaps
    finally:
        monitoring._recent.clear()
        monitoring._json.clear()
        engine.dispose()
