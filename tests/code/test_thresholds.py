"""Threshold curve and recommendation against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from propensity.thresholds import ThresholdSet, recommend, threshold_curve, to_score

W0, W1 = pd.Timestamp("2025-01-06", tz="UTC"), pd.Timestamp("2025-01-13", tz="UTC")
ROWS = pd.DataFrame({
    "lead_id": ["a", "b", "c", "a", "b", "d"],
    "as_of": [W0, W0, W0, W1, W1, W1],
    "probability": [0.80, 0.30, 0.20, 0.90, 0.60, 0.55],
    "label": [1, 0, 0, 1, 1, 0],
})


def test_curve_counts_each_lead_once_at_its_first_crossing() -> None:
    curve = threshold_curve(ROWS)
    # a lead bought when one of its scorings is labelled so: a and b of a, b, c, d
    assert (curve.leads, curve.converted, curve.base_rate, curve.weeks) == (4, 2, 0.5, 2.0)
    p = curve.at(50)  # a@W0 (80, bought), b@W1 (60, bought), d@W1 (55, not)
    assert (p.flagged, p.converted_flagged) == (3, 2)
    assert p.precision == pytest.approx(2 / 3) and p.recall == 1.0
    assert p.flagged_per_week == 1.5
    assert p.expected_customers == pytest.approx(0.8 + 0.6 + 0.55)
    assert p.rate_below == 0.0 and p.lift == pytest.approx((2 / 3) / 0.5)
    p = curve.at(70)
    assert (p.flagged, p.precision, p.recall) == (1, 1.0, 0.5)
    assert p.rate_below == pytest.approx(1 / 3)
    p = curve.at(0)  # everyone, at their first scoring; b bought after its W1 scoring
    assert (p.flagged, p.converted_flagged, p.recall) == (4, 2, 1.0)
    assert p.lift == 1.0  # flagging everyone is the base rate, by definition
    assert curve.at(100).flagged == 0 and curve.at(100).precision is None
    assert sum(curve.distribution) == 4 and curve.distribution[90] == 1


def test_precision_at_0_is_the_headers_base_rate() -> None:
    """Issue 31: the curve said "689 of 3,632 bought" (19.0%) over a precision at 0 of 15.9%:
    precision judged a lead by the label of the scoring that flagged it, the header by all of
    them. One outcome per lead now, in every figure; recall never passes 1."""
    rng = np.random.default_rng(3)
    n = 400
    rows = pd.DataFrame({"lead_id": [f"l{i % 150}" for i in range(n)],
                         "as_of": [W0 + pd.Timedelta(days=7 * (i // 150)) for i in range(n)],
                         "probability": rng.random(n),
                         "label": (rng.random(n) < 0.3).astype(int)})
    curve = threshold_curve(rows)
    assert curve.base_rate == pytest.approx(curve.converted / curve.leads)
    assert curve.at(0).precision == pytest.approx(curve.base_rate)
    assert curve.at(0).recall == 1.0 and curve.at(0).lift == pytest.approx(1.0)
    for p in curve.points:
        assert p.recall is None or p.recall <= 1.0
        assert p.converted_flagged <= curve.converted


def test_mql_below_grade_c_is_allowed_with_a_warning() -> None:
    assert ThresholdSet().warnings() == []
    low = ThresholdSet(mql=10, grade_c=25)
    [warning] = low.warnings()
    assert "MQL at 10" in warning and "grade C" in warning and "D" in warning
    assert low.same_values(ThresholdSet(version=4, mql=10, grade_c=25))
    assert not low.same_values(ThresholdSet())


def test_store_restores_the_defaults_and_does_not_repeat_a_version(tmp_path: Path) -> None:
    """Issue 31: `--restore 0` (the defaults) was refused, and saving the active values again
    wrote an identical new version."""
    from propensity.database import engine_for, migrate
    from propensity.threshold_store import ThresholdStore

    url = f"sqlite:///{tmp_path / 't.db'}"
    migrate(url)
    store = ThresholdStore(engine_for(url), ttl=0)
    first = store.set(ThresholdSet(mql=35), "me", "tighter", 0)
    again = store.set(ThresholdSet(mql=35), "me", "again", first.version)
    assert again.version == first.version and len(store.history()) == 1
    defaults = store.get(0)
    assert defaults is not None and defaults.same_values(ThresholdSet())
    restored = store.set(defaults, "me", "back to defaults", first.version)
    assert restored.version > first.version and restored.mql == ThresholdSet().mql
    assert len(store.history()) == 2


def test_recommendation_within_capacity_precision_or_recall() -> None:
    curve = threshold_curve(ROWS)
    by_capacity = recommend(curve, capacity_per_week=1.0)
    assert by_capacity.threshold == 56 and by_capacity.point.flagged == 2
    assert by_capacity.point.expected_customers == pytest.approx(1.4)
    assert recommend(curve, min_precision=0.9).threshold == 56
    assert recommend(curve, min_recall=1.0).threshold == 60
    # at 21-30, b is flagged at W0 (p .3); from 31 it is flagged at W1 (p .6): more expected
    rec = recommend(curve, capacity=3)
    assert rec.threshold == 31 and rec.point.expected_customers == pytest.approx(1.95)
    with pytest.raises(ValueError, match="exactly one"):
        recommend(curve)
    with pytest.raises(ValueError, match="no dates"):
        recommend(threshold_curve(ROWS.drop(columns="as_of")), capacity_per_week=1)


def test_bands_and_scores() -> None:
    t = ThresholdSet(mql=60, grade_a=80, grade_b=60, grade_c=30)
    assert [t.grade(s) for s in (95, 80, 79, 60, 30, 29)] == ["A", "A", "B", "B", "C", "D"]
    assert t.is_mql(60) and not t.is_mql(59)
    assert to_score(0.125) == 13 and to_score(0.0) == 0 and to_score(1.0) == 100
    with pytest.raises(ValueError, match="ordered"):
        ThresholdSet(grade_a=40, grade_b=60, grade_c=10)
    with pytest.raises(ValueError):
        ThresholdSet(mql=120)


def test_served_scores_are_joined_with_what_happened_next(tmp_path: object) -> None:
    from pathlib import Path

    from propensity.export_reader import load_export
    from propensity.thresholds import outcomes_of_scores
    from tests.conftest import write_tables

    path = write_tables(Path(str(tmp_path)), {
        "leads": [{"lead_id": i, "created_at": "2024-01-01"} for i in ("a", "b", "c", "z")],
        "stage_history": [{"lead_id": "a", "stage": "customer", "entered_at": "2024-02-01"},
                          {"lead_id": "b", "stage": "customer", "entered_at": "2024-09-01"},
                          {"lead_id": "z", "stage": "mql", "entered_at": "2024-12-31"}],
    })
    scores = pd.DataFrame({
        "lead_id": ["a", "b", "c", "a", "ghost", "c"],
        "scored_at": pd.to_datetime(["2024-01-10", "2024-01-10", "2024-01-10", "2024-03-01",
                                     "2024-01-10", "2024-12-01"], utc=True),
        "probability": [0.9, 0.5, 0.1, 0.8, 0.5, 0.2],
    })
    joined = outcomes_of_scores(scores, load_export(path), horizon_days=90)
    # a bought within 90 days of the first score; b bought too late; c never did; a's second
    # score came after it bought; the ghost is unknown; c's December score has no outcome yet
    assert list(zip(joined["lead_id"], joined["label"], strict=True)) == [
        ("a", 1), ("b", 0), ("c", 0), ("a", 0)]
    curve = threshold_curve(joined)
    assert curve.at(85).flagged == 1 and curve.at(85).precision == 1.0
