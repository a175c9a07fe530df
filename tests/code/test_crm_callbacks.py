"""HubSpot actions answered BLOCK: the pending records in real SQLite and PostgreSQL, and their
completion sent through the official client (`hubspot-api-client`) to the local stand-in of
HubSpot's callbacks API (tests/crm_write_standins.py: 204s, 429 bursts with Retry-After,
5xx, a callback not waiting refused)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from propensity.crm_inbound import callbacks
from propensity.crm_inbound.callbacks import COMPLETED, PENDING, REFUSED, HubSpotCallbacks
from propensity.database import engine_for, migrate
from propensity.push.writers import Retries
from tests.conftest import fresh_postgres
from tests.crm_write_standins import TOKEN, HubSpotStandIn

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crm.db'}"
        return
    with fresh_postgres() as url:
        yield url


def _engine(url: str) -> sa.Engine:
    migrate(url)
    return engine_for(url)


def _request(callback_id: str) -> bytes:
    return json.dumps({"callbackId": callback_id, "origin": {"portalId": 7},
                       "object": {"objectId": "L1"}, "inputFields": {}}).encode()


def test_blocked_once_claimed_by_one_and_kept_across_a_restart(db_url: str) -> None:
    engine = _engine(db_url)
    for i in range(3):
        answer = callbacks.block(engine, f"cb{i}", "7", "L1", _request(f"cb{i}"), "busy", T0,
                                 hours=24)
        assert answer == {"hs_execution_state": "BLOCK", "hs_expiration_duration": "PT24H"}
    # HubSpot's retry of a blocked call: the same answer, no second record
    again = callbacks.block(engine, "cb0", "7", "L1", _request("cb0"), "busy", T0, hours=1)
    assert again["hs_expiration_duration"] == "PT24H"
    assert callbacks.states(engine) == {"cb0": PENDING, "cb1": PENDING, "cb2": PENDING}

    first = callbacks.claim(engine, T0)
    assert sorted(p.callback_id for p in first) == ["cb0", "cb1", "cb2"]
    assert first[0].expires_at == T0 + timedelta(hours=24)
    assert callbacks.claim(engine, T0 + timedelta(seconds=1)) == []  # held by the first
    callbacks.keep_outputs(engine, {"cb0": {"hs_execution_state": "SUCCESS", "p": 0.25}})

    # the claimer dies; a new process (a fresh engine: nothing in memory) takes over once
    # the lease is over, with the output scored before: it is sent as it was
    engine.dispose()
    engine = _engine(db_url)
    later = T0 + callbacks.LEASE + timedelta(seconds=1)
    again_claimed = {p.callback_id: p for p in callbacks.claim(engine, later)}
    assert set(again_claimed) == {"cb0", "cb1", "cb2"}
    assert again_claimed["cb0"].output == {"hs_execution_state": "SUCCESS", "p": 0.25}
    assert again_claimed["cb1"].output is None

    callbacks.finish(engine, {"cb0": callbacks.Sent(COMPLETED),
                              "cb1": callbacks.Sent(PENDING, "HTTP 503"),
                              "cb2": callbacks.Sent(REFUSED, "HTTP 400: not waiting")},
                     {p: 0 for p in again_claimed}, later)
    assert callbacks.states(engine) == {"cb0": COMPLETED, "cb1": PENDING, "cb2": REFUSED}
    # the one to try again waits RETRY_SECONDS; done ones are never claimed again
    assert callbacks.claim(engine, later) == []
    retry = callbacks.claim(engine, later + timedelta(seconds=callbacks.RETRY_SECONDS))
    assert [p.callback_id for p in retry] == ["cb1"] and retry[0].attempts == 1
    engine.dispose()


def test_completions_through_the_official_client() -> None:
    ids = [f"cb-{i:03d}" for i in range(120)]
    standin = HubSpotStandIn([], rate_429=0.1, rate_5xx=0.05, retry_after="1", seed=3)
    standin.blocked.update(ids)
    url = standin.start()
    try:
        sender = HubSpotCallbacks(TOKEN, url)
        outputs = [(i, {"hs_execution_state": "SUCCESS", "propensity_probability": 0.125,
                        "propensity_mql": True}) for i in ids]
        # one callback HubSpot is not waiting on, in the second batch: the batch is refused,
        # sent again one at a time, and only that one is refused
        outputs.insert(110, ("cb-gone", {"hs_execution_state": "SUCCESS"}))
        results = sender.complete(outputs)
        assert results.pop("cb-gone").state == REFUSED
        assert {r.state for r in results.values()} == {COMPLETED}
        assert standin.completions == {i: 1 for i in ids}
        assert standin.completed["cb-000"] == {"hs_execution_state": "SUCCESS",
                                               "propensity_probability": "0.125",
                                               "propensity_mql": "true"}
        assert standin.statuses[429] >= 1 and standin.statuses[204] >= 2
        # every request after a 429 waited out its Retry-After (1 s)
        gaps = [b[0] - a[0] for a, b in zip(standin.log, standin.log[1:], strict=False)
                if a[1] == 429]
        assert gaps and min(gaps) >= 0.95, gaps

        # sent again (a crash between HubSpot's 204 and the record): HubSpot refuses it,
        # nothing is completed twice
        again = sender.complete(outputs[:3])
        assert {r.state for r in again.values()} == {REFUSED}
        assert max(standin.completions.values()) == 1
    finally:
        standin.stop()

    # HubSpot unreachable (or 5xx past the retries): every record stays to try again
    down = HubSpotStandIn([], down_after=0)
    down.blocked.add("cb-x")
    url = down.start()
    try:
        quick = HubSpotCallbacks(TOKEN, url, retries=Retries(attempts=1, backoff=0.01))
        sent = quick.complete([("cb-x", {"hs_execution_state": "SUCCESS"})])
        assert sent["cb-x"].state == PENDING and "503" in (sent["cb-x"].reason or "")
        assert not down.completions
    finally:
        down.stop()
