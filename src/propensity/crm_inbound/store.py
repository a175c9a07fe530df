"""What the CRMs were answered, kept in the database so every worker (and a restarted one)
gives a retry the first answer and stores nothing twice.

`crm_actions`: one row per HubSpot `callbackId`, with the `outputFields` answered. A call is
scored first and its answer stored in one round trip unless one is stored already: the first
insert wins, and a retry (on any worker, at any time) is answered what it stored.
`crm_notifications`: one row per Salesforce notification `Id`, with what
became of it (scored, an outcome, or refused and why), written before the `Ack`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from propensity.database import metadata

crm_actions = sa.Table(
    "crm_actions", metadata,
    sa.Column("callback_id", sa.String(200), primary_key=True),
    sa.Column("portal_id", sa.String(40), nullable=False),
    sa.Column("object_id", sa.String(200), nullable=False),
    sa.Column("output", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)

crm_notifications = sa.Table(
    "crm_notifications", metadata,
    sa.Column("notification_id", sa.String(40), primary_key=True),
    sa.Column("organization_id", sa.String(18), nullable=False),
    sa.Column("object_type", sa.String(100), nullable=False),
    sa.Column("record_id", sa.String(40), nullable=False),
    sa.Column("result", sa.String(1000), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)


def insert_new(engine: sa.Engine, table: sa.Table) -> Any:
    """An insert that skips rows whose key is there already (PostgreSQL or SQLite)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert
    return sqlite_insert(table).on_conflict_do_nothing()


def stored_answer(conn: sa.Connection, callback_id: str, portal_id: str, object_id: str,
                  output: dict[str, Any], received_at: datetime) -> dict[str, Any] | None:
    """Store `output` as the callback's answer unless one is stored already: None when this
    call stored it, else the one stored first (a retry's, or a concurrent delivery's), so
    that every delivery of a callback answers alike. One statement for a new callback."""
    row = {"callback_id": callback_id, "portal_id": portal_id, "object_id": object_id,
           "output": json.dumps(output), "received_at": received_at}
    if conn.execute(insert_new(conn.engine, crm_actions).returning(
            crm_actions.c.callback_id), [row]).first() is not None:
        return None
    text = conn.execute(sa.select(crm_actions.c.output).where(
        crm_actions.c.callback_id == callback_id)).scalar_one()
    return dict(json.loads(text))


def keep_answer(engine: sa.Engine, callback_id: str, portal_id: str, object_id: str,
                output: dict[str, Any]) -> dict[str, Any]:
    """`stored_answer` committed on its own (autocommit: on PostgreSQL one round trip, no
    BEGIN): `output`, or the answer stored first."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        stored = stored_answer(conn, callback_id, portal_id, object_id, output,
                               datetime.now(UTC))
    return output if stored is None else stored


def known(engine: sa.Engine, ids: Iterable[str]) -> set[str]:
    """The notification ids recorded before."""
    ids = list(ids)
    if not ids:
        return set()
    with engine.connect() as conn:
        return set(conn.execute(sa.select(crm_notifications.c.notification_id).where(
            crm_notifications.c.notification_id.in_(ids))).scalars())


def record_notifications(engine: sa.Engine, rows: Sequence[dict[str, Any]]) -> int:
    """Record notifications (notification_id, organization_id, object_type, record_id,
    result) in one transaction; returns how many were new."""
    if not rows:
        return 0
    now = datetime.now(UTC)
    with engine.begin() as conn:
        return len(conn.execute(insert_new(engine, crm_notifications).returning(
            crm_notifications.c.notification_id),
            [{**r, "result": r["result"][:1000], "received_at": now} for r in rows]).all())
