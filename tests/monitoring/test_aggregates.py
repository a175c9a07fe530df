"""The aggregated report equals the per-score computation it replaced: a score log with
repeats (the same lead and as_of scored again, earlier and later), partial days, a maturity
cutoff inside the window, folded in several chunks with rows arriving between folds, on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.metrics import roc_auc_score

from propensity.database import engine_for, score_log
from propensity.monitoring import aggregates
from propensity.monitoring.aggregates import converted_cells, fold, served_cells
from propensity.monitoring.outcomes import Outcome, conversion_stages, conversions, record
from propensity.monitoring.performance import performance, performance_of_cells, served_scores
from propensity.thresholds import to_score

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


def test_a_worker_s_kept_days_follow_what_another_worker_folds(
        db: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A report's stored days are kept per process and read again where the fold moved: a
    fold another worker (engine) made, with scores replacing earlier ones of old days, is
    seen; the answer is a fresh process's and the per-score computation's."""
    rng = np.random.default_rng(11)
    monkeypatch.setattr(aggregates, "SETTLE_SECONDS", 0.0)
    record(db, [Outcome(lead_id=f"L{i}", stage="won", at=datetime(2025, 7, 1, tzinfo=UTC)
                        + timedelta(hours=int(rng.integers(0, 24 * 200))))
                for i in range(0, 400, 4)])
    other = engine_for(db.url.render_as_string(hide_password=False))
    window = (datetime(2025, 7, 1, tzinfo=UTC), datetime(2025, 12, 1, tzinfo=UTC))
    rows = _rows(rng, 3000, 1)
    with db.begin() as conn:
        conn.execute(score_log.insert(), rows)
    fold(db)  # PostgreSQL notes the ids first, and folds them once settled
    _same(*_report(db, *window))  # this process keeps the days now
    kept = aggregates._STORED[db][MODEL]
    assert kept.last_id == 3000 and len(kept.days) > 100
    again = [{**r, "id": 3001 + k, "scored_at": r["scored_at"] + timedelta(minutes=5),
              "probability": r["probability"] / 3, "score": to_score(r["probability"] / 3)}
             for k, r in enumerate(rows[:500])]  # the same leads and as_of, scored again
    with other.begin() as conn:
        conn.execute(score_log.insert(), again)
    if db.dialect.name == "postgresql":
        fold(other)  # notes the ids; they fold once settled
    assert fold(other, chunk=200) == 3500  # another worker folded them
    new, old = _report(db, *window)
    _same(new, old)
    assert kept.last_id == 3500
    aggregates._STORED.clear()  # a fresh process
    fresh, _ = _report(db, *window)
    assert new.model_dump() == fresh.model_dump()  # type: ignore[attr-defined]
    other.dispose()


def test_kept_served_counts_follow_added_counts(db: sa.Engine) -> None:
    """Drift's daily histograms are kept per process and read again for a day whose count
    moved (another worker's counters added to it): equal to summing the table's rows."""
    from propensity.database import served_histograms, upsert_adding
    from propensity.monitoring.drift import served_counts
    from propensity.monitoring.reference import Binned, Reference

    reference = Reference((Binned("a", (1.0, 2.0), (5, 5, 5, 1)),
                           Binned("b", (0.5,), (3, 3, 1), ("x", "y"))),
                          Binned("__score__", (0.1,), (4, 4, 0)), {"a": 1.0, "b": 0.5}, 10)
    rng = np.random.default_rng(2)

    def add(days: range) -> None:
        rows = [{"model_name": MODEL, "model_version": "1",
                 "day": (datetime(2025, 7, 1) + timedelta(days=d)).date(), "feature": f,
                 "bin": b, "count": int(rng.integers(1, 5))}
                for d in days for f, n in (("a", 4), ("b", 3), ("__score__", 3), ("gone", 2))
                for b in range(n) if rng.random() < 0.8]
        upsert_adding(db, served_histograms, rows, ["model_name", "model_version", "day",
                                                    "feature", "bin"], "count")

    def direct() -> dict[str, list[list[float]]]:
        with db.connect() as conn:
            table = pd.read_sql(sa.select(served_histograms), conn)
        out: dict[str, list[list[float]]] = {}
        for day, part in table.groupby(table["day"].astype(str)):
            m = np.zeros((3, 4))
            for f, b, n in part[["feature", "bin", "count"]].itertuples(index=False):
                if f in ("a", "b", "__score__"):
                    m[("a", "b", "__score__").index(f), b] += n
            out[str(day)[:10]] = m.tolist()
        return out

    start, end = datetime(2025, 7, 1).date(), datetime(2025, 8, 1).date()
    add(range(0, 10))
    first = served_counts(db, MODEL, "1", start, end, reference)
    assert {str(d): m.tolist() for d, m in first.items()} == direct()
    add(range(5, 15))  # days already kept, and new ones
    second = served_counts(db, MODEL, "1", start, end, reference)
    assert {str(d): m.tolist() for d, m in second.items()} == direct()
    assert second[datetime(2025, 7, 1).date()] is first[datetime(2025, 7, 1).date()]  # kept
