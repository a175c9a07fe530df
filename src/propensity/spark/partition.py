"""Every row keyed by the partition it belongs to, and a partition back into a `CrmExport`.

A partition is a hash bucket of accounts (each with all its leads, their events, stages and
opportunities, the account's own row and opportunities) and of leads without an account (whose
features read only their own rows). An account is never split across partitions, which is all
the feature code needs; bucketing keeps groups big enough that Python is called per thousands
of leads, not per account. The tables travel as one union (`_t` naming the table; the tables
share its columns by type, `slots_of`) so that one Python call (`each_partition`) sees all of
a partition's rows at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from propensity.contract import TABLES, UNKNOWN_WHEN_MISSING, Manifest
from propensity.export_reader import fill_unknown, parse_table
from propensity.problems import ProblemReport
from propensity.spark.export import ROW, SparkExport, numeric_attributes
from propensity.tables import CrmExport, SourceFile

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import StructType

PART, TABLE = "_part", "_t"
SEP = "__"
DEFAULT_BUCKETS = 64
"""The fewest partitions an export is cut into (small exports: enough to keep cores busy)."""
LEADS_PER_BUCKET = 5_000
"""About how many leads one partition holds on a large export. A partition is handed to
Python whole, and `score --engine spark` validates and scores it in the same call: at 3M
leads, 64 partitions (~47k leads, ~1M events each) went past a 6 GB process-tree cap, and one
per 10k leads did too once validation and scoring shared a call; one per 5k finished at 4 GB."""


@dataclass(frozen=True)
class Layout:
    """What a partition function needs to rebuild its tables: picklable, shipped to executors."""

    slots: dict[str, dict[str, str]]
    """Table -> original column (file order) -> the union column that carries it
    (see `slots_of`)."""
    numeric: dict[str, set[str]]
    """Attribute columns typed as numbers over the whole table."""
    manifest: Manifest
    formats: dict[str, str]
    files: dict[str, str]

    @property
    def columns(self) -> dict[str, list[str]]:
        """Original columns of each table present, in file order."""
        return {name: list(cols) for name, cols in self.slots.items()}


def slot_kind(type_name: str) -> str:
    """A Spark type's name as a column-name stem (`decimal(10,2)` -> `decimal_10_2_`)."""
    return re.sub(r"\W+", "_", type_name)


def slots_of(types: dict[str, list[tuple[str, str]]]) -> dict[str, dict[str, str]]:
    """Union columns shared by the tables, by type: a table's k-th text column travels in
    `string_k`, its k-th timestamp in `timestamp_k`, and so on.

    One column per table and column made the union as wide as all tables together (36 columns
    for a generated export), and every one of the 20M event rows carried all of them through
    the shuffle, the Arrow conversion and pandas; by type, it has per type only as many
    columns as the table with the most of that type (17). `types` is table -> (column, Spark
    type name) in file order."""
    out: dict[str, dict[str, str]] = {}
    for name, cols in types.items():
        seen: dict[str, int] = {}
        out[name] = {}
        for col, kind in cols:
            kind = slot_kind(kind)
            out[name][col] = f"{kind}_{seen.get(kind, 0)}"
            seen[kind] = seen.get(kind, 0) + 1
    return out


def _text(col: str) -> Column:
    from pyspark.sql import functions as F

    return F.when(F.col(col).cast("string") != "", F.col(col).cast("string"))


def buckets_for(export: SparkExport, per_bucket: int = LEADS_PER_BUCKET,
                minimum: int = DEFAULT_BUCKETS) -> int:
    """How many partitions: the minimum, or one per `per_bucket` leads (one count of leads)."""
    leads = export.table("leads")
    n = 0 if leads is None else leads.count()
    return max(minimum, -(-n // per_bucket))


def bucket(key: Column | str, buckets: int) -> Column:
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64(key), F.lit(buckets))


def lead_keys(export: SparkExport, buckets: int) -> DataFrame:
    """lead_id (as text) -> its partition: that of its account, or a bucket of its own id."""
    from pyspark.sql import functions as F

    leads = export.tables["leads"]
    account = _text("account_id") if "account_id" in leads.columns else F.lit(None).cast(
        "string")
    lid = _text("lead_id")
    owner = F.coalesce(account, F.concat(F.lit("~"), lid))  # "~": never an account's bucket key
    return (leads.select(lid.alias("_lid"), bucket(owner, buckets).alias(PART))
            .where(F.col("_lid").isNotNull()).dropDuplicates(["_lid"]))


def layout(export: SparkExport) -> Layout:
    columns = {n: [c for c in f.columns if c != ROW] for n, f in export.tables.items()}
    numeric: dict[str, set[str]] = {n: numeric_attributes(export, n)
                                    for n in ("leads", "accounts") if n in export.tables}
    types = {n: [(c, "double" if c in numeric.get(n, set())
                  else export.tables[n].schema[c].dataType.simpleString()) for c in cols]
             for n, cols in columns.items()}
    return Layout(slots=slots_of(types), numeric=numeric, manifest=export.manifest,
                  formats=dict(export.formats), files=dict(export.files))


def _tagged(frame: DataFrame, name: str, lay: Layout) -> DataFrame:
    from pyspark.sql import functions as F

    cols = [F.col(PART), F.lit(name).alias(TABLE), F.col(ROW)]
    for c in lay.slots[name]:
        value = F.col(c)
        if c in lay.numeric.get(name, set()):
            value = F.when(F.col(c).cast("string") != "", F.col(c)).try_cast("double")
        cols.append(value.alias(lay.slots[name][c]))
    return frame.select(*cols)


def keyed_union(export: SparkExport, lay: Layout, buckets: int | None = None,
                entities: DataFrame | None = None) -> DataFrame:
    """Every row of every table (and of `entities`, if given) with its partition key.

    Rows whose lead is not in `leads` (orphans) land in some partition that does not hold
    that lead: features, labels and journeys skip them there, as on the whole export.
    `entities` holds `lead_id` or `account_id`, `as_of`, and `_entity` (its row number).
    Without `buckets`, the export's size decides (`buckets_for`).
    """
    from pyspark.sql import functions as F

    buckets = buckets or buckets_for(export)
    keys = lead_keys(export, buckets)
    parts = []
    for name, frame in export.tables.items():
        if name == "accounts":
            keyed = frame.where(_text("account_id").isNotNull()).withColumn(
                PART, bucket(_text("account_id"), buckets))
        elif name == "leads":
            keyed = frame.withColumn("_lid", _text("lead_id")).join(keys, "_lid", "inner")
        else:  # an orphan goes to its own bucket, where validation names it
            own = bucket(F.concat(F.lit("~"), F.coalesce(F.col("_lid"), F.lit(""))), buckets)
            with_accounts = name == "opportunities" and "account_id" in frame.columns
            if with_accounts:  # ... or, with an account, to the account's: where the account
                # is, so that only the missing lead is named, as pandas does
                own = F.coalesce(bucket(_text("account_id"), buckets), own)
            keyed = (frame.withColumn("_lid", _text("lead_id")).join(keys, "_lid", "left")
                     .withColumn(PART, F.coalesce(F.col(PART), own)))
            if with_accounts:  # an account's own opportunities count for it too
                by_account = frame.where(_text("account_id").isNotNull()).withColumn(
                    PART, bucket(_text("account_id"), buckets))
                keyed = keyed.drop("_lid").unionByName(by_account).dropDuplicates([ROW, PART])
        parts.append(_tagged(keyed, name, lay))
    if entities is not None:
        if "account_id" in entities.columns:
            ent = entities.withColumn(PART, bucket(F.col("account_id").cast("string"),
                                                   buckets))
        else:
            ent = entities.withColumn("_lid", F.col("lead_id").cast("string")).join(
                keys, "_lid", "inner")
        parts.append(ent.select(F.col(PART), F.lit("entities").alias(TABLE),
                                *[F.col(c).alias(f"entities{SEP}{c}")
                                  for c in entities.columns]))
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part, allowMissingColumns=True)
    return out


def each_partition(union: DataFrame, run: Callable[[pd.DataFrame], pd.DataFrame],
                   schema: StructType) -> DataFrame:
    """`run` on every partition's rows, whole (one pandas frame per partition key): the one
    place the jobs hand partitions to Python. Spark shuffles the union into
    `spark.sql.shuffle.partitions` tasks, and each task sorts its share to cut it by key
    (the JVM's memory, spilled to disk when short), then calls `run` once per key."""
    return union.groupBy(PART).applyInPandas(run, schema=schema)


def part_export(pdf: pd.DataFrame, lay: Layout,
                problems: ProblemReport | None = None) -> CrmExport:
    """The rows of one partition as the pandas engine's typed export (index: `_row`).

    Typing is the pandas reader's (`parse_table`), with attribute kinds decided over the whole
    table. Parsing problems go to `problems` when given (validation); the other jobs run on
    exports validation has passed.
    """
    report = ProblemReport() if problems is None else problems
    frames: dict[str, pd.DataFrame] = {}
    files: dict[str, SourceFile] = {}
    tables = pdf[TABLE].to_numpy()
    for name, slots in lay.slots.items():
        sub = pdf[tables == name]
        raw = pd.DataFrame({c: sub[slot].to_numpy() for c, slot in slots.items()},
                           index=pd.Index(sub[ROW].to_numpy(dtype="int64"), name=None))
        raw = raw.sort_index(kind="stable")
        raw = raw[~raw.index.duplicated()]  # an opportunity keyed by its lead and its account
        source = SourceFile(Path(lay.files[name]), header_rows=1 if (
            lay.formats[name] == "csv") else 0)
        frames[name] = parse_table(raw, TABLES[name], source, report,
                                   numeric_attributes=lay.numeric.get(name, set()))
        files[name] = source
    leads = frames["leads"]  # every table is rebuilt, empty when the partition has none
    for col in UNKNOWN_WHEN_MISSING:
        leads[col] = fill_unknown(leads[col])
    return CrmExport(leads=leads, events=frames.get("events"),
                     stage_history=frames.get("stage_history"),
                     opportunities=frames.get("opportunities"),
                     accounts=frames.get("accounts"), manifest=lay.manifest, files=files,
                     report=report)


def part_entities(pdf: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    sub = pdf[pdf[TABLE].to_numpy() == "entities"]
    out = pd.DataFrame({c: sub[f"entities{SEP}{c}"].to_numpy() for c in columns})
    if "as_of" in out:
        out["as_of"] = pd.to_datetime(out["as_of"]).dt.tz_localize("UTC").astype(
            "datetime64[us, UTC]") if out["as_of"].dt.tz is None else out["as_of"].dt.tz_convert(
            "UTC").astype("datetime64[us, UTC]")
    return out.sort_values("_entity", kind="stable").reset_index(drop=True) if (
        "_entity" in out) else out
