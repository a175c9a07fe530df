"""One SparkSession for every Spark job: built from `--master` and `--conf key=value`.

Under `spark-submit` or on Databricks a session already exists (or the launcher has set the
master); `getOrCreate` then returns it and our settings only fill in what is unset. The
session time zone is forced to UTC because the contract's timestamps are UTC and Spark turns
timestamps into naive local times when it hands them to pandas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, cast

import pandas as pd

from propensity.problems import PropensityError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DEFAULTS: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
}
FORCED = ("spark.sql.session.timeZone",)


def parse_confs(pairs: Iterable[str]) -> dict[str, str]:
    """`key=value` strings (the CLI's repeatable --conf) into a mapping; a bad one is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PropensityError(f"--conf {pair!r}: expected key=value, e.g. "
                                  "spark.executor.memory=4g")
        out[key.strip()] = value.strip()
    return out


def spark_session(master: str | None = None, conf: Mapping[str, str] | None = None,
                  app_name: str = "propensity") -> SparkSession:
    """The session every Spark job runs in (getOrCreate: one per process)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - pyspark is a pinned dependency
        raise PropensityError("--engine spark needs pyspark (pip install pyspark)") from exc
    import os
    import sys
    import warnings

    # pyspark 4.3 warns that it does not "fully" support pandas 3; the equality tests are
    # what says the parts used here work
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")

    # local mode: Python workers run this interpreter (its venv), not whatever `python3` is
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in {**DEFAULTS, **(conf or {})}.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # a missing Java or a bad master URL: one readable line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PropensityError(f"could not start Spark ({first}); Spark needs Java 17 or "
                              "later (`java -version`)") from exc
    for key in FORCED:  # an existing session (spark-submit, Databricks) keeps its own master
        spark.conf.set(key, DEFAULTS[key])
    return spark


def to_pandas(frame: DataFrame) -> pd.DataFrame:
    """A (small) Spark frame collected to the driver, typed as what it is."""
    return cast(pd.DataFrame, frame.toPandas())
