"""Scoring and validation on Spark, through the CLI, equal to the pandas engine's."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from propensity.cli import app
from propensity.export_reader import read_export
from propensity.models.bundle import ModelBundle
from propensity.scoring import OUTLOOK_COLUMNS
from propensity.settings import get_settings
from propensity.spark.export import read_spark_export
from propensity.spark.validation import spark_validate

AS_OF = "2025-06-01"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory,
           monkeypatch_module: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("spark-store") / "models"
    monkeypatch_module.setenv("PROPENSITY_MODELS_DIR", str(path))
    get_settings.cache_clear()
    return path


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp
    get_settings.cache_clear()


def cli(*args: object) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_score_spark_equals_score(spark: Any, spark_export_dir: Path, models: Path,
                                  tmp_path: Path) -> None:
    trained = CliRunner().invoke(app, ["train", str(spark_export_dir), "--horizon-days", "60",
                                       "--config", str(Path(__file__).parent / "quick.toml")],
                                 catch_exceptions=False)
    # the comparison is of two engines scoring one model, whatever the gate thinks of it (on
    # 1,500 leads the points baseline can beat a one-setting LightGBM: train then exits 1,
    # the first champion refused, and the model stays challenger)
    assert trained.exit_code == 0 or (
        trained.exit_code == 1 and "is not the champion" in trained.output), trained.output
    cli("promote", "--force")
    cli("score", spark_export_dir, "--as-of", AS_OF, "--out", tmp_path / "pandas.csv")
    spark_out = cli("score", spark_export_dir, "--as-of", AS_OF, "--out",
                    tmp_path / "spark.parquet", "--engine", "spark")
    expected = pd.read_csv(tmp_path / "pandas.csv").sort_values("lead_id").reset_index(drop=True)
    got = pd.read_parquet(tmp_path / "spark.parquet").sort_values("lead_id").reset_index(drop=True)
    assert len(expected) >= 30
    assert got["lead_id"].tolist() == expected["lead_id"].astype(str).tolist()
    assert np.abs(got["probability"].to_numpy() - expected["probability"].to_numpy()).max(
    ) <= 1e-9
    assert expected["probability"].std() > 0.01  # real scores, not a constant
    assert (got["model_version"].astype(str) == expected["model_version"].astype(str)).all()
    # the outlook too, in the same columns (blank in the CSV and null in Parquet alike)
    assert list(got.columns) == list(expected.columns)
    assert set(OUTLOOK_COLUMNS) <= set(got.columns)
    _same_numbers(got, expected, OUTLOOK_COLUMNS)
    assert "warning" not in spark_out
    # an --as-of the export does not reach is warned about as by the pandas engine
    for when, says in (("1999-01-01", "no lead was open at 1999-01-01"),
                       ("2031-01-01", "days after the export's last record")):
        args = ["score", spark_export_dir, "--as-of", when, "--out", tmp_path / f"{when}.csv"]
        assert says in cli(*args)
        assert says in cli(*args, "--engine", "spark")


def _same_numbers(got: pd.DataFrame, expected: pd.DataFrame, columns: tuple[str, ...]
                  ) -> None:
    """Each column null in the same rows and within 1e-9 elsewhere."""
    for col in columns:
        a, b = got[col].to_numpy(dtype="float64"), expected[col].to_numpy(dtype="float64")
        assert np.array_equal(np.isnan(a), np.isnan(b)), col
        assert np.abs(a - b)[~np.isnan(a)].max(initial=0.0) <= 1e-9, col


def _broken(folder: Path, out: Path) -> Path:
    """The generated export as CSV with one problem of each kind a CRM export has."""
    out.mkdir()
    for f in folder.iterdir():
        if f.suffix == ".csv" or f.name == "manifest.json":
            (out / f.name).write_bytes(f.read_bytes())
    leads = pd.read_csv(out / "leads.csv", dtype=str, keep_default_na=False)
    leads.loc[3, "created_at"] = "yesterday"
    leads.loc[5, "lead_id"] = leads.loc[6, "lead_id"]
    leads.loc[8, "account_id"] = "NO-SUCH-ACCOUNT"
    leads.to_csv(out / "leads.csv", index=False)
    events = pd.read_csv(out / "events.csv", dtype=str, keep_default_na=False)
    events.loc[2, "lead_id"] = "L-GHOST"
    events.loc[4, "occurred_at"] = "2019-01-01T00:00:00"
    events.loc[7, "value"] = "lots"
    events.loc[9, "value"] = "1e999"  # an infinite number
    events.to_csv(out / "events.csv", index=False)
    stages = pd.read_csv(out / "stage_history.csv", dtype=str, keep_default_na=False)
    stages.loc[1, "stage"] = "nirvana"
    stages.to_csv(out / "stage_history.csv", index=False)
    opps = pd.read_csv(out / "opportunities.csv", dtype=str, keep_default_na=False)
    opps.loc[0, "amount"] = "-5"
    opps.loc[2, "opportunity_id"] = opps.loc[9, "opportunity_id"]
    opps.loc[3, "status"] = "maybe"
    opps.to_csv(out / "opportunities.csv", index=False)
    return out


def test_validation_report_equals_pandas(spark: Any, spark_csv_dir: Path,
                                         tmp_path: Path) -> None:
    broken = _broken(spark_csv_dir, tmp_path / "broken")
    expected = read_export(broken).report.frame()
    result = spark_validate(spark, read_spark_export(spark, str(broken)))
    got = result.report.frame()
    key = ["table", "rule", "row", "column"]
    expected = expected.astype({"row": "int64"}).sort_values(key).reset_index(drop=True)
    got = got.astype({"row": "int64"}).sort_values(key).reset_index(drop=True)
    assert len(expected) >= 10 and set(expected["rule"]) >= {
        "unparseable_timestamp", "duplicate_id", "orphan_reference", "not_a_number",
        "unknown_stage", "negative_amount", "value_not_allowed", "event_before_lead_created",
        "infinite_number"}
    pd.testing.assert_frame_equal(got.astype(str), expected.astype(str))
    assert result.error_count == len(expected) and not result.ok
    capped = spark_validate(spark, read_spark_export(spark, str(broken)), cap=1)
    assert capped.error_count == result.error_count  # counts stay exact
    assert len(capped.report.frame()) == expected.groupby(["table", "rule"]).ngroups


def test_checked_export_names_the_exact_rows(spark: Any, spark_csv_dir: Path,
                                             tmp_path: Path) -> None:
    """The pass/fail check skips row numbering; a failing export still names file rows."""
    from propensity.problems import ContractError
    from propensity.spark.validation import checked_export

    broken = read_spark_export(spark, str(_broken(spark_csv_dir, tmp_path / "broken")))
    exact = spark_validate(spark, broken, cap=1)
    unnumbered = spark_validate(spark, broken, cap=1, exact_rows=False)
    pd.testing.assert_frame_equal(unnumbered.counts, exact.counts)
    assert not unnumbered.ok
    with pytest.raises(ContractError) as raised:
        checked_export(spark, broken)
    pd.testing.assert_frame_equal(raised.value.report.frame(), exact.report.frame())
    clean = read_spark_export(spark, str(spark_csv_dir))
    assert checked_export(spark, clean) is clean


def test_funnel_spark_equals_funnel(spark: Any, spark_export_dir: Path) -> None:
    by = "source"  # the report holds the overall funnel and one per source
    from propensity.export_reader import load_export
    from propensity.funnel import funnel_report
    from propensity.spark.funnel import spark_funnel

    expected = funnel_report(load_export(spark_export_dir), by=by, stale_days=120)
    got = spark_funnel(spark, read_spark_export(spark, str(spark_export_dir)), by=by,
                       stale_days=120)
    assert expected.overall.leads > 1000 and expected.overall.deals.won > 10
    assert got.model_dump() == expected.model_dump()


def test_engine_options_fail_in_one_line(spark_export_dir: Path) -> None:
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("propensity"))
    for args, says in (
            (["funnel", spark_export_dir, "--master", "local[2]"], "need --engine spark"),
            (["validate", spark_export_dir, "--engine", "spark", "--conf", "executor-memory"],
             "expected key=value"),
            (["funnel", spark_export_dir, "--engine", "dask"], "--engine is one of")):
        done = subprocess.run([exe, *map(str, args)], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2, done.stderr
        assert says in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The driver's local time zone away from UTC (what Spark turns collected times into)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="module")
def csv_bundle(spark_csv_dir: Path) -> ModelBundle:
    """A lead-conversion model trained (pandas engine) on the CSV export, with its outlook."""
    from propensity.export_reader import load_export
    from propensity.training import TrainConfig, train_export

    config = TrainConfig.from_file(Path(__file__).parent / "quick.toml")
    config.snapshots.horizon_days = 60
    return train_export(load_export(spark_csv_dir), config).bundle


def test_spark_scores_carry_the_library_outlook(spark: Any, spark_csv_dir: Path,
                                                csv_bundle: ModelBundle) -> None:
    """Spark's scores give each lead the outlook the library's batch scoring gives it (the
    same `score_export` in each partition), and a model without an outlook still scores,
    without the columns, as on the pandas engine."""
    from dataclasses import replace

    from propensity.export_reader import load_export
    from propensity.scoring import score_export
    from propensity.spark.scoring import spark_score
    from propensity.spark.session import to_pandas

    t = pd.Timestamp(AS_OF, tz="UTC")
    export = read_spark_export(spark, str(spark_csv_dir))
    assert csv_bundle.outlook is not None
    expected = score_export(csv_bundle, load_export(spark_csv_dir), t).sort_values(
        "lead_id").reset_index(drop=True)
    got = to_pandas(spark_score(spark, export, csv_bundle, t)).sort_values(
        "lead_id").reset_index(drop=True)
    assert list(got.columns) == list(expected.columns) == [
        "lead_id", "as_of", "probability", *OUTLOOK_COLUMNS]
    assert len(got) >= 30 and got["lead_id"].tolist() == expected["lead_id"].tolist()
    _same_numbers(got, expected, ("probability", *OUTLOOK_COLUMNS))
    for col in ("p_by_30", "p_by_180", "expected_amount", "expected_revenue"):
        assert expected[col].std() > 0, col  # real outlooks, not a constant
    assert (got["p_by_180"] >= got["p_by_30"]).all()
    # no outlook shipped: no outlook column on either engine, the same probabilities
    bare = replace(csv_bundle, outlook=None)
    plain = score_export(bare, load_export(spark_csv_dir), t)
    alone = to_pandas(spark_score(spark, export, bare, t)).sort_values("lead_id").reset_index(
        drop=True)
    assert list(alone.columns) == list(plain.columns) == ["lead_id", "as_of", "probability"]
    _same_numbers(alone, got, ("probability",))


def test_one_pass_score_equals_two_passes_and_refuses_a_broken_export(
        spark: Any, spark_csv_dir: Path, csv_bundle: ModelBundle, tmp_path: Path,
        new_york: None) -> None:
    """`score --engine spark` validates and scores in one pass: the same scores as checking
    first and scoring after, and a broken export raises the same report as `checked_export`."""
    from propensity.export_reader import load_export
    from propensity.problems import ContractError, PropensityError
    from propensity.spark.scoring import checked_scores, spark_score
    from propensity.spark.session import to_pandas

    bundle = csv_bundle
    t = pd.Timestamp(AS_OF, tz="UTC")
    clean = read_spark_export(spark, str(spark_csv_dir))
    one = checked_scores(spark, clean, bundle, t)
    got = to_pandas(one.frame).sort_values("lead_id").reset_index(drop=True)
    one.unpersist()
    # the pass also learns what `score` warns about: how many were open, the latest record
    # (in UTC, though the driver's clock is on New York time)
    assert one.scored == len(got)
    assert one.latest == load_export(spark_csv_dir).latest_time()
    two = to_pandas(spark_score(spark, clean, bundle, t)).sort_values("lead_id").reset_index(
        drop=True)
    assert len(got) >= 30 and got["lead_id"].tolist() == two["lead_id"].tolist()
    assert set(OUTLOOK_COLUMNS) <= set(got.columns)  # the outlook passes the checked pass
    pd.testing.assert_frame_equal(got, two)
    broken = read_spark_export(spark, str(_broken(spark_csv_dir, tmp_path / "broken")))
    with pytest.raises(ContractError) as raised:
        checked_scores(spark, broken, bundle, t)
    exact = spark_validate(spark, broken, cap=1)
    pd.testing.assert_frame_equal(raised.value.report.frame(), exact.report.frame())
    # an export without a table the model was trained with is refused before any work
    shutil.copytree(spark_csv_dir, tmp_path / "no-stages")
    (tmp_path / "no-stages" / "stage_history.csv").unlink()
    with pytest.raises(PropensityError, match="no stage_history table, which the model"):
        checked_scores(spark, read_spark_export(spark, str(tmp_path / "no-stages")), bundle, t)
    # as is text in an attribute the model reads as numbers
    assert bundle.spec is not None and "employees" in bundle.spec.account_numeric
    shutil.copytree(spark_csv_dir, tmp_path / "text")
    accounts = pd.read_csv(tmp_path / "text" / "accounts.csv", dtype=str, keep_default_na=False)
    accounts.loc[3, "employees"] = "many"
    accounts.to_csv(tmp_path / "text" / "accounts.csv", index=False)
    with pytest.raises(PropensityError, match=r"accounts\.csv column employees value 'many'"):
        checked_scores(spark, read_spark_export(spark, str(tmp_path / "text")), bundle, t)
    # a column left blank is missing values, not text: scored
    accounts["employees"] = ""
    accounts.to_csv(tmp_path / "text" / "accounts.csv", index=False)
    blank = checked_scores(spark, read_spark_export(spark, str(tmp_path / "text")), bundle, t)
    assert blank.frame.count() == len(got)
    blank.unpersist()


def _counted_alike(spark: Any, folder: Path) -> tuple[pd.DataFrame, Any]:
    """Both engines' problem counts per rule on `folder`, asserted equal: (pandas' summary,
    Spark's result)."""
    expected = read_export(folder).report.summary()
    got = spark_validate(spark, read_spark_export(spark, str(folder)))
    key = ["severity", "table", "rule"]
    pd.testing.assert_frame_equal(
        got.counts[[*key, "count"]].astype(str).sort_values(key).reset_index(drop=True),
        expected[[*key, "count"]].astype(str).sort_values(key).reset_index(drop=True))
    return expected, got


def test_an_export_whose_leads_have_no_rows_is_refused_alike(spark: Any, spark_csv_dir: Path,
                                                             tmp_path: Path) -> None:
    """Every other row is then an orphan: the engines count the same problems per rule (an
    opportunity of an existing account is named for its missing lead alone)."""
    folder = tmp_path / "no-leads"
    shutil.copytree(spark_csv_dir, folder)
    header = (folder / "leads.csv").read_text().splitlines()[0]
    (folder / "leads.csv").write_text(header + "\n")
    expected, got = _counted_alike(spark, folder)
    assert "empty_table" in set(expected["rule"]) and not got.ok


def test_opportunities_without_account_ids_validate_alike(spark: Any, spark_csv_dir: Path,
                                                          tmp_path: Path) -> None:
    """account_id is optional in opportunities: Spark partitions them by lead alone."""
    folder = tmp_path / "no-account-ids"
    shutil.copytree(spark_csv_dir, folder)
    opps = pd.read_csv(folder / "opportunities.csv", dtype=str, keep_default_na=False)
    opps.drop(columns=["account_id"]).to_csv(folder / "opportunities.csv", index=False)
    _counted_alike(spark, folder)
