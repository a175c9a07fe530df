"""A local stand-in for the few HubSpot CRM API endpoints the import reads, serving a rendered
company (the CSVs `render_hubspot` writes) the way the API shapes them.

Implemented as HubSpot documents them: `GET /crm/v3/properties/{objectType}` (name, label,
type, fieldType, groupName, description, options), `GET /crm/v3/objects/{objectType}` with
`limit` (at most 100), `after` (the cursor in `paging.next.after`), `properties` and
`associations` (repeated or comma-separated), records as `{id, properties, createdAt,
updatedAt, archived, associations: {type: {results: [{id, type}]}}}`, internal property names
and option values ("ORGANIC_SEARCH", "closedwon"), ISO 8601 UTC times; a missing or wrong
bearer token is a 401; every `rate_limit_every`-th request is a 429 with `Retry-After`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd

INTERNAL = {
    "Record ID": "hs_object_id", "Create Date": "createdate", "Lifecycle Stage": "lifecyclestage",
    "Lead Status": "hs_lead_status", "Original Source": "hs_analytics_source",
    "Contact owner": "hubspot_owner_id", "Deal owner": "hubspot_owner_id",
    "Became a Marketing Qualified Lead Date": "hs_lifecyclestage_marketingqualifiedlead_date",
    "Became a Sales Qualified Lead Date": "hs_lifecyclestage_salesqualifiedlead_date",
    "Became an Opportunity Date": "hs_lifecyclestage_opportunity_date",
    "Became a Customer Date": "hs_lifecyclestage_customer_date",
    "Number of Pageviews": "hs_analytics_num_page_views",
    "Last Activity Date": "notes_last_updated", "Deal Stage": "dealstage",
    "Close Date": "closedate", "Amount": "amount", "Deal Name": "dealname",
    "Activity date": "hs_timestamp", "Activity type": "hs_activity_type",
}
ENUMERATIONS = {"hs_analytics_source": str.upper,
                "dealstage": lambda v: v.lower().replace(" ", "")}
ASSOCIATION_COLUMNS = {"Associated Company ID": "companies",
                       "Associated Contact IDs": "contacts",
                       "Associated Company IDs": "companies"}
FILES = {"contacts": "contacts.csv", "companies": "companies.csv", "deals": "deals.csv",
         "notes": "activities.csv"}
NAIVE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def _internal(label: str) -> str:
    return INTERNAL.get(label, re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_"))


class Portal:
    """The records of each object type, as the API holds them."""

    def __init__(self, folder: Path) -> None:
        self.properties: dict[str, list[dict[str, Any]]] = {}
        self.records: dict[str, list[dict[str, Any]]] = {}
        for kind in ("contacts", "companies", "deals", "calls", "emails", "meetings", "notes",
                     "tasks"):
            path = folder / FILES.get(kind, "")
            frame = (pd.read_csv(path, dtype=str, keep_default_na=False)
                     if kind in FILES else pd.DataFrame())
            id_col = "Activity ID" if kind == "notes" else "Record ID"
            labels = [c for c in frame.columns if c not in ASSOCIATION_COLUMNS and c != id_col]
            self.properties[kind] = [self._property(frame, c) for c in labels]
            self.records[kind] = [self._record(row, id_col, labels)
                                  for row in frame.to_dict("records")]

    @staticmethod
    def _property(frame: pd.DataFrame, label: str) -> dict[str, Any]:
        name = _internal(label)
        encode = ENUMERATIONS.get(name)
        options = [] if encode is None else [
            {"label": v, "value": encode(v), "hidden": False, "displayOrder": i}
            for i, v in enumerate(sorted(set(frame[label]) - {""}))]
        return {"name": name, "label": label, "type": "enumeration" if options else "string",
                "fieldType": "select" if options else "text", "groupName": "info",
                "description": "", "options": options}

    @staticmethod
    def _record(row: dict[str, str], id_col: str, labels: list[str]) -> dict[str, Any]:
        props = {}
        for label in labels:
            value = row[label]
            name = _internal(label)
            if NAIVE_TIME.match(value):
                value = value.replace(" ", "T") + ".000Z"
            elif name in ENUMERATIONS and value:
                value = ENUMERATIONS[name](value)
            props[name] = value or None
        links = {kind: [i for i in row[col].split(";") if i]
                 for col, kind in ASSOCIATION_COLUMNS.items() if row.get(col)}
        return {"id": row[id_col], "properties": props, "links": links}


class StandIn:
    """The server, on 127.0.0.1 at a free port, in a thread; `requests` logs what it saw."""

    def __init__(self, folder: Path, token: str, rate_limit_every: int = 0,
                 retry_after: int = 1, max_limited: int = 2) -> None:
        self.portal, self.token = Portal(folder), token
        self.rate_limit_every, self.retry_after = rate_limit_every, retry_after
        self.max_limited = max_limited
        self.requests: list[tuple[float, str, int]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def limited(self) -> list[tuple[float, str, int]]:
        return [r for r in self.requests if r[2] == 429]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any],
                      headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                with outer.lock:
                    outer.requests.append((time.monotonic(), self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    self._send(401, {"status": "error", "message": "Authentication "
                                     "credentials not found.", "category":
                                     "INVALID_AUTHENTICATION"})
                    return
                with outer.lock:
                    n = len(outer.requests) + 1
                    limit = (outer.rate_limit_every and n % outer.rate_limit_every == 0
                             and len(outer.limited()) < outer.max_limited)
                if limit:
                    self._send(429, {"status": "error", "message": "You have reached your "
                                     "secondly limit.", "errorType": "RATE_LIMIT",
                                     "policyName": "SECONDLY"},
                               {"Retry-After": str(outer.retry_after)})
                    return
                url = urlparse(self.path)
                query = parse_qs(url.query)
                parts = url.path.strip("/").split("/")
                if parts[:3] == ["crm", "v3", "properties"] and len(parts) == 4:
                    self._send(200, {"results": outer.portal.properties.get(parts[3], [])})
                elif parts[:3] == ["crm", "v3", "objects"] and len(parts) == 4:
                    self._page(parts[3], query)
                else:
                    self._send(404, {"status": "error", "message": f"no route {url.path}"})

            def _page(self, kind: str, query: dict[str, list[str]]) -> None:
                def listed(key: str) -> list[str]:
                    return [v for item in query.get(key, []) for v in item.split(",") if v]

                records = outer.portal.records.get(kind, [])
                start = int(query.get("after", ["0"])[0])
                limit = min(int(query.get("limit", ["10"])[0]), 100)
                wanted, linked = set(listed("properties")), listed("associations")
                out = []
                for r in records[start:start + limit]:
                    item: dict[str, Any] = {
                        "id": r["id"], "archived": False,
                        "createdAt": "2020-01-01T00:00:00.000Z",
                        "updatedAt": "2026-01-01T00:00:00.000Z",
                        "properties": {k: v for k, v in r["properties"].items() if k in wanted}}
                    assoc = {k: {"results": [{"id": i, "type": f"{kind}_to_{k}"}
                                             for i in r["links"][k]]}
                             for k in linked if r["links"].get(k)}
                    if assoc:
                        item["associations"] = assoc
                    out.append(item)
                body: dict[str, Any] = {"results": out}
                if start + limit < len(records):
                    body["paging"] = {"next": {"after": str(start + limit),
                                               "link": f"{outer.url}{self.path}"}}
                self._send(200, body)

        return Handler
