"""Training sets built on Spark are the pandas engine's; the sample keeps every positive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from propensity.export_reader import load_export
from propensity.spark.export import read_spark_export
from propensity.spark.training import sample_rows, spark_training_sets
from propensity.training import LabelledRows, TrainConfig, export_sets


def _same(a: LabelledRows, b: LabelledRows) -> None:
    assert [c.name for c in a.columns] == [c.name for c in b.columns]
    assert a.X.shape == b.X.shape and len(a.y) > 200
    assert np.array_equal(np.isnan(a.X), np.isnan(b.X))
    ok = ~np.isnan(a.X)
    assert np.abs(a.X[ok] - b.X[ok]).max() <= 1e-12
    for name in ("y", "groups", "times"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_training_sets_equal_pandas(spark: Any, spark_export_dir: Path, tmp_path: Path) -> None:
    # accounts' features (the other target's) are compared in test_features.py
    config = TrainConfig.model_validate({"model": "lead-conversion", "search": False,
                                         "snapshots": {"every_days": 30, "horizon_days": 60}})
    export = load_export(spark_export_dir)
    expected = export_sets(export, config)
    got = spark_training_sets(spark, read_spark_export(spark, str(spark_export_dir)), config,
                              str(tmp_path / "features"))
    _same(got.evaluation, expected.evaluation)
    _same(got.shipping, expected.shipping)
    assert np.array_equal(got.test, expected.test)
    pd.testing.assert_frame_equal(got.holdout, expected.holdout)
    assert got.evaluation_spec == expected.evaluation_spec
    assert got.shipping_spec == expected.shipping_spec
    assert got.split == expected.split
    assert expected.shipping.y.sum() > 10
    # the report's naive-Bayes baseline: Odoo's table counted from the partitions' closed
    # leads, the holdout scored as of its own times, as the pandas engine does
    odoo, want = got.baselines["naive_bayes"], expected.baselines["naive_bayes"]
    assert len(odoo) == len(expected.test) and np.unique(want).size > 20
    assert np.array_equal(odoo, want)


def test_sample_keeps_every_positive_and_weights_the_rest() -> None:
    y = np.r_[np.ones(50, dtype="int64"), np.zeros(950, dtype="int64")]
    table = pd.DataFrame({"converted": y, "i": np.arange(1000)})
    kept, w = sample_rows(table, "converted", 250, seed=3)
    assert kept["converted"].sum() == 50
    assert 150 < len(kept) < 350
    share = 200 / 950
    assert np.allclose(w[kept["converted"].to_numpy() == 0], 1 / share)
    assert abs(w.sum() - 1000) < 120  # the weights stand for the whole table
    assert kept["i"].is_monotonic_increasing
