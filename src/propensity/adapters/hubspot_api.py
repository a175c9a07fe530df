"""HubSpot over its CRM API -> the same CSVs its exports give, then the CSV import.

Through the official client (`hubspot-api-client`): `GET /crm/v3/properties/{type}` for each
property's label and option labels, then `GET /crm/v3/objects/{type}` page by page (100 a
page, `paging.next.after`) with every property and the associations. Values come back as
internal names ("ORGANIC_SEARCH", "closedwon"), so each is turned into its option label, and
each property into its label, which makes the frames what HubSpot's CSV export would have
written; `import_hubspot` does the rest, so the API and the CSVs cannot map differently.
A 429 (or a 5xx) is retried after the `Retry-After` the server sends. The token comes from
`HUBSPOT_ACCESS_TOKEN`; the base URL is settable (tests, EU data centres).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from propensity.adapters._result import ImportResult
from propensity.adapters.hubspot import import_hubspot
from propensity.problems import PropensityError

TOKEN_VARIABLE = "HUBSPOT_ACCESS_TOKEN"
DEFAULT_BASE_URL = "https://api.hubapi.com"
ENGAGEMENTS = ("calls", "emails", "meetings", "notes", "tasks")
PAGE = 100
ASSOCIATIONS = {"contacts": ["companies"], "companies": [], "deals": ["contacts", "companies"],
                **{e: ["contacts"] for e in ENGAGEMENTS}}
ASSOCIATION_COLUMNS = {("contacts", "companies"): "Associated Company ID",
                       ("deals", "contacts"): "Associated Contact IDs",
                       ("deals", "companies"): "Associated Company IDs",
                       **{(e, "contacts"): "Associated Contact IDs" for e in ENGAGEMENTS}}
ACTIVITY_COLUMNS = {"hs_timestamp": "Activity date", "hs_activity_type": "Activity type"}
RAW_FOLDER = "hubspot-api"
"""Beside the export: the CSVs the API gave, so an import can be re-run and checked."""


def client_for(token: str, base_url: str = DEFAULT_BASE_URL, retries: int = 8) -> Any:
    """The official client at `base_url`, retrying 429 and 5xx after the server's Retry-After."""
    from hubspot import HubSpot
    from urllib3.util.retry import Retry

    retry = Retry(total=retries, backoff_factor=0.5, respect_retry_after_header=True,
                  status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=frozenset({"GET"}))
    return HubSpot(access_token=token, host=base_url.rstrip("/"), retry=retry)


def _call(what: str, fn: Any, **kwargs: Any) -> Any:
    from hubspot.crm.objects.exceptions import ApiException as ObjectsError
    from hubspot.crm.properties.exceptions import ApiException as PropertiesError
    from urllib3.exceptions import MaxRetryError

    try:
        return fn(**kwargs)
    except (ObjectsError, PropertiesError) as exc:
        raise PropensityError(f"HubSpot refused {what}: HTTP {exc.status} {exc.reason}"
                              + (" (is HUBSPOT_ACCESS_TOKEN right?)" if exc.status == 401
                                 else "")) from None
    except MaxRetryError as exc:
        raise PropensityError(f"HubSpot {what}: gave up after retries ({exc.reason})") from None


def _properties(client: Any, object_type: str
                ) -> tuple[list[str], dict[str, str], dict[str, dict[Any, Any]]]:
    """The object's property names, the label of each (the CSV export's column names) and the
    label of each option value, so internal names read as the export writes them."""
    props = _call(f"the {object_type} properties", client.crm.properties.core_api.get_all,
                  object_type=object_type).results
    names = [p.name for p in props]
    label = {p.name: p.label for p in props}
    if object_type in ENGAGEMENTS:
        label |= ACTIVITY_COLUMNS
    options = {p.name: {o.value: o.label for o in p.options} for p in props if p.options}
    return names, label, options


def _records(client: Any, object_type: str, names: list[str]) -> Iterator[Any]:
    """Every record of the object type with its properties and associations, page by page."""
    after: str | None = None
    while True:
        page = _call(f"the {object_type} page after {after}",
                     client.crm.objects.basic_api.get_page, object_type=object_type,
                     limit=PAGE, after=after, properties=names,
                     associations=ASSOCIATIONS[object_type] or None)
        yield from page.results
        if page.paging is None or page.paging.next is None:
            return
        after = page.paging.next.after


def _row(obj: Any, object_type: str, names: list[str], label: dict[str, str],
         options: dict[str, dict[Any, Any]]) -> dict[str, Any]:
    """One record as the export's row: labelled values, associated ids joined with ';', and an
    engagement's type defaulting to its object type (a call's is "call")."""
    row: dict[str, Any] = {"Record ID": obj.id}
    for name in names:
        value = (obj.properties or {}).get(name)
        row[label[name]] = options.get(name, {}).get(value, value)
    for kind in ASSOCIATIONS[object_type]:
        found = (obj.associations or {}).get(kind)
        ids = [a.id for a in found.results] if found is not None else []
        row[ASSOCIATION_COLUMNS[(object_type, kind)]] = ";".join(ids) or None
    if object_type in ENGAGEMENTS and not row.get("Activity type"):
        row["Activity type"] = object_type.rstrip("s")
    return row


def fetch_object(client: Any, object_type: str) -> pd.DataFrame:
    """Every record of one object type, columns named by property label as the export is."""
    names, label, options = _properties(client, object_type)
    rows = [_row(obj, object_type, names, label, options)
            for obj in _records(client, object_type, names)]
    columns = ["Record ID", *(label[n] for n in names if label[n] != "Record ID")]
    columns += [c for k, c in ASSOCIATION_COLUMNS.items() if k[0] == object_type]
    if object_type in ENGAGEMENTS:
        columns += ACTIVITY_COLUMNS.values()
    frame = pd.DataFrame(rows, columns=list(dict.fromkeys(columns)))
    return frame.loc[:, ~frame.columns.duplicated()]


def import_hubspot_api(out_dir: Path, token: str | None = None,
                       base_url: str = DEFAULT_BASE_URL, mapping_file: Path | None = None,
                       allow_snapshot: tuple[str, ...] | list[str] = (),
                       timezone: str = "UTC") -> ImportResult:
    """Read contacts, companies, deals and engagements over the API and import them."""
    token = token or os.environ.get(TOKEN_VARIABLE)
    if not token:
        raise PropensityError(f"--api needs a private app token in {TOKEN_VARIABLE}")
    client = client_for(token, base_url)
    raw = Path(out_dir) / RAW_FOLDER
    raw.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in ("contacts", "companies", "deals"):
        files[name] = raw / f"{name}.csv"
        fetch_object(client, name).to_csv(files[name], index=False)
    keep = ["Record ID", "Activity date", "Activity type", "Associated Contact IDs"]
    parts = [fetch_object(client, e) for e in ENGAGEMENTS]
    activity = pd.concat([p[keep + [c for c in ("Channel", "Value") if c in p.columns]]
                          for p in parts], ignore_index=True)
    files["activities"] = raw / "activities.csv"
    activity.rename(columns={"Record ID": "Activity ID"}).to_csv(files["activities"],
                                                                index=False)
    return import_hubspot(files["contacts"], out_dir, files["companies"], files["deals"],
                          files["activities"], mapping_file, allow_snapshot, timezone)

