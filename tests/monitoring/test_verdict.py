"""Every branch of `monitoring.report.verdict`, from figures built here (no server, no data):
what is judged, what is not and says so, and which action each limit crossed asks for."""

from __future__ import annotations

import pytest

from propensity.monitoring.drift import FeatureDrift, PeriodDrift
from propensity.monitoring.performance import Band, Figures, Performance
from propensity.monitoring.reference import SCORE, Binned, Reference
from propensity.monitoring.report import Limits, verdict

LIMITS = Limits(psi=0.2, top_features=2, calibration_points=5.0, band_leads=100, min_served=50)
REFERENCE = Reference(
    features=tuple(Binned(n, (1.0,), (5, 5, 0)) for n in ("a", "b", "c")),
    score=Binned(SCORE, (0.5,), (5, 5, 0)), importance={"a": 3.0, "b": 2.0, "c": 1.0}, rows=10)
RANK = {"a": 1, "b": 2, "c": 3}


def window(served: int = 500, score_psi: float = 0.01,
           **psi: float) -> PeriodDrift:
    return PeriodDrift(period="2025-07-07", served=served, score_psi=score_psi, score_bins=[],
                       features=[FeatureDrift(feature=f, psi=p, importance_rank=RANK.get(f),
                                              missing_share=0.0, missing_share_reference=0.0)
                                 for f, p in sorted(psi.items(), key=lambda kv: -kv[1])])


def figures(matured: int = 0, precision: float | None = None,
            expected: float | None = None) -> Figures:
    return Figures(period="all", leads=max(matured, 1), matured=matured, mqls=0,
                   expected_conversions=0.0, expected_precision=expected, converted=None,
                   precision=precision, recall=None, auc=None)


def performance(bands: list[Band], overall: Figures | None = None) -> Performance:
    return Performance(model="lead-conversion", horizon_days=90, mql_threshold=50.0,
                       overall=overall or figures(), weeks=[], bands=bands)


def band(leads: int, gap: float | None) -> Band:
    realised = None if gap is None else 0.30 + gap / 100
    return Band(band="60-70", leads=leads, predicted=0.30, realised=realised, gap_points=gap)


@pytest.mark.parametrize(("win", "ref", "said"), [
    (None, REFERENCE, "drift not measured"),
    (window(), None, "drift not measured"),
    (window(served=49), REFERENCE, "drift not judged: 49 leads served"),
])
def test_drift_that_cannot_be_judged_says_so(win: PeriodDrift | None, ref: Reference | None,
                                            said: str) -> None:
    v = verdict(win, None, ref, LIMITS)
    assert not v.drift and not v.drift_judged and v.actions == []
    assert any(r.startswith(said) for r in v.reasons), v.reasons
    assert v.reasons[0] == "nothing crossed a limit: keep serving"
    assert not v.calibration_judged and v.reasons[-1].startswith("calibration not judged")


def test_nothing_over_a_limit_keeps_serving() -> None:
    v = verdict(window(a=0.19, b=0.05), performance([band(100, 4.9)]), REFERENCE, LIMITS)
    assert v.drift_judged and v.calibration_judged
    assert (v.drift, v.calibration, v.threshold, v.actions, v.drifted) == (
        False, False, False, [], [])
    assert v.reasons == ["nothing crossed a limit: keep serving"]


def test_the_score_moving_asks_for_a_retrain() -> None:
    v = verdict(window(score_psi=0.25), None, REFERENCE, LIMITS)
    assert v.drift and v.actions == ["retrain"] and v.drifted == [SCORE]
    assert v.reasons[0] == "the score's distribution moved: PSI 0.25 > 0.2"


def test_a_top_feature_moving_asks_for_a_retrain_and_a_lesser_one_does_not() -> None:
    top = verdict(window(b=0.3), None, REFERENCE, LIMITS)
    assert top.drift and top.actions == ["retrain"] and top.drifted == ["b"]
    assert top.reasons[0] == "top features moved: b (#2, PSI 0.30)"
    lesser = verdict(window(c=0.3), None, REFERENCE, LIMITS)
    assert not lesser.drift and lesser.drift_judged and lesser.actions == []
    assert lesser.drifted == ["c"]
    assert lesser.reasons[:2] == ["nothing crossed a limit: keep serving",
                                  "also moved (outside the top 2): c (0.30)"]


def test_more_than_eight_lesser_features_are_counted_not_listed() -> None:
    many = {f"x{i}": 0.5 + i / 100 for i in range(11)}
    v = verdict(window(**many), None, REFERENCE, LIMITS)
    moved = next(r for r in v.reasons if r.startswith("also moved"))
    assert moved.endswith(" and 3 more") and moved.count("(0.") == 8
    assert not v.drift and len(v.drifted) == 11


def test_a_band_off_asks_for_a_recalibration_unless_a_retrain_is_asked() -> None:
    off = performance([band(100, 6.0), band(100, None)])
    v = verdict(window(), off, REFERENCE, LIMITS)
    assert v.calibration and v.calibration_judged and v.actions == ["recalibrate"]
    assert v.reasons == ["calibration is off: scores 60-70: predicted 30%, realised 36% "
                         "(100 leads)"]
    both = verdict(window(score_psi=0.5), off, REFERENCE, LIMITS)
    assert both.drift and both.calibration and both.actions == ["retrain"]


def test_a_band_with_too_few_matured_leads_is_not_judged() -> None:
    v = verdict(window(), performance([band(99, 40.0)]), REFERENCE, LIMITS)
    assert not v.calibration and not v.calibration_judged and v.actions == []
    assert v.reasons[-1] == ("calibration not judged: no score band with 100 or more matured "
                             "leads (outcomes known) in the window")


@pytest.mark.parametrize(("matured", "precision", "expected", "review"), [
    (100, 0.20, 0.30, True),    # 10 points below what the scores promised
    (100, 0.40, 0.30, True),    # above counts as much: the threshold could move up
    (100, 0.34, 0.30, False),   # within 5 points
    (99, 0.10, 0.30, False),    # too few matured leads to say
    (100, None, 0.30, False),   # no MQL has matured
])
def test_mqls_converting_away_from_their_promise_ask_for_a_threshold_review(
        matured: int, precision: float | None, expected: float, review: bool) -> None:
    perf = performance([band(100, 0.0)], figures(matured, precision, expected))
    v = verdict(window(), perf, REFERENCE, LIMITS)
    assert v.threshold is review and (v.actions == ["review threshold"]) is review
    assert any(r.startswith("MQLs at 50 convert at") for r in v.reasons) is review
