"""Batch scoring in the executors: every lead (or account) open at T, scored by the bundle.

The registered bundle is loaded once on the driver (from the MLflow registry, wherever its
tracking server is) and broadcast; each partition runs `score_export`, the pandas engine's one
scoring path, on its own rows with one LightGBM thread (Spark owns the cores). Whether an
entity is open at T depends only on its own journey, so the partitions' results together are
`propensity score`'s.

A model that ships an outlook gives its columns too (`scoring.OUTLOOK_COLUMNS`, computed by
`score_export` in the partition as `propensity score` computes them); a model without one
gives none, as on the pandas engine.

`checked_scores` is what `propensity score --engine spark` runs: each partition is validated
and scored in the same call (one shuffle, one Python start-up), and the scores are kept only
when no partition found a broken rule; a failing export is then validated again to name its
rows, exactly as `checked_export` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from propensity.models.bundle import ModelBundle
from propensity.problems import PropensityError
from propensity.scoring import OUTLOOK_COLUMNS, check_export_tables, score_export
from propensity.spark.export import SparkExport
from propensity.spark.partition import Layout, each_partition, keyed_union, layout, part_export
from propensity.tables import CrmExport
from propensity.targets import target_named
from propensity.timestamps import utc

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

ERRORS = "_errors"
"""Column of `checked_scores`' partition rows: broken-rule problems found there."""
LATEST = "_latest"
"""... and the partition's latest timestamp in any table (`CrmExport.latest_time`)."""


@dataclass(frozen=True)
class CheckedScores:
    """`checked_scores`' result: the scores, and what the pass learnt of the export."""

    frame: DataFrame
    """(key, as_of, probability, and the outlook's columns when the model ships one), read
    from the cached pass: `unpersist()` when done."""
    scored: int
    """Entities open at T (rows of `frame`)."""
    latest: pd.Timestamp | None
    """The export's latest timestamp (UTC), None when it has none."""
    cached: DataFrame
    """The pass itself (scores and partition summaries), which Spark holds in memory."""

    def unpersist(self) -> None:
        """Free the pass (unpersisting `frame`, a query on it, would free nothing)."""
        self.cached.unpersist()


def _numbers(bundle: ModelBundle) -> tuple[str, ...]:
    """The float columns a partition's scores carry: the probability, and the outlook's when
    the model ships one (`score_export` adds them then, and only then)."""
    return ("probability", *(OUTLOOK_COLUMNS if bundle.outlook is not None else ()))


def _scorer(spark: SparkSession, bundle: ModelBundle, as_of: pd.Timestamp
            ) -> tuple[str, Callable[[CrmExport], pd.DataFrame]]:
    """The key column, and a partition's export -> (key, as_of, probability, outlook...)
    rows: `score_export`'s own, in the types Spark's schema declares."""
    key = target_named(bundle.target).entity.key
    ts = utc(as_of)
    numbers = _numbers(bundle)
    shared = spark.sparkContext.broadcast(bundle)

    def score(part: CrmExport) -> pd.DataFrame:
        scored = score_export(shared.value, part, ts, threads=1)
        return pd.DataFrame({key: scored[key].astype("str").to_numpy(),
                             "as_of": scored["as_of"].dt.tz_convert("UTC").dt.tz_localize(None)
                             .to_numpy(),
                             **{c: scored[c].to_numpy(dtype="float64") for c in numbers}})

    return key, score


def _schema(key: str, numbers: tuple[str, ...], checked: bool) -> StructType:
    from pyspark.sql.types import (
        DoubleType,
        LongType,
        StringType,
        StructField,
        StructType,
        TimestampType,
    )

    fields = [StructField(key, StringType()), StructField("as_of", TimestampType()),
              *(StructField(c, DoubleType()) for c in numbers)]
    return StructType(fields + ([StructField(ERRORS, LongType()),
                                  StructField(LATEST, TimestampType())] if checked else []))


def _check_numbers(export: SparkExport, lay: Layout, bundle: ModelBundle) -> None:
    """As `check_export`: an attribute the model reads as numbers that this export holds as
    text (typed over the whole table) is refused, naming a value, before any work."""
    from pyspark.sql import functions as F

    spec = bundle.spec
    if spec is None:
        return
    for name, columns in (("leads", spec.lead_numeric), ("accounts", spec.account_numeric)):
        frame = export.table(name)
        for col in columns:
            if frame is None or col not in frame.columns or col in lay.numeric.get(name, ()):
                continue
            text = F.trim(F.col(col).cast("string"))
            bad = frame.where((text != "") & text.try_cast("double").isNull()).select(
                F.col(col).cast("string").alias("v")).first()
            if bad is not None:  # a column typed as text for its blanks alone is fine
                raise PropensityError(f"{export.files[name]} column {col} value {bad['v']!r}: "
                                      f"not a number, and the model reads {col} as one")


def spark_score(spark: SparkSession, export: SparkExport, bundle: ModelBundle,
                as_of: pd.Timestamp, *, buckets: int | None = None) -> DataFrame:
    """A Spark frame (key, as_of, probability, and the outlook's columns when the model ships
    one): write it, or collect a small one."""
    key, score = _scorer(spark, bundle, as_of)
    lay = layout(export)

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        return score(part_export(pdf, lay))

    return each_partition(keyed_union(export, lay, buckets), run,
                          _schema(key, _numbers(bundle), checked=False))


def _latest(part: CrmExport) -> pd.Timestamp | None:
    """A partition's latest timestamp as Spark takes it (naive UTC); None when it has none."""
    try:
        return utc(part.latest_time()).tz_localize(None)
    except PropensityError:  # no timestamp at all in this partition
        return None


def checked_scores(spark: SparkSession, export: SparkExport, bundle: ModelBundle,
                   as_of: pd.Timestamp, *, buckets: int | None = None) -> CheckedScores:
    """`spark_score`'s frame, computed in the same pass as the contract's rules; raises
    ContractError (naming rows) when the export breaks them."""
    from pyspark.sql import functions as F

    from propensity.spark.validation import (
        checked_part,
        duplicate_opportunities,
        missing_columns,
        raise_problems,
    )

    missing_columns(export)
    check_export_tables(bundle, list(export.tables), export.location)
    key, score = _scorer(spark, bundle, as_of)
    numbers = _numbers(bundle)
    lay = layout(export)
    _check_numbers(export, lay, bundle)

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        part, problems = checked_part(pdf, lay)
        errors = int((problems["severity"] == "error").sum())
        summary = pd.DataFrame({key: pd.Series([None], dtype=object),
                                "as_of": pd.Series([pd.NaT], dtype="datetime64[us]"),
                                **{c: [float("nan")] for c in numbers}, ERRORS: [errors],
                                LATEST: pd.Series([_latest(part)], dtype="datetime64[us]")})
        if errors:  # the export will be refused: scoring broken rows is wasted (or fails)
            return summary
        rows = score(part)
        rows[ERRORS] = 0
        rows[LATEST] = pd.Series(pd.NaT, index=rows.index, dtype="datetime64[us]")
        return pd.concat([rows, summary], ignore_index=True)

    both = each_partition(keyed_union(export, lay, buckets), run,
                          _schema(key, numbers, checked=True)).cache()
    # the latest time as microseconds: a collected timestamp is turned into the driver's
    # local time, whatever the session's time zone
    facts = both.agg(F.sum(ERRORS), F.count(key), F.unix_micros(F.max(LATEST))).first()
    assert facts is not None  # an aggregate has one row
    broken = int(facts[0] or 0)
    dupes = duplicate_opportunities(export)
    if broken or (dupes is not None and not dupes.isEmpty()):
        both.unpersist()
        raise_problems(spark, export)
    latest = None if facts[2] is None else pd.Timestamp(int(facts[2]), unit="us", tz="UTC")
    return CheckedScores(both.where(F.col(key).isNotNull()).drop(ERRORS, LATEST),
                         scored=int(facts[1]), latest=latest, cached=both)
