"""Reading an export with Spark: a folder of CSV or Parquet tables, or a Parquet dataset per
table (`leads/`, possibly partitioned), at any path Spark reads (local, s3a://, abfss://, ...).

Tables are read raw, as the pandas engine reads them (CSV cells stay text); each row gets
`_row`, increasing in scan order (for one file, file order), which `with_row_numbers` makes
exact positions when a report must name the same spreadsheet rows as the pandas engine.
Attribute columns are typed once over the whole table (numbers stay numbers, anything else
is a label: the contract's rule), never per partition, so every partition codes a column
alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from propensity.contract import MANIFEST_FILE, TABLES, Manifest
from propensity.problems import PropensityError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ROW = "_row"
"""Increasing in scan order (file order for one file): orders a partition's rows as the file
does. `with_row_numbers` turns it into exact positions when a report names rows."""


@dataclass
class SparkExport:
    """Raw tables as Spark DataFrames (plus `_row`), and what the folder says about itself."""

    location: str
    tables: dict[str, DataFrame]
    manifest: Manifest = field(default_factory=Manifest)
    formats: dict[str, str] = field(default_factory=dict)
    """csv or parquet per table: CSV rows have a header row above them."""
    files: dict[str, str] = field(default_factory=dict)
    """Name of each table's file or dataset folder, as problem reports show it."""

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(self.manifest.stages)

    def table(self, name: str) -> DataFrame | None:
        return self.tables.get(name)


def _fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """(Hadoop file system, Hadoop path) for a path in any scheme Spark reads."""
    jvm: Any = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    jsc: Any = spark.sparkContext._jsc
    return hadoop_path.getFileSystem(jsc.hadoopConfiguration()), hadoop_path


def _fs_exists(spark: SparkSession, path: str) -> bool:
    fs, hadoop_path = _fs(spark, path)
    return bool(fs.exists(hadoop_path))


def _join(location: str, name: str) -> str:
    return location.rstrip("/") + "/" + name


def _find(spark: SparkSession, location: str, table: str) -> tuple[str, str] | None:
    """(path, format) of a table: `leads.parquet`, `leads.csv`, or a dataset folder `leads/`."""
    found = [(p, fmt) for p, fmt in ((_join(location, f"{table}.parquet"), "parquet"),
                                     (_join(location, f"{table}.csv"), "csv"),
                                     (_join(location, table), "parquet"))
             if _fs_exists(spark, p)]
    if len(found) > 1:
        names = ", ".join(p.rsplit("/", 1)[-1] for p, _ in found)
        raise PropensityError(f"{location}: {names} all hold {table}; keep one")
    return found[0] if found else None


def read_manifest(spark: SparkSession, location: str) -> Manifest:
    path = _join(location, MANIFEST_FILE)
    fs, hadoop_path = _fs(spark, path)
    if not fs.exists(hadoop_path):
        return Manifest()
    # read by the driver through the file system: a Spark job for one small file cost a
    # second of every run before any work could start
    stream = fs.open(hadoop_path)
    try:
        jvm: Any = spark.sparkContext._jvm
        text = str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()
    try:
        return Manifest.model_validate(json.loads(text))
    except Exception as exc:
        raise PropensityError(f"{path}: invalid manifest ({exc})") from exc


def with_row_numbers(frame: DataFrame) -> DataFrame:
    """`_row`: contiguous 0-based positions in scan order, without pulling rows through Python
    (per-partition counts, then each partition's offset added to its local position)."""
    from pyspark.sql import functions as F

    mid = frame.withColumnRenamed(ROW, "_mid")
    part = F.shiftright(F.col("_mid"), 33)
    counts = sorted((int(r["p"]), int(r["count"]))
                    for r in mid.groupBy(part.alias("p")).count().collect())
    offsets, total = {}, 0
    for p, n in counts:
        offsets[p] = total
        total += n
    mapping = F.create_map(*[F.lit(x) for kv in offsets.items() for x in kv]) if offsets else None
    local = F.col("_mid") - F.shiftleft(part, 33)
    row = local if mapping is None else mapping[part] + local
    return mid.withColumn(ROW, row.cast("long")).drop("_mid")


def read_table(spark: SparkSession, path: str, fmt: str) -> DataFrame:
    if fmt == "csv":
        # every cell as text, empty as missing: the pandas engine's reading of a CSV
        reader = spark.read.options(header="true", inferSchema="false", mode="PERMISSIVE",
                                    encoding="UTF-8", escape='"')
        return reader.csv(path)
    return spark.read.parquet(path)


def read_spark_export(spark: SparkSession, location: str) -> SparkExport:
    """Every table of an export at `location`; raises when there is no leads table."""
    from pyspark.sql import functions as F

    location = str(location)
    if not _fs_exists(spark, location):
        raise PropensityError(f"{location}: no such export folder")
    manifest = read_manifest(spark, location)
    if manifest.shape == "single_table":
        raise PropensityError(f"{location} holds a single table: --engine spark reads exports")
    tables: dict[str, DataFrame] = {}
    formats: dict[str, str] = {}
    files: dict[str, str] = {}
    for name in TABLES:
        found = _find(spark, location, name)
        if found is None:
            continue
        path, fmt = found
        try:
            frame = read_table(spark, path, fmt)
        except Exception as exc:
            raise PropensityError(f"{path}: not a readable {fmt} table ({exc})") from exc
        tables[name] = frame.withColumn(ROW, F.monotonically_increasing_id())
        formats[name] = fmt
        files[name] = path.rstrip("/").rsplit("/", 1)[-1]
    if "leads" not in tables:
        raise PropensityError(f"{location}: no leads.csv, leads.parquet or leads/ (the one "
                              "required table)")
    return SparkExport(location=location, tables=tables, manifest=manifest, formats=formats,
                       files=files)


def numeric_attributes(export: SparkExport, name: str) -> set[str]:
    """Attribute columns of `leads` / `accounts` that are numbers over the whole table: numeric
    already, or text whose every value parses as one (one Spark job for all columns)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import NumericType, StringType

    frame = export.table(name)
    if frame is None:
        return set()
    known = set(TABLES[name].names) | {ROW}
    out, text = set(), []
    for f in frame.schema.fields:
        if f.name in known:
            continue
        if isinstance(f.dataType, NumericType):
            out.add(f.name)
        elif isinstance(f.dataType, StringType):
            text.append(f.name)
    if text:
        # each distinct (column, value) is cast once, as the pandas reader types a Parquet
        # column by its dictionary: a failed cast costs the JVM an exception, and casting all
        # of a million leads' countries and domains made this one-task scan 8 s of a 140 s job
        pairs = frame.select(F.explode(F.array(*[
            F.struct(F.lit(c).alias("c"), F.col(c).alias("v")) for c in text])).alias("p"))
        distinct = pairs.select("p.c", "p.v").where(F.col("v") != "").distinct()
        kinds = distinct.groupBy("c").agg(F.count("v").alias("n"),
                                          F.count(F.col("v").try_cast("double")).alias("ok"))
        out |= {r["c"] for r in kinds.collect() if r["n"] > 0 and r["n"] == r["ok"]}
    return out
