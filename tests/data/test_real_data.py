"""The two real data sets import into the contract, and their known traps are caught."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from propensity.adapters.olist import import_olist, repair_stock_range
from propensity.adapters.x_education import POST_OUTCOME, import_x_education
from propensity.contract import Manifest
from propensity.export_reader import load_export, read_export
from propensity.single_table import load_single_table, read_single_table_dir
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def olist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("olist")
    import_olist(shared_file("olist-mql", "olist_marketing_qualified_leads_dataset.csv"),
                 shared_file("olist-mql", "olist_closed_deals_dataset.csv"), out)
    return out


def test_olist_maps_into_the_contract(olist_dir: Path) -> None:
    export = read_export(olist_dir)
    assert export.report.ok, export.report.frame().head()  # the adapter's output validates
    assert len(export.leads) == 7999  # one lead left out by the adapter, and named
    assert export.opportunities is not None and len(export.opportunities) == 841
    assert set(export.opportunities["status"]) == {"won"}
    sh = export.stage_history
    assert sh is not None and (sh["stage"] == "customer").sum() == 841
    # origin -> source, missing origin -> unknown
    raw = pd.read_csv(shared_file("olist-mql", "olist_marketing_qualified_leads_dataset.csv"))
    assert (export.leads["source"] == "unknown").sum() == raw["origin"].isna().sum() + (
        raw["origin"] == "unknown").sum()
    # day-first dates: 01-02-2018 is 1 February
    lead = export.leads.set_index("lead_id").loc["dac32acd4db4c29c230538b72f8dd87d"]
    assert str(lead["created_at"]) == "2018-02-01 00:00:00+00:00"
    won = export.opportunities.set_index("lead_id").loc["5420aad7fec3549a85876ba1c529bd84"]
    assert str(won["closed_at"]) == "2018-02-26 19:58:00+00:00"
    assert Manifest.read(olist_dir).post_outcome_columns("leads")[0] == "owner_id"
    assert "average_stock" not in export.attribute_columns("leads")


def test_olist_won_before_first_contact_is_left_out_and_named(olist_dir: Path) -> None:
    """The one impossible row (won before its first contact) is the adapter's business: it is
    left out there and listed with its file, row and reason, so every later command (train,
    funnel, the scorer) reads a clean export instead of dropping it again in silence."""
    mql = pd.read_csv(shared_file("olist-mql", "olist_marketing_qualified_leads_dataset.csv"))
    deals = pd.read_csv(shared_file("olist-mql", "olist_closed_deals_dataset.csv"))
    both = deals.merge(mql, on="mql_id")
    bad = both[pd.to_datetime(both["won_date"], dayfirst=True)
               < pd.to_datetime(both["first_contact_date"], dayfirst=True)]
    assert len(bad) == 1
    left_out = pd.read_csv(olist_dir / "left-out.csv")
    assert list(left_out["lead_id"]) == list(bad["mql_id"])
    row = deals.index[deals["mql_id"] == bad["mql_id"].iloc[0]][0] + 2
    assert (left_out["file"].iloc[0], left_out["row"].iloc[0]) == (
        "olist_closed_deals_dataset.csv", row)
    export = load_export(olist_dir)  # no drop_bad_rows needed
    assert bad["mql_id"].iloc[0] not in set(export.leads["lead_id"])
    # the contract still catches such a row when an export carries one
    (olist_dir / "broken").mkdir()
    for name in ("leads", "stage_history", "opportunities"):
        frame = pd.read_csv(olist_dir / f"{name}.csv")
        if name == "opportunities":
            frame.loc[0, "closed_at"] = frame.loc[0, "created_at"] = "2017-01-01T00:00:00"
        frame.to_csv(olist_dir / "broken" / f"{name}.csv", index=False)
    report = read_export(olist_dir / "broken").report
    assert set(report.frame()["rule"]) == {"conversion_before_lead_created"}


def test_olist_stock_ranges_are_repaired_and_listed(olist_dir: Path) -> None:
    repairs = pd.read_csv(olist_dir / "repairs.csv")
    deals = pd.read_csv(shared_file("olist-mql", "olist_closed_deals_dataset.csv"))
    damaged = deals["average_stock"].isin(["01-May", "May-20"]).sum()
    assert len(repairs) == damaged > 0
    assert set(repairs["repaired"]) == {"1-5", "5-20"}
    leads = pd.read_csv(olist_dir / "leads.csv")
    assert not leads["average_stock"].isin(["01-May", "May-20"]).any()
    assert repair_stock_range("50-200") is None and repair_stock_range("Foo-20") is None


def test_x_education_imports_as_single_table(tmp_path: Path) -> None:
    result = import_x_education(shared_file("x-education", "Leads.csv"), tmp_path)
    assert result.counts["leads"] > 9000
    table = read_single_table_dir(tmp_path)
    assert table.report.ok
    frame = table.frame
    assert not (frame == "Select").any().any()
    assert frame["specialization"].isna().sum() > 1900  # 'Select' became missing
    assert set(POST_OUTCOME) & set(table.feature_columns) == set()
    assert "lead_number" not in table.feature_columns and "lead_id" not in table.feature_columns
    assert frame["total_time_spent_on_website"].dtype == "float64"
    assert abs(table.y.mean() - 0.385) < 0.01


def test_raw_single_table_with_a_bad_target_names_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"id": ["a", "b", "c", "c"], "won": ["yes", "maybe", "no", ""],
                  "x": [1, 2, 3, 4]}).to_csv(path, index=False)
    from propensity.problems import ContractError

    with pytest.raises(ContractError) as err:
        load_single_table(path, "won", id_column="id")
    frame = err.value.report.frame()
    assert set(zip(frame["rule"], frame["row"], strict=True)) == {
        ("target_not_binary", 3), ("missing_value", 5), ("duplicate_id", 4),
        ("duplicate_id", 5)}


def test_olist_funnel_matches_an_independent_pandas_computation(olist_dir: Path) -> None:
    from propensity.funnel import funnel_report

    report = funnel_report(load_export(olist_dir), by="source")
    mql = pd.read_csv(shared_file("olist-mql", "olist_marketing_qualified_leads_dataset.csv"))
    deals = pd.read_csv(shared_file("olist-mql", "olist_closed_deals_dataset.csv"))
    mql["first"] = pd.to_datetime(mql["first_contact_date"], format="%d-%m-%Y")
    deals["won"] = pd.to_datetime(deals["won_date"], format="%d-%m-%Y %H:%M")
    both = mql.merge(deals[["mql_id", "won"]], on="mql_id", how="left")
    # the lead won before its first contact breaks the contract: the adapter left it out
    both = both[~(both["won"] < both["first"])]
    valid_win = both["won"].notna()
    both["converted"] = valid_win
    assert report.overall.lead_to_customer.numerator == int(valid_win.sum()) == 841
    assert report.overall.lead_to_customer.denominator == len(both) == 7999
    assert report.overall.lead_to_customer.percent == pytest.approx(100 * 841 / 7999, abs=1e-4)
    both["origin"] = both["origin"].fillna("unknown")
    by_origin = both.groupby("origin")["converted"].agg(["sum", "count"])
    for g in report.groups:
        if g.group == "(no lead)":
            continue
        expected = by_origin.loc[g.group]
        assert (g.lead_to_customer.numerator, g.lead_to_customer.denominator) == (
            expected["sum"], expected["count"]), g.group
    days = (both.loc[valid_win, "won"] - both.loc[valid_win, "first"]).dt.total_seconds() / 86400
    cycle = report.overall.time_to_convert
    assert cycle.count == 841
    assert cycle.median_days == pytest.approx(days.median(), abs=1e-4)
    assert cycle.p75_days == pytest.approx(days.quantile(0.75), abs=1e-4)
    assert report.overall.deals.win_rate.percent == 100.0  # Olist publishes only won deals
