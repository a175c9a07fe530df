"""Reasons in words: each feature's value as a marketer reads it."""

from __future__ import annotations

import math

import numpy as np

from propensity.models.reasons import describe, explain

CATS = {"current_stage": ["lead", "mql", "sql"], "source": ["referral", "web"]}


def test_each_kind_of_feature_reads_as_a_sentence() -> None:
    assert describe("n_pricing_page_view_7d", 3.0, CATS) == (
        "3 pricing page views in the last 7 days")
    assert describe("n_events_all", 1.0, CATS) == "1 event in total"
    assert describe("n_channel_web_30d", 2.0, CATS) == "2 web touches in the last 30 days"
    assert describe("account_events_executive_30d", 1.0, CATS) == (
        "1 event by the account's executives in the last 30 days")
    assert describe("days_since_demo_request", 4.4, CATS) == "last demo request 4 days ago"
    assert describe("days_since_last_event", math.nan, CATS) == "no activity yet"
    assert describe("current_stage", 1.0, CATS) == "in stage mql"
    assert describe("source", 7.0, CATS) == "source is a rare or new value"
    assert describe("source", math.nan, CATS) == "source not known"
    assert describe("lead_age_days", 12.4, CATS) == "lead created 12 days ago"
    assert describe("engagement_trend", 2.0, CATS) == "engagement rising (2.0x the weeks before)"
    assert describe("account_executive_engaged", 0.0, CATS) == "no executive engaged"
    assert describe("open_opportunities", 2.0, CATS) == "2 open opportunities"
    assert describe("account_contacts", 1.0, CATS) == "1 contact at the account"
    assert describe("stage_changes", 1.0, CATS) == "1 stage change so far"
    assert describe("employees", 250.0, CATS) == "employees 250"


def test_numbers_read_as_a_person_writes_them() -> None:
    """No "account days since last event 1.59722": days are whole, amounts have separators,
    other fractions two significant digits."""
    assert describe("account_days_since_last_event", 1.59722, CATS) == (
        "last activity at the account 2 days ago")
    assert describe("account_days_since_last_event", 0.4, CATS) == (
        "last activity at the account less than a day ago")
    assert describe("account_days_since_last_event", math.nan, CATS) == (
        "no activity at the account yet")
    assert describe("days_since_last_event", 1.0, CATS) == "last activity 1 day ago"
    assert describe("account_events_30d", 12.0, CATS) == (
        "12 events at the account in the last 30 days")
    assert describe("open_opportunity_amount", 48000.0, CATS) == (
        "48,000 in open opportunities")
    assert describe("lost_opportunities", 1.0, CATS) == "1 lost opportunity so far"
    assert describe("value_sum_30d", 1234.5678, CATS) == (
        "event value 1,235 in the last 30 days")
    assert describe("account_annual_revenue", 12_500_000.4, CATS) == (
        "account annual revenue 12,500,000")
    assert describe("account_employees", 850.0, CATS) == "account employees 850"
    assert describe("score_ratio", 1.59722, CATS) == "score ratio 1.6"
    assert describe("score_ratio", 0.0123, CATS) == "score ratio 0.012"


def test_top_reasons_are_the_largest_contributions_of_each_sign() -> None:
    names = ["lead_age_days", "open_opportunities", "stage_changes", "employees"]
    values = np.array([10.0, 1.0, 2.0, 40.0])
    pos, neg = explain(names, values, np.array([0.5, 1.5, -0.25, 0.0]), {}, top=3)
    assert [r.feature for r in pos] == ["open_opportunities", "lead_age_days"]
    assert [r.feature for r in neg] == ["stage_changes"]
    assert pos[0].text == "1 open opportunity" and pos[0].impact == 1.5


def test_a_reason_speaks_for_its_family_with_the_family_sign() -> None:
    """Demo requests counted over 7 days, 30 days, in total and as days since the last one
    are one piece of evidence: a model (its logistic part) weighing the 7-day count below
    zero while the family raises the score gives no negative "3 demo requests" reason. The
    family's reason has the summed impact and the words of the member that did most."""
    names = ["n_demo_request_7d", "n_demo_request_30d", "n_demo_request_all",
             "days_since_demo_request", "lead_age_days", "n_email_open_7d"]
    values = np.array([3.0, 4.0, 5.0, 2.2, 30.0, 0.0])
    contrib = np.array([-0.06, -0.04, 0.055, 0.133, -0.2, -0.01])
    pos, neg = explain(names, values, contrib, {})
    assert [(r.feature, r.text, r.impact) for r in pos] == [
        ("days_since_demo_request", "last demo request 2 days ago", 0.088)]
    assert [r.feature for r in neg] == ["lead_age_days", "n_email_open_7d"]
    assert not any("demo" in r.text for r in neg)
    pos, neg = explain(names, values, np.array([-0.3, -0.1, 0.05, 0.1, 0.2, 0.0]), {})
    # the family weighs against the lead (the model's genuine verdict): the member that
    # pulled it down speaks, in words that do not read as a buying signal
    assert [(r.feature, r.text, r.impact) for r in neg] == [(
        "n_demo_request_7d",
        "3 demo requests in the last 7 days, which this model weighs against buying", -0.25)]
