"""Odoo's predictive lead scoring, rule by rule, on examples small enough to compute by hand.

Stages in sequence: new < qualified < proposal < won. Every expected number below is worked
out in the comment beside it from the counts the rules give.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from propensity.export_reader import load_export
from propensity.features import FeaturePlan, fit_feature_spec
from propensity.features.batch import lead_feature_matrix
from propensity.funnel.journeys import Journeys, build_journeys
from propensity.models.baselines import odoo_naive_bayes
from propensity.models.odoo_learner import OdooScorer, field_columns, odoo_history
from propensity.models.odoo_pls import (
    PlsTable,
    fit_as_of,
    fit_table,
    log_odds,
    matrix_leads,
    probability,
    reasons,
    table_from_dict,
    table_to_dict,
)
from propensity.odoo_history import OdooPlsConfig, closed_leads, lead_values, open_lead_fields
from propensity.problems import PropensityError
from propensity.snapshots import lead_entities
from propensity.tables import CrmExport, truncate_export

STAGES = ("new", "qualified", "proposal", "won")


def _history(*leads: tuple[str | None, str, bool, dict[str, object]]) -> pd.DataFrame:
    """Closed leads as (team, stage, won, {field: value})."""
    return pd.DataFrame([{"team": team, "stage_id": stage, "won": won, **fields}
                         for team, stage, won, fields in leads])


def _leads(*leads: tuple[str | None, str | None, dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame([{"team": team, "stage_id": stage, **fields}
                         for team, stage, fields in leads])


def _cell(table: PlsTable, field: str, value: str, team: str | None = "A") -> tuple[float, float]:
    c = table.cells
    row = c[(c["field"] == field) & (c["value"] == value)
            & (c["team"].isna() if team is None else c["team"] == team)]
    assert len(row) == 1, (field, value, team)
    return float(row["won"].iloc[0]), float(row["lost"].iloc[0])


# 2 won, one lost in qualified, one lost in new; sources web, web, (empty), ads
BASIC = _history(("A", "won", True, {"source_id": "web"}),
                 ("A", "won", True, {"source_id": "web"}),
                 ("A", "qualified", False, {"source_id": None}),
                 ("A", "new", False, {"source_id": "ads"}))


def test_each_cell_starts_at_a_tenth_on_both_counts() -> None:
    table = fit_table(BASIC, STAGES)
    assert _cell(table, "source_id", "web") == pytest.approx((2.1, 0.1))
    assert _cell(table, "source_id", "ads") == pytest.approx((0.1, 1.1))
    assert not ((table.cells["field"] == "source_id") & table.cells["value"].isna()).any()


def test_stages_count_cumulatively() -> None:
    """Won: every stage. Lost: its own stage and every stage before it."""
    table = fit_table(BASIC, STAGES)
    assert _cell(table, "stage_id", "new") == pytest.approx((2.1, 2.1))
    assert _cell(table, "stage_id", "qualified") == pytest.approx((2.1, 1.1))
    assert _cell(table, "stage_id", "proposal") == pytest.approx((2.1, 0.1))
    assert _cell(table, "stage_id", "won") == pytest.approx((2.1, 0.1))


def test_priors_come_from_the_first_stage_and_the_stage_divides_by_them() -> None:
    table = fit_table(BASIC, STAGES)
    p = probability(table, _leads(("A", "new", {}), ("A", "qualified", {}),
                                  ("A", "proposal", {})))
    # priors 2.1 / 4.2 each; P(new | .) = 2.1 / 2.1 both -> 50%
    # qualified: won 2.1/2.1, lost 1.1/2.1 -> 1 / (1 + 1.1/2.1) = 65.625% (a tie: the
    # binary value decides which way it rounds)
    # proposal: lost 0.1/2.1 -> 1 / (1 + 0.1/2.1) = 95.4545% -> 95.45
    assert p[0] == 50.0 and p[1] in (65.62, 65.63) and p[2] == 95.45


def test_a_field_divides_by_its_own_total_not_the_prior() -> None:
    history = _history(("A", "won", True, {"source_id": "web"}),
                       ("A", "won", True, {"source_id": "web"}),
                       ("A", "won", True, {"source_id": None}),
                       ("A", "new", False, {"source_id": "web"}),
                       ("A", "new", False, {"source_id": "ads"}),
                       ("A", "new", False, {"source_id": None}),
                       ("A", "new", False, {"source_id": None}))
    table = fit_table(history, STAGES)
    # priors 3.1 / 4.1; web: won 2.1 of 2.2, lost 1.1 of 2.2 (ads: 0.1, 1.1)
    # 3.1 * 2.1/2.2 vs 4.1 * 1.1/2.2 -> 6.51 / (6.51 + 4.51) = 59.074% (by the prior: 65.625%)
    assert probability(table, _leads(("A", "new", {"source_id": "web"}))).tolist() == [59.07]


def test_values_never_seen_are_skipped() -> None:
    history = _history(("A", "won", True, {"source_id": "web"}),
                       ("A", "new", False, {"source_id": "ads"}),
                       ("A", "new", False, {"source_id": "ads"}))
    table = fit_table(history, STAGES)
    # priors 1.1 / 2.1: 1.1 / 3.2 = 34.375% (a tie, as above); "fax" has no cell
    p = probability(table, _leads(("A", "new", {"source_id": "fax"}),
                                  ("A", "new", {"source_id": None})))
    assert p[0] == p[1] and p[0] in (34.37, 34.38)


def test_empty_fields_are_skipped_except_email_and_phone_state() -> None:
    history = _history(("A", "won", True, {"email_state": "correct", "country_id": "BE"}),
                       ("A", "won", True, {"email_state": None, "country_id": None}),
                       ("A", "new", False, {"email_state": None, "country_id": "BE"}),
                       ("A", "new", False, {"email_state": None, "country_id": None}))
    table = fit_table(history, STAGES)
    assert _cell(table, "email_state", "False") == pytest.approx((1.1, 2.1))
    assert not (table.cells["value"] == "None").any()
    p = probability(table, _leads(("A", "new", {"email_state": None, "country_id": None})))
    # priors 2.1 each; email False: won 1.1 of 2.2, lost 2.1 of 2.2; country skipped
    # 1.1 / (1.1 + 2.1) = 34.375% (a tie, as above)
    assert p[0] in (34.37, 34.38)


def test_a_tag_counts_only_from_fifty_closed_leads() -> None:
    def table_with(tagged: int) -> PlsTable:
        won = [("A", "won", True, {"tag_id": ("vip",)})] * tagged
        lost = [("A", "new", False, {"tag_id": ("cold",)})] * 60
        return fit_table(_history(*won, *lost), STAGES)

    lead = _leads(("A", "new", {"tag_id": ("vip",)}))
    # 49 won with the tag: its cell holds 49.1 + 0.1 = 49.2 < 50, ignored: the prior alone
    assert probability(table_with(49), lead).tolist() == [round(100 * 49.1 / 109.2, 2)]
    # 50: 50.2 counts. vip: won 50.1 of 50.2 (cold 0.1), lost 0.1 of 60.2 (cold 60.1)
    s_won, s_lost = 50.1 / 110.2 * 50.1 / 50.2, 60.1 / 110.2 * 0.1 / 60.2
    assert probability(table_with(50), lead).tolist() == [
        round(100 * s_won / (s_won + s_lost), 2)]
    assert probability(table_with(50), lead)[0] == 99.8


def test_teams_have_their_own_table_and_others_use_the_pool() -> None:
    history = _history(("A", "won", True, {"source_id": "web"}),
                       ("A", "new", False, {"source_id": "ads"}),
                       ("B", "won", True, {"source_id": "ads"}),
                       ("B", "won", True, {"source_id": "ads"}),
                       ("B", "new", False, {"source_id": "web"}),
                       (None, "new", False, {"source_id": "web"}))
    table = fit_table(history, STAGES)
    p = probability(table, _leads(("A", "new", {"source_id": "web"}),
                                  ("B", "new", {"source_id": "web"}),
                                  (None, "new", {"source_id": "web"}),
                                  ("C", "new", {"source_id": "web"})))
    # A: priors 1.1 / 1.1; web 1.1/1.2 vs 0.1/1.2 -> 1.1 / 1.2 = 91.67%
    # B: priors 2.1 / 1.1; web won 0.1 of 2.2 (ads 2.1), lost 1.1 of 1.2 (ads 0.1)
    b_won, b_lost = 2.1 / 3.2 * 0.1 / 2.2, 1.1 / 3.2 * 1.1 / 1.2
    # pool (A + B + no team, each cell's +0.1 kept): new 3.3 / 3.3; web won 1.1+0.1+0.1 =
    # 1.3, lost 0.1+1.1+1.1 = 2.3; ads won 0.1+2.1 = 2.2, lost 1.1+0.1 = 1.2; totals 3.5 / 3.5
    # -> 1.3 / 3.6 = 36.11%
    pool_won, pool_lost = 0.5 * 1.3 / 3.5, 0.5 * 2.3 / 3.5
    pool = round(100 * pool_won / (pool_won + pool_lost), 2)
    assert p.tolist() == [round(100 * 1.1 / 1.2, 2), round(100 * b_won / (b_won + b_lost), 2),
                          pool, pool]
    assert p[0] == 91.67 and p[2] == 36.11


def test_rounded_to_two_decimals_and_kept_within_a_hundredth() -> None:
    won = [("A", "won", True, {"source_id": "web", "country_id": "BE"})] * 200
    lost = [("A", "new", False, {"source_id": "ads", "country_id": "FR"})] * 200
    table = fit_table(_history(*won, *lost), STAGES)
    p = probability(table, _leads(("A", "proposal", {"source_id": "web", "country_id": "BE"}),
                                  ("A", "new", {"source_id": "ads", "country_id": "FR"}),
                                  ("A", "new", {"source_id": "web"})))
    # priors 200.1 each; web and BE: won 200.1 / 200.2, lost 0.1 / 200.2 (ads, FR: mirrored)
    # proposal (lost 0.1 / 200.1) + web + BE -> 1 - 1.2e-10: 100.00 -> 99.99
    # new + ads + FR -> (0.1 / 200.1)^2 = 2.5e-7: 0.00 -> 0.01
    # new + web -> 200.1 / 200.2 = 99.95005%: 99.95
    assert p.tolist() == [99.99, 0.01, 99.95]


def test_no_stage_gives_zero_and_the_won_stage_a_hundred() -> None:
    table = fit_table(BASIC, STAGES)
    p = probability(table, _leads(("A", None, {"source_id": "web"}),
                                  ("A", "won", {"source_id": "ads"}),
                                  ("Z", "won", {})))
    assert p.tolist() == [0.0, 100.0, 100.0]


def test_reasons_are_the_top_and_bottom_three_criteria() -> None:
    history = _history(
        ("A", "won", True, {"source_id": "web", "country_id": "BE", "lang_id": "fr",
                            "email_state": "correct", "phone_state": None}),
        ("A", "won", True, {"source_id": "web", "country_id": "BE", "lang_id": "nl",
                            "email_state": "correct", "phone_state": None}),
        ("A", "qualified", False, {"source_id": "ads", "country_id": "FR", "lang_id": "fr",
                                   "email_state": "correct", "phone_state": None}),
        ("A", "new", False, {"source_id": "ads", "country_id": "BE", "lang_id": "nl",
                             "email_state": None, "phone_state": None}))
    table = fit_table(history, STAGES)
    lead = _leads(("A", "qualified", {"source_id": "web", "country_id": "FR", "lang_id": "fr",
                                      "email_state": None, "phone_state": None}))
    got = reasons(table, lead)[0]
    # scores: web 2.1/2.2 : 0.1/2.2 -> 0.95; FR 0.1/2.2 : 1.1/2.2 -> 0.08; fr 1.1 : 1.1 -> 0.5
    # (neither side: left out); email False 0.1/2.2 : 1.1/2.2 -> 0.08 (kept: low is what
    # False means); phone False 2.1 : 2.1 -> 0.5 (left out); stage 1 - 1.1/2.1 = 0.48
    assert got["top"] == [("source_id", "web")]
    assert got["low"] == [("country_id", "FR"), ("email_state", "False"),
                          ("stage_id", "qualified")]


# --- an export as of t -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def journeys(small_export: CrmExport) -> Journeys:
    """The small export's journeys: every Odoo function takes them from its caller."""
    return build_journeys(small_export)


def test_closed_leads_are_those_closed_before_t(small_export: CrmExport,
                                                journeys: Journeys) -> None:
    t = pd.Timestamp("2025-01-01", tz="UTC")
    closed = closed_leads(small_export, t, OdooPlsConfig(), journeys=journeys)
    assert 0 < closed["won"].sum() < len(closed)
    assert set(closed.loc[closed["won"], "stage_id"]) == {small_export.stages[-1]}
    assert set(closed.loc[~closed["won"], "stage_id"]) <= set(small_export.stages[:-1])
    # the synthetic export's country, source and email domain play Odoo's fields
    assert {"country_id", "source_id", "email_state"} <= set(closed.columns)


def test_the_contract_export_by_hand(make_export: Callable[..., Path]) -> None:
    """conftest's export: L1 won (customer) on 2024-02-01; L2 disqualified in mql on 01-20;
    L3 open in the first stage since 01-02 22:00 UTC, with no source and no country."""
    export = load_export(make_export())
    config, journeys = OdooPlsConfig(), build_journeys(export)

    def closed(at: str, stale: int | None = None) -> dict[str, tuple[bool, str]]:
        frame = closed_leads(export, pd.Timestamp(at, tz="UTC"), config, stale_days=stale,
                             journeys=journeys)
        ids = export.leads["lead_id"].iloc[frame.index]  # closed rows are in leads order
        return dict(zip(ids, zip(frame["won"], frame["stage_id"], strict=True), strict=True))

    assert closed("2024-01-25") == {"L2": (False, "mql")}
    assert closed("2024-02-01") == {"L2": (False, "mql")}  # won at 02-01 00:00: not before
    assert closed("2024-02-02") == {"L1": (True, "customer"), "L2": (False, "mql")}
    # 30 days idle in its first stage: lost at 02-01 22:00 (strictly before t counts)
    assert "L3" not in closed("2024-02-01T22:00:00", stale=30)
    assert closed("2024-02-01T22:00:01", stale=30)["L3"] == (False, "lead")
    table = fit_as_of(export, pd.Timestamp("2024-02-02", tz="UTC"), config, journeys=journeys)
    assert _cell(table, "stage_id", "mql", None) == pytest.approx((1.1, 1.1))
    assert _cell(table, "stage_id", "sql", None) == pytest.approx((1.1, 0.1))
    assert _cell(table, "country_id", "FR", None) == pytest.approx((0.1, 1.1))
    l3 = open_lead_fields(export, pd.DataFrame({"lead_id": ["L3"], "as_of": [pd.Timestamp(
        "2024-02-02", tz="UTC")]}), config, journeys=journeys)
    # first stage (1.1 : 1.1), source `unknown` and no country: no cell, skipped -> 50%
    assert l3["source_id"].tolist() == ["unknown"]
    assert probability(table, l3).tolist() == [50.0]


def test_changing_the_future_does_not_move_a_score_as_of_t(small_export: CrmExport,
                                                           journeys: Journeys) -> None:
    t = pd.Timestamp("2025-01-01", tz="UTC")
    entities = lead_entities(small_export, [t], 90, labelled=False, journeys=journeys)
    config = OdooPlsConfig()
    full = probability(fit_as_of(small_export, t, config, journeys=journeys),
                       open_lead_fields(small_export, entities, config, journeys=journeys))
    cut = truncate_export(small_export, t)
    cut_journeys = build_journeys(cut)
    past = probability(fit_as_of(cut, t, config, journeys=cut_journeys),
                       open_lead_fields(cut, entities, config, journeys=cut_journeys))
    assert len(entities) > 100 and np.array_equal(full, past)
    later = probability(fit_as_of(small_export, t + pd.Timedelta(days=120), config,
                                  journeys=journeys),
                        open_lead_fields(small_export, entities, config, journeys=journeys))
    assert not np.array_equal(full, later)  # the table as of a later time does differ


def test_a_lead_missing_from_the_export_is_refused(small_export: CrmExport,
                                                   journeys: Journeys) -> None:
    entities = pd.DataFrame({"lead_id": ["nobody"], "as_of": [pd.Timestamp("2025-01-01",
                                                                           tz="UTC")]})
    with pytest.raises(PropensityError, match="lead ids not in the export: nobody"):
        open_lead_fields(small_export, entities, OdooPlsConfig(), journeys=journeys)


def test_teams_from_the_owner_or_a_column() -> None:
    leads = pd.DataFrame({"owner_id": ["r1", "r2", None], "squad": ["x", None, "y"],
                          "tags": ["a; b", None, ""]})
    by_owner = lead_values(leads, OdooPlsConfig(owner_teams={"r1": "north", "r2": "south"}))
    assert by_owner["team"].tolist() == ["north", "south", None]
    by_column = lead_values(leads, OdooPlsConfig(team_column="squad"))
    assert by_column["team"].tolist() == ["x", None, "y"]
    assert by_column["tag_id"].tolist() == [("a", "b"), (), ()]
    assert "tag_id" not in lead_values(leads, OdooPlsConfig(), exclude=["tags"])


def test_the_baseline_ranks_the_holdout(small_export: CrmExport, journeys: Journeys) -> None:
    times = [pd.Timestamp("2025-03-01", tz="UTC") + pd.Timedelta(days=14 * k) for k in range(4)]
    entities = lead_entities(small_export, times, 90, journeys=journeys)
    holdout = entities[["lead_id", "as_of"]]
    p = odoo_naive_bayes(closed_leads(small_export, times[0], OdooPlsConfig(), journeys=journeys),
                         small_export.stages,
                         open_lead_fields(small_export, holdout, OdooPlsConfig(),
                                          journeys=journeys), holdout)
    assert ((p >= 0) & (p <= 1)).all()
    assert roc_auc_score(entities["converted"], p) > 0.65


# --- shipping it -----------------------------------------------------------------------------

def test_a_table_survives_json_and_its_log_odds_are_odoos_probability(
        small_export: CrmExport, journeys: Journeys) -> None:
    t = pd.Timestamp("2025-01-01", tz="UTC")
    table = fit_as_of(small_export, t, journeys=journeys)
    again = table_from_dict(json.loads(json.dumps(table_to_dict(table))))
    entities = lead_entities(small_export, [t], 90, labelled=False, journeys=journeys)
    leads = open_lead_fields(small_export, entities, OdooPlsConfig(), journeys=journeys)
    p = probability(table, leads)
    assert np.array_equal(probability(again, leads), p)
    bias, terms = log_odds(table, leads)
    margin = bias + np.bincount(terms["lead"], weights=terms["log_odds"], minlength=len(leads))
    percent = 100 / (1 + np.exp(-margin))
    assert np.abs(np.clip(percent, 0.01, 99.99) - p).max() <= 0.005 + 1e-9
    assert len(set(terms["field"])) >= 3


def test_the_model_matrix_gives_the_same_scores_as_the_export(small_export: CrmExport,
                                                              journeys: Journeys) -> None:
    t = pd.Timestamp("2025-01-01", tz="UTC")
    entities = lead_entities(small_export, [t], 90, labelled=False, journeys=journeys)
    plan = FeaturePlan(fit_feature_spec(truncate_export(small_export, t)))
    X = lead_feature_matrix(small_export, plan, entities)
    table, config = fit_as_of(small_export, t, journeys=journeys), OdooPlsConfig()
    leads = matrix_leads(X, plan.columns, config)
    assert {"stage_id", "country_id", "source_id", "email_state"} <= set(leads.columns)
    from_matrix = probability(table, leads)
    assert np.array_equal(from_matrix, probability(table, open_lead_fields(
        small_export, entities, config, journeys=journeys)))


def test_the_shipped_scorer_is_log_odds_on_the_matrix_team_by_team(
        small_export: CrmExport, journeys: Journeys) -> None:
    """The learner's margin and contributions (levels looked up once per team) are
    `log_odds` of the leads the matrix decodes to: per team, and the pool for a lead whose
    team has no table; each criterion on the column that plays its field."""
    t = pd.Timestamp("2025-01-01", tz="UTC")
    owners = sorted(small_export.leads["owner_id"].dropna().astype("str").unique())
    config = OdooPlsConfig(owner_teams={o: f"team{i % 3}" for i, o in enumerate(owners[:-4])})
    entities = lead_entities(small_export, [t], 90, labelled=False, journeys=journeys)
    plan = FeaturePlan(fit_feature_spec(truncate_export(small_export, t)))
    X = lead_feature_matrix(small_export, plan, entities)
    table = fit_as_of(small_export, t, config, journeys=journeys)
    scorer = OdooScorer(plan.columns, table, config)
    leads = matrix_leads(X, plan.columns, config)
    assert leads["team"].nunique() == 3 and leads["team"].isna().any()
    bias, terms = log_odds(table, leads)
    expected = bias + np.bincount(terms["lead"], weights=terms["log_odds"], minlength=len(X))
    contrib = scorer.contributions(X)
    assert np.abs(contrib.sum(axis=1) - expected).max() < 1e-12
    assert np.abs(scorer.margin(X) - expected).max() < 1e-12
    where = field_columns(plan.columns, config)
    stage = terms[terms["field"] == "stage_id"]
    assert np.allclose(contrib[stage["lead"].to_numpy(), where["stage_id"]], stage["log_odds"])
    again = OdooScorer.from_dict(plan.columns, json.loads(json.dumps(scorer.to_dict())))
    assert np.array_equal(again.margin(X), scorer.margin(X))


def test_a_fold_counts_no_closed_lead_it_holds_and_none_closed_after_the_cutoff(
        small_export: CrmExport, journeys: Journeys) -> None:
    """The learner's table in a fold: every lead closed before the cutoff but those of the
    held entities (a held lead's own outcome never scores it); the first stage's cell counts
    each of them once (+0.1 a side)."""
    t = pd.Timestamp("2025-03-01", tz="UTC")
    codes = pd.Index(small_export.leads["lead_id"].astype("str"))
    closed = closed_leads(small_export, t, OdooPlsConfig(), journeys=journeys)
    ids = small_export.leads["lead_id"].astype("str").to_numpy()
    history = odoo_history(closed, ids, codes, small_export.stages, OdooPlsConfig(), t)
    assert len(history.groups) == len(closed) > 100 and (history.groups >= 0).all()
    held = history.groups[::3]
    scorer = history.scorer([], leave_out=held)
    first = scorer.table.cells[(scorer.table.cells["field"] == "stage_id")
                               & (scorer.table.cells["value"] == small_export.stages[0])]
    kept = closed[~np.isin(codes.get_indexer(small_export.leads["lead_id"].astype("str")
                                             .to_numpy()[closed.index]), held)]
    assert scorer.leads == len(kept) == len(closed) - len(held)
    assert float(first["won"].sum() + first["lost"].sum()) == pytest.approx(
        len(kept) + 0.2 * len(first))
    assert history.scorer([]).leads == len(closed)
    later_t = t + pd.Timedelta(days=90)
    later = odoo_history(closed_leads(small_export, later_t, OdooPlsConfig(), journeys=journeys),
                         ids, codes, small_export.stages, OdooPlsConfig(), later_t)
    assert len(later.closed) > len(closed)  # leads closed after t wait for a later cutoff
