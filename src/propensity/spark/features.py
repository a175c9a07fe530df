"""Point-in-time features on Spark: `groupBy(partition).applyInPandas` over the batch executor.

Each partition's rows become a small `CrmExport` and go through `lead_feature_matrix` (or
`build_account_features`), the very code the pandas engine runs on the whole export, so the
numbers are the pandas engine's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from propensity.features.definitions import FeaturePlan
from propensity.features.spec import FeatureSpec
from propensity.spark.export import SparkExport
from propensity.spark.partition import (
    Layout,
    each_partition,
    keyed_union,
    layout,
    part_entities,
    part_export,
)
from propensity.spark.session import to_pandas
from propensity.targets import Entity, entity_of

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ENTITY = "_entity"


def entity_frame(spark: SparkSession, entities: pd.DataFrame) -> DataFrame:
    """Entities (key, as_of) as a Spark frame with `_entity`, their row number."""
    key = entity_of(entities).key
    frame = pd.DataFrame({key: entities[key].astype("str").to_numpy(),
                          "as_of": entities["as_of"].dt.tz_convert("UTC").dt.tz_localize(None)
                          .astype("datetime64[us]").to_numpy(),
                          ENTITY: np.arange(len(entities), dtype="int64")})
    return spark.createDataFrame(frame)


def partition_features(pdf: pd.DataFrame, lay: Layout, plan: FeaturePlan,
                       entity: Entity) -> pd.DataFrame:
    """One partition: its export, its entities, their feature rows (float64)."""
    export = part_export(pdf, lay)
    entities = part_entities(pdf, [entity.key, "as_of", ENTITY])
    columns = entity.columns(plan)
    if not len(entities):
        return pd.DataFrame({ENTITY: np.zeros(0, dtype="int64"),
                             **{c.name: np.zeros(0) for c in columns}})
    X = entity.matrix(export, plan, entities)
    out = pd.DataFrame(X, columns=[c.name for c in columns])
    out.insert(0, ENTITY, entities[ENTITY].to_numpy(dtype="int64"))
    return out


def spark_features(spark: SparkSession, export: SparkExport, spec: FeatureSpec,
                   entities: pd.DataFrame, *, buckets: int | None = None) -> pd.DataFrame:
    """Feature rows of `entities` (lead_id or account_id, as_of), in their order, as the
    pandas engine's `lead_feature_matrix` / `build_account_features` would give them."""
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    entity = entity_of(entities)
    plan = FeaturePlan(spec)
    lay = layout(export)
    columns = entity.columns(plan)
    schema = StructType([StructField(ENTITY, LongType()),
                         *[StructField(c.name, DoubleType()) for c in columns]])
    union = keyed_union(export, lay, buckets, entity_frame(spark, entities))

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        return partition_features(pdf, lay, plan, entity)

    rows = to_pandas(each_partition(union, run, schema))
    rows = rows.sort_values(ENTITY).reset_index(drop=True)
    if len(rows) != len(entities):
        raise KeyError(f"{len(entities) - len(rows)} entity row(s) name no lead or account of "
                       "the export")
    return rows.drop(columns=[ENTITY])
