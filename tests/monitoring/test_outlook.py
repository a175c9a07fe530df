"""The outlook's monitoring: scores logged with their outlook (migration 0010), outcomes the
CRM reported, and per score band the amount and days expected against those realised,
checked against a plain per-lead computation, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from propensity.database import score_log
from propensity.monitoring.outcomes import Outcome, record
from propensity.monitoring.outlook import outlook_bands
from propensity.monitoring.report import build_report
from propensity.thresholds import to_score

MODEL = "lead-conversion"
START = datetime(2025, 7, 1, tzinfo=UTC)
END = datetime(2025, 9, 1, tzinfo=UTC)
NOW = pd.Timestamp("2025-10-15", tz="UTC")



def _world(engine: sa.Engine, n: int = 300) -> pd.DataFrame:
    """n leads scored once in the window with an outlook (a tenth also without one, which
    must be left out), some won after their as_of, some converted before it."""
    rng = np.random.default_rng(3)
    rows, found = [], []
    truth = []
    for i in range(n):
        lead = f"L{i}"
        as_of = START + timedelta(hours=int(rng.integers(0, 24 * 60)))
        p = float(rng.beta(1.5, 4))
        days, amount = float(rng.integers(5, 120)), float(rng.lognormal(9, 0.5))
        row = {"scored_at": as_of, "lead_id": lead, "probability": p, "score": to_score(p),
               "grade": "C", "mql": False, "model_name": MODEL, "model_version": "1",
               "threshold_version": 0, "input_hash": "-", "as_of": as_of,
               "p_by_90": p, "expected_days": days, "expected_amount": amount}
        rows.append(row)
        if i % 10 == 0:  # asked without the outlook, later: not counted
            rows.append({**row, "scored_at": as_of + timedelta(minutes=1), "p_by_90": None,
                         "expected_days": None, "expected_amount": None,
                         "lead_id": f"{lead}-plain"})
        took = float(rng.integers(1, 200))
        won = rng.random() < p
        before = rng.random() < 0.05  # converted before the score: not after it
        at = as_of + (timedelta(days=-3) if before else timedelta(days=took))
        if won:
            value = float(rng.lognormal(9, 0.6))
            found.append(Outcome(lead_id=lead, stage="won", at=at, opportunity_id=f"O{i}",
                                 amount=value))
        truth.append({"lead_id": lead, "score": to_score(p), "p": p, "days": days,
                      "amount": amount, "won": won and not before,
                      "value": value if won else np.nan, "took": took if won else np.nan,
                      "as_of": as_of})
    with engine.begin() as conn:
        conn.execute(score_log.insert(), rows)
    record(engine, found)
    return pd.DataFrame(truth)


def test_expected_amount_and_days_against_realised_by_band(db: sa.Engine) -> None:
    truth = _world(db)
    bands = {b.band: b for b in outlook_bands(db, MODEL, START, END, NOW)}
    band = np.minimum(truth["score"] // 10, 9)
    assert sum(b.leads for b in bands.values()) == len(truth)
    assert sum(b.won for b in bands.values()) == int(truth["won"].sum()) > 0
    for b, part in truth.groupby(band):
        got = bands[f"{b * 10}-{100 if b == 9 else b * 10 + 9}"]
        won = part[part["won"]]
        assert got.leads == len(part) and got.won == len(won)
        assert got.converted == len(won)  # here every conversion is a won deal
        if len(won):
            assert got.expected_amount == pytest.approx(won["amount"].mean())
            assert got.realised_amount == pytest.approx(won["value"].mean())
            assert got.expected_days == pytest.approx(won["days"].median())
            assert got.realised_days == pytest.approx(won["took"].median())
        ripe = part[part["as_of"] + pd.Timedelta(days=90) <= NOW]
        assert got.matured == len(ripe)
        if len(ripe):
            assert got.p_by_90 == pytest.approx(ripe["p"].mean())
            assert got.converted_90 == pytest.approx(
                (ripe["won"] & (ripe["took"] <= 90)).mean())


def test_the_report_carries_the_outlook_bands_and_none_without_outlook(db: sa.Engine) -> None:
    report = build_report(db, model=MODEL, version="1", reference=None, horizon_days=90,
                          mql=30, start=START, end=END, now=NOW.to_pydatetime())
    assert report.outlook == []  # nothing logged yet
    _world(db, n=40)
    report = build_report(db, model=MODEL, version="1", reference=None, horizon_days=90,
                          mql=30, start=START, end=END, now=NOW.to_pydatetime())
    assert sum(b.leads for b in report.outlook) == 40
