"""One Spark session for the whole test run (local, 2 cores, 4 shuffle partitions, no UI) and
one generated export in both file formats. Without Java the Spark tests skip, saying why,
except in CI (PROPENSITY_REQUIRE_SPARK=1), where they fail."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from propensity.synthetic import SyntheticConfig, generate_export, write_export

SPARK_CONF = {"spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false",
              "spark.default.parallelism": "2"}


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        if os.environ.get("PROPENSITY_REQUIRE_SPARK"):
            pytest.fail("Spark tests need Java (apt-get install openjdk-17-jre-headless)")
        pytest.skip("no Java on this machine: Spark needs Java 17 or later")
    from propensity.spark.session import spark_session

    session = spark_session("local[2]", SPARK_CONF, app_name="propensity-tests")
    yield session
    session.stop()


def _generated(directory: Path, fmt: str) -> Path:
    tables, truth = generate_export(SyntheticConfig(n_leads=1500, seed=5))
    write_export(tables, truth, directory, fmt=fmt)
    return directory


@pytest.fixture(scope="session")
def spark_export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated export (accounts, events, opportunities, stage histories) as Parquet."""
    return _generated(tmp_path_factory.mktemp("spark-export"), "parquet")


@pytest.fixture(scope="session")
def spark_csv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same export as CSV: every cell text, as a CRM writes it."""
    return _generated(tmp_path_factory.mktemp("spark-csv"), "csv")
