"""Each contract rule, one small bad file each: the report names the row, column and rule."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from propensity.export_reader import load_export, read_export
from propensity.problems import ContractError

Tables = dict[str, list[dict[str, object]]]


def test_clean_export_validates_clean(make_export: Callable[..., Path]) -> None:
    export = read_export(make_export())
    assert export.report.ok, export.report.frame().to_string()
    leads = export.leads.set_index("lead_id")
    # naive means UTC; offsets are converted to UTC
    assert str(leads.loc["L1", "created_at"]) == "2024-01-01 09:00:00+00:00"
    assert str(leads.loc["L3", "created_at"]) == "2024-01-02 22:00:00+00:00"
    assert leads.loc["L3", "source"] == "unknown"
    assert leads.loc["L3", "persona"] == "unknown"
    assert export.accounts is not None
    assert export.accounts["employees"].dtype == "float64"  # numeric attribute typed from data
    assert export.attribute_columns("leads") == ["country"]


def _set(table: str, row: int, **values: object) -> Callable[[Tables], None]:
    def change(t: Tables) -> None:
        t[table][row].update(values)
    return change


def _append(table: str, **values: object) -> Callable[[Tables], None]:
    def change(t: Tables) -> None:
        t[table].append(dict(values))
    return change


# (change, table, spreadsheet row, column, rule)
CASES = [
    (_set("leads", 1, created_at="2024-13-45"), "leads", 3, "created_at",
     "unparseable_timestamp"),
    (_set("leads", 0, created_at=""), "leads", 2, "created_at", "missing_value"),
    (_set("leads", 2, lead_id="L1"), "leads", 4, "lead_id", "duplicate_id"),
    (_set("leads", 0, persona="ceo"), "leads", 2, "persona", "value_not_allowed"),
    (_set("leads", 1, account_id="A9"), "leads", 3, "account_id", "orphan_reference"),
    (_append("events", lead_id="L404", occurred_at="2024-01-02", event_type="page_view"),
     "events", 5, "lead_id", "orphan_reference"),
    (_set("events", 2, occurred_at="2023-12-30T00:00:00"), "events", 4, "occurred_at",
     "event_before_lead_created"),
    (_set("events", 0, value="thirty"), "events", 2, "value", "not_a_number"),
    (_set("stage_history", 0, stage="marketing_qualified"), "stage_history", 2, "stage",
     "unknown_stage"),
    (_append("stage_history", lead_id="L404", stage="mql", entered_at="2024-01-05"),
     "stage_history", 7, "lead_id", "orphan_reference"),
    (_set("stage_history", 1, entered_at="2024-01-04T00:00:00"), "stage_history", 3, "stage",
     "stages_out_of_order"),
    (_set("stage_history", 2, entered_at="2023-06-01T00:00:00"), "stage_history", 4,
     "entered_at", "conversion_before_lead_created"),
    (_set("stage_history", 3, entered_at="2023-06-01T00:00:00"), "stage_history", 5,
     "entered_at", "stage_before_lead_created"),
    (_set("opportunities", 0, closed_at="2024-01-05"), "opportunities", 2, "closed_at",
     "closed_before_created"),
    (_set("opportunities", 0, closed_at="2023-06-01", created_at="2023-05-01"),
     "opportunities", 2, "closed_at", "conversion_before_lead_created"),
    (_set("opportunities", 1, amount="-5"), "opportunities", 3, "amount", "negative_amount"),
    (_set("opportunities", 1, status="pending"), "opportunities", 3, "status",
     "value_not_allowed"),
    (_set("opportunities", 0, closed_at=""), "opportunities", 2, "closed_at",
     "closed_without_date"),
    (_set("opportunities", 1, closed_at="2024-02-01"), "opportunities", 3, "closed_at",
     "open_with_close_date"),
    (_set("opportunities", 1, account_id=""), "opportunities", 3, "lead_id",
     "opportunity_unlinked"),
    (_set("opportunities", 1, opportunity_id="O1"), "opportunities", 3, "opportunity_id",
     "duplicate_id"),
    (_set("opportunities", 1, account_id="A77"), "opportunities", 3, "account_id",
     "orphan_reference"),
    (_set("accounts", 1, account_id="A1"), "accounts", 3, "account_id", "duplicate_id"),
    # infinite numbers: a contract column, an attribute, and text that overflows a float
    (_set("events", 1, value="inf"), "events", 3, "value", "infinite_number"),
    (_set("accounts", 0, employees="-Infinity"), "accounts", 2, "employees",
     "infinite_number"),
    (_set("opportunities", 0, amount="1e999"), "opportunities", 2, "amount",
     "infinite_number"),
]


@pytest.mark.parametrize(("change", "table", "row", "column", "rule"), CASES,
                         ids=[f"{c[1]}-{c[4]}" for c in CASES])
def test_each_rule_names_row_column_and_rule(
    make_export: Callable[..., Path], change: Callable[[Tables], None], table: str, row: int,
    column: str, rule: str,
) -> None:
    report = read_export(make_export(change)).report
    problems = report.frame()
    hit = problems[(problems["rule"] == rule) & (problems["table"] == table)]
    assert not hit.empty, problems.to_string()
    assert row in set(hit["row"]), hit.to_string()
    assert set(hit["column"]) == {column}
    assert set(hit["file"]) == {f"{table}.csv"}
    assert not report.ok


def test_bad_value_is_shown_as_written(make_export: Callable[..., Path]) -> None:
    report = read_export(make_export(_set("leads", 1, created_at="yesterday"))).report
    row = report.frame().query("rule == 'unparseable_timestamp'").iloc[0]
    assert row["value"] == "yesterday"


def test_every_problem_is_reported_not_only_the_first(make_export: Callable[..., Path]) -> None:
    def many(t: Tables) -> None:
        t["leads"][0]["created_at"] = "nope"
        t["events"][2]["lead_id"] = "L999"
        t["opportunities"][1]["amount"] = "-1"

    rules = set(read_export(make_export(many)).report.frame()["rule"])
    assert {"unparseable_timestamp", "orphan_reference", "negative_amount"} <= rules


def test_missing_required_column_is_one_clear_error(make_export: Callable[..., Path]) -> None:
    def drop_created(t: Tables) -> None:
        for r in t["leads"]:
            del r["created_at"]

    with pytest.raises(ContractError, match="created_at"):
        read_export(make_export(drop_created))


def test_load_export_refuses_or_drops_and_names(make_export: Callable[..., Path]) -> None:
    path = make_export(_set("leads", 0, created_at="garbage"))
    with pytest.raises(ContractError, match="1 problem"):
        load_export(path)
    export = load_export(path, drop_bad_rows=True)
    assert "L1" not in set(export.leads["lead_id"])
    frame = export.report.frame()
    # L1's events, stage rows and opportunity went with it, each named
    cascaded = frame[frame["rule"] == "lead_rejected"]
    assert set(cascaded["table"]) == {"events", "stage_history", "opportunities"}
    assert export.events is not None and "L1" not in set(export.events["lead_id"])
    assert len(cascaded[cascaded["table"] == "events"]) == 2


def test_parquet_rows_are_numbered_from_one(make_export: Callable[..., Path]) -> None:
    path = make_export(_set("leads", 1, persona="robot"))
    pd.read_csv(path / "leads.csv", dtype=str, keep_default_na=False).to_parquet(
        path / "leads.parquet")
    (path / "leads.csv").unlink()
    problems = read_export(path).report.frame()
    hit = problems[problems["rule"] == "value_not_allowed"]
    assert list(hit["row"]) == [2] and list(hit["file"]) == ["leads.parquet"]
