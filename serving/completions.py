"""Each worker's completer of HubSpot actions it (or another worker, or an earlier run)
answered BLOCK: claim the due ones, score each as the action route does, keep the answer,
send it through HubSpot's callbacks API (`propensity.crm_inbound.callbacks`).

It runs in the worker's event loop beside the requests, one batch at a time, so it takes what
a request would take and no more. The database calls and the sends (which may wait out a
429's Retry-After) run on a thread. A record the scorer still cannot score (no champion yet)
is let go, to be tried again later; one whose lead is refused is completed FAIL_CONTINUE with
the reason, as the action would have been answered. A lead is scored as of when HubSpot
asked (the BLOCK), so its answer does not depend on when the completer got to it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from propensity.crm_inbound import callbacks
from serving.deps import AppState
from serving.routes.crm import ActionIn, score_action

log = logging.getLogger("propensity.crm")


async def complete_due(state: AppState, sender: callbacks.HubSpotCallbacks) -> int:
    """One pass: the due records claimed, scored, sent and recorded; how many were claimed."""
    engine = state.log.engine
    now = datetime.now(UTC)
    due = await run_in_threadpool(callbacks.claim, engine, now)
    if not due:
        return 0
    results: dict[str, callbacks.Sent] = {}
    outputs: dict[str, dict[str, Any]] = {}
    scored: dict[str, dict[str, Any]] = {}
    to_score = []
    for pending in due:
        if pending.expires_at <= now:
            results[pending.callback_id] = callbacks.Sent(
                callbacks.EXPIRED, "HubSpot stopped waiting before it could be scored")
        elif pending.output is not None:
            outputs[pending.callback_id] = pending.output
        else:
            to_score.append(pending)
    # together, so the batcher scores them in passes of up to 32 with one fdatasync each
    answers = await asyncio.gather(*(
        score_action(state, ActionIn.model_validate_json(p.request), p.blocked_at)
        for p in to_score), return_exceptions=True)
    for pending, answer in zip(to_score, answers, strict=True):
        if isinstance(answer, HTTPException):  # still cannot score it (no champion): later
            results[pending.callback_id] = callbacks.Sent(callbacks.PENDING,
                                                          str(answer.detail))
        elif isinstance(answer, BaseException):
            raise answer
        else:
            scored[pending.callback_id] = answer
    await run_in_threadpool(callbacks.keep_outputs, engine, scored)
    outputs.update(scored)
    results.update(await run_in_threadpool(sender.complete, list(outputs.items())))
    await run_in_threadpool(callbacks.finish, engine, results,
                            {p.callback_id: p.attempts for p in due}, datetime.now(UTC))
    return len(due)


async def complete_blocked(state: AppState, seconds: float) -> None:
    """`complete_due` for as long as the app runs: again at once after a full batch, else
    every `seconds`; a failed pass is logged and the records stay where they were."""
    token = state.settings.hubspot_access_token
    if token is None:
        return
    sender = callbacks.HubSpotCallbacks(token.get_secret_value(),
                                        state.settings.hubspot_base_url)
    while True:
        try:
            claimed = await complete_due(state, sender)
        except Exception:
            log.exception("completing blocked HubSpot actions failed")
            claimed = 0
        if claimed < callbacks.BATCH:
            await asyncio.sleep(seconds)
