"""HubSpot actions answered BLOCK by a real uvicorn scorer and completed later through the
official client, against the local stand-in of HubSpot's callbacks API: first while HubSpot
answers 503 to every completion, then by a restarted scorer, with 429 bursts."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from propensity.crm_inbound.callbacks import COMPLETED, PENDING, states
from propensity.database import engine_for
from tests.crm_write_standins import TOKEN, HubSpotStandIn
from tests.serving.conftest import start_server
from tests.serving.test_crm_inbound import ACTION, SECRET, action_body, signed_v2

LEADS = [f"L{i:07d}" for i in range(1, 7)]


def _env(standin_url: str) -> dict[str, str]:
    # no action is ever scored at once (0 in flight allowed): each one opted in is blocked
    return {"PROPENSITY_HUBSPOT_CLIENT_SECRET": SECRET, "PROPENSITY_CRM_MAX_IN_FLIGHT": "0",
            "PROPENSITY_HUBSPOT_ACCESS_TOKEN": TOKEN, "PROPENSITY_HUBSPOT_BASE_URL": standin_url,
            "PROPENSITY_CRM_COMPLETE_SECONDS": "0.2"}


def _post(url: str, callback: str, lead: str, **inputs: str) -> httpx.Response:
    body = action_body(callback, lead, **inputs)
    return httpx.post(url, content=body, headers=signed_v2(url, body), timeout=30)


def _attempts(db_url: str) -> int:
    engine = engine_for(db_url)
    with engine.connect() as conn:
        n = conn.execute(sa.text("select min(attempts) from crm_pending")).scalar()
    engine.dispose()
    return int(n or 0)


def test_blocked_actions_are_completed_once_after_a_restart(
        tmp_path: Path, registry: Path, small_dir: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'scores.db'}"
    down = HubSpotStandIn([], down_after=0)  # every completion a 503
    hubspot = HubSpotStandIn([], rate_429=0.3, retry_after="1", seed=5)
    srv = start_server(registry, db_url, tmp_path, data=small_dir, env=_env(down.start()))
    try:
        url = srv.url + ACTION
        for i, lead in enumerate(LEADS):
            r = _post(url, f"cb-block-{i}", lead, propensity_when_busy="BLOCK")
            assert r.status_code == 200, r.text
            assert r.json()["outputFields"]["hs_execution_state"] == "BLOCK"
        # HubSpot retrying a blocked call: the first answer, nothing new kept
        again = _post(url, "cb-block-0", LEADS[0], propensity_when_busy="BLOCK")
        assert again.json() == {"outputFields": {"hs_execution_state": "BLOCK",
                                                 "hs_expiration_duration": "PT24H"}}
        # not opted in: the 429 HubSpot retries
        busy = _post(url, "cb-retry", LEADS[0])
        assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
        deadline = time.monotonic() + 30
        while _attempts(db_url) < 1 and time.monotonic() < deadline:
            time.sleep(0.3)  # tried, and refused by HubSpot's 503s
        assert _attempts(db_url) >= 1
        assert down.statuses[503] >= 1 and not down.completions
    finally:
        srv.stop()
        down.stop()
    engine = engine_for(db_url)
    assert set(states(engine).values()) == {PENDING} and len(states(engine)) == len(LEADS)

    # a new scorer on the same database, HubSpot answering again (with 429 bursts): each
    # blocked action completed exactly once, with the score /v1/score gives the lead
    hubspot.blocked.update(f"cb-block-{i}" for i in range(len(LEADS)))
    srv = start_server(registry, db_url, tmp_path, data=small_dir, env=_env(hubspot.start()))
    try:
        deadline = time.monotonic() + 90
        while len(hubspot.completions) < len(LEADS) and time.monotonic() < deadline:
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while set(states(engine).values()) != {COMPLETED} and time.monotonic() < deadline:
            time.sleep(0.2)
        # scored as of the BLOCK, as it would have been at once: /v1/score as of then agrees
        with engine.connect() as conn:
            blocked_at = conn.execute(sa.text("select blocked_at from crm_pending where "
                                              "callback_id = 'cb-block-0'")).scalar_one()
        as_of = datetime.fromisoformat(str(blocked_at)).replace(tzinfo=UTC).isoformat()
        direct = srv.client(srv.score_key).post("/v1/score", json={"leads": [{
            "lead_id": LEADS[0], "created_at": "2024-01-01T09:05:39Z", "source": "direct",
            "country": "BR", "job_function": "marketing", "email_domain": "business",
            "account_id": "A000022", "owner_id": "rep_04", "persona": "end_user",
            "product": "core", "campaign": "direct_1", "as_of": as_of}]})
        assert direct.status_code == 200, direct.text
    finally:
        srv.stop()
        hubspot.stop()
    assert hubspot.completions == {f"cb-block-{i}": 1 for i in range(len(LEADS))}
    assert set(states(engine).values()) == {COMPLETED}
    first = hubspot.completed["cb-block-0"]
    assert first["hs_execution_state"] == "SUCCESS"
    assert float(first["propensity_probability"]) == pytest.approx(
        direct.json()["scores"][0]["probability"], abs=1e-12)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("select output from crm_pending where callback_id = "
                                      "'cb-block-0'")).scalar_one()
    engine.dispose()
    assert json.loads(stored)["propensity_probability"] == pytest.approx(
        float(first["propensity_probability"]), abs=1e-12)
