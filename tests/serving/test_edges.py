"""The scorer's edges (issue 27, items 3, 4, 7 and 10), against a real uvicorn run as
`propensity serve` runs it.

Hostile connections are played over raw sockets (a client library would not stall on
purpose): an upload without a key is refused before its body is read, a body or headers that
do not arrive in time are answered 408 and closed, a worker past its connection cap answers
503 with Retry-After, a client that leaves mid-upload is not a 5xx. Every edge value the probe
found (times at either end of the calendar, huge numbers, a key given twice, a NUL) is a 422
naming the field, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fresh_postgres
from tests.serving.conftest import Server, start_server
from tests.serving.test_score_api import LEAD

LIMITS = {"PROPENSITY_BODY_TIMEOUT_SECONDS": "1", "PROPENSITY_HEADER_TIMEOUT_SECONDS": "1",
          "PROPENSITY_MAX_CONNECTIONS": "6", "PROPENSITY_KEY_CACHE_SECONDS": "30"}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, registry: Path,
         small_dir: Path) -> Iterator[Server]:
    """A server with tight limits (1 s for headers and for a body, 6 connections); a key's
    check is trusted for 30 s (a loaded machine must not outlast it between two requests)."""
    work = tmp_path_factory.mktemp("edge")
    srv = start_server(registry, f"sqlite:///{work / 'scores.db'}", work, data=small_dir,
                       env=LIMITS)
    yield srv
    srv.stop()


def _connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def _answer(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long it took
    (fails if it is still open after `within` seconds)."""
    start = time.monotonic()
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"still open after {within} s; received {data[:200]!r}")
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


def _upload_head(path: str, length: int, key: str | None, method: str = "POST") -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{auth}\r\n").encode()


def _metric(server: Server, status: str, series: str = "propensity_requests_total{") -> float:
    """The sum of `series` over the labels whose status starts with `status`."""
    with server.client() as http:
        text = http.get("/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(series) and f'status="{status}' in line)


UNMATCHED = 'propensity_requests_total{path="unmatched",'
EDGE = "propensity_edge_answers_total{"


# item 3: nobody without a key can tie the scorer up


@pytest.mark.parametrize(("method", "path", "key"), [
    ("POST", "/v1/score", None), ("POST", "/v1/score", "not-a-key"),
    ("PUT", "/v1/thresholds", None), ("POST", "/v1/outcomes", "not-a-key")])
def test_an_upload_without_a_key_is_refused_before_its_body(
        edge: Server, method: str, path: str, key: str | None) -> None:
    with _connect(edge) as sock:
        sock.sendall(_upload_head(path, 15_000_000, key, method) + b'{"leads": [')
        data, took = _answer(sock, within=0.8)  # before the body timeout (1 s)
    assert data.startswith(b"HTTP/1.1 401"), data[:300]
    assert b"www-authenticate: Bearer" in data.lower().replace(b"bearer", b"Bearer")
    assert took < 0.8


def test_a_keyless_upload_is_answered_on_its_headers_by_the_protocol(edge: Server) -> None:
    """`EdgeProtocol` answers it before uvicorn builds a request (no task, no middleware):
    the 401 comes back and the connection is closed with no byte of the 15 MB body sent, and
    /metrics counts it as the app counts its own 401 to an upload, and as the protocol's."""
    before = _metric(edge, "401", UNMATCHED), _metric(edge, "401", EDGE)
    with _connect(edge) as sock:
        sock.sendall(_upload_head("/v1/score", 15_000_000, None))  # the headers, no body
        data, took = _answer(sock, within=0.8)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n"), data[:300]
    assert {b"www-authenticate: Bearer", b"connection: close", b"server: uvicorn",
            b"content-type: application/json"} <= set(head.split(b"\r\n")[1:]), head
    assert json.loads(body) == {"detail": "missing API key: send 'Authorization: Bearer <key>'"}
    assert took < 0.8
    assert (_metric(edge, "401", UNMATCHED), _metric(edge, "401", EDGE)) == (
        before[0] + 1, before[1] + 1)


def test_a_key_refused_within_the_ttl_is_refused_on_its_headers_as_the_app_refused_it(
        edge: Server) -> None:
    """Only what is certainly refused is answered early: a key never seen goes to the app
    (the database decides); the same key again, refused within the key ring's ttl, is
    answered by the protocol, with the app's bytes (but the date)."""
    key = f"prop_never-issued-{time.monotonic_ns()}"
    answers = []
    for _ in range(2):
        before = _metric(edge, "401", EDGE)
        with _connect(edge) as sock:
            sock.sendall(_upload_head("/v1/outcomes", 100, key) + b'{"outcomes": [')
            answers.append(_answer(sock, within=4)[0])
        answers.append(_metric(edge, "401", EDGE) - before)
    by_app, app_counted, by_protocol, protocol_counted = answers
    assert (app_counted, protocol_counted) == (0, 1)
    undated = [b"\r\n".join(line for line in a.split(b"\r\n")
                             if not line.lower().startswith(b"date: "))
               for a in (by_app, by_protocol)]
    assert undated[0].startswith(b"HTTP/1.1 401"), by_app[:300]
    assert b"unknown, revoked or expired API key" in undated[0]
    assert undated[0] == undated[1]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/thresholds"), ("POST", "/v1/crm/hubspot/action"), ("POST", "/healthz")])
def test_the_protocol_leaves_to_the_app_what_it_does_not_refuse_on_headers(
        edge: Server, method: str, path: str) -> None:
    """A read without a key (the route's 401, labelled with its route), a CRM callback that
    authenticates from its body, a path outside /v1: the app answers them, as before."""
    before = _metric(edge, "", EDGE)
    with _connect(edge) as sock:
        sock.sendall(_upload_head(path, 2, None, method) + b"{}")
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 "), data[:300]
    if method == "GET":
        assert data.startswith(b"HTTP/1.1 401"), data[:300]
    assert _metric(edge, "", EDGE) == before


def test_a_body_must_arrive_in_time(edge: Server) -> None:
    with _connect(edge) as sock:
        sock.sendall(_upload_head("/v1/score", 5000, edge.score_key) + b'{"leads": [')
        data, took = _answer(sock, within=4)
    assert data.startswith(b"HTTP/1.1 408"), data[:300]
    assert b"PROPENSITY_BODY_TIMEOUT_SECONDS" in data
    assert 0.9 < took < 3


@pytest.mark.parametrize("sent", [b"", b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-"])
def test_a_connection_without_whole_headers_is_closed_within_seconds(
        edge: Server, sent: bytes) -> None:
    with _connect(edge) as sock:
        sock.sendall(sent)
        data, took = _answer(sock, within=4)
    assert data.startswith(b"HTTP/1.1 408"), data[:300]
    assert took < 3


def test_headers_have_a_size_cap(edge: Server) -> None:
    with _connect(edge) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 70_000)
        data, _ = _answer(sock, within=4)
    assert data.startswith(b"HTTP/1.1 431"), data[:300]


def test_past_the_connection_cap_a_worker_answers_503_with_retry_after(edge: Server) -> None:
    idle = []
    try:
        for _ in range(6):  # kept open by keep-alive (5 s) after one answered request
            sock = _connect(edge)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            idle.append(sock)
        with _connect(edge) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data, _ = _answer(extra, within=4)
        assert data.startswith(b"HTTP/1.1 503"), data[:300]
        assert b"retry-after: 1" in data.lower()
        assert b"PROPENSITY_MAX_CONNECTIONS" in data
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)  # the worker sees them closed
    with edge.client() as http:  # below the cap again
        assert http.get("/healthz").status_code == 200


# item 7: a client that leaves mid-upload is not a server fault


def test_a_client_gone_mid_upload_is_counted_apart_from_5xx(edge: Server) -> None:
    before = _metric(edge, "499")
    for _ in range(3):
        with _connect(edge) as sock:
            sock.sendall(_upload_head("/v1/score", 5000, edge.score_key) + b'{"leads": [')
            time.sleep(0.1)
    deadline = time.monotonic() + 5
    while _metric(edge, "499") < before + 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _metric(edge, "499") == before + 3
    assert _metric(edge, "5") == 0


# items 4 and 10: every edge value is a 4xx naming the field

LOW, HIGH = "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"
OPPORTUNITY = {"created_at": "2025-05-02T00:00:00Z", "status": "won",
               "closed_at": "9999-12-31T23:00:00-14:00", "amount": 10}


def _lead(**fields: Any) -> dict[str, Any]:
    return {"leads": [{**LEAD, **fields}]}


def _outcome(**fields: Any) -> dict[str, Any]:
    return {"outcomes": [{"lead_id": "edge-1", "stage": "won",
                          "at": "2025-06-01T00:00:00Z", **fields}]}


BODIES = [  # (method, path, JSON text, the field the 422 names)
    ("POST", "/v1/score", _lead(as_of=LOW), ["leads", 0, "as_of"]),
    ("POST", "/v1/score", _lead(created_at=HIGH), ["leads", 0, "created_at"]),
    ("POST", "/v1/score", _lead(opportunities=[OPPORTUNITY]),
     ["leads", 0, "opportunities", 0, "closed_at"]),
    ("POST", "/v1/score", _lead(events=[{"occurred_at": HIGH, "event_type": "x"}]),
     ["leads", 0, "events", 0, "occurred_at"]),
    ("POST", "/v1/accounts/score", {"account_id": "A", "as_of": HIGH, "contacts": [
        {"lead_id": "c", "created_at": "2025-01-01T00:00:00Z"}]}, ["as_of"]),
    ("POST", "/v1/outcomes", _outcome(at=LOW), ["outcomes", 0, "at"]),
    ("POST", "/v1/outcomes", _outcome(at=HIGH), ["outcomes", 0, "at"]),
    ("POST", "/v1/outcomes", _outcome(at=2.49e-139), ["outcomes", 0, "at"]),
    # in range in UTC, but refused as the schema's pattern refuses it (test_schema_rules)
    ("POST", "/v1/outcomes", _outcome(at="1900-01-01T12:00:00+05:00"), ["outcomes", 0, "at"]),
    ("POST", "/v1/outcomes", '{"outcomes": [{"lead_id": "e", "stage": "won", '
     '"at": "2025-06-01T00:00:00Z", "amount": 1e309}]}', ["outcomes", 0, "amount"]),
    ("POST", "/v1/outcomes", _outcome(lead_id="edge\x00nul"), ["outcomes", 0, "lead_id"]),
    ("POST", "/v1/thresholds/recommend", '{"reps": 1' + "0" * 400 + ', '
     '"leads_per_rep_per_week": 5}', ["reps"]),
    ("POST", "/v1/thresholds/recommend", '{"capacity_per_week": 1e309}',
     ["capacity_per_week"]),
    ("PUT", "/v1/thresholds", {"mql": 60, "base_version": 1, "reason": "nul \x00 here"},
     ["reason"]),
    ("POST", "/v1/score", '{"leads": [{"lead_id": "a", "lead_id": "b"}]}',
     ["leads", 0, "lead_id"]),
    ("POST", "/v1/score", '{"explain": true, "explain": false, "leads": []}', ["explain"]),
]


def _send(server: Server, method: str, path: str, body: object) -> Any:
    with server.client(server.admin_key) as http:
        if isinstance(body, str):
            return http.request(method, path, content=body,
                                headers={"content-type": "application/json"})
        return http.request(method, path, json=body)


def _names(answer: Any, field: list[str | int]) -> None:
    assert answer.status_code == 422, answer.text[:500]
    locs = [e["loc"] for e in answer.json()["detail"]]
    assert ["body", *field] in locs, locs


@pytest.mark.parametrize(("method", "path", "body", "field"), BODIES,
                         ids=[f"{p}-{'.'.join(map(str, f))}" for _, p, _, f in BODIES])
def test_an_edge_value_is_a_422_naming_the_field(edge: Server, method: str, path: str,
                                                 body: object, field: list[str | int]) -> None:
    _names(_send(edge, method, path, body), field)


def test_a_duplicate_key_is_named(edge: Server) -> None:
    answer = _send(edge, "POST", "/v1/score", '{"leads": [{"lead_id": "a", "lead_id": "b"}]}')
    assert answer.json()["detail"][0]["type"] == "duplicate_key"
    assert "'lead_id' is given twice" in answer.json()["detail"][0]["msg"]


def test_monitoring_refuses_an_end_past_the_calendar(edge: Server) -> None:
    with edge.client(edge.admin_key) as http:  # the report's scope is monitor (admin has it)
        answer = http.get("/v1/monitoring", params={"end": "9999-12-31T12:00:00Z"})
    assert answer.status_code == 422, answer.text
    assert ["query", "end"] in [e["loc"] for e in answer.json()["detail"]]


def test_if_match_takes_ascii_digits_only(edge: Server) -> None:
    with edge.client(edge.admin_key) as http:
        answer = http.put("/v1/thresholds", json={"mql": 60, "reason": "superscript"},
                          headers={"If-Match": "²".encode("latin-1")})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["header", "if-match"]


def test_allow_names_only_methods_the_path_takes(edge: Server) -> None:
    with edge.client(edge.score_key) as http:
        head = http.head("/v1/thresholds")
        delete = http.delete("/v1/thresholds")
    assert head.status_code == 405
    assert delete.headers["allow"] == head.headers["allow"] == "GET, PUT"


def test_nul_is_refused_on_postgresql_as_on_sqlite(tmp_path: Path, registry: Path) -> None:
    """psycopg refused a NUL with DataError (a 500, or a score-log row quarantined) where
    SQLite stored it: the wire schema refuses it on both."""
    with fresh_postgres() as url:
        srv = start_server(registry, url, tmp_path)
        try:
            for method, path, body, field in BODIES:
                if "\x00" in str(body):
                    _names(_send(srv, method, path, body), field)
            _names(_send(srv, "POST", "/v1/score", _lead(lead_id="nul\x00lead")),
                   ["leads", 0, "lead_id"])
        finally:
            srv.stop()
