"""The scorer over real HTTP: scores, reasons, auth, bad input, funnel, accounts, ops."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import sqlalchemy as sa

from propensity.api_keys import create_key
from tests.serving.conftest import Server, answer

LEAD: dict[str, Any] = {
    "lead_id": "api-1", "created_at": "2025-05-01T10:00:00Z", "source": "referral",
    "persona": "champion", "account_id": "ACME", "job_function": "it",
    "account": {"industry": "software", "employees": 300},
    "events": [
        {"occurred_at": "2025-05-20T10:00:00Z", "event_type": "pricing_page_view",
         "channel": "web", "value": 40},
        {"occurred_at": "2025-05-28T10:00:00Z", "event_type": "pricing_page_view",
         "channel": "web"},
        {"occurred_at": "2025-05-29T10:00:00Z", "event_type": "demo_request", "channel": "web"},
        {"occurred_at": "2025-07-29T10:00:00Z", "event_type": "demo_request", "channel": "web"},
    ],
    "stage": "mql", "stage_entered_at": "2025-05-21T00:00:00Z",
    "as_of": "2025-06-01T00:00:00Z",
}


def _rows(server: Server, lead_id: str) -> list[Any]:
    engine = sa.create_engine(server.db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM score_log WHERE lead_id = :l"),
                            {"l": lead_id}).all()
    engine.dispose()
    return list(rows)


def _wait_rows(server: Server, lead_id: str, n: int, timeout: float = 10) -> list[Any]:
    deadline = time.monotonic() + timeout
    rows: list[Any] = []
    while time.monotonic() < deadline:
        rows = _rows(server, lead_id)
        if len(rows) >= n:
            return rows
        time.sleep(0.1)
    return rows


def test_score_returns_calibrated_score_grade_reasons_and_logs_it(server: Server) -> None:
    with server.client(server.score_key) as http:
        r = http.post("/v1/score", json={"leads": [LEAD, {
            "lead_id": "api-2", "created_at": "2025-05-01T10:00:00Z", "source": "never-seen",
            "colour": "green", "as_of": "2025-06-01T00:00:00Z"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "lead-conversion", "version": "1", "horizon_days": 90,
                             "fallback": False, "learner": "blend"}
    assert body["threshold_version"] == 0
    first, second = body["scores"]
    assert 0 < first["probability"] < 1 and first["score"] == round(first["probability"] * 100)
    assert first["grade"] in "ABCD" and isinstance(first["mql"], bool)
    assert first["next_stage"] is not None and 0 <= first["next_stage"] <= 1
    texts = [x["text"] for x in first["reasons"]["positive"] + first["reasons"]["negative"]]
    assert texts and all(isinstance(t, str) and t for t in texts)
    impacts = [x["impact"] for x in first["reasons"]["positive"]]
    assert impacts == sorted(impacts, reverse=True) and all(i > 0 for i in impacts)
    # the event at 07-29 is after as_of and is ignored: the score is the same without it
    future_free = {**LEAD, "events": LEAD["events"][:3]}
    with server.client(server.score_key) as http:
        again = http.post("/v1/score", json={"leads": [future_free]}).json()["scores"][0]
    assert again["probability"] == first["probability"]
    assert second["lead_id"] == "api-2" and 0 <= second["probability"] <= 1  # unknown source
    rows = _wait_rows(server, "api-1", 2)
    assert len(rows) == 2
    assert rows[0].model_name == "lead-conversion" and rows[0].model_version == "1"
    assert rows[0].probability == first["probability"] and rows[0].grade == first["grade"]
    # the input hash is of what the model saw: the event after as_of changes nothing, while
    # another lead (or the same lead as of another day) hashes differently
    assert len(rows[0].input_hash) == 64 and rows[0].input_hash == rows[1].input_hash
    with server.client(server.score_key) as http:
        later = http.post("/v1/score", json={"leads": [{**LEAD, "as_of": "2025-06-02"}]})
    assert later.status_code == 200, later.text
    hashes = {r.input_hash for r in _wait_rows(server, "api-1", 3)}
    other = _wait_rows(server, "api-2", 1)[0].input_hash
    assert len(hashes) == 2 and other not in hashes


def test_auth_missing_wrong_and_scope(server: Server) -> None:
    with server.client() as http:
        assert http.post("/v1/score", json={"leads": [LEAD]}).status_code == 401
        assert http.get("/healthz").status_code == 200
        assert http.get("/metrics").status_code == 200
    with server.client("prop_not-a-key") as http:
        assert http.post("/v1/score", json={"leads": [LEAD]}).status_code == 401
    with server.client(server.score_key) as http:
        r = http.post("/v1/admin/reload")
        assert r.status_code == 403 and "admin" in r.json()["detail"]
    with server.client(server.admin_key) as http:
        assert http.post("/v1/score", json={"leads": [LEAD]}).status_code == 200  # admin > score
        assert http.post("/v1/admin/reload").status_code == 200


def test_bad_input_is_a_4xx_with_the_field(server: Server) -> None:
    cases = [
        ({"leads": [{**LEAD, "created_at": "not a time"}]}, ["body", "leads", 0, "created_at"]),
        ({"leads": [{**LEAD, "stage": "hot"}]}, ["body", "leads", 0, "stage"]),
        ({"leads": [{**LEAD, "events": [{"occurred_at": "2025-01-01", "event_type": ""}]}]},
         ["body", "leads", 0, "events", 0, "event_type"]),
        ({"leads": [{**LEAD, "persona": "ceo"}]}, ["body", "leads", 0, "persona"]),
        ({"leads": []}, ["body", "leads"]),
        ({"lead": [LEAD]}, ["body", "leads"]),
        # a misspelt option, and an attribute that is not a value
        ({"leads": [LEAD], "explian": False}, ["body", "explian"]),
        ({"leads": [{**LEAD, "country": [1, 2]}]}, ["body", "leads", 0, "country", "str"]),
        # the contract's refusals (all of them: test_lead_scoring.py) are 422s at the field
        ({"leads": [{**LEAD, "as_of": "2025-04-01T00:00:00Z"}]},
         ["body", "leads", 0, "as_of"]),
        ({"leads": [LEAD, {**LEAD, "source": "web"}]}, ["body", "leads", 1, "lead_id"]),
        ({"leads": [{**LEAD, "opportunities": [{  # the wire schema's own rule
            "created_at": "2025-05-10T00:00:00Z", "closed_at": "2025-05-01T00:00:00Z",
            "status": "won"}]}]}, ["body", "leads", 0, "opportunities", 0]),
        ({"leads": [{**LEAD, "opportunities": [{
            "created_at": "2025-05-10T00:00:00Z", "status": "lost"}]}]},
         ["body", "leads", 0, "opportunities", 0]),
        ({"leads": [{**LEAD, "stage_history": [  # sql entered before mql
            {"stage": "mql", "entered_at": "2025-05-25T00:00:00Z"},
            {"stage": "sql", "entered_at": "2025-05-22T00:00:00Z"}]}]},
         ["body", "leads", 0, "stage_history", 1, "entered_at"]),
    ]
    with server.client(server.score_key) as http:
        for body, loc in cases:
            r = http.post("/v1/score", json=body)
            assert r.status_code == 422, (body, r.text)
            assert loc in [d["loc"] for d in r.json()["detail"]], r.text
        r = http.post("/v1/score", content=b"{not json", headers={
            "content-type": "application/json"})
        assert r.status_code == 422
        many = http.post("/v1/score", json={"leads": [LEAD] * 1001})
        assert many.status_code == 413 and "1001 leads" in many.json()["detail"]
        flood = {**LEAD, "events": [LEAD["events"][0]] * 100_000}
        r = http.post("/v1/score", json={"leads": [flood]})
        assert r.status_code == 413 and "100000 events" in r.json()["detail"]
        assert http.get("/readyz").status_code == 200  # still standing


def test_funnel_endpoint_serves_the_library_report(server: Server) -> None:
    with server.client(server.score_key) as http:
        r = answer(http, "/v1/funnel", {"by": "source", "mode": "cohort"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["by"] == "source" and body["overall"]["leads"] == 4000
        assert {g["group"] for g in body["groups"]} >= {"referral", "paid_search"}
        t0 = time.perf_counter()
        again = http.get("/v1/funnel", params={"by": "source"})
        assert again.json() == body and time.perf_counter() - t0 < 1.0  # cached
        bad = answer(http, "/v1/funnel", {"by": "colour"})
        assert bad.status_code == 422 and "colour" in bad.text


def test_account_score_with_committee(server: Server) -> None:
    contacts = [
        {**LEAD, "lead_id": "c1", "persona": "executive"},
        {"lead_id": "c2", "created_at": "2025-05-02T00:00:00Z", "persona": "end_user",
         "events": []},
    ]
    body = {"account_id": "ACME", "attributes": {"industry": "software", "employees": 300},
            "contacts": contacts, "as_of": "2025-06-01T00:00:00Z"}
    with server.client(server.score_key) as http:
        r = http.post("/v1/accounts/score", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"]["name"] == "account-propensity" and 0 <= out["probability"] <= 1
    assert out["engaged_personas"] == ["executive"]
    assert set(out["missing_personas"]) == {"end_user", "champion"}
    assert out["reasons"]["positive"] or out["reasons"]["negative"]
    # the account's attributes as fields of the account, as /v1/score takes a lead's account:
    # the same answer as the older shape (attributes under "attributes")
    flat = {**{k: v for k, v in body.items() if k != "attributes"}, **body["attributes"]}
    with server.client(server.score_key) as http:
        same = http.post("/v1/accounts/score", json=flat)
        both = http.post("/v1/accounts/score", json={**body, "employees": 5})
    assert same.status_code == 200, same.text
    assert same.json() == out
    # the flat attributes are read: one given both ways, with two values, is refused by name
    # (whether employees 5 or 300 moves the probability is the trained model's business)
    assert both.status_code == 422
    assert both.json()["detail"][0]["loc"] == ["body", "attributes", "employees"]


def test_healthz_and_readyz_list_the_same_models(server: Server) -> None:
    health = httpx.get(f"{server.url}/healthz").json()
    ready = httpx.get(f"{server.url}/readyz").json()
    assert set(health["models"]) == {"lead-conversion", "stage-advancement",
                                     "account-propensity"}
    assert health["models"] == ready["models"]


def _fast_path_counts(http: httpx.Client) -> dict[str, float]:
    """Who answered POST /v1/score so far, and (as "200") how many 200s /v1/score counted."""
    text = http.get("/metrics").text
    found = re.findall(r'propensity_score_fast_path_total\{answered_by="([^"]+)"\} (\S+)', text)
    ok = re.search(r'propensity_requests_total\{path="/v1/score",status="200"\} (\S+)', text)
    return {**{who: float(n) for who, n in found}, "200": float(ok.group(1)) if ok else 0.0}


def test_the_fast_path_answers_as_the_route_does(server: Server) -> None:
    """Every request of a key goes through `serving.fast_path`, the first too (the key was
    checked from the headers before the body was read, `serving.limits`): the same bytes,
    one score-log row each, and a refusal handed on to the app is answered as before and
    logged nowhere."""
    engine = sa.create_engine(server.db_url)
    key = create_key(engine, "fast-path-test", ["score"])
    engine.dispose()
    body = {"leads": [{**LEAD, "lead_id": "fast-1"}]}
    refused = {"leads": [{**LEAD, "lead_id": "fast-refused", "as_of": "2025-04-01T00:00:00Z"}]}
    with server.client(key) as http:
        before = _fast_path_counts(http)
        first = http.post("/v1/score", json=body)
        assert first.status_code == 200, first.text
        answers = []
        for _ in range(20):  # the key is cached for key_cache_seconds (1 s by default)
            answers.append(http.post("/v1/score", json=body))
            if _fast_path_counts(http).get("fast_path", 0) > before.get("fast_path", 0):
                break
        after = _fast_path_counts(http)
        assert after["fast_path"] > before.get("fast_path", 0), after
        assert after.get("app", 0) == before.get("app", 0)  # the first too: key checked
        assert all(a.status_code == 200 and a.content == first.content for a in answers)
        assert first.headers["content-type"] == answers[-1].headers["content-type"]
        no = http.post("/v1/score", json=refused)
        assert no.status_code == 422 and no.json()["detail"][0]["loc"] == [
            "body", "leads", 0, "as_of"], no.text
        assert _fast_path_counts(http)["app"] > after.get("app", 0)
        text = http.get("/metrics").text
    served = 1 + len(answers)
    assert after["200"] - before["200"] == served  # the fast path's are labelled by the route
    assert len(_wait_rows(server, "fast-1", served)) == served
    time.sleep(1.5)  # three writer passes: a row written twice would show by now
    assert len(_rows(server, "fast-1")) == served and _rows(server, "fast-refused") == []
    assert 'propensity_requests_total{path="/v1/score",status="422"}' in text


def _batches(http: httpx.Client) -> tuple[float, float]:
    """(batches, requests in them) of the fast path so far."""
    text = http.get("/metrics").text
    count = re.search(r"propensity_score_batch_requests_count (\S+)", text)
    total = re.search(r"propensity_score_batch_requests_sum (\S+)", text)
    assert count and total, "the batch histogram is not exported"
    return float(count.group(1)), float(total.group(1))


def test_requests_that_arrive_together_are_answered_as_each_alone(server: Server) -> None:
    """Requests that reach the fast path together are scored in one pass: each still gets
    the bytes it gets alone (reasons or not), a refused one among them gets its 422 and
    touches no other, and every accepted one is logged once."""
    leads = [{**LEAD, "lead_id": f"together-{i}", "events": LEAD["events"][:i % 4],
              "as_of": f"2025-06-{1 + i % 9:02d}T00:00:00Z"} for i in range(12)]
    bodies: list[dict[str, Any]] = [{"leads": [lead], "explain": i % 2 == 0}
                                    for i, lead in enumerate(leads)]
    bodies[5] = {"leads": [{**leads[5], "as_of": "2025-04-01T00:00:00Z"}]}  # before created
    # text read as an infinite number: +inf beside -inf in the linear terms was a NaN
    # probability and a 500 (for every request scored with it, once they were batched)
    bodies[8] = {"leads": [{**leads[8], "account": {"employees": "inf",
                                                    "annual_revenue": "-1e999"}}]}
    with server.client(server.score_key) as http:
        alone = [http.post("/v1/score", json=b) for b in bodies]
        before = _batches(http)
    assert [r.status_code for r in alone] == [422 if i in (5, 8) else 200 for i in range(12)]
    assert alone[8].json()["detail"][0]["loc"] == ["body", "leads", 0, "account", "employees"]
    clients = [server.client(server.score_key) for _ in bodies]
    bursts = 0
    try:
        for c in clients:  # connected before the burst, so the requests arrive together
            assert c.get("/healthz").status_code == 200
        with ThreadPoolExecutor(len(clients)) as pool:
            for _ in range(10):
                clients[0].post("/v1/score", json=bodies[0])  # the key is cached for 1 s
                start = threading.Barrier(len(clients))

                def send(c: httpx.Client, body: dict[str, Any],
                         start: threading.Barrier = start) -> httpx.Response:
                    start.wait()
                    return c.post("/v1/score", json=body)

                together = list(pool.map(send, clients, bodies))
                bursts += 1
                for got, want in zip(together, alone, strict=True):
                    assert got.status_code == want.status_code, got.text
                    assert got.content == want.content
                batches, requests = _batches(clients[0])
                if requests - before[1] > batches - before[0]:
                    break  # at least one batch held several requests
    finally:
        for c in clients:
            c.close()
    assert requests - before[1] > batches - before[0], "no two requests were scored together"
    # each accepted request once: alone, in every burst, and lead 0 also before each burst
    assert len(_wait_rows(server, "together-0", 1 + 2 * bursts)) == 1 + 2 * bursts
    assert len(_wait_rows(server, "together-1", 1 + bursts)) == 1 + bursts
    assert _rows(server, "together-5") == [] and _rows(server, "together-8") == []


def test_readyz_and_metrics(server: Server) -> None:
    with server.client() as http:
        ready = http.get("/readyz").json()
        assert ready["status"] == "ready" and ready["database"] == "ok"
        assert set(ready["models"]) == {"lead-conversion", "stage-advancement",
                                        "account-propensity"}
        text = http.get("/metrics").text
    assert 'propensity_requests_total{path="/v1/score",status="200"}' in text
    assert "propensity_request_seconds_bucket" in text
    assert 'propensity_model_info{model="lead-conversion",version="1"} 1.0' in text
    assert "propensity_scores_total" in text


def test_openapi_documents_the_score_body(server: Server) -> None:
    with server.client() as http:
        spec = http.get("/openapi.json").json()
        assert http.get("/docs").status_code == 200
    body = spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/ScoreRequest"
    schemas = spec["components"]["schemas"]
    assert "leads" in schemas["ScoreRequest"]["properties"]
    assert "events" in schemas["LeadIn"]["properties"] and "EventIn" in schemas
    assert "ScoreResponse" in schemas and "/v1/accounts/score" in spec["paths"]
