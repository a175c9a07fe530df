"""Shared factories: small hand-made exports written as real files, and the real data sets."""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from propensity.export_reader import load_export
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.tables import CrmExport
from propensity.training import TrainConfig, TrainResult, train_export

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

BASE_TABLES: dict[str, list[dict[str, object]]] = {
    "accounts": [
        {"account_id": "A1", "industry": "software", "employees": "120"},
        {"account_id": "A2", "industry": "retail", "employees": "15"},
    ],
    "leads": [
        {"lead_id": "L1", "created_at": "2024-01-01T09:00:00", "source": "paid_search",
         "account_id": "A1", "persona": "champion", "owner_id": "r1", "country": "DE"},
        {"lead_id": "L2", "created_at": "2024-01-02", "source": "organic_search",
         "account_id": "A1", "persona": "executive", "owner_id": "r2", "country": "FR"},
        {"lead_id": "L3", "created_at": "2024-01-03T00:00:00+02:00", "source": "",
         "account_id": "A2", "persona": "", "owner_id": "r1", "country": ""},
    ],
    "events": [
        {"lead_id": "L1", "occurred_at": "2024-01-01T10:00:00", "event_type": "page_view",
         "channel": "web", "value": "30"},
        {"lead_id": "L1", "occurred_at": "2024-01-05T10:00:00", "event_type": "demo_request",
         "channel": "web", "value": ""},
        {"lead_id": "L2", "occurred_at": "2024-01-01T12:00:00", "event_type": "email_open",
         "channel": "email", "value": ""},
    ],
    "stage_history": [
        {"lead_id": "L1", "stage": "mql", "entered_at": "2024-01-05T11:00:00"},
        {"lead_id": "L1", "stage": "opportunity", "entered_at": "2024-01-10T00:00:00"},
        {"lead_id": "L1", "stage": "customer", "entered_at": "2024-02-01T00:00:00"},
        {"lead_id": "L2", "stage": "mql", "entered_at": "2024-01-03T00:00:00"},
        {"lead_id": "L2", "stage": "disqualified", "entered_at": "2024-01-20T00:00:00"},
    ],
    "opportunities": [
        {"opportunity_id": "O1", "lead_id": "L1", "account_id": "A1",
         "created_at": "2024-01-10", "closed_at": "2024-02-01", "amount": "5000",
         "status": "won", "owner_id": "r1", "product": "core"},
        {"opportunity_id": "O2", "lead_id": "", "account_id": "A2",
         "created_at": "2024-01-15", "closed_at": "", "amount": "1200",
         "status": "open", "owner_id": "r2", "product": "core"},
    ],
}


LONGEST_FIRST = ("tests/serving/test_reliability.py", "tests/model/test_quality.py",
                 "tests/spark", "tests/notebooks/test_notebooks.py",
                 "tests/monitoring/test_feedback_loop.py", "tests/code/test_cli.py")
"""The longest files (servers restarted again and again, the real data sets and the stress
export trained with the default search, a Spark JVM, three notebook kernels that train, the
monitoring world, a hundred CLI runs), handed out first when tests run on several cores: one
started last would leave the other cores idle at the end. A file missing here only runs later."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`./dev.sh test` runs on every core (`-n auto --dist loadfile`): each file goes whole to
    one worker, so a module's server or model is made once; the Spark files go together, so
    one JVM serves them (`tests/spark/conftest.py` starts one a session); `LONGEST_FIRST`
    first, then the files with the most tests."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/spark" if path.startswith("tests/spark/") else path

        def _assign_work_unit(self, node: Any) -> None:
            for scope in LONGEST_FIRST:
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
                    break
            super()._assign_work_unit(node)

    return FileScheduling(config, log)


def write_tables(directory: Path, tables: dict[str, list[dict[str, object]]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        pd.DataFrame(rows).to_csv(directory / f"{name}.csv", index=False)
    return directory


@pytest.fixture
def make_export(tmp_path: Path) -> Callable[..., Path]:
    """Write BASE_TABLES, with `changes(tables)` applied first, as CSV files; returns the folder."""

    def make(changes: Callable[[dict[str, list[dict[str, object]]]], None] | None = None,
             name: str = "export") -> Path:
        tables = {k: [dict(r) for r in v] for k, v in BASE_TABLES.items()}
        if changes is not None:
            changes(tables)
        return write_tables(tmp_path / name, tables)

    return make


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("PROPENSITY_REQUIRE_DATA"):
            pytest.fail(f"{path} is required here and absent (the real data sets live beside "
                        "the project, in shared/data)")
        pytest.skip(f"{path} is absent: the real data sets live beside the project, in shared/")
    return path


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; CI sets PROPENSITY_REQUIRE_POSTGRES=1
    (fail, not skip)."""
    import psycopg

    base = os.environ.get("PROPENSITY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        conn = psycopg.connect(base, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        if os.environ.get("PROPENSITY_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL at {base} is required here and unreachable: {exc}")
        pytest.skip(f"no PostgreSQL at {base}: {exc}")
    name = f"propensity_test_{uuid.uuid4().hex[:10]}"
    conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}"
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres() as url:
        yield url


def synthetic_export(directory: Path, leads: int, seed: int) -> CrmExport:
    tables, truth = generate_export(SyntheticConfig(n_leads=leads, seed=seed))
    write_export(tables, truth, directory)
    return load_export(directory)


@pytest.fixture(scope="session")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small-export")
    synthetic_export(path, 4000, seed=21)
    return path


@pytest.fixture(scope="session")
def small_export(small_dir: Path) -> CrmExport:
    return load_export(small_dir)


def quick_config(**changes: object) -> TrainConfig:
    """A fast training run: LightGBM's default setting only (no grid), against logistic
    regression and their blend."""
    base: dict[str, object] = {"snapshots": {"every_days": 14, "horizon_days": 90},
                               "search": False}
    base.update(changes)
    return TrainConfig.model_validate(base)


SmallTrained = Callable[..., TrainResult]


def once_per_run(path: Path, make: Callable[[], Any]) -> Any:
    """`make()`, pickled at `path` by the first process of the test run to ask and read back
    by the others (pytest-xdist workers), which wait on a lock meanwhile."""
    import fcntl
    import pickle

    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return pickle.loads(path.read_bytes())
        value = make()
        path.with_name(path.name + ".tmp").write_bytes(pickle.dumps(value))
        path.with_name(path.name + ".tmp").rename(path)
        return value


@pytest.fixture(scope="session")
def small_trained(small_export: CrmExport,
                  tmp_path_factory: pytest.TempPathFactory) -> SmallTrained:
    """`train_export(small_export, quick_config(model=target))`, trained once a test run for
    each target (once for every worker of `./dev.sh test`: `once_per_run`): many tests need
    such a model and none is about how it came to be (a test that is, such as the registry's
    "same pipeline again", trains its own). Same data, same config, same model, so sharing
    changes no assertion. Each call returns a deep copy: a test may change what it gets
    without reaching the next one."""
    run = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run = run.parent  # a worker's folder lies in the run's
    cache: dict[str, TrainResult] = {}

    def trained(model: str = "lead-conversion") -> TrainResult:
        if model not in cache:
            cache[model] = once_per_run(
                run / f"small-trained-{model}.pickle",
                lambda: train_export(small_export, quick_config(model=model)))
        return copy.deepcopy(cache[model])

    return trained
