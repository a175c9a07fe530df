"""Spark features equal the pandas engine's, for leads and accounts, from Parquet and CSV."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from propensity.coding import as_matrix
from propensity.export_reader import load_export
from propensity.features.account import account_columns, build_account_features
from propensity.features.batch import lead_feature_matrix
from propensity.features.definitions import FeaturePlan
from propensity.features.spec import fit_feature_spec
from propensity.funnel.journeys import build_journeys
from propensity.snapshots import SnapshotConfig, account_entities, lead_entities, snapshot_times
from propensity.spark.export import read_spark_export
from propensity.spark.features import spark_features


def _entities(export: Any, account: bool) -> pd.DataFrame:
    times = snapshot_times(export.leads["created_at"].min(), export.latest_time(),
                           SnapshotConfig(every_days=30))[::2]
    journeys = build_journeys(export)
    if account:
        return account_entities(export, times, 90, journeys=journeys)[["account_id", "as_of"]]
    return lead_entities(export, times, 90, journeys=journeys)[["lead_id", "as_of"]]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_lead_features_equal_pandas(spark: Any, spark_export_dir: Path, spark_csv_dir: Path,
                                    fmt: str) -> None:
    folder = spark_export_dir if fmt == "parquet" else spark_csv_dir
    export = load_export(folder)
    spec = fit_feature_spec(export)
    entities = _entities(export, account=False)
    assert len(entities) > 400 and export.accounts is not None
    expected = lead_feature_matrix(export, FeaturePlan(spec), entities)
    got = spark_features(spark, read_spark_export(spark, str(folder)), spec, entities,
                         buckets=8).to_numpy()
    assert got.shape == expected.shape
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    ok = ~np.isnan(expected)
    assert np.abs(got[ok] - expected[ok]).max() <= 1e-12
    # the comparison has teeth: engagement and account columns are not all empty
    assert (expected[:, FeaturePlan(spec).index["n_events_30d"]] > 0).mean() > 0.2


def test_account_features_equal_pandas(spark: Any, spark_export_dir: Path) -> None:
    export = load_export(spark_export_dir)
    spec = fit_feature_spec(export)
    entities = _entities(export, account=True)
    plan = FeaturePlan(spec)
    expected = as_matrix(build_account_features(export, plan, entities), account_columns(plan))
    got = spark_features(spark, read_spark_export(spark, str(spark_export_dir)), spec,
                         entities, buckets=8).to_numpy()
    assert got.shape == expected.shape and len(got) > 100
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    ok = ~np.isnan(expected)
    assert np.abs(got[ok] - expected[ok]).max() <= 1e-12


def test_partitions_are_sized_by_the_leads(spark: Any, spark_export_dir: Path) -> None:
    """A big export is cut into one partition per LEADS_PER_BUCKET leads (each Python call
    holds a bounded share of it), a small one into the minimum; the features do not depend
    on the cut."""
    from propensity.spark.partition import DEFAULT_BUCKETS, buckets_for

    sx = read_spark_export(spark, str(spark_export_dir))
    n = load_export(spark_export_dir).leads.shape[0]
    assert buckets_for(sx) == DEFAULT_BUCKETS  # a test export is small
    assert buckets_for(sx, per_bucket=50, minimum=2) == -(-n // 50) > 8
    export = load_export(spark_export_dir)
    spec = fit_feature_spec(export)
    entities = _entities(export, account=False)
    few = spark_features(spark, sx, spec, entities, buckets=2).to_numpy()
    many = spark_features(spark, sx, spec, entities, buckets=-(-n // 50)).to_numpy()
    assert np.array_equal(few, many, equal_nan=True)


def test_the_union_is_as_wide_as_the_widest_table(
        spark: Any, spark_export_dir: Path) -> None:
    """Tables share the union's columns by type and each table's columns land in distinct
    ones, so the union is narrower than all tables together."""
    from propensity.spark.partition import PART, keyed_union, layout, slot_kind, slots_of

    sx = read_spark_export(spark, str(spark_export_dir))
    lay = layout(sx)
    widest = max(len(cols) for cols in lay.columns.values())
    union = keyed_union(sx, lay, buckets=5)
    slots = [c for c in union.columns if c not in (PART, "_t", "_row")]
    assert len(slots) <= widest + 4 < sum(len(c) for c in lay.columns.values())
    for name, cols in lay.columns.items():
        assert len(set(lay.slots[name].values())) == len(cols), name  # no two share a slot
        kinds = {f.name: f.dataType.simpleString() for f in union.schema.fields}
        for col, slot in lay.slots[name].items():  # a slot is named for its Spark type
            assert slot.rsplit("_", 1)[0] == slot_kind(kinds[slot]), (name, col)
    assert 1 < union.select(PART).distinct().count() <= 5
    odd = slots_of({"a": [("x", "decimal(10,2)"), ("y", "array<string>"), ("z", "string")],
                    "b": [("u", "timestamp_ntz"), ("v", "string"), ("w", "decimal(10,2)")]})
    assert odd == {"a": {"x": "decimal_10_2__0", "y": "array_string__0", "z": "string_0"},
                   "b": {"u": "timestamp_ntz_0", "v": "string_0", "w": "decimal_10_2__0"}}


def test_attribute_typing_equals_pandas(spark: Any, spark_csv_dir: Path, tmp_path: Path) -> None:
    """Spark types an attribute by its distinct values; the pandas reader by all of them. A
    column is numeric only when every non-blank value parses, in both engines."""
    from propensity.spark.export import numeric_attributes

    out = tmp_path / "typed"
    shutil.copytree(spark_csv_dir, out)
    leads = pd.read_csv(out / "leads.csv", dtype=str, keep_default_na=False)
    n = len(leads)
    leads["score"] = [str(i % 7) if i % 5 else "" for i in range(n)]  # numbers and blanks
    leads["tier"] = ["1"] * (n - 1) + ["gold"]  # one label among numbers
    leads["blank"] = ""  # never filled in
    leads["ratio"] = [f"{i / 3:.4f}" for i in range(n)]  # many distinct numbers
    leads.to_csv(out / "leads.csv", index=False)
    pandas_typed = load_export(out).leads
    spark_numeric = numeric_attributes(read_spark_export(spark, str(out)), "leads")
    for col in ("score", "tier", "blank", "ratio"):
        assert (col in spark_numeric) == pd.api.types.is_float_dtype(pandas_typed[col]), col
    assert {"score", "ratio"} <= spark_numeric and not {"tier", "blank"} & spark_numeric
