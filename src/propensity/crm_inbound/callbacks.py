"""HubSpot actions answered BLOCK, and their completion later through HubSpot's callbacks API.

A workflow action that opted in (`propensity_when_busy` = BLOCK) and reaches a scorer that
cannot score it now (saturated, or no champion loaded) is answered `hs_execution_state`
BLOCK: the contact waits at that step of the workflow instead of HubSpot retrying the call.
What it asked is kept here (`crm_pending`, in the same transaction as the BLOCK answer in
`crm_actions`), so the promise survives a restart of any worker. A completer then claims due
records (a lease, so two workers never send the same one), scores them, stores the
outputFields before the first send (every retry sends the same answer), and completes them
with `POST /automation/v4/actions/callbacks/complete` (100 a call) through the official client.

A 429 is waited out as its `Retry-After` says and a 5xx retried with a growing pause (urllib3's
`Retry` in the client's pool); still failing, the records wait `RETRY_SECONDS` x 2^attempts.
A batch HubSpot refuses (a 4xx: an unknown or expired callback) is sent again one callback
at a time, so one bad callback cannot hold back the others; the refused ones are recorded
with HubSpot's reason and never sent again. A record is marked completed in the transaction
right after HubSpot's 204: only a crash between the two could send it twice, and HubSpot
refuses a callback completed already.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from propensity.crm_inbound.store import stored_answer
from propensity.database import metadata
from propensity.push.writers import Retries, error_message

PENDING, COMPLETED, REFUSED, EXPIRED = "pending", "completed", "refused", "expired"
BATCH = 100
"""Callbacks in one batch completion (HubSpot's batch inputs)."""
LEASE = timedelta(minutes=2)
"""How long a claim keeps other workers off a record: longer than a send with its retries."""
RETRY_SECONDS = 5.0

crm_pending = sa.Table(
    "crm_pending", metadata,
    sa.Column("callback_id", sa.String(200), primary_key=True),
    sa.Column("portal_id", sa.String(40), nullable=False),
    sa.Column("request", sa.Text, nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("output", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.String(1000), nullable=True),
    sa.Index("ix_crm_pending_due", "state", "next_try_at"),
)


@dataclass(frozen=True)
class Pending:
    callback_id: str
    request: str
    """The action's body as HubSpot sent it: scored as it would have been then."""
    output: dict[str, Any] | None
    """The outputFields, once scored: sent as they are on every try."""
    blocked_at: datetime
    """When HubSpot asked: the lead is scored as of then, as it would have been at once."""
    expires_at: datetime
    attempts: int


@dataclass(frozen=True)
class Sent:
    """What became of one completion: done, refused for good (`reason`), or to try again."""

    state: str
    reason: str | None = None


def block_answer(hours: float) -> dict[str, Any]:
    """The outputFields of a BLOCK: HubSpot waits up to `hours` for the completion."""
    return {"hs_execution_state": "BLOCK", "hs_expiration_duration": f"PT{hours:g}H"}


def block(engine: sa.Engine, callback_id: str, portal_id: str, object_id: str, request: bytes,
          reason: str, now: datetime, hours: float) -> dict[str, Any]:
    """Answer BLOCK and keep the promise, in one transaction; a callback answered before (a
    retry) gets its first answer and adds nothing."""
    answer = block_answer(hours)
    with engine.begin() as conn:
        stored = stored_answer(conn, callback_id, portal_id, object_id, answer, now)
        if stored is not None:
            return stored
        conn.execute(crm_pending.insert(), [{
            "callback_id": callback_id, "portal_id": portal_id, "request": request.decode(),
            "reason": reason[:500], "blocked_at": now, "expires_at": now + timedelta(hours=hours),
            "state": PENDING, "output": None, "attempts": 0, "next_try_at": now,
            "claimed_until": None, "finished_at": None, "last_error": None}])
    return answer


def claim(engine: sa.Engine, now: datetime, limit: int = BATCH) -> list[Pending]:
    """Due pending records this caller now holds for `LEASE` (no other claim gets them)."""
    c = crm_pending.c
    free = sa.or_(c.claimed_until.is_(None), c.claimed_until < now)
    due = sa.and_(c.state == PENDING, c.next_try_at <= now, free)
    out = []
    with engine.begin() as conn:
        rows = conn.execute(sa.select(c.callback_id, c.request, c.output, c.blocked_at,
                                      c.expires_at, c.attempts).where(due).order_by(c.next_try_at)
                            .limit(limit)).all()
        for row in rows:  # each guarded again: another worker may have claimed it meanwhile
            if conn.execute(crm_pending.update().where(c.callback_id == row.callback_id, due)
                            .values(claimed_until=now + LEASE)).rowcount == 1:
                out.append(Pending(row.callback_id, row.request,
                                   None if row.output is None else json.loads(row.output),
                                   _utc(row.blocked_at), _utc(row.expires_at),
                                   row.attempts))
    return out


def keep_outputs(engine: sa.Engine, outputs: dict[str, dict[str, Any]]) -> None:
    """The outputFields scored for claimed records, stored before the first send."""
    if not outputs:
        return
    c = crm_pending.c
    with engine.begin() as conn:
        for callback_id, output in outputs.items():
            conn.execute(crm_pending.update().where(c.callback_id == callback_id,
                                                    c.output.is_(None))
                         .values(output=json.dumps(output)))


def finish(engine: sa.Engine, results: dict[str, Sent], attempts: dict[str, int],
           now: datetime) -> None:
    """Record what each send came to and let go of the claims: a record to try again waits
    `RETRY_SECONDS` x 2^attempts (at most an hour)."""
    c = crm_pending.c
    with engine.begin() as conn:
        for callback_id, sent in results.items():
            if sent.state == PENDING:
                n = attempts.get(callback_id, 0) + 1
                wait = min(RETRY_SECONDS * 2 ** (n - 1), 3600.0)
                values: dict[str, Any] = {"attempts": n, "claimed_until": None,
                                          "next_try_at": now + timedelta(seconds=wait)}
            else:
                values = {"state": sent.state, "finished_at": now, "claimed_until": None}
            if sent.reason is not None:
                values["last_error"] = sent.reason[:1000]
            conn.execute(crm_pending.update().where(c.callback_id == callback_id)
                         .values(**values))


def states(engine: sa.Engine) -> dict[str, str]:
    """callback_id -> state, for reports and tests."""
    with engine.connect() as conn:
        return {row.callback_id: row.state for row in conn.execute(
            sa.select(crm_pending.c.callback_id, crm_pending.c.state))}


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)  # SQLite keeps none


def as_strings(output: dict[str, Any]) -> dict[str, str]:
    """outputFields as the callbacks API types them (string values): true/false, numbers as
    Python writes them."""
    return {k: ("true" if v else "false") if isinstance(v, bool) else str(v)
            for k, v in output.items()}


class HubSpotCallbacks:
    """Completes blocked callbacks through `hubspot-api-client`'s automation actions API."""

    def __init__(self, token: str, base_url: str = "https://api.hubapi.com",
                 retries: Retries = Retries(attempts=3)) -> None:
        from hubspot import HubSpot

        self.client = HubSpot(access_token=token, host=base_url.rstrip("/"),
                              retry=retries.urllib3())

    def complete(self, done: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Sent]:
        """Complete each (callbackId, outputFields): a batch, or one at a time should HubSpot
        refuse the batch."""
        from hubspot.automation.actions import (
            BatchInputCallbackCompletionBatchRequest,
            CallbackCompletionBatchRequest,
        )

        out: dict[str, Sent] = {}
        for start in range(0, len(done), BATCH):
            part = done[start:start + BATCH]
            body = BatchInputCallbackCompletionBatchRequest(inputs=[
                CallbackCompletionBatchRequest(callback_id=i, output_fields=as_strings(o))
                for i, o in part])
            sent = self._send(self.client.automation.actions.callbacks_api.complete_batch,
                              body)
            if sent.state == REFUSED and len(part) > 1:
                for i, o in part:
                    out[i] = self.complete_one(i, o)
            else:
                out.update({i: sent for i, _ in part})
        return out

    def complete_one(self, callback_id: str, output: dict[str, Any]) -> Sent:
        from hubspot.automation.actions import CallbackCompletionRequest

        body = CallbackCompletionRequest(output_fields=as_strings(output))
        return self._send(self.client.automation.actions.callbacks_api.complete, callback_id,
                          body)

    @staticmethod
    def _send(call: Any, *args: Any) -> Sent:
        from hubspot.automation.actions.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            call(*args)
        except ApiException as exc:
            reason = f"HTTP {exc.status}: {error_message(exc.body or exc.reason)}"
            if exc.status == 429 or (exc.status or 500) >= 500:
                return Sent(PENDING, reason)  # still limited or failing after the retries
            return Sent(REFUSED, reason)
        except HTTPError as exc:  # unreachable, after the retries
            return Sent(PENDING, f"HubSpot did not answer: {exc}")
        return Sent(COMPLETED)

