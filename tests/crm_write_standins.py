"""Local stand-ins for the two CRM write endpoints `propensity push` uses, as documented:

- HubSpot `POST /crm/v3/objects/{objectType}/batch/update`: bearer token (401
  INVALID_AUTHENTICATION without it), body `{"inputs": [{"id", "properties"}]}`, at most 100
  inputs (400 VALIDATION_ERROR beyond, or for a property the portal does not have: the whole
  batch is refused); 200 `{status: COMPLETE, results: [{id, properties, createdAt, updatedAt,
  archived}], startedAt, completedAt}`, or 207 with `errors: [{status: error, category:
  OBJECT_NOT_FOUND, message, context: {ids: [...]}}]` and `numErrors` when some ids are
  refused.
- Salesforce `PATCH /services/data/vXX.X/composite/sobjects` over HTTPS: `Authorization:
  Bearer <session id>` (401 `[{errorCode: INVALID_SESSION_ID}]`), body `{allOrNone: false,
  records: [{attributes: {type}, id, Field: value}]}`, at most 200 records (400
  EXCEEDED_ID_LIMIT), an unknown field a 400 INVALID_FIELD; 200 with one result per record in
  order: `{id, success: true, errors: []}` or `{success: false, errors: [{statusCode,
  message, fields}]}`.

- HubSpot `POST /automation/v4/actions/callbacks/{callbackId}/complete` (`{outputFields}`)
  and `POST /automation/v4/actions/callbacks/complete` (`{inputs: [{callbackId,
  outputFields}]}`, at most 100): 204 without a body; a callback not waiting a 400.

Both: a share of requests (`rate_429`, drawn from a seeded generator) answered 429 with
`Retry-After`, plus HubSpot's own limit (`per_10s` requests in a rolling 10 s); a share
answered 502/503 (`rate_5xx`); `refuse` ids that fail per record; `down_after` accepted
batches after which every request is a 503 (a CRM that stops answering). They remember every
record's values and how many times each was written, which is what the tests check.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import ssl
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from propensity.push.plan import DEFAULT_FIELDS
from propensity.push.records import Crm, Outgoing

HUBSPOT_FIELDS = {"propensity_probability", "propensity_score", "propensity_grade",
                  "propensity_reasons", "propensity_model_version"}
SALESFORCE_FIELDS = {"Propensity_Probability__c", "Propensity_Score__c", "Propensity_Grade__c",
                     "Propensity_Reasons__c", "Propensity_Model_Version__c"}
TOKEN = "stand-in-token"
CALLBACKS = "/automation/v4/actions/callbacks/"
Answer = tuple[int, dict[str, str], Any]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StandIn:
    """The state and faults both stand-ins share; `answer` is each CRM's endpoint."""

    path_prefix = ""

    def __init__(self, ids: list[str], fields: set[str], *, rate_429: float = 0.0,
                 retry_after: str = "1", rate_5xx: float = 0.0, refuse: set[str] = frozenset(),
                 down_after: int | None = None, per_10s: int | None = None, seed: int = 0,
                 latency: float = 0.0) -> None:
        self.values: dict[str, dict[str, str]] = {i: {} for i in ids}
        self.fields = fields
        self.writes: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.log: list[tuple[float, int]] = []  # (time, status) of every request
        self.rate_429, self.retry_after, self.rate_5xx = rate_429, retry_after, rate_5xx
        self.refuse, self.down_after, self.per_10s = set(refuse), down_after, per_10s
        self.accepted = 0
        self.latency = latency
        self._recent: deque[float] = deque()
        self._random = random.Random(seed)
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # --- faults first, in the order a CRM's edge meets them
    def fault(self) -> Answer | None:
        now = time.monotonic()
        if self.down_after is not None and self.accepted >= self.down_after:
            return 503, {}, {"message": "Service Unavailable"}
        if self.per_10s is not None:
            while self._recent and now - self._recent[0] > 10:
                self._recent.popleft()
            if len(self._recent) >= self.per_10s:
                return self.too_many()
            self._recent.append(now)
        draw = self._random.random()
        if draw < self.rate_429:
            return self.too_many()
        if draw < self.rate_429 + self.rate_5xx:
            return self._random.choice((502, 503)), {}, {"message": "Bad Gateway"}
        return None

    def too_many(self) -> Answer:
        return 429, {"Retry-After": self.retry_after}, self.limit_body()

    def limit_body(self) -> Any:
        return {"message": "rate limited"}

    def answer(self, method: str, path: str, headers: Any, body: Any) -> Answer:
        raise NotImplementedError

    def handle(self, method: str, path: str, headers: Any, raw: bytes) -> Answer:
        time.sleep(self.latency)
        with self.lock:
            found = self.fault()
            if found is None:
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    found = 400, {}, {"message": "body is not JSON"}
                else:
                    found = self.answer(method, path, headers, body)
                    if found[0] < 300:
                        self.accepted += 1
            self.statuses[found[0]] += 1
            self.log.append((time.monotonic(), found[0]))
            return found

    def write(self, record_id: str, values: dict[str, str]) -> None:
        self.values[record_id].update(values)
        self.writes[record_id] += 1

    # --- serving
    def start(self, tls: tuple[Path, Path] | None = None) -> str:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, body = standin.handle(self.command, self.path, self.headers,
                                                       raw)
                data = b"" if status == 204 else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_PATCH = do_GET = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class HubSpotStandIn(StandIn):
    def __init__(self, ids: list[str], **faults: Any) -> None:
        super().__init__(ids, HUBSPOT_FIELDS, **faults)
        self.blocked: set[str] = set()
        """callbackIds HubSpot is waiting on (the test adds those it was answered BLOCK)."""
        self.completions: Counter[str] = Counter()
        self.completed: dict[str, dict[str, str]] = {}

    def limit_body(self) -> Any:
        return {"status": "error", "message": "You have reached your ten_secondly_rolling "
                "limit.", "errorType": "RATE_LIMIT", "correlationId": "stand-in",
                "policyName": "TEN_SECONDLY_ROLLING"}

    @staticmethod
    def error(status: int, category: str, message: str) -> Answer:
        return status, {}, {"status": "error", "message": message, "category": category,
                            "correlationId": "stand-in"}

    def answer(self, method: str, path: str, headers: Any, body: Any) -> Answer:
        if method == "POST" and path.startswith(CALLBACKS):
            return self.callbacks(path.removeprefix(CALLBACKS), headers, body)
        if method != "POST" or path != "/crm/v3/objects/contacts/batch/update":
            return self.error(404, "OBJECT_NOT_FOUND", f"no {method} {path}")
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.error(401, "INVALID_AUTHENTICATION", "Authentication credentials not "
                              "found.")
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= 100:
            return self.error(400, "VALIDATION_ERROR", "inputs: between 1 and 100 records")
        unknown = sorted({k for i in inputs for k in i.get("properties", {})} - self.fields)
        if unknown:
            return self.error(400, "VALIDATION_ERROR", f"Property values were not valid: "
                              f"Property \"{unknown[0]}\" does not exist")
        started, results, missing = _now(), [], []
        for i in inputs:
            rid = str(i["id"])
            if rid not in self.values or rid in self.refuse:
                missing.append(rid)
                continue
            self.write(rid, {k: str(v) for k, v in i["properties"].items()})
            results.append({"id": rid, "properties": dict(self.values[rid]),
                            "createdAt": started, "updatedAt": started, "archived": False})
        out: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                               "completedAt": _now()}
        if not missing:
            return 200, {}, out
        out["numErrors"] = 1
        out["errors"] = [{"status": "error", "category": "OBJECT_NOT_FOUND",
                          "message": "Could not get some CONTACT objects, they may be deleted "
                                     "or not exist. Check that ids are valid.",
                          "context": {"ids": missing}}]
        return 207, {}, out


    def callbacks(self, rest: str, headers: Any, body: Any) -> Answer:
        """`POST .../callbacks/{callbackId}/complete` with `{outputFields}`, or
        `POST .../callbacks/complete` with `{inputs: [{callbackId, outputFields}]}` (at most
        100): 204 without a body. A callback HubSpot is not waiting on (unknown, or completed
        already) is a 400 naming it; in a batch it refuses the whole batch (this stand-in's
        reading: nothing in it is completed)."""
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.error(401, "INVALID_AUTHENTICATION", "Authentication credentials not "
                              "found.")
        if rest == "complete":
            inputs = body.get("inputs") if isinstance(body, dict) else None
            if not isinstance(inputs, list) or not 1 <= len(inputs) <= 100:
                return self.error(400, "VALIDATION_ERROR", "inputs: between 1 and 100")
        elif rest.endswith("/complete") and isinstance(body, dict):
            inputs = [{**body, "callbackId": rest.removesuffix("/complete")}]
        else:
            return self.error(404, "OBJECT_NOT_FOUND", f"no POST {CALLBACKS}{rest}")
        if any(not isinstance(i.get("outputFields"), dict) for i in inputs):
            return self.error(400, "VALIDATION_ERROR", "outputFields: an object is required")
        waiting = [str(i.get("callbackId")) in self.blocked for i in inputs]
        if not all(waiting):
            bad = [str(i.get("callbackId")) for i, w in zip(inputs, waiting, strict=True)
                   if not w]
            return self.error(400, "VALIDATION_ERROR", f"callbacks not waiting: {bad}")
        for i in inputs:
            self.blocked.discard(str(i["callbackId"]))
            self.completions[str(i["callbackId"])] += 1
            self.completed[str(i["callbackId"])] = dict(i["outputFields"])
        return 204, {}, None


class SalesforceStandIn(StandIn):
    def __init__(self, ids: list[str], **faults: Any) -> None:
        super().__init__(ids, SALESFORCE_FIELDS, **faults)

    def limit_body(self) -> Any:
        return [{"message": "Too many requests", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]

    def answer(self, method: str, path: str, headers: Any, body: Any) -> Answer:
        if method != "PATCH" or not path.startswith("/services/data/v") or \
                not path.endswith("/composite/sobjects"):
            return 404, {}, [{"message": f"no {method} {path}", "errorCode": "NOT_FOUND"}]
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, {}, [{"message": "Session expired or invalid",
                              "errorCode": "INVALID_SESSION_ID"}]
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or len(records) > 200:
            return 400, {}, [{"message": "records: at most 200", "errorCode":
                              "EXCEEDED_ID_LIMIT"}]
        if body.get("allOrNone") is not False:
            return 400, {}, [{"message": "this stand-in expects allOrNone false",
                              "errorCode": "INVALID_INPUT"}]
        unknown = sorted({k for r in records for k in r} - self.fields - {"attributes", "id"})
        if unknown:
            return 400, {}, [{"message": f"No such column '{unknown[0]}' on sobject of type "
                              "Lead", "errorCode": "INVALID_FIELD"}]
        out = []
        for r in records:
            rid = str(r.get("id"))
            if rid not in self.values or rid in self.refuse:
                out.append({"success": False, "errors": [{
                    "statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted",
                    "fields": []}]})
                continue
            self.write(rid, {k: str(v) for k, v in r.items() if k not in ("attributes", "id")})
            out.append({"id": rid, "success": True, "errors": []})
        return 200, {}, out


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (simple-salesforce speaks HTTPS only): cert and key files;
    a client trusts it through REQUESTS_CA_BUNDLE."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "standin.crt", folder / "standin.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def plan_of(crm: Crm, n: int, version: str = "v1") -> list[Outgoing]:
    """n records with score-like values (the scoring is `test_push_cli`'s; here the writing)."""
    f = DEFAULT_FIELDS[crm]
    return sorted((Outgoing(f"{crm[:2]}{i:06d}", {
        f.probability: f"{(i % 97) / 97:.4f}", f.score: str(i % 101), f.grade: "ABCD"[i % 4],
        f.reasons: f"{i % 7} pricing page views in the last 7 days",
        f.model_version: f"lead-conversion {version}"}) for i in range(n)),
        key=lambda o: o.record_id)
