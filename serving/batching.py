"""Score requests that arrive together, together.

A one-lead request spends most of its scoring time in fixed costs: a numpy call costs about
a microsecond whether it counts one lead's events or a hundred leads', and each feature
family, each model and the calibration makes dozens of them. When several CRMs' requests
are waiting at once (the server is busy), scoring them in one pass pays those costs once.

No request waits for another: a batch is what has already arrived. The first request to
reach the batcher schedules the batch and every request the event loop runs before the batch
starts (those whose bytes came in the same read of the sockets) joins it. An idle server
scores each request alone, as soon as it arrives; a busy one scores bigger batches.

Each request was accepted on its own first (`accept`: every refusal raised, nothing done), so
one request's refusal never touches another's answer. A fault while scoring the batch reaches
every request in it, as it would have reached each alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from serving.deps import AppState
from serving.metrics import Metrics
from serving.routes.score import Accepted, answers

MAX_LEADS = 64
"""A request with more leads than this is scored alone: it pays the fixed costs over its own
leads, and would only make the small requests beside it wait for it."""


class Batcher:
    def __init__(self, metrics: Metrics) -> None:
        self._waiting: list[tuple[Accepted, asyncio.Future[bytes]]] = []
        self._sizes = metrics.score_batch
        self._running: set[asyncio.Task[Any]] = set()  # the loop keeps weak references only

    async def answer(self, state: AppState, accepted: Accepted) -> bytes:
        """The request's JSON, scored with the requests that have arrived with it."""
        if accepted.n > MAX_LEADS:
            self._sizes.observe(1)
            return (await answers(state, [accepted]))[0]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._waiting.append((accepted, future))
        if len(self._waiting) == 1:  # the first to wait starts the next batch
            task = loop.create_task(self._run(state))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return await future

    async def _run(self, state: AppState) -> None:
        batch, self._waiting = self._waiting, []
        self._sizes.observe(len(batch))
        try:
            payloads = await answers(state, [accepted for accepted, _ in batch])
        except Exception as exc:  # each request raises it, as it would alone
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), payload in zip(batch, payloads, strict=True):
            if not future.done():  # a request whose client went away was cancelled
                future.set_result(payload)
