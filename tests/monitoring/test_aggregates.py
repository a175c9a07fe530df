"""The aggregated report equals the per-score computation it replaced: a score log with
repeats (the same lead and as_of scored again, earlier and later), partial days, a maturity
cutoff inside the window, folded in several chunks with rows arriving between folds, on
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.metrics import roc_auc_score

from propensity.database import engine_for, migrate, score_log
from propensity.monitoring import aggregates
from propensity.monitoring.aggregates import converted_cells, fold, served_cells
from propensity.monitoring.outcomes import Outcome, conversion_stages, conversions, record
from propensity.monitoring.performance import performance, performance_of_cells, served_scores
from propensity.thresholds import to_score
from tests.conftest import fresh_postgres

MODEL = "lead-conversion"
NOW = datetime(2025, 12, 1, 15, 30, tzinfo=UTC)
HORIZON = 90


def _rows(rng: np.random.Generator, n: int, first_id: int) -> list[dict[str, object]]:
    start = datetime(2025, 7, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        lead = f"L{rng.integers(0, 400)}"
        as_of = start + timedelta(hours=int(rng.integers(0, 24 * 150)))
        p = float(rng.beta(1.2, 6))
        out.append({"id": first_id + i, "scored_at": as_of + timedelta(
            minutes=int(rng.integers(0, 600))), "lead_id": lead, "probability": p,
            "score": to_score(p), "grade": "C", "mql": False,
            "model_name": MODEL if rng.random() < 0.95 else "other", "model_version": "1",
            "threshold_version": 0, "input_hash": "-", "as_of": as_of})
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/scores.db"
        migrate(url)
        engine = engine_for(url)
        yield engine
        engine.dispose()
        return
    with fresh_postgres() as url:
        migrate(url)
        engine = engine_for(url)
        yield engine
        engine.dispose()


def _report(engine: sa.Engine, start: datetime, end: datetime) -> tuple[object, object]:
    cut = NOW - timedelta(days=HORIZON)
    cells = served_cells(engine, MODEL, start, end, cut)
    conv = converted_cells(engine, MODEL, start, end, cut, HORIZON, conversion_stages())
    new = performance_of_cells(cells, conv, model=MODEL, horizon_days=HORIZON, mql=20)
    old = performance(served_scores(engine, MODEL, start, end), conversions(engine),
                      model=MODEL, horizon_days=HORIZON, mql=20, now=pd.Timestamp(NOW))
    return new, old


def _same(new: object, old: object) -> None:
    a, b = new.model_dump(), old.model_dump()  # type: ignore[attr-defined]
    for figures in [*zip(a["weeks"], b["weeks"], strict=True), (a["overall"], b["overall"])]:
        got, want = figures
        auc_got, auc_want = got.pop("auc"), want.pop("auc")
        assert got == pytest.approx(want, abs=1e-9)
        assert (auc_got is None) == (auc_want is None)
        if auc_got is not None:  # probabilities ranked to 0.1 point: ties count half
            assert auc_got == pytest.approx(auc_want, abs=2e-3)
    assert len(a["bands"]) == len(b["bands"])
    for got, want in zip(a["bands"], b["bands"], strict=True):
        assert got == pytest.approx(want, abs=1e-9)


def test_aggregated_performance_equals_the_per_score_one(db: sa.Engine,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    monkeypatch.setattr(aggregates, "SETTLE_SECONDS", 0.0)
    record(db, [Outcome(lead_id=f"L{i}", stage="customer" if i % 2 else "won",
                        at=datetime(2025, 7, 1, tzinfo=UTC) + timedelta(
                            hours=int(rng.integers(0, 24 * 200))))
                for i in range(0, 400, 3)])
    windows = [(datetime(2025, 7, 1, tzinfo=UTC), datetime(2025, 12, 1, tzinfo=UTC)),
               (datetime(2025, 7, 3, 7, 15, tzinfo=UTC), datetime(2025, 9, 20, 18, tzinfo=UTC))]
    next_id = 1
    for batch in range(3):  # rows arrive, part is folded, more arrive: fold + live tail
        rows = _rows(rng, 3000, next_id)
        rows += [{**r, "id": next_id + 3000 + k, "scored_at": r["scored_at"] + timedelta(
            minutes=int(rng.choice([-1, 1]) * rng.integers(1, 30))),  # before or after it
            "probability": r["probability"] / 2,
            "score": to_score(r["probability"] / 2)} for k, r in enumerate(rows[:400])]
        next_id += len(rows)
        with db.begin() as conn:
            conn.execute(score_log.insert(), rows)
        if batch == 1:
            fold(db, chunk=1000)
        for start, end in windows:
            new, old = _report(db, start, end)
            assert old.overall.matured > 500 and old.overall.converted  # type: ignore[attr-defined]
            _same(new, old)


def test_auc_of_counts_is_the_rank_auc_when_buckets_separate() -> None:
    rng = np.random.default_rng(1)
    p = rng.integers(0, 1000, 3000)
    y = (rng.random(3000) < p / 1000).astype(int)
    cells = pd.DataFrame({"b": p, "y": y}).groupby("b")["y"].agg(["size", "sum"])
    got = aggregates.auc_of(cells.index.to_numpy(), cells["size"].to_numpy(),
                            cells["sum"].to_numpy())
    assert got == pytest.approx(roc_auc_score(y, p), abs=1e-12)
