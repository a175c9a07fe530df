"""CRMs calling a real uvicorn scorer: HubSpot's signed workflow action and Salesforce's SOAP
outbound messages. Signatures are computed here from HubSpot's documented recipes with
hashlib/hmac, not with the server's code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import sqlalchemy as sa

from propensity.database import engine_for
from tests.serving.conftest import Server, start_server

SECRET = "a1b2c3d4-0000-4000-8000-client-secret"
ORG = "00D5e000000KQ2eEAG"
ACTION = "/v1/crm/hubspot/action"
OUTBOUND = "/v1/crm/salesforce/outbound"


@pytest.fixture(scope="module")
def crm_server(tmp_path_factory: pytest.TempPathFactory, registry: Path,
               small_dir: Path) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("crm")
    srv = start_server(registry, f"sqlite:///{work / 'scores.db'}", work, data=small_dir,
                       env={"PROPENSITY_HUBSPOT_CLIENT_SECRET": SECRET,
                            "PROPENSITY_SALESFORCE_ORG_IDS": json.dumps([ORG[:15]]),
                            "PROPENSITY_LOG_FLUSH_SECONDS": "0.1"})
    yield srv
    srv.stop()


def action_body(callback: str, lead: str = "L0000001", **inputs: Any) -> bytes:
    fields = {"createdate": "1704099939000", "hs_analytics_source": "direct",
              "country": "BR", "job_function": "marketing", "email_domain": "business",
              "associatedcompanyid": "A000022", "hubspot_owner_id": "rep_04",
              "persona": "end_user", "product": "core", "campaign": "direct_1",
              "firstname": "Ana", **inputs}
    return json.dumps({"callbackId": callback, "origin": {"portalId": 62515},
                       "context": {"source": "WORKFLOWS", "workflowId": 7},
                       "object": {"objectId": lead, "objectType": "CONTACT"},
                       "inputFields": {k: v for k, v in fields.items() if v is not None}}
                      ).encode()


def signed_v2(url: str, body: bytes, secret: str = SECRET) -> dict[str, str]:
    source = secret.encode() + b"POST" + url.encode() + body
    return {"X-HubSpot-Signature": hashlib.sha256(source).hexdigest(),
            "X-HubSpot-Signature-Version": "v2", "Content-Type": "application/json"}


def signed_v3(url: str, body: bytes, at_ms: int | None = None) -> dict[str, str]:
    stamp = str(at_ms if at_ms is not None else int(time.time() * 1000))
    mac = hmac.new(SECRET.encode(), b"POST" + url.encode() + body + stamp.encode(),
                   hashlib.sha256).digest()
    return {"X-HubSpot-Signature-v3": base64.b64encode(mac).decode(),
            "X-HubSpot-Request-Timestamp": stamp, "Content-Type": "application/json"}


def test_hubspot_signatures_and_the_answer(crm_server: Server) -> None:
    url = crm_server.url + ACTION
    with httpx.Client(timeout=30) as http:
        body = action_body("cb-v2")
        r = http.post(url, content=body, headers=signed_v2(url, body))
        assert r.status_code == 200, r.text
        out = r.json()["outputFields"]
        assert out["hs_execution_state"] == "SUCCESS"
        assert 0 < out["propensity_probability"] < 1
        assert out["propensity_grade"] in "ABCD" and isinstance(out["propensity_mql"], bool)
        assert out["propensity_top_reason"] and out["propensity_model_version"]
        # the same lead through /v1/score: the same scoring pipeline, the same probability
        # (to 1e-9, the parity tests' bound: the action is scored in its batcher's pass, and a
        # batch of several leads sums in another order than one lead alone, ~1e-12)
        lead = {"lead_id": "L0000001", "created_at": "2024-01-01T09:05:39Z",
                "source": "direct", "country": "BR", "job_function": "marketing",
                "email_domain": "business", "account_id": "A000022", "owner_id": "rep_04",
                "persona": "end_user", "product": "core", "campaign": "direct_1"}
        direct = crm_server.client(crm_server.score_key).post("/v1/score",
                                                              json={"leads": [lead]})
        assert direct.status_code == 200, direct.text
        assert direct.json()["scores"][0]["probability"] == pytest.approx(
            out["propensity_probability"], abs=1e-9)

        body = action_body("cb-v3")
        r = http.post(url, content=body, headers=signed_v3(url, body))
        assert r.status_code == 200 and r.json()["outputFields"]["hs_execution_state"] == \
            "SUCCESS", r.text

        wrong = signed_v2(url, body, secret="another-secret")
        assert http.post(url, content=body, headers=wrong).status_code == 401
        tampered = signed_v3(url, body)
        assert http.post(url, content=body.replace(b"BR", b"US"),
                         headers=tampered).status_code == 401
        stale = signed_v3(url, body, at_ms=int(time.time() * 1000) - 6 * 60 * 1000)
        r = http.post(url, content=body, headers=stale)
        assert r.status_code == 401 and "older than 5 minutes" in r.text
        assert http.post(url, content=body, headers={"Content-Type": "application/json"}
                         ).status_code == 401


def test_hubspot_action_gives_the_outlook_when_asked(crm_server: Server) -> None:
    """`propensity_outlook: true` among the input fields adds the outlook's output fields,
    /v1/score's own (to 1e-9, as the probability); without it the answer has none."""
    url = crm_server.url + ACTION
    outlook = ("propensity_p_by_90", "propensity_expected_days",
               "propensity_expected_amount", "propensity_expected_revenue")
    with httpx.Client(timeout=30) as http:
        plain = action_body("cb-outlook-0")
        r0 = http.post(url, content=plain, headers=signed_v2(url, plain))
        body = action_body("cb-outlook-1", propensity_outlook="true")
        r = http.post(url, content=body, headers=signed_v2(url, body))
    assert r.status_code == r0.status_code == 200, r.text
    assert not set(outlook) & set(r0.json()["outputFields"])
    out = r.json()["outputFields"]
    lead = {"lead_id": "L0000001", "created_at": "2024-01-01T09:05:39Z", "source": "direct",
            "country": "BR", "job_function": "marketing", "email_domain": "business",
            "account_id": "A000022", "owner_id": "rep_04", "persona": "end_user",
            "product": "core", "campaign": "direct_1"}
    direct = crm_server.client(crm_server.score_key).post(
        "/v1/score", json={"leads": [lead], "outlook": True}).json()["scores"][0]
    want = {"propensity_p_by_90": direct["horizons"]["90"],
            "propensity_expected_days": direct["expected_days"],
            "propensity_expected_amount": direct["expected_amount"],
            "propensity_expected_revenue": direct["expected_revenue"]}
    assert want["propensity_p_by_90"] is not None
    assert {k: out.get(k) for k in outlook} == pytest.approx(
        {k: v for k, v in want.items()}, abs=1e-9)


def test_hubspot_replay_and_bad_lead(crm_server: Server) -> None:
    url = crm_server.url + ACTION
    with httpx.Client(timeout=30) as http:
        first = action_body("cb-replay")
        a = http.post(url, content=first, headers=signed_v2(url, first))
        assert a.status_code == 200, a.text
        # HubSpot retries with the same callbackId: the first answer, whatever else changed
        # (here a body that, new, would fail)
        again = action_body("cb-replay", createdate="next tuesday")
        b = http.post(url, content=again, headers=signed_v3(url, again))
        assert b.status_code == 200 and b.json() == a.json()
        assert a.json()["outputFields"]["hs_execution_state"] == "SUCCESS"

        bad = action_body("cb-bad", createdate="next tuesday")
        r = http.post(url, content=bad, headers=signed_v2(url, bad))
        assert r.status_code == 200, r.text
        out = r.json()["outputFields"]
        assert out["hs_execution_state"] == "FAIL_CONTINUE"
        assert "Create Date" in out["propensity_error"] and "next tuesday" in \
            out["propensity_error"]
        missing = action_body("cb-missing", createdate=None)
        r = http.post(url, content=missing, headers=signed_v2(url, missing))
        assert r.json()["outputFields"]["hs_execution_state"] == "FAIL_CONTINUE"
        assert "createdate" in r.json()["outputFields"]["propensity_error"]
    engine = engine_for(crm_server.db_url)
    with engine.connect() as conn:
        n = conn.execute(sa.text("select count(*) from crm_actions where callback_id like "
                                 "'cb-replay'")).scalar()
    engine.dispose()
    assert n == 1


def envelope(notes: list[tuple[str, str, dict[str, str]]], org: str = ORG) -> bytes:
    parts = []
    for nid, kind, fields in notes:
        body = "".join(f"<sf:{k}>{v}</sf:{k}>" for k, v in fields.items())
        parts.append(f'<Notification><Id>{nid}</Id><sObject xsi:type="sf:{kind}" '
                     f'xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{body}</sObject>'
                     "</Notification>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{org}</OrganizationId><ActionId>04k5e000000CaRkAAK</ActionId>"
        '<SessionId xsi:nil="true"/><EnterpriseUrl>https://x.my.salesforce.com/services/Soap/c'
        "/60.0</EnterpriseUrl><PartnerUrl>https://x.my.salesforce.com/services/Soap/u/60.0"
        f"</PartnerUrl>{''.join(parts)}</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


def counts(db_url: str) -> dict[str, int]:
    engine = engine_for(db_url)
    with engine.connect() as conn:
        out = {t: int(conn.execute(sa.text(f"select count(*) from {t}")).scalar() or 0)
               for t in ("crm_notifications", "outcomes", "score_log")}
    engine.dispose()
    return out


def hundred() -> list[tuple[str, str, dict[str, str]]]:
    notes = []
    for i in range(60):
        notes.append((f"04l{i:015d}", "Lead", {
            "Id": f"00Q{i:015d}", "CreatedDate": f"2024-02-{1 + i % 28:02d}T10:00:00.000Z",
            "LastModifiedDate": "2024-03-01T12:00:00.000Z", "LeadSource": "direct",
            "Status": "Working - Contacted" if i % 2 else "Open - Not Contacted",
            "Country": "BR", "FirstName": "Ana", "Job_Function__c": "marketing"}))
    for i in range(40):
        stage = ("Closed Won", "Closed Lost", "Prospecting")[i % 3]
        notes.append((f"04m{i:015d}", "Opportunity", {
            "Id": f"006{i:015d}", "StageName": stage, "Amount": "1200.50",
            "CloseDate": "2024-03-10", "LastModifiedDate": "2024-03-09T16:30:00.000Z",
            "Lead__c": f"00Q{i:015d}"}))
    return notes


def settled(db_url: str, timeout: float = 20.0) -> dict[str, int]:
    """The counts once the score log has written what it holds (two reads 0.5 s apart agree):
    a row acknowledged by an earlier test may still be on its way to the database."""
    last = counts(db_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = counts(db_url)
        if now == last:
            return now
        last = now
    return last


def test_salesforce_hundred_notifications_once(crm_server: Server) -> None:
    body = envelope(hundred())
    before = settled(crm_server.db_url)
    with httpx.Client(timeout=60) as http:
        r = http.post(crm_server.url + OUTBOUND, content=body,
                      headers={"Content-Type": "text/xml; charset=utf-8",
                               "SOAPAction": '""'})
        assert r.status_code == 200, r.text
        assert b"<Ack>true</Ack>" in r.content and b"notificationsResponse" in r.content
        after = settled(crm_server.db_url)  # the score log writes within its flush interval
        assert after["crm_notifications"] - before["crm_notifications"] == 100
        # 60 leads whose status maps to a stage (lead, mql), 14 won + 13 lost opportunities
        # (13 open)
        assert after["outcomes"] - before["outcomes"] == 60 + 14 + 13
        assert after["score_log"] - before["score_log"] == 60
        again = http.post(crm_server.url + OUTBOUND, content=body,
                          headers={"Content-Type": "text/xml"})
        assert again.status_code == 200 and b"<Ack>true</Ack>" in again.content
        assert settled(crm_server.db_url) == after
        stranger = http.post(crm_server.url + OUTBOUND, content=envelope(
            hundred()[:1], org="00D000000000XYZ"), headers={"Content-Type": "text/xml"})
        assert stranger.status_code == 403
    engine = engine_for(crm_server.db_url)
    with engine.connect() as conn:
        results = dict(conn.execute(sa.text(
            "select record_id, result from crm_notifications")).all())
    engine.dispose()
    assert results["00Q000000000000001"].startswith("scored; entered mql: score ")
    assert results["006000000000000002"] == "open: nothing to record"


BOMB = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + b"".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
                   .encode() for i in range(1, 10))
        + b"]><notifications>&lol9;</notifications>")
XXE = (b'<?xml version="1.0"?><!DOCTYPE n [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b"<notifications>&x;</notifications>")


def test_xml_bomb_and_external_entity_refused_cheaply(crm_server: Server) -> None:
    worker = psutil.Process(crm_server.process.pid)
    with httpx.Client(timeout=30) as http:
        http.post(crm_server.url + OUTBOUND, content=b"<warm/>",
                  headers={"Content-Type": "text/xml"})
        rss = worker.memory_info().rss
        for body in (BOMB, XXE):
            r = http.post(crm_server.url + OUTBOUND, content=body,
                          headers={"Content-Type": "text/xml"})
            assert r.status_code == 400, r.text
            assert "Forbidden" in r.json()["detail"]
            assert b"root:" not in r.content
        big = http.post(crm_server.url + OUTBOUND, content=b"<a>" + b"x" * 2_000_000 + b"</a>",
                        headers={"Content-Type": "text/xml"})
        assert big.status_code == 400 and "at most" in big.json()["detail"]
    assert worker.memory_info().rss - rss < 10 * 1024 * 1024
