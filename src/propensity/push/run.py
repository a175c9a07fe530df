"""A push: the plan walked in record-id order, batch by batch, with its cursor in the database.

After each batch one transaction records what was written to which record, the records the
CRM refused and the cursor (the plan's position up to which every record is written,
unchanged or reported). A push stopped anywhere (a crash, a kill, a CRM that stops
answering) and run again with the same plan resumes at its cursor; whatever happened after
the cursor is at most the one batch in flight, whose records are written again with the same
values. A record whose values equal what was last written to it is not sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from propensity.database import crm_push_failures, crm_push_runs, crm_push_written
from propensity.push.records import Crm, Outgoing, plan_digest
from propensity.push.writers import Writer


@dataclass
class PushResult:
    """What a push did, counted over its whole run (a resumed run includes what was done
    before it stopped)."""

    run_id: int | None
    total: int
    written: int
    unchanged: int
    refused: dict[str, str] = field(default_factory=dict)
    resumed_at: int = 0
    """the cursor the run resumed from (0: a new run)"""


def changed(engine: sa.Engine, crm: Crm, plan: Sequence[Outgoing]) -> list[Outgoing]:
    """The records whose values differ from what was last written to them."""
    with engine.connect() as conn:
        last = dict(conn.execute(sa.select(crm_push_written.c.record_id,
                                           crm_push_written.c.digest)
                                 .where(crm_push_written.c.crm == crm)).all())
    return [o for o in plan if last.get(o.record_id) != o.digest]


def dry_run(engine: sa.Engine, crm: Crm, plan: Sequence[Outgoing]) -> PushResult:
    """What a push would write, writing nothing (not even a cursor)."""
    todo = changed(engine, crm, plan)
    return PushResult(None, len(plan), len(todo), len(plan) - len(todo))


def _run(engine: sa.Engine, crm: Crm, digest: str, total: int) -> tuple[int, int]:
    """The unfinished run of this very plan (id, cursor), or a new one at 0. Runs of other
    plans left unfinished are closed: their written records are remembered all the same."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        runs = crm_push_runs.c
        found = conn.execute(sa.select(runs.id, runs.position).where(
            runs.crm == crm, runs.plan_digest == digest, runs.finished_at.is_(None))
            .order_by(runs.id.desc()).limit(1)).first()
        conn.execute(sa.update(crm_push_runs).where(
            runs.crm == crm, runs.finished_at.is_(None),
            runs.id != (found.id if found else -1)).values(finished_at=now))
        if found is not None:
            return found.id, found.position
        new = conn.execute(sa.insert(crm_push_runs).values(
            crm=crm, plan_digest=digest, total=total, position=0, written=0, failed=0,
            started_at=now))
        key = new.inserted_primary_key
        assert key is not None
        return int(key[0]), 0


def _batches(plan: Sequence[Outgoing], start: int, todo: set[str], size: int
             ) -> Iterator[tuple[int, list[Outgoing]]]:
    """Batches of changed records from `start`, each with the plan position after it."""
    batch: list[Outgoing] = []
    for at in range(start, len(plan)):
        if plan[at].record_id in todo:
            batch.append(plan[at])
        if len(batch) == size:
            yield at + 1, batch
            batch = []
    if batch or start < len(plan):
        yield len(plan), batch


def _remember(engine: sa.Engine, crm: Crm, run_id: int, position: int,
              written: list[Outgoing], refused: dict[str, str]) -> None:
    """One batch's outcome and the cursor past it, in one transaction."""
    with engine.begin() as conn:
        if written:
            if engine.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
            stmt = insert(crm_push_written)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["crm", "record_id"],
                set_={"digest": stmt.excluded.digest, "run_id": stmt.excluded.run_id}),
                [{"crm": crm, "record_id": o.record_id, "digest": o.digest, "run_id": run_id}
                 for o in written])
        if refused:
            conn.execute(sa.delete(crm_push_failures).where(
                crm_push_failures.c.run_id == run_id,
                crm_push_failures.c.record_id.in_(list(refused))))
            conn.execute(sa.insert(crm_push_failures), [
                {"run_id": run_id, "record_id": k, "reason": v} for k, v in refused.items()])
        runs = crm_push_runs.c
        conn.execute(sa.update(crm_push_runs).where(runs.id == run_id).values(
            position=position, written=runs.written + len(written),
            failed=runs.failed + len(refused)))


def push(engine: sa.Engine, crm: Crm, plan: Sequence[Outgoing], writer: Writer
         ) -> PushResult:
    """Write every changed record of the plan, resuming this plan's unfinished run if any.
    Raises `PushStopped` when the CRM stops taking batches; the cursor keeps what was done."""
    run_id, start = _run(engine, crm, plan_digest(plan), len(plan))
    todo = {o.record_id for o in changed(engine, crm, plan[start:])}
    for position, batch in _batches(plan, start, todo, writer.batch_size):
        refused = writer.write(batch) if batch else {}
        _remember(engine, crm, run_id, position,
                  [o for o in batch if o.record_id not in refused], refused)
    with engine.begin() as conn:
        conn.execute(sa.update(crm_push_runs).where(crm_push_runs.c.id == run_id)
                     .values(finished_at=datetime.now(UTC)))
        row = conn.execute(sa.select(crm_push_runs).where(crm_push_runs.c.id == run_id)).one()
        refused_all = dict(conn.execute(sa.select(
            crm_push_failures.c.record_id, crm_push_failures.c.reason).where(
            crm_push_failures.c.run_id == run_id)).all())
    return PushResult(run_id, len(plan), row.written, len(plan) - row.written - row.failed,
                      refused_all, start)
