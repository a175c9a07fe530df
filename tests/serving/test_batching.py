"""The batcher when its event loop shuts down between a batch's opening and its scoring: the
requests in it are cancelled, not left waiting, and no later request joins the dead batch."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from serving.batching import Batcher
from serving.metrics import Metrics


def test_a_batch_cancelled_before_it_is_scored_lets_go_of_its_requests() -> None:
    async def main() -> None:
        batcher = Batcher(Metrics())
        accepted: Any = SimpleNamespace(n=1)
        waiting = asyncio.ensure_future(batcher.answer(None, accepted))  # type: ignore[arg-type]
        await asyncio.sleep(0)  # the request opens a batch and schedules it
        [task] = batcher._running
        await asyncio.sleep(0)  # the batch takes its extra turn of the loop
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, timeout=5)  # hung, it fails in 5 s
        assert task.cancelled() and batcher._open is None  # the next request opens a new one

    asyncio.run(main())
