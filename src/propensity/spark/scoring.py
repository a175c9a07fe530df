"""Batch scoring in the executors: every lead (or account) open at T, scored by the bundle.

The registered bundle is loaded once on the driver (from the MLflow registry, wherever its
tracking server is) and broadcast; each partition runs `score_export`, the pandas engine's one
scoring path, on its own rows with one LightGBM thread (Spark owns the cores). Whether an
entity is open at T depends only on its own journey, so the partitions' results together are
`propensity score`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from propensity.models.bundle import ModelBundle
from propensity.scoring import as_utc, score_export
from propensity.spark.export import SparkExport
from propensity.spark.partition import KEYS, keyed_union, layout, part_export

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def spark_score(spark: SparkSession, export: SparkExport, bundle: ModelBundle,
                as_of: pd.Timestamp, *, buckets: int | None = None) -> DataFrame:
    """A Spark frame (key, as_of, probability): write it, or collect a small one."""
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType, TimestampType

    key = "account_id" if bundle.target == "account-propensity" else "lead_id"
    ts = as_utc(as_of)
    lay = layout(export)
    shared = spark.sparkContext.broadcast(bundle)
    schema = StructType([StructField(key, StringType()), StructField("as_of", TimestampType()),
                         StructField("probability", DoubleType())])

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        scored = score_export(shared.value, part_export(pdf, lay), ts, threads=1)
        return pd.DataFrame({key: scored[key].astype("str").to_numpy(),
                             "as_of": scored["as_of"].dt.tz_convert("UTC").dt.tz_localize(None)
                             .to_numpy(),
                             "probability": scored["probability"].to_numpy(dtype="float64")})

    return keyed_union(export, lay, buckets).groupBy(*KEYS).applyInPandas(run, schema=schema)
