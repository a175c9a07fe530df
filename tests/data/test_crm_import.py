"""Salesforce and HubSpot imports: a generated company rendered as each CRM exports it comes
back as the same contract tables and the same scores; snapshots stay out; every row that does
not go in is named."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from propensity.adapters.crm_mapping import FIELDS_FILE, LEFT_OUT_FILE
from propensity.adapters.crm_render import render_hubspot, render_salesforce
from propensity.adapters.hubspot import import_hubspot
from propensity.adapters.salesforce import import_salesforce
from propensity.contract import TABLES
from propensity.export_reader import load_export
from propensity.funnel.journeys import build_journeys
from propensity.problems import PropensityError
from propensity.scoring import score_export
from propensity.snapshots import SnapshotConfig, lead_entities, snapshot_times
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.training import train_export
from tests.code.test_cli import run
from tests.conftest import quick_config

AS_OF = pd.Timestamp("2025-09-01", tz="UTC")


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small generated company: its contract export and its two CRM renderings."""
    base = tmp_path_factory.mktemp("crm")
    tables, truth = generate_export(SyntheticConfig(n_leads=900, seed=5))
    write_export(tables, truth, base / "contract", fmt="csv")
    render_salesforce(tables, base / "salesforce")
    render_hubspot(tables, base / "hubspot")
    return {"contract": base / "contract", "salesforce": base / "salesforce",
            "hubspot": base / "hubspot", "base": base}


def hubspot_files(folder: Path) -> dict[str, Path]:
    return {k: folder / f"{k}.csv" for k in ("contacts", "companies", "deals", "activities")}


def _import_hubspot(folder: Path, out: Path, **kw: object) -> object:
    f = hubspot_files(folder)
    return import_hubspot(f["contacts"], out, f["companies"], f["deals"], f["activities"],
                          **kw)


@pytest.fixture(scope="module")
def imported(company: dict[str, Path]) -> dict[str, Path]:
    out = {"salesforce": company["base"] / "sf-out", "hubspot": company["base"] / "hs-out"}
    import_salesforce(company["salesforce"], out["salesforce"])
    _import_hubspot(company["hubspot"], out["hubspot"])
    return out


def accounted(out: Path, source: Path) -> dict[str, int]:
    """Rows per source file by the import's own account, checked against the file itself:
    the parts (imported, explained, left out) add up to the rows the file has."""
    from propensity.contract import Manifest

    totals = {}
    for line in Manifest.read(out).notes:
        m = re.match(r"^(\S+\.csv): ([\d,]+) rows: (.*)$", line)
        if not m:
            continue
        total = int(m.group(2).replace(",", ""))
        parts = [int(p.split(" ")[0].replace(",", "")) for p in m.group(3).split("; ")
                 if "value(s) left out" not in p]
        assert sum(parts) == total, line
        assert total == len(pd.read_csv(source / m.group(1), dtype=str)), line
        totals[m.group(1)] = total
    assert not any("unexplained" in n for n in Manifest.read(out).notes)
    return totals


@pytest.mark.parametrize("crm", ["salesforce", "hubspot"])
def test_round_trip_gives_the_contract_tables_back(company: dict[str, Path],
                                                   imported: dict[str, Path], crm: str) -> None:
    contract, back = load_export(company["contract"]), load_export(imported[crm])
    for name in TABLES:
        want, got = contract.table(name), back.table(name)
        assert want is not None and got is not None, name
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True),
                                      check_dtype=False, check_categorical=False, obj=name)
    totals = accounted(imported[crm], company[crm])
    assert len(totals) == len(list(company[crm].glob("*.csv")))  # every file accounted for
    assert not (imported[crm] / LEFT_OUT_FILE).exists()  # 0 rows left out, 0 unexplained


def test_scores_equal_the_contract_exports(company: dict[str, Path],
                                           imported: dict[str, Path]) -> None:
    scores = {}
    for name, folder in (("contract", company["contract"]), *imported.items()):
        export = load_export(folder)
        bundle = train_export(export, quick_config(
            snapshots={"every_days": 28, "horizon_days": 90}, learners=["lightgbm"])).bundle
        scores[name] = score_export(bundle, export, AS_OF).set_index("lead_id")["probability"]
    assert len(scores["contract"]) > 20
    for name in imported:
        diff = (scores[name].reindex(scores["contract"].index) - scores["contract"]).abs()
        assert diff.max() <= 1e-9, name


def test_snapshots_are_left_out_and_named(imported: dict[str, Path]) -> None:
    for crm, names in (("salesforce", {"Status", "Rating", "IsConverted", "LastActivityDate"}),
                       ("hubspot", {"Lifecycle Stage", "Lead Status", "Number of Pageviews",
                                    "Last Activity Date"})):
        fields = pd.read_csv(imported[crm] / FIELDS_FILE)
        snap = fields[fields["use"] == "left out: snapshot"]
        assert names <= set(snap["field"]), crm
        assert snap["reason"].notna().all()
        leads = pd.read_csv(imported[crm] / "leads.csv", nrows=1)
        assert not {"rating", "status", "number_of_pageviews", "lifecycle_stage"} & set(
            leads.columns)


def test_an_allowed_snapshot_fakes_auc(company: dict[str, Path], tmp_path: Path) -> None:
    """"Number of Pageviews" as of the export, allowed, against the same count as it stood at
    each snapshot: the export-time count separates who converted better than anything known
    at the time could."""
    out = tmp_path / "allowed"
    _import_hubspot(company["hubspot"], out, allow_snapshot=["Number of Pageviews"])
    export = load_export(out)
    assert "number_of_pageviews" in export.attribute_columns("leads")
    times = snapshot_times(export.leads["created_at"].min(), export.latest_time(),
                           SnapshotConfig(every_days=14, horizon_days=90))
    rows = lead_entities(export, times, 90, journeys=build_journeys(export))
    y = rows["converted"].astype(int).to_numpy()
    at_export = rows["lead_id"].map(export.leads.set_index("lead_id")["number_of_pageviews"])
    assert export.events is not None
    views = export.events[export.events["event_type"].isin(["page_view", "pricing_page_view"])]
    honest = np.zeros(len(rows))
    for t, part in rows.groupby("as_of"):
        count = views[views["occurred_at"] < t].groupby("lead_id").size()
        honest[rows.index.get_indexer(part.index)] = part["lead_id"].map(count).fillna(0)
    faked = roc_auc_score(y, at_export.astype(float))
    true = roc_auc_score(y, honest)
    print(f"AUC of Number of Pageviews: as of the export {faked:.3f}, as of each snapshot "
          f"{true:.3f}")
    assert faked > true + 0.02


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit(path: Path, row: int, column: str, value: object) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    frame.to_csv(path, index=False)


def test_bad_rows_are_named_by_file_row_and_column(company: dict[str, Path],
                                                   tmp_path: Path) -> None:
    folder = _copy(company["salesforce"], tmp_path / "sf")
    _edit(folder / "Lead.csv", 3, "CreatedDate", "yesterday")
    _edit(folder / "Task.csv", 5, "WhoId", "00Qnobody")
    _edit(folder / "Lead.csv", 7, "IsDeleted", "true")
    hist = pd.read_csv(folder / "LeadHistory.csv", dtype=str, keep_default_na=False)
    status_row = int(np.flatnonzero(hist["Field"] == "Status")[0])
    _edit(folder / "LeadHistory.csv", status_row, "NewValue", "Recycled")
    early_row = int(np.flatnonzero(hist["Field"] == "Status")[1])
    _edit(folder / "LeadHistory.csv", early_row, "CreatedDate", "2000-01-01T00:00:00.000Z")
    _edit(folder / "Task.csv", 9, "CompletedDateTime", "2000-01-01T00:00:00.000Z")
    _edit(folder / "Opportunity.csv", 2, "CreatedDate", "2000-01-01T00:00:00.000Z")
    pd.DataFrame({"Id": ["500x"], "Subject": ["help"]}).to_csv(folder / "Case.csv", index=False)
    result = import_salesforce(folder, tmp_path / "out")
    left = pd.read_csv(tmp_path / "out" / LEFT_OUT_FILE, dtype=str)
    got = {(r.file, int(r.row), r.column) for r in left.itertuples()}
    assert ("Lead.csv", 5, "CreatedDate") in got  # row 3 of the frame is spreadsheet row 5
    assert ("Task.csv", 7, "WhoId") in got
    assert ("Lead.csv", 9, "IsDeleted") in got
    assert ("LeadHistory.csv", status_row + 2, "NewValue") in got
    assert ("LeadHistory.csv", early_row + 2, "NewValue") in got  # before the lead existed
    assert ("Task.csv", 11, "CompletedDateTime") in got
    assert ("Opportunity.csv", 4, "CreatedDate") in got  # its stage, dated before the lead
    assert any("not read" in n and "Case.csv" in n for n in result.notes)
    assert (left["reason"].str.len() > 0).all()
    assert not any("unexplained" in n for n in result.notes)
    accounted(tmp_path / "out", folder)
    load_export(tmp_path / "out")  # what did come in follows the contract

    # the same status, named in a mapping file, becomes a stage
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[salesforce.lead_status]\n"Recycled" = "mql"\n')
    import_salesforce(folder, tmp_path / "mapped", mapping_file=mapping)
    left = pd.read_csv(tmp_path / "mapped" / LEFT_OUT_FILE, dtype=str)
    assert "Recycled" not in set(left["value"].dropna())
    lead = hist.loc[status_row, "LeadId"]
    stages = pd.read_csv(tmp_path / "mapped" / "stage_history.csv")
    assert "mql" in set(stages.loc[stages["lead_id"] == lead, "stage"])


def test_an_undated_status_is_left_out_not_guessed(company: dict[str, Path],
                                                   tmp_path: Path) -> None:
    """A lead whose Status says it is qualified, with no dated change behind it."""
    folder = _copy(company["salesforce"], tmp_path / "sf")
    leads = pd.read_csv(folder / "Lead.csv", dtype=str, keep_default_na=False)
    hist = pd.read_csv(folder / "LeadHistory.csv", dtype=str, keep_default_na=False)
    no_opp = set(leads.loc[leads["ConvertedOpportunityId"] == "", "Id"])
    changed = hist.loc[(hist["Field"] == "Status") & hist["LeadId"].isin(no_opp), "LeadId"]
    lead = changed.iloc[0]
    hist[hist["LeadId"] != lead].to_csv(folder / "LeadHistory.csv", index=False)
    result = import_salesforce(folder, tmp_path / "out")
    left = pd.read_csv(tmp_path / "out" / LEFT_OUT_FILE, dtype=str)
    row = left[(left["record_id"] == lead) & (left["column"] == "Status")]
    assert len(row) == 1 and row["left_out"].iloc[0] == "value"
    assert int(row["row"].iloc[0]) == int(np.flatnonzero(leads["Id"] == lead)[0]) + 2
    assert "placed in time" in row["reason"].iloc[0]
    stages = pd.read_csv(tmp_path / "out" / "stage_history.csv")
    assert lead not in set(stages["lead_id"])  # no stage it cannot date
    assert result.counts["leads"] == len(leads)


def test_allowed_snapshot_and_custom_fields_become_attributes(company: dict[str, Path],
                                                              tmp_path: Path) -> None:
    import_salesforce(company["salesforce"], tmp_path / "out", allow_snapshot=["Lead.Rating"])
    leads = load_export(tmp_path / "out").leads
    assert {"rating", "job_function", "email_domain"} <= set(leads.columns)
    fields = pd.read_csv(tmp_path / "out" / FIELDS_FILE)
    rating = fields[(fields["file"] == "Lead.csv") & (fields["field"] == "Rating")]
    assert rating["use"].iloc[0] == "attribute rating"
    assert "snapshot" in rating["reason"].iloc[0]


def test_bad_mapping_file_is_one_clear_error(company: dict[str, Path], tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[hubspot.lifecycle_stage]\n"Trial" = "trialist"\n')
    with pytest.raises(PropensityError, match="Trial"):
        _import_hubspot(company["hubspot"], tmp_path / "out", mapping_file=mapping)


def test_cli_imports_both_and_fails_in_one_line(company: dict[str, Path],
                                                tmp_path: Path) -> None:
    out = run("import", "salesforce", company["salesforce"], tmp_path / "sf")
    assert out.returncode == 0, out.stderr
    assert "Lead.csv: 900 rows: 900 imported" in out.stdout
    f = hubspot_files(company["hubspot"])
    out = run("import", "hubspot", "--contacts", f["contacts"], "--companies", f["companies"],
              "--deals", f["deals"], "--activities", f["activities"],
              "--allow-snapshot", "Number of Pageviews", tmp_path / "hs")
    assert out.returncode == 0, out.stderr
    assert "Number of Pageviews" not in out.stdout.split("snapshot fields left out")[-1]
    out = run("import", "salesforce", tmp_path / "nowhere", tmp_path / "x")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def small_hubspot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smaller company for the API: every engagement is a request's worth of JSON."""
    folder = tmp_path_factory.mktemp("hs-api") / "hubspot"
    tables, _ = generate_export(SyntheticConfig(n_leads=200, seed=3))
    render_hubspot(tables, folder)
    return folder


def test_hubspot_api_reads_what_the_csv_exports_hold(small_hubspot: Path,
                                                      tmp_path: Path) -> None:
    """Through the official client against the stand-in: paging, internal names and option
    values turned into labels, two 429s waited out for their Retry-After."""
    from propensity.adapters.hubspot_api import import_hubspot_api
    from tests.data.hubspot_standin import StandIn

    _import_hubspot(small_hubspot, tmp_path / "csv")
    with StandIn(small_hubspot, "pat-test", rate_limit_every=5, retry_after=1) as server:
        import_hubspot_api(tmp_path / "api", "pat-test", server.url)
    want, got = load_export(tmp_path / "csv"), load_export(tmp_path / "api")
    for name in TABLES:
        pd.testing.assert_frame_equal(got.table(name).reset_index(drop=True),
                                      want.table(name).reset_index(drop=True),
                                      check_dtype=False, check_categorical=False, obj=name)
    limited = server.limited()
    assert len(limited) == 2
    for when, path, _ in limited:  # each refused request asked again, not before Retry-After
        again = [t for t, p, s in server.requests if p == path and s == 200 and t > when]
        assert again and again[0] - when >= 0.9
    pages = [p for _, p, s in server.requests if "/objects/notes" in p and s == 200]
    assert len(pages) > 10 and any("after=" in p for p in pages)


def test_hubspot_api_wrong_token_is_one_clear_error(small_hubspot: Path,
                                                    tmp_path: Path) -> None:
    from propensity.adapters.hubspot_api import import_hubspot_api
    from tests.data.hubspot_standin import StandIn

    with StandIn(small_hubspot, "pat-test") as server:
        with pytest.raises(PropensityError, match="401"):
            import_hubspot_api(tmp_path / "api", "pat-wrong", server.url)
        out = run("import", "hubspot", "--api", "--base-url", server.url, tmp_path / "cli")
    assert out.returncode != 0 and "HUBSPOT_ACCESS_TOKEN" in out.stderr
    assert "Traceback" not in out.stderr


def test_times_mixed_offsets_portal_zone_and_date_only_end_of_day() -> None:
    from propensity.adapters.crm_mapping import Ledger, parse_times
    from propensity.tables import SourceFile

    ledger = Ledger()
    raw = pd.Series(["2024-01-01T00:00:00+02:00", "2024-01-01T00:00:00.000Z", None, "soon",
                     "2024-03-05", "2024-07-01 10:00:00"])
    got = parse_times(raw, SourceFile(Path("x.csv"), 1), "When", ledger, tz="Europe/Berlin")
    want = ["2023-12-31T22:00:00Z", "2024-01-01T00:00:00Z", None, None,
            "2024-03-05T23:00:00Z",  # the end of 5 March in Berlin (CET, +1)
            "2024-07-01T08:00:00Z"]  # 10:00 in Berlin in summer (CEST, +2)
    assert got.tolist() == [pd.NaT if w is None else pd.Timestamp(w) for w in want]
    left = ledger.left_out_frame()
    assert left[["row", "column", "value"]].values.tolist() == [[5, "When", "soon"]]


def test_what_breaks_the_contract_after_mapping_is_said(company: dict[str, Path],
                                                        tmp_path: Path) -> None:
    folder = _copy(company["salesforce"], tmp_path / "sf")
    _edit(folder / "Lead.csv", 0, "Persona__c", "Decision Maker")
    result = import_salesforce(folder, tmp_path / "out")
    assert any("1 contract problem(s)" in n and "propensity validate" in n
               for n in result.notes)


def test_a_file_not_given_is_a_table_absent_not_empty(company: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """Contacts alone: nothing is known of companies, deals or activities, so those tables
    are absent (an empty one would say nothing happened, and orphan every company id)."""
    f = hubspot_files(company["hubspot"])
    result = import_hubspot(f["contacts"], tmp_path / "out")
    assert set(result.counts) == {"leads", "stage_history"}
    export = load_export(tmp_path / "out")
    assert export.accounts is None and export.events is None and export.opportunities is None
    assert export.leads["account_id"].notna().any()
