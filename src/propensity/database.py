"""The scorer's tables, and the migrations that create them (Alembic, run at start-up)."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

score_log = sa.Table(
    "score_log", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("lead_id", sa.String(200), nullable=False, index=True),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("score", sa.Integer, nullable=False),
    sa.Column("grade", sa.String(1), nullable=False),
    sa.Column("mql", sa.Boolean, nullable=False),
    sa.Column("model_name", sa.String(100), nullable=False),
    sa.Column("model_version", sa.String(20), nullable=False),
    sa.Column("threshold_version", sa.Integer, nullable=False),
    sa.Column("input_hash", sa.String(64), nullable=False),
    sa.Column("as_of", sa.DateTime(timezone=True), nullable=True),
    # the time the score describes (the request's as_of, else scored_at): outcomes are
    # joined and drift is bucketed by it, so a replayed history lands on its own days
    sa.Column("p_by_90", sa.Float, nullable=True),
    sa.Column("expected_days", sa.Float, nullable=True),
    sa.Column("expected_amount", sa.Float, nullable=True),
    # the outlook answered with the score (migration 0010), null when none was: monitoring
    # sets them beside the amounts won and the days taken (`monitoring.outlook`)
)

outcomes = sa.Table(
    "outcomes", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("lead_id", sa.String(200), nullable=False, index=True),
    sa.Column("stage", sa.String(50), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("opportunity_id", sa.String(200), nullable=False, server_default=""),
    sa.Column("amount", sa.Float, nullable=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    # the same outcome reported twice is one row ('' stands for no opportunity: NULLs are
    # never equal in a unique key)
    sa.UniqueConstraint("lead_id", "stage", "at", "opportunity_id", name="uq_outcome"),
)

served_histograms = sa.Table(
    "served_histograms", metadata,
    sa.Column("model_name", sa.String(100), nullable=False),
    sa.Column("model_version", sa.String(20), nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("feature", sa.String(200), nullable=False),
    sa.Column("bin", sa.Integer, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("model_name", "model_version", "day", "feature", "bin"),
)

served_score_days = sa.Table(
    "served_score_days", metadata,
    sa.Column("model_name", sa.String(100), nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("score", sa.Integer, nullable=False),
    sa.Column("bucket", sa.Integer, nullable=False),
    # the probability to 0.1 point (what the AUC ranks by)
    sa.Column("leads", sa.BigInteger, nullable=False),
    sa.Column("probability_sum", sa.Float, nullable=False),
    sa.PrimaryKeyConstraint("model_name", "day", "score", "bucket"),
)

monitoring_folds = sa.Table(
    "monitoring_folds", metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    # score_log ids up to last_id are in served_score_days; seen_id was the log's newest id
    # at seen_at (ids are folded only once they have settled: see monitoring.aggregates)
    sa.Column("seen_id", sa.BigInteger, nullable=False),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
)

thresholds = sa.Table(
    "thresholds", metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(100), nullable=False),
    sa.Column("mql", sa.Float, nullable=False),
    sa.Column("grade_a", sa.Float, nullable=False),
    sa.Column("grade_b", sa.Float, nullable=False),
    sa.Column("grade_c", sa.Float, nullable=False),
    sa.Column("changed_by", sa.String(200), nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("base_version", sa.Integer, nullable=True),
    sa.UniqueConstraint("model", "base_version", name="uq_thresholds_successor"),
)

crm_push_runs = sa.Table(
    # one `propensity push`: its plan (every open lead in record-id order) and the cursor, the
    # plan's position up to which every record is written, unchanged or reported
    "crm_push_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("crm", sa.String(20), nullable=False),
    sa.Column("plan_digest", sa.String(64), nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("written", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
)

crm_push_written = sa.Table(
    # what was last written to each CRM record: a push writes only records whose values differ
    "crm_push_written", metadata,
    sa.Column("crm", sa.String(20), nullable=False),
    sa.Column("record_id", sa.String(200), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("crm", "record_id"),
)

crm_push_failures = sa.Table(
    # records a run's CRM refused, with its reason: reported, and tried again by the next run
    "crm_push_failures", metadata,
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("record_id", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("run_id", "record_id"),
)

MIGRATIONS = Path(__file__).with_name("migrations")


def engine_for(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False},
                                  hide_parameters=True)

        @sa.event.listens_for(engine, "connect")
        def _wal(conn: object, _: object) -> None:  # readers do not block the log writer
            cur = conn.cursor()  # type: ignore[attr-defined]
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL: an app crash loses nothing
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # parameters (lead ids) stay out of error messages and logs; a database that does not
    # answer fails a connection in seconds instead of holding a request
    return sa.create_engine(url, pool_pre_ping=True, hide_parameters=True,
                            connect_args={"connect_timeout": 3}, pool_timeout=5)


def migrate(url: str) -> None:
    """Bring the database to the newest schema (idempotent)."""
    engine_for(url).dispose()  # creates the SQLite folder
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


UPSERT_CHUNK = 256
"""Rows per statement of `upsert_adding`: SQLAlchemy prepares them holding the GIL (~4 us a
row), and the scorer's writer thread runs it beside requests: a 1,500-row upsert in one
statement held every request in the worker for 6 ms."""


def upsert_adding(engine: sa.Engine, table: sa.Table, rows: list[dict[str, object]],
                  key: list[str], column: str) -> None:
    """Insert rows; where the key exists already, add to its `column` (one statement, on
    SQLite and PostgreSQL alike)."""
    if not rows:
        return
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        stmt = pg_insert(table)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert
        stmt = sqlite_insert(table)  # type: ignore[assignment]
    stmt = stmt.on_conflict_do_update(index_elements=key, set_={
        column: table.c[column] + stmt.excluded[column]})
    with engine.begin() as conn:
        for at in range(0, len(rows), UPSERT_CHUNK):
            conn.execute(stmt, rows[at:at + UPSERT_CHUNK])
            time.sleep(0)  # lets go of the GIL: a server's requests run between chunks
