"""Funnel metrics against hand-computed values on a small hand-made export.

The export (stages lead < mql < sql < opportunity < customer):
  A s1 created 01-01: mql 01-05, sql 01-10, opportunity 01-20, customer 02-01; O_A won 1000
  B s1 created 01-02: mql 01-04, opportunity 01-14 (skips sql), lost 02-10; O_B lost 500
  C s2 created 01-03: mql 01-06, disqualified 01-20
  D s2 created 01-04: nothing since (in flight at lead)
  E s2 created 01-05: mql 01-08, sql 01-12 (in flight at sql)
  F s1 created 02-10: mql 02-12
  O_X: an open opportunity of an account, no lead, amount 2000, created 01-15
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from propensity.export_reader import load_export
from propensity.funnel import FunnelReport, funnel_report
from propensity.funnel.intervals import wilson
from propensity.funnel.render import to_frame, to_html
from tests.conftest import write_tables

LEADS = [("A", "2024-01-01", "s1"), ("B", "2024-01-02", "s1"), ("C", "2024-01-03", "s2"),
         ("D", "2024-01-04", "s2"), ("E", "2024-01-05", "s2"), ("F", "2024-02-10", "s1")]
STAGES = [("A", "mql", "01-05"), ("A", "sql", "01-10"), ("A", "opportunity", "01-20"),
          ("A", "customer", "02-01"), ("B", "mql", "01-04"), ("B", "opportunity", "01-14"),
          ("B", "lost", "02-10"), ("C", "mql", "01-06"), ("C", "disqualified", "01-20"),
          ("E", "mql", "01-08"), ("E", "sql", "01-12"), ("F", "mql", "02-12")]
OPPS = [("O_A", "A", "A1", "2024-01-20", "2024-02-01", 1000, "won"),
        ("O_B", "B", "A1", "2024-01-14", "2024-02-10", 500, "lost"),
        ("O_X", "", "A2", "2024-01-15", "", 2000, "open")]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tables(tmp_path_factory.mktemp("funnel"), {
        "accounts": [{"account_id": "A1"}, {"account_id": "A2"}],
        "leads": [{"lead_id": i, "created_at": t, "source": s} for i, t, s in LEADS],
        "stage_history": [{"lead_id": i, "stage": s, "entered_at": f"2024-{d}"}
                          for i, s, d in STAGES],
        "opportunities": [{"opportunity_id": o, "lead_id": lead, "account_id": a,
                           "created_at": c, "closed_at": cl, "amount": amt, "status": st}
                          for o, lead, a, c, cl, amt, st in OPPS],
    })


@pytest.fixture(scope="module")
def overall(export_dir: Path) -> FunnelReport:
    return funnel_report(load_export(export_dir))


def _counts(report: FunnelReport, group: str | None = None) -> dict[str, tuple[int, ...]]:
    source = report.overall if group is None else next(
        g for g in report.groups if g.group == group)
    return {s.name: (s.reached, s.advanced, s.lost, s.in_flight) for s in source.steps}


def test_cohort_steps_count_skips_as_passed_and_flight_apart(overall: FunnelReport) -> None:
    assert _counts(overall) == {
        "lead_to_mql": (6, 5, 0, 1),
        "mql_to_sql": (5, 3, 1, 1),  # B skipped sql: passed it
        "sql_to_opportunity": (3, 2, 0, 1),
        "opportunity_to_customer": (2, 1, 1, 0),
    }
    assert overall.step("mql_to_sql").conversion.percent == 60.0
    assert overall.overall.lead_to_customer.numerator == 1
    assert overall.overall.lead_to_customer.denominator == 6
    assert overall.overall.time_to_convert.median_days == 31.0  # A: 01-01 -> 02-01
    # ties go to the earlier step
    assert overall.overall.biggest_drop_off == "mql_to_sql"


def test_time_between_stages_uses_actual_entries(overall: FunnelReport) -> None:
    t = overall.step("lead_to_mql").time  # A 4, B 2, C 3, E 3, F 2 days
    assert (t.count, t.median_days, t.p75_days, t.mean_days) == (5, 3.0, 3.0, 2.8)
    t = overall.step("mql_to_sql").time  # A 5, E 4; B skipped sql and has no time of its own
    assert (t.count, t.median_days, t.p75_days) == (2, 4.5, 4.75)


def test_deal_metrics(overall: FunnelReport) -> None:
    d = overall.overall.deals
    assert (d.won, d.lost, d.open) == (1, 1, 1)
    assert d.win_rate.percent == 50.0
    assert d.average_deal_size == 1000.0
    assert d.sales_cycle.median_days == 12.0  # 01-20 -> 02-01
    assert d.pipeline_value == 2000.0
    assert d.weighted_pipeline_value == 1000.0  # historical win rate 1/2
    assert d.sales_velocity_per_day == pytest.approx(1 * 0.5 * 1000 / 12, abs=1e-4)


def test_grouped_by_source_with_no_lead_group(export_dir: Path) -> None:
    report = funnel_report(load_export(export_dir), by="source")
    names = [g.group for g in report.groups]
    assert names[:2] == ["s1", "s2"] and "(no lead)" in names
    s1 = next(g for g in report.groups if g.group == "s1")
    assert (s1.leads, s1.lead_to_customer.numerator) == (3, 1)
    assert _counts(report, "s2") == {
        "lead_to_mql": (3, 2, 0, 1), "mql_to_sql": (2, 1, 1, 0),
        "sql_to_opportunity": (1, 0, 0, 1), "opportunity_to_customer": (0, 0, 0, 0)}
    no_lead = next(g for g in report.groups if g.group == "(no lead)")
    assert no_lead.leads == 0 and no_lead.deals.open == 1 and no_lead.deals.pipeline_value == 2000
    assert s1.deals.won == 1 and s1.deals.lost == 1


def test_cohort_window_follows_only_leads_created_in_it(export_dir: Path) -> None:
    report = funnel_report(load_export(export_dir), start="2024-01-01", end="2024-02-01")
    assert report.overall.leads == 5  # F is created in February
    assert report.step("mql_to_sql").reached == 4
    assert report.step("mql_to_sql").advanced == 3
    # A converted after the window: cohort mode still follows it
    assert report.overall.lead_to_customer.numerator == 1


def test_period_mode_counts_entries_inside_the_window(export_dir: Path) -> None:
    report = funnel_report(load_export(export_dir), start="2024-01-01", end="2024-02-01",
                           mode="period")
    steps = {s.name: (s.reached, s.advanced) for s in report.overall.steps}
    assert steps == {"lead_to_mql": (5, 4), "mql_to_sql": (4, 3),
                     "sql_to_opportunity": (3, 2), "opportunity_to_customer": (2, 0)}
    assert report.overall.lead_to_customer.numerator == 0  # A converts on 02-01
    assert report.overall.deals.win_rate.percent is None  # nothing closed in January
    # at the end of January (exclusive) O_A (closes 02-01), O_B and O_X are open
    assert report.overall.deals.open == 3
    assert report.overall.deals.pipeline_value == 3500.0
    assert report.overall.deals.weighted_pipeline_value is None  # no closed history yet


def test_group_by_period_of_creation(export_dir: Path) -> None:
    report = funnel_report(load_export(export_dir), by="created_month")
    assert {g.group: g.leads for g in report.groups if g.leads} == {"2024-01": 5, "2024-02": 1}


def test_period_mode_lists_groups_that_moved_and_periods_in_time_order(
        export_dir: Path) -> None:
    """Issue 31: a group where nothing happened in the window is no row (s2 and the lead-less
    open deal in late February), and creation periods read in time order, not by size."""
    export = load_export(export_dir)
    by_month = funnel_report(export, by="created_month", start="2024-02-02",
                             end="2024-03-01", mode="period")
    # 2024-01 lost B on 02-10 (and its deal): activity, though none of its leads is new
    assert [g.group for g in by_month.groups] == ["2024-01", "2024-02"]
    assert [g.leads for g in by_month.groups] == [0, 1]
    by_source = funnel_report(export, by="source", start="2024-02-11", end="2024-03-01",
                              mode="period")
    assert [g.group for g in by_source.groups] == ["s1"]  # F's MQL on 02-12
    cohort = funnel_report(export, by="created_month")
    assert [g.group for g in cohort.groups] == ["2024-01", "2024-02", "(no lead)"]


def test_leads_only_export_is_all_in_flight(tmp_path: Path) -> None:
    path = write_tables(tmp_path, {"leads": [{"lead_id": "x", "created_at": "2024-01-01"},
                                             {"lead_id": "y", "created_at": "2024-01-02"}]})
    report = funnel_report(load_export(path), by="source")
    assert _counts(report)["lead_to_mql"] == (2, 0, 0, 2)
    assert report.overall.deals.win_rate.percent is None
    assert report.overall.biggest_drop_off is None
    assert [g.group for g in report.groups] == ["unknown"]


def test_wilson_matches_scipy() -> None:
    from scipy.stats import binomtest

    p, lo, hi = wilson([3, 40, 0], [3, 100, 10])
    for i, (k, n) in enumerate([(3, 3), (40, 100), (0, 10)]):
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert lo[i] == pytest.approx(ci.low, abs=1e-9)
        assert hi[i] == pytest.approx(ci.high, abs=1e-9)
    assert p[1] == 0.4


def test_unknown_group_column_is_a_clear_error(export_dir: Path) -> None:
    from propensity.problems import PropensityError

    with pytest.raises(PropensityError, match="cannot group by 'colour'"):
        funnel_report(load_export(export_dir), by="colour")


def test_renderings_agree(export_dir: Path, tmp_path: Path) -> None:
    report = funnel_report(load_export(export_dir), by="source")
    frame = to_frame(report)
    assert list(frame["group"][:3]) == ["(all)", "s1", "s2"]
    assert frame.loc[0, "mql_to_sql_pct"] == 60.0
    page = to_html(report)
    assert "plotly" in page and "<script" in page and "src=\"http" not in page
    bin_ = Path(sys.executable).parent / "propensity"
    out = subprocess.run([str(bin_), "funnel", str(export_dir), "--by", "source", "--format",
                          "json"], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert data["overall"]["steps"][1]["conversion"]["percent"] == 60.0
    html_file = tmp_path / "f.html"
    subprocess.run([str(bin_), "funnel", str(export_dir), "--format", "html", "--out",
                    str(html_file)], capture_output=True, text=True, check=True)
    assert html_file.stat().st_size > 100_000  # plotly.js inlined: opens with no network


def test_stale_leads_count_as_lost_only_when_asked(export_dir: Path) -> None:
    """As of 02-12 (the latest date): D idles at lead since 01-04 (39 days), E at sql since
    01-12 (31 days), F reached mql on 02-12 (0 days)."""
    report = funnel_report(load_export(export_dir), stale_days=30)
    steps = {s.name: (s.lost, s.stale, s.in_flight) for s in report.overall.steps}
    assert steps == {"lead_to_mql": (1, 1, 0), "mql_to_sql": (1, 0, 1),
                     "sql_to_opportunity": (1, 1, 0), "opportunity_to_customer": (1, 0, 0)}
    assert report.stale_days == 30
    # without the option nobody is stale (the cohort test above holds them in flight)
    assert all(s.stale == 0 for s in funnel_report(load_export(export_dir)).overall.steps)
