"""Training sets on Spark: snapshot rows x features assembled in the executors, written as a
Parquet feature table, then fitted on the driver by the pandas engine's `fit_sets`.

Per partition, the pandas code builds the journeys, the open leads (or accounts) at every
snapshot time with their labels (the target's entity frame: a lead's labels read only its
own journey), and both feature matrices (the evaluation vocabulary, fitted on the
export as it was at the cutoff, and the whole export's). The driver computes only what is
global: snapshot times from the export's first lead and latest timestamp, and the two
vocabularies from the leads, the accounts and the event counts (never the events).

When the table holds more rows than the driver should fit (`max_rows`), it keeps every
positive row and a seeded share of the others, each kept negative weighted by the inverse of
that share, so sums over leads (and the calibration) still see the full base rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from propensity.contract import TABLES
from propensity.features.definitions import FeaturePlan
from propensity.features.spec import FeatureSpec, fit_feature_spec
from propensity.funnel.journeys import build_journeys
from propensity.models.train_config import Progress, TrainConfig
from propensity.models.training_sets import TrainingSets, assemble_sets
from propensity.problems import PropensityError
from propensity.snapshots import holdout_split, snapshot_times
from propensity.spark.export import ROW, SparkExport
from propensity.spark.funnel import driver_export
from propensity.spark.odoo import spark_odoo_baseline
from propensity.spark.partition import each_partition, keyed_union, layout, part_export
from propensity.spark.session import to_pandas
from propensity.tables import truncate_export
from propensity.targets import LEAD

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

ORDER = "_order"
"""Lead row (or 0 for accounts): with as_of, the pandas engine's row order."""


def _specs(spark: SparkSession, export: SparkExport, cutoff: pd.Timestamp,
           config: TrainConfig) -> tuple[FeatureSpec, FeatureSpec]:
    """(vocabulary as of the cutoff, the whole export's), from leads and accounts on the
    driver and event counts from Spark."""
    from pyspark.sql import functions as F

    small = {n: f for n, f in export.tables.items() if n in ("leads", "accounts")}
    sub = SparkExport(location=export.location, tables=small, manifest=export.manifest,
                      formats=export.formats, files=export.files)
    lay = layout(sub)
    local = part_export(to_pandas(keyed_union(sub, lay, 1)), lay)
    events = export.table("events")
    specs = []
    for at in (cutoff, None):
        counts = None
        if events is not None:
            e = events
            if at is not None:
                e = _typed_events(e).where(F.col("_t") < F.lit(at.to_pydatetime()))
            rows = to_pandas(e.groupBy(F.col("event_type").cast("string").alias("v")).count())
            ch = to_pandas(e.where(F.col("channel").isNotNull()).groupBy(
                F.col("channel").cast("string").alias("v")).count())
            counts = (pd.Series(rows["count"].to_numpy(), index=rows["v"].astype("str")),
                      pd.Series(ch["count"].to_numpy(), index=ch["v"].astype("str")))
        part = truncate_export(local, at) if at is not None else local
        spec = fit_feature_spec(part, config.features, event_counts=counts)
        # fitted on the driver's leads and accounts: the tables are the whole export's
        specs.append(spec.model_copy(update={"tables": [n for n in TABLES
                                                        if n in export.tables]}))
    return specs[0], specs[1]


def _typed_events(events: DataFrame) -> DataFrame:
    """Events with `_t`, their time as a timestamp (CSV text parsed as the contract says)."""
    from pyspark.sql import functions as F

    col = F.col("occurred_at")
    from pyspark.sql.types import StringType

    text = isinstance(events.schema["occurred_at"].dataType, StringType)
    return events.withColumn("_t", F.to_timestamp(col) if text else col)


def _table_schema(key: str, label: str, features: list[str]) -> StructType:
    """The feature table's Spark schema: key, as_of, label, the row order, `in_eval`, then
    the features as doubles (the columns `spark_feature_table`'s partition function returns)."""
    from pyspark.sql.types import (
        BooleanType,
        DoubleType,
        LongType,
        StringType,
        StructField,
        StructType,
        TimestampType,
    )

    return StructType([
        StructField(key, StringType()), StructField("as_of", TimestampType()),
        StructField(label, LongType()), StructField(ORDER, LongType()),
        StructField("in_eval", BooleanType()),
        *[StructField(c, DoubleType()) for c in features]])


def spark_feature_table(spark: SparkSession, export: SparkExport, config: TrainConfig,
                        path: str, *, buckets: int | None = None,
                        progress: Progress | None = None) -> tuple[
                            list[pd.Timestamp], tuple[FeatureSpec, FeatureSpec]]:
    """Write the feature table (key, as_of, label, `in_eval`, `e_*` and `s_*` features) to
    `path` as Parquet; returns the snapshot times and the two vocabularies."""
    if config.snapshots.max_rows_per_snapshot is not None:
        raise PropensityError("max_rows_per_snapshot samples the whole export's open leads: "
                              "use max_rows (the Spark engine's sample) instead")
    target = config.target
    entity, key, label = target.entity, target.entity.key, target.label
    horizon = config.snapshots.horizon_days
    _say(progress, "snapshot times and vocabularies")
    local = driver_export(export)
    times = snapshot_times(local.leads["created_at"].min(), local.latest_time(),
                           config.snapshots)
    train_times, test_times = holdout_split(times, horizon, config.holdout_share)
    eval_times = {*train_times, *test_times}
    specs = _specs(spark, export, test_times[0], config)
    plans = (FeaturePlan(specs[0]), FeaturePlan(specs[1]))
    e_cols = [f"e_{c.name}" for c in entity.columns(plans[0])]
    s_cols = [f"s_{c.name}" for c in entity.columns(plans[1])]
    schema = _table_schema(key, label, [*e_cols, *s_cols])
    lay = layout(export)

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        part = part_export(pdf, lay)
        j = build_journeys(part)
        ents = target.entities(part, times, horizon, journeys=j, snapshots=config.snapshots) if (
            key in part.leads and part.leads[key].notna().any()) else pd.DataFrame(
                {key: [], "as_of": pd.Series(dtype="datetime64[us, UTC]"), label: []})
        if entity is LEAD and len(ents):
            order = part.leads.index.to_numpy(dtype="int64")[part.lead_positions(ents[key])]
        else:
            order = np.zeros(len(ents), dtype="int64")
        ents = ents.reset_index(drop=True)
        in_eval = ents["as_of"].isin(list(eval_times)).to_numpy()
        X_eval = np.full((len(ents), len(e_cols)), np.nan)
        if in_eval.any():
            X_eval[in_eval] = entity.matrix(part, plans[0], ents[in_eval].reset_index(
                drop=True))
        X_ship = entity.matrix(part, plans[1], ents) if len(ents) else np.zeros(
            (0, len(s_cols)))
        out = pd.DataFrame(np.column_stack([X_eval, X_ship]) if len(ents) else np.zeros(
            (0, len(e_cols) + len(s_cols))), columns=[*e_cols, *s_cols])
        out.insert(0, key, ents[key].astype("str").to_numpy(dtype=object))
        out.insert(1, "as_of", ents["as_of"].dt.tz_convert("UTC").dt.tz_localize(None)
                   .to_numpy() if len(ents) else np.zeros(0, "datetime64[us]"))
        out.insert(2, label, ents[label].to_numpy(dtype="int64") if len(ents) else np.zeros(
            0, "int64"))
        out.insert(3, ORDER, order)
        out.insert(4, "in_eval", in_eval)
        return out

    _say(progress, f"snapshot rows x features on Spark -> {path}")
    union = keyed_union(export, lay, buckets)
    each_partition(union, run, schema).write.mode("overwrite").parquet(path)
    return times, specs


def spark_training_sets(spark: SparkSession, export: SparkExport, config: TrainConfig,
                        path: str, *, max_rows: int | None = None,
                        buckets: int | None = None,
                        progress: Progress | None = None) -> TrainingSets:
    """The pandas engine's TrainingSets, from a feature table built on Spark at `path`."""
    times, specs = spark_feature_table(spark, export, config, path, buckets=buckets,
                                       progress=progress)
    target = config.target
    key, label = target.entity.key, target.label
    _say(progress, f"reading the feature table {path}")
    table = to_pandas(spark.read.parquet(path))
    table["as_of"] = pd.to_datetime(table["as_of"]).dt.tz_localize("UTC").astype(
        "datetime64[us, UTC]")
    by = ["as_of", ORDER, key]
    table = table.sort_values(by, kind="stable").reset_index(drop=True)
    weights = None
    if max_rows is not None and len(table) > max_rows:
        table, weights = sample_rows(table, label, max_rows, config.seed)
    e_cols = [c for c in table.columns if c.startswith("e_")]
    s_cols = [c for c in table.columns if c.startswith("s_")]
    in_eval = table["in_eval"].to_numpy(dtype=bool)
    entities = table[[key, "as_of", label]]
    sets = assemble_sets(entities, table.loc[in_eval, e_cols].to_numpy(dtype="float64"),
                         table[s_cols].to_numpy(dtype="float64"), specs, times,
                         holdout_split(times, config.snapshots.horizon_days,
                                       config.holdout_share), config)
    if "naive_bayes" in target.baselines and target.entity is LEAD:
        _say(progress, "naive-Bayes baseline (Odoo's table of the leads closed before the cutoff)")
        sets.baselines["naive_bayes"] = spark_odoo_baseline(
            export, config, times, sets.holdout, driver_export(export).leads, buckets)
    if weights is not None:
        sets.evaluation.weight = weights[in_eval]
        sets.shipping.weight = weights
        sets.split["sample"] = {"rows": len(table), "limit": max_rows,
                                "rule": "every positive row; negatives sampled, each "
                                        "weighted 1/share"}
    return sets


def sample_rows(table: pd.DataFrame, label: str, max_rows: int,
                seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Every positive row, and the negatives at the share that brings the total to
    `max_rows`; a kept negative weighs 1/share (order kept)."""
    y = table[label].to_numpy()
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y != 1)
    share = min(1.0, max(0.0, (max_rows - pos.size) / max(1, neg.size)))
    rng = np.random.default_rng(seed)
    kept = neg[rng.random(neg.size) < share]
    rows = np.sort(np.concatenate([pos, kept]))
    weights = np.where(y[rows] == 1, 1.0, 1.0 / share if share > 0 else 1.0)
    return table.iloc[rows].reset_index(drop=True), weights


def _say(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)


__all__ = ["ROW", "sample_rows", "spark_feature_table", "spark_training_sets"]
