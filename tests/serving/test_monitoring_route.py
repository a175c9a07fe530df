"""`serving/routes/monitoring.py`: the per-worker report cache keeps each report under the
champion and threshold it was built with.

A real SQLite score log and a real threshold store; another admin's change lands between two
reads of the active thresholds (the race a second read in `report_for` opened).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

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
    state = AppState(settings=ServingSettings(), store=ModelStore(Settings(
        models_dir=tmp_path / "models"), [LEAD_CONVERSION]), keys=KeyRing(engine),
        log=ScoreLog(engine), metrics=Metrics(), thresholds=thresholds)
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
