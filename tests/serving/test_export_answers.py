"""Answers computed from the export wait a bounded time: 202 past it, the answer later."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from fastapi import HTTPException

from propensity.problems import PropensityError
from serving.config import ServingSettings
from serving.export_answers import WAITING, cached_json


def _export(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "leads.csv").write_text("lead_id\nL1\n")
    return folder


@pytest.mark.parametrize("cache_bytes", [32 * 1024 * 1024, 4])
def test_a_slow_answer_is_202_then_the_answer(tmp_path: Path, cache_bytes: int) -> None:
    """...also when the answer is larger than the cache keeps (4 bytes): it is given to the
    next ask (it used to be dropped and computed again at every ask: a 202 that never ended
    when the computation outlasts the wait)."""
    settings = ServingSettings(answer_wait_seconds=0.05, funnel_cache_bytes=cache_bytes)
    path = _export(tmp_path)
    release = threading.Event()
    calls: list[int] = []

    def slow() -> bytes:
        calls.append(1)
        release.wait(10)
        return b'{"answer": 42}'

    async def scenario() -> None:
        t0 = time.monotonic()
        first = await cached_json(settings, path, ("slow",), slow)
        assert first.status_code == 202 and first.headers["Retry-After"] == "1"
        assert time.monotonic() - t0 < 2  # bounded, while the computation goes on
        again = await cached_json(settings, path, ("slow",), slow)
        assert again.status_code == 202 and len(calls) == 1  # the same computation
        release.set()
        for _ in range(100):
            done = await cached_json(settings, path, ("slow",), slow)
            if done.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert done.status_code == 200 and done.body == b'{"answer": 42}' and len(calls) == 1

    asyncio.run(scenario())


def test_computations_run_one_at_a_time_and_few_wait(tmp_path: Path) -> None:
    """A client varying a parameter (a backtest's seed) cannot queue unbounded work: past
    WAITING waiting computations, the oldest waiting one is dropped (asked again, it is
    queued again)."""
    settings = ServingSettings(answer_wait_seconds=0.01)
    path = _export(tmp_path)
    release = threading.Event()
    ran: list[int] = []
    running = [0, 0]  # now, most at once

    def compute(i: int) -> bytes:
        running[0] += 1
        running[1] = max(running)
        release.wait(10)
        ran.append(i)
        running[0] -= 1
        return b"{}"

    async def scenario() -> None:
        for i in range(WAITING + 5):
            r = await cached_json(settings, path, ("many", i), lambda i=i: compute(i))
            assert r.status_code == 202
            for _ in range(500):  # the first is running before the others arrive
                if running[1]:
                    break
                await asyncio.sleep(0.01)
        release.set()
        for _ in range(500):  # the pool drains: the kept ones run, the dropped ones do not
            if len(ran) == 1 + WAITING:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)

    asyncio.run(scenario())
    assert running[1] == 1  # one at a time
    # the first (running when the rest arrived) and the newest WAITING: the others dropped
    assert ran == [0, *range(5, WAITING + 5)], ran


def test_an_error_found_after_the_202_is_the_next_answer(tmp_path: Path) -> None:
    """A library error (a history too short for a backtest) is a 422 for the request that
    asks again, not a 202 forever."""
    settings = ServingSettings(answer_wait_seconds=0.05)
    path = _export(tmp_path)
    release = threading.Event()

    def fails() -> bytes:
        release.wait(10)
        raise PropensityError("no quarter start has 90 days of history before it")

    async def scenario() -> None:
        assert (await cached_json(settings, path, ("err",), fails)).status_code == 202
        release.set()
        with pytest.raises(HTTPException) as caught:  # 202 until the error is found, then it
            for _ in range(200):
                assert (await cached_json(settings, path, ("err",), fails)).status_code == 202
        assert caught.value.status_code == 422 and "90 days" in str(caught.value.detail)

    asyncio.run(scenario())

