"""Scoring refuses input the model cannot read as it was trained, instead of scoring every row
from values made missing without a word."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from propensity.export_reader import load_export, read_raw
from propensity.features.spec import FeatureSpec, fit_feature_spec
from propensity.models.bundle import ModelBundle
from propensity.problems import PropensityError
from propensity.scoring import check_table_columns, score_export, score_table
from propensity.single_table import load_single_table
from propensity.tables import CrmExport
from propensity.training import train_table
from tests.conftest import SmallTrained, quick_config


def _table(path: Path, n: int = 600, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    visits = rng.integers(0, 20, n)
    source = rng.choice(["web", "referral", "ads"], n)
    p = 1 / (1 + np.exp(-(visits - 10) / 3 - (source == "referral")))
    pd.DataFrame({"id": [f"L{i}" for i in range(n)], "visits": visits, "source": source,
                  "bought": (rng.random(n) < p).astype(int)}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def table_model(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    path = _table(tmp_path_factory.mktemp("table") / "leads.csv")
    return train_table(load_single_table(path, "bought", id_column="id"),
                       quick_config()).bundle


def test_a_table_without_the_models_columns_is_refused(table_model: ModelBundle,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    pd.DataFrame({"foo": [1, 3], "bar": [2, 4]}).to_csv(path, index=False)
    frame, source = read_raw(path)
    with pytest.raises(PropensityError, match=r"other.csv: 2 of the model's 2 columns are "
                                              r"absent \(visits, source\)"):
        check_table_columns(table_model, frame, source)


def test_text_in_a_number_column_is_refused_with_its_row(table_model: ModelBundle,
                                                         tmp_path: Path) -> None:
    path = _table(tmp_path / "new.csv", n=10, seed=4)
    frame = pd.read_csv(path, dtype=str)
    frame.loc[[3, 6], "visits"] = ["abc", "n/a"]
    frame.to_csv(path, index=False)
    frame, source = read_raw(path)
    with pytest.raises(PropensityError, match=r"new.csv row 5 column visits value 'abc': not "
                                              r"a number.*\(and 1 more rows\)"):
        check_table_columns(table_model, frame, source)
    ok = _table(tmp_path / "ok.csv", n=10, seed=4)
    frame, source = read_raw(ok)
    check_table_columns(table_model, frame, source)  # the same table, clean: read and scored
    assert len(score_table(table_model, frame)) == 10
    # blanks and NaN spelt out are missing values, not text: as the encoders and Spark read
    # them, and whatever the file format
    blanks = frame.astype({"visits": "str"})
    blanks.loc[[1, 2, 3], "visits"] = ["", "  ", "NaN"]
    blanks.to_parquet(tmp_path / "blanks.parquet")
    frame, source = read_raw(tmp_path / "blanks.parquet")
    check_table_columns(table_model, frame, source)
    assert np.isnan(score_table(table_model, frame)["probability"]).sum() == 0


def test_an_export_without_a_table_the_model_used_is_refused(
        small_dir: Path, small_export: CrmExport, small_trained: SmallTrained,
        tmp_path: Path) -> None:
    result = small_trained()
    assert result.bundle.spec is not None
    assert result.bundle.spec.tables == small_export.table_names()
    assert "stage_history" in result.bundle.spec.tables
    folder = tmp_path / "no-stages"
    shutil.copytree(small_dir, folder)
    for f in folder.glob("stage_history.*"):
        f.unlink()
    t = pd.Timestamp(small_export.events["occurred_at"].max())
    with pytest.raises(PropensityError, match="no stage_history table, which the model was "
                                              "trained with"):
        score_export(result.bundle, load_export(folder), t)
    # a model saved before the spec recorded its tables is not second-guessed
    old = result.bundle
    old.spec = result.bundle.spec.model_copy(update={"tables": None})
    assert len(score_export(old, load_export(folder), t)) > 0


def test_a_spec_saved_before_tables_were_recorded_keeps_its_key(
        small_export: CrmExport) -> None:
    spec = fit_feature_spec(small_export)
    saved = spec.model_dump(mode="json", exclude={"tables"})  # what an older version wrote
    old_key = hashlib.sha256(FeatureSpec.model_validate(saved).model_dump_json(
        exclude={"tables"}).encode()).hexdigest()[:10]
    assert FeatureSpec.model_validate(saved).key.endswith(old_key)
    assert spec.key != FeatureSpec.model_validate(saved).key  # the tables are part of it now


def test_text_in_an_attribute_the_model_reads_as_numbers_is_refused(
        small_dir: Path, small_export: CrmExport, small_trained: SmallTrained,
        tmp_path: Path) -> None:
    result = small_trained()
    assert result.bundle.spec is not None and "employees" in result.bundle.spec.account_numeric
    folder = tmp_path / "text"
    shutil.copytree(small_dir, folder)
    [accounts] = folder.glob("accounts.*")
    frame = pd.read_parquet(accounts) if accounts.suffix == ".parquet" else pd.read_csv(
        accounts, dtype=str, keep_default_na=False)
    frame["employees"] = frame["employees"].astype("str")
    frame.loc[7, "employees"] = "many"
    accounts.unlink()
    frame.to_csv(folder / "accounts.csv", index=False)
    t = pd.Timestamp(small_export.events["occurred_at"].max())
    with pytest.raises(PropensityError, match=r"accounts\.csv row 9 column employees value "
                                              r"'many': not a number"):
        score_export(result.bundle, load_export(folder), t)
    # text that reads as an infinite number, in a column that stays text
    frame.loc[7, "employees"], frame.loc[8, "employees"] = "1e999", "n/a"
    frame.to_csv(folder / "accounts.csv", index=False)
    with pytest.raises(PropensityError, match=r"accounts\.csv row 9 column employees value "
                                              r"'1e999': an infinite number"):
        score_export(result.bundle, load_export(folder), t)
