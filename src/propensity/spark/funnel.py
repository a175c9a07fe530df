"""The funnel on Spark: per-lead journeys built in the executors, the metrics from them.

Journeys (when each lead reached each stage, when it ended) are the heavy part: they read the
whole stage history. Each partition builds its leads' journeys with `build_journeys`, the
pandas engine's code; the driver then holds one row per lead (not the events, not the stage
history) and runs `funnel_report`, the pandas engine's metrics, on them, so the figures are
the same by construction.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from propensity.funnel.journeys import Journeys, build_journeys
from propensity.funnel.metrics import funnel_report
from propensity.funnel.report_types import FunnelReport, Mode
from propensity.spark.export import ROW, SparkExport
from propensity.spark.partition import each_partition, keyed_union, layout, part_export
from propensity.spark.session import to_pandas
from propensity.tables import CrmExport

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LATEST = {"events": "occurred_at", "stage_history": "entered_at"}


def spark_journeys(export: SparkExport, buckets: int | None = None) -> pd.DataFrame:
    """One row per lead: `_row`, `reached_i`, `entered_i` per stage i, `ended` (microseconds)."""
    from pyspark.sql.types import LongType, StructField, StructType

    lay = layout(export)
    k = len(export.stages)
    names = [ROW, *[f"reached_{i}" for i in range(k)], *[f"entered_{i}" for i in range(k)],
             "ended"]
    schema = StructType([StructField(n, LongType()) for n in names])

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        part = part_export(pdf, lay)
        j = build_journeys(part)
        data = np.column_stack([part.leads.index.to_numpy(dtype="int64"), j.reached,
                                j.entered, j.ended])
        return pd.DataFrame(data, columns=names)

    rows = each_partition(keyed_union(export, lay, buckets), run, schema)
    return to_pandas(rows).sort_values(ROW).reset_index(drop=True)


def driver_export(export: SparkExport) -> CrmExport:
    """Leads and opportunities on the driver (what the metrics group and value), plus the
    latest event and stage row: the export's 'now' (`latest_time`) without its bulk."""
    from pyspark.sql import functions as F

    small = {n: f for n, f in export.tables.items() if n in ("leads", "opportunities")}
    for name, col in LATEST.items():
        frame = export.table(name)
        if frame is not None:
            small[name] = frame.orderBy(F.col(col).desc_nulls_last()).limit(1)
    sub = SparkExport(location=export.location, tables=small, manifest=export.manifest,
                      formats=export.formats, files=export.files)
    lay = layout(sub)
    return part_export(to_pandas(keyed_union(sub, lay, 1)), lay)


def spark_funnel(spark: SparkSession, export: SparkExport, *, by: str | None = None,
                 start: datetime | None = None, end: datetime | None = None,
                 mode: Mode = "cohort", stale_days: int | None = None,
                 buckets: int | None = None) -> FunnelReport:
    """`funnel_report` of the export, journeys built on Spark."""
    rows = spark_journeys(export, buckets)
    local = driver_export(export)
    k = len(export.stages)
    if not np.array_equal(rows[ROW].to_numpy(), local.leads.index.to_numpy(dtype="int64")):
        raise RuntimeError("journeys and leads disagree on the leads (duplicated lead ids?)")
    journeys = Journeys(
        stages=export.stages,
        reached=rows[[f"reached_{i}" for i in range(k)]].to_numpy(dtype="int64"),
        entered=rows[[f"entered_{i}" for i in range(k)]].to_numpy(dtype="int64"),
        ended=rows["ended"].to_numpy(dtype="int64"),
        leads=local.leads.reset_index(drop=True))
    return funnel_report(local, by=by, start=start, end=end, mode=mode, stale_days=stale_days,
                         journeys=journeys)
