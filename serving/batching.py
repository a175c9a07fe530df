"""Score requests that arrive together, together.

A one-lead request spends most of its scoring time in fixed costs: a numpy call costs about
a microsecond whether it counts one lead's events or a hundred leads', and each feature
family, each model and the calibration makes dozens of them. When several CRMs' requests
are waiting at once (the server is busy), scoring them in one pass pays those costs once.

No request waits for another: a batch is what has already arrived. The first request to
reach the batcher schedules the batch, the event loop reads the sockets once more, and every
request it has run by then joins it, up to `MAX_LEADS` leads. An idle server scores each
request alone, as soon as it arrives; a busy one scores bigger batches.

Each request was accepted on its own first (`accept`: every refusal raised, nothing done), so
one request's refusal never touches another's answer. Should scoring the batch fail, nothing
has been written yet (the side effects come last), and each request is scored again alone:
a fault one request's data causes reaches that request only.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.exceptions import HTTPException

from serving.deps import AppState
from serving.errors import DATABASE_OUTAGES
from serving.metrics import Metrics
from serving.scorer import Accepted, answers

MAX_LEADS = 32
"""Leads in one batch at most. A request with more is scored alone (it pays the fixed costs
over its own leads, and would only make the small requests beside it wait); a batch stays
under `FEW_ROWS`, so LightGBM scores it on one thread, as it scores one request."""


NOT_THE_DATA: tuple[type[Exception], ...] = (HTTPException, *DATABASE_OUTAGES)
"""Faults no request's data causes: each request would meet them alone too."""


class Batcher:
    def __init__(self, metrics: Metrics) -> None:
        self._open: list[tuple[Accepted, asyncio.Future[bytes]]] | None = None
        self._open_leads = 0
        self._sizes = metrics.score_batch
        self._running: set[asyncio.Task[Any]] = set()  # the loop keeps weak references only

    async def answer(self, state: AppState, accepted: Accepted) -> bytes:
        """The request's JSON, scored with the requests that have arrived with it."""
        if accepted.n > MAX_LEADS:
            self._sizes.observe(1)
            return (await answers(state, [accepted]))[0]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        if self._open is None or self._open_leads + accepted.n > MAX_LEADS:
            self._open, self._open_leads = [], 0  # a new batch, scored on the loop's next turn
            task = loop.create_task(self._run(state, self._open))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        self._open.append((accepted, future))
        self._open_leads += accepted.n
        return await future

    async def _run(self, state: AppState,
                   batch: list[tuple[Accepted, asyncio.Future[bytes]]]) -> None:
        # one more turn of the loop first: it reads the sockets once more, and a request
        # that came in just behind the others joins them (0.4 a batch on average, measured
        # at 1 worker under wrk). It matters beyond its count: answered together, the clients
        # send together again, so the batches stay whole instead of splitting (a busy
        # server's batches doubled, its CPU a request fell by ~10%). On an idle server the
        # turn finds nothing: one connection at a time, p50 0.60 ms as before (0.58-0.61)
        try:
            await asyncio.sleep(0)
            self._close(batch)
            batch = [(a, f) for a, f in batch if not f.done()]  # a request cancelled meanwhile
            if not batch:
                return
            self._sizes.observe(len(batch))
            results = await _answers(state, [accepted for accepted, _ in batch])
        except BaseException as exc:  # the same for all, or this task cancelled (shutdown)
            self._close(batch)
            for _, future in batch:
                _settle(future, exc if isinstance(exc, Exception)
                        else asyncio.CancelledError())
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)

    def _close(self, batch: list[tuple[Accepted, asyncio.Future[bytes]]]) -> None:
        if batch is self._open:  # closed: later requests start the next batch
            self._open = None


async def _answers(state: AppState, accepted: list[Accepted]) -> list[bytes | Exception]:
    """Each request's JSON, or the fault it alone meets. Should the batch fail, nothing was
    written (the side effects come last), and one request's data may be the cause: each is
    then answered alone, as it would have been."""
    try:
        return list(await answers(state, accepted))
    except NOT_THE_DATA:
        raise  # the same for every request in it (a refusal, a database outage)
    except Exception:
        if len(accepted) == 1:
            raise
    out: list[bytes | Exception] = []
    for one in accepted:
        try:
            out.append((await answers(state, [one]))[0])
        except Exception as exc:
            out.append(exc)
    return out


def _settle(future: asyncio.Future[bytes], result: bytes | BaseException) -> None:
    if future.done():  # cancelled: its client is gone
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
