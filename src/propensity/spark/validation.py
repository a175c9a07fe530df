"""The data contract's rules on Spark, with the pandas validator's problem report.

Every rule is the pandas engine's (`validation.validate_export`, its pandera schemas and
cross-table checks), run on each partition: an account's leads, their rows and the account
row travel together, and a row pointing at an absent lead lands where that lead is not, so
orphans, time order and stage order are judged as on the whole export. The one rule a
partition cannot see is a duplicated opportunity_id (two leads' opportunities), which is
counted over the whole table here. Rows carry their exact position (`with_row_numbers`), so
problems name the same file rows. Reports are capped per rule: the counts stay exact, the rows
are the first `cap` of each rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from propensity.contract import TABLES
from propensity.problems import PROBLEM_COLUMNS, ContractError, ProblemReport, PropensityError
from propensity.spark.export import ROW, SparkExport, with_row_numbers
from propensity.spark.partition import Layout, each_partition, keyed_union, layout, part_export
from propensity.spark.session import to_pandas
from propensity.tables import CrmExport
from propensity.validation import validate_export

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DEFAULT_CAP = 1000
"""Problem rows collected per rule (all of them are counted)."""


@dataclass
class SparkReport:
    """The problems of an export validated on Spark: rows (capped per rule) and exact counts."""

    report: ProblemReport
    counts: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["severity", "table", "rule", "count"]))

    @property
    def error_count(self) -> int:
        c = self.counts
        return int(c.loc[c["severity"] == "error", "count"].sum()) if len(c) else 0

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    @property
    def capped(self) -> int:
        """Problems counted but not collected."""
        return int(self.counts["count"].sum()) - len(self.report.frame()) if len(
            self.counts) else 0


def missing_columns(export: SparkExport) -> None:
    for name, frame in export.tables.items():
        missing = [c.name for c in TABLES[name].columns if c.required and c.name not in
                   frame.columns]
        if missing:
            report = ProblemReport()
            for col in missing:
                report.note(table=name, file=export.files[name], column=col,
                            rule="missing_column", message=f"required column {col!r} is absent")
            raise ContractError(f"{export.files[name]}: required column(s) "
                                f"{', '.join(missing)} absent", report)


def checked_part(pdf: pd.DataFrame, lay: Layout) -> tuple[CrmExport, pd.DataFrame]:
    """A partition as a `CrmExport` and its problems under every rule a partition can judge
    (all but a globally duplicated opportunity_id, which `duplicate_opportunities` counts)."""
    report = ProblemReport()
    export = part_export(pdf, lay, report)
    validate_export(export)
    frame = report.frame()
    frame = frame[~((frame["table"] == "opportunities") & (frame["rule"] == "duplicate_id"))]
    return export, frame


def _partition_problems(pdf: pd.DataFrame, lay: Layout) -> pd.DataFrame:
    frame = checked_part(pdf, lay)[1]
    # plain object columns: pyspark 4.3 cannot take pandas 3's Arrow-backed strings back
    return pd.DataFrame({c: frame[c].to_numpy(dtype="int64") if c == "row"
                         else frame[c].astype("str").to_numpy(dtype=object)
                         for c in PROBLEM_COLUMNS})


def duplicate_opportunities(export: SparkExport) -> DataFrame | None:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    opps = export.table("opportunities")
    if opps is None or "opportunity_id" not in opps.columns:
        return None
    ident = F.when(F.col("opportunity_id").cast("string") != "",
                   F.col("opportunity_id").cast("string"))
    header = 1 if export.formats["opportunities"] == "csv" else 0
    counted = opps.withColumn("_id", ident).withColumn(
        "_n", F.count("*").over(Window.partitionBy("_id")))
    return counted.where(F.col("_id").isNotNull() & (F.col("_n") > 1)).select(
        F.lit("error").alias("severity"), F.lit("opportunities").alias("table"),
        F.lit(export.files["opportunities"]).alias("file"),
        (F.col(ROW) + 1 + header).alias("row"), F.lit("opportunity_id").alias("column"),
        F.col("_id").alias("value"), F.lit("duplicate_id").alias("rule"),
        F.lit("the id appears more than once").alias("message"))


def spark_validate(spark: SparkSession, export: SparkExport, *, cap: int = DEFAULT_CAP,
                   buckets: int | None = None, exact_rows: bool = True) -> SparkReport:
    """Every rule of the contract over the whole export; problem rows capped per rule.

    `exact_rows=False` skips numbering the rows (`with_row_numbers`: two Spark jobs per table):
    the rules, counts and `ok` are the same, only the reported rows are not file positions.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    missing_columns(export)
    numbered = SparkExport(location=export.location, manifest=export.manifest,
                           formats=export.formats, files=export.files,
                           tables={n: with_row_numbers(f) if exact_rows else f
                                   for n, f in export.tables.items()})
    lay = layout(numbered)
    schema = StructType([StructField(c, LongType() if c == "row" else StringType())
                         for c in PROBLEM_COLUMNS])

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        return _partition_problems(pdf, lay)

    problems = each_partition(keyed_union(numbered, lay, buckets), run, schema)
    if (dupes := duplicate_opportunities(numbered)) is not None:
        problems = problems.unionByName(dupes)
    # an opportunity of a lead and of another account is checked in both partitions
    problems = problems.dropDuplicates(["table", "row", "column", "rule"]).cache()
    try:
        counts = to_pandas(problems.groupBy("severity", "table", "rule").count())
        rank = Window.partitionBy("table", "rule").orderBy("row", "column")
        rows = to_pandas(problems.withColumn("_k", F.row_number().over(rank)).where(
            F.col("_k") <= cap).drop("_k"))
    finally:
        problems.unpersist()
    report = ProblemReport()
    if export.tables["leads"].isEmpty():  # as `read_export`: not per partition (may be empty)
        report.note(table="leads", file=export.files["leads"], column=None, rule="empty_table",
                    message="the leads table has no rows: nothing to count or learn from")
    for table, file, column in _absent_post_outcome(export):
        report.note(table=table, file=file, column=column, rule="post_outcome_column_absent",
                    severity="warning",
                    message="declared post-outcome in manifest.json but not in the table")
    if len(rows):
        rows = rows.sort_values(["table", "rule", "row", "column"], kind="stable")
        report._parts.append(rows[PROBLEM_COLUMNS].reset_index(drop=True))
    extra = report.summary()
    extra = extra[extra["rule"].isin(["post_outcome_column_absent", "empty_table"])]
    counts = pd.concat([counts, extra], ignore_index=True)
    return SparkReport(report=report, counts=counts.sort_values(
        ["severity", "table", "rule"]).reset_index(drop=True))


def _absent_post_outcome(export: SparkExport) -> list[tuple[str, str, str]]:
    return [(name, export.files[name], col) for name, frame in export.tables.items()
            for col in export.manifest.post_outcome_columns(name) if col not in frame.columns]


def refuse_drop_bad_rows(drop_bad_rows: bool) -> None:
    if drop_bad_rows:
        raise PropensityError("--drop-bad-rows is not available with --engine spark: fix the "
                              "rows `propensity validate --engine spark` names")


def checked_export(spark: SparkSession, export: SparkExport,
                   drop_bad_rows: bool = False) -> SparkExport:
    """The export, once it follows the contract (what `load_export` is to the pandas engine)."""
    refuse_drop_bad_rows(drop_bad_rows)
    # passing needs no row positions; only a failing export is validated again to name its rows
    if spark_validate(spark, export, cap=1, exact_rows=False).ok:
        return export
    raise_problems(spark, export)
    return export


def raise_problems(spark: SparkSession, export: SparkExport) -> None:
    """ContractError naming the first row of each broken rule, by file position."""
    result = spark_validate(spark, export, cap=1)
    if not result.ok:
        raise ContractError(
            f"{export.location}: {result.error_count} problem(s) break the data contract; run "
            f"`propensity validate {export.location} --engine spark` to see them", result.report)

