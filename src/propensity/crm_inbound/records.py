"""A CRM record as the scorer reads it: a lead to score, or an outcome to store.

The fields go through the import's own rules (`propensity.adapters.hubspot` /
`salesforce`: which field is the lead id, the source, the account, an attribute, a snapshot
or a person's name) and the same stage mapping, TOML file included, so a lead scored from a
workflow has the attributes the model was trained on from the export. HubSpot sends internal
property names (`createdate`, `hs_analytics_source`) where its CSV export writes labels
("Create Date", "Original Source"): `HUBSPOT_LABELS` turns the standard ones into the labels
the import knows; a custom property keeps its name, which becomes the same attribute as its
label would (`job_function`). Times are read as the import reads them (a date alone is the
end of its day); HubSpot's are often milliseconds since 1970.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from propensity.adapters.crm_mapping import (
    DEFAULT_DEAL_STAGE,
    DEFAULT_LEAD_STATUS,
    DEFAULT_LIFECYCLE_STAGE,
    NOT_A_STAGE,
    ZONED,
    CrmMapping,
    FieldRule,
    Ledger,
    load_mapping,
    parse_times,
    take_fields,
)
from propensity.adapters.hubspot import BECAME, CONTACT_RULES
from propensity.adapters.hubspot import _object_rules as hubspot_rules
from propensity.adapters.salesforce import FIELD_DEFAULTS, LEAD_RULES
from propensity.adapters.salesforce import _object_rules as salesforce_rules
from propensity.contract import DEFAULT_STAGES
from propensity.monitoring.outcomes import Outcome
from propensity.tables import SourceFile

_BECAME = {"lead": "a Lead", "subscriber": "a Subscriber", "marketingqualifiedlead":
           "a Marketing Qualified Lead", "salesqualifiedlead": "a Sales Qualified Lead",
           "opportunity": "an Opportunity", "customer": "a Customer",
           "evangelist": "an Evangelist", "other": "an Other Lifecycle"}
HUBSPOT_LABELS = {
    "hs_object_id": "Record ID", "createdate": "Create Date",
    "hs_analytics_source": "Original Source", "hubspot_owner_id": "Contact owner",
    "associatedcompanyid": "Associated Company ID", "country": "Country/Region",
    "state": "State/Region", "jobtitle": "Job Title", "industry": "Industry",
    "numemployees": "Number of Employees", "annualrevenue": "Annual Revenue",
    "lifecyclestage": "Lifecycle Stage", "hs_lead_status": "Lead Status",
    "hs_analytics_num_page_views": "Number of Pageviews",
    "notes_last_updated": "Last Activity Date", "firstname": "First Name",
    "lastname": "Last Name", "email": "Email", "phone": "Phone Number",
    "mobilephone": "Mobile Phone Number", "address": "Street Address", "city": "City",
    "zip": "Postal Code", "website": "Website URL", "company": "Company Name",
    "fax": "Fax Number",
    **{f"hs_lifecyclestage_{k}_date": f"Became {v} Date" for k, v in _BECAME.items()}}
"""HubSpot contact properties: internal name -> the label its CSV export heads them with."""
WHERE = "HubSpot workflow action"
SALESFORCE = "Salesforce outbound message"


class RecordError(ValueError):
    """A record that cannot be scored or stored (the message names the field)."""


def hubspot_mapping(path: Path | None) -> CrmMapping:
    """The HubSpot mapping `propensity import hubspot --mapping` uses."""
    return load_mapping(path, "hubspot", {"lifecycle_stage": DEFAULT_LIFECYCLE_STAGE,
                                          "deal_stage": DEFAULT_DEAL_STAGE}, {})


def salesforce_mapping(path: Path | None) -> CrmMapping:
    """The Salesforce mapping `propensity import salesforce --mapping` uses."""
    return load_mapping(path, "salesforce", {"lead_status": DEFAULT_LEAD_STATUS,
                                             "deal_stage": DEFAULT_DEAL_STAGE}, FIELD_DEFAULTS)


def _fast_time(value: str) -> datetime | None:
    """Milliseconds since 1970, or ISO 8601 text naming its offset (what both CRMs send),
    without pandas (a request's fields cost 5 ms through it); None for anything else."""
    if value.lstrip("-").isdigit():
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    if ZONED.search(value) and "T" in value:
        try:
            return datetime.fromisoformat(value).astimezone(UTC)
        except ValueError:
            return None
    return None


def times(values: dict[str, Any], where: str) -> dict[str, datetime]:
    """Each value as a UTC time (milliseconds since 1970 or ISO 8601; a date alone is the end
    of its day, naive is UTC, as the import reads them); RecordError naming the first that is
    neither."""
    out: dict[str, datetime] = {}
    rest: dict[str, str] = {}
    for key, value in values.items():
        if value is None or str(value).strip() == "":
            continue
        text = str(value).strip()
        t = _fast_time(text)
        if t is None:
            rest[key] = text
        else:
            out[key] = t
    if rest:  # dates alone, naive times: the import's own reading
        raw = pd.Series(list(rest.values()), index=list(rest), dtype="object")
        parsed = parse_times(raw, SourceFile(Path(where), 0), "", Ledger(), refuse=False)
        for key, t in parsed.items():
            if pd.isna(t):
                raise RecordError(f"{key}: {values[str(key)]!r} is not a date/time (ISO 8601 "
                                  "or milliseconds since 1970)")
            out[str(key)] = t.to_pydatetime()
    return out


def _value(v: Any) -> Any:
    """A CRM value as the scorer reads an attribute: text that is a number is that number
    (CSV exports are read so), an empty text is no value."""
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        try:
            f = float(s)
        except ValueError:
            return s
        return f if math.isfinite(f) else s
    return v


_TARGETS: dict[tuple[int, str, tuple[str, ...]], dict[str, str]] = {}


def _targets(names: tuple[str, ...], rules: dict[str, FieldRule], key: tuple[int, str],
             where: str) -> dict[str, str]:
    """Source field -> lead column or attribute, as the import's `take_fields` decides it for
    these field names (decided once per set of names: a one-row frame costs ~3 ms)."""
    cache_key = (*key, names)
    found = _TARGETS.get(cache_key)
    if found is None:
        frame = pd.DataFrame({k: ["x"] for k in names}, dtype="object")
        taken = take_fields(frame, where, "leads", rules, FieldRule("left out"), set(),
                            Ledger())
        found = {source: target for target, source in taken.attrs["source_columns"].items()}
        if len(_TARGETS) > 1000:
            _TARGETS.clear()
        _TARGETS[cache_key] = found
    return found


def _taken(fields: dict[str, Any], targets: dict[str, str]) -> dict[str, Any]:
    """The lead's contract columns and attributes, by the import's rules."""
    ids = {"lead_id", "account_id", "owner_id"}
    out = {}
    for source, target in targets.items():
        v = fields.get(source)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        v = str(v) if target in ids else _value(v)
        if v is not None:
            out[target] = v
    return out


def hubspot_lead(object_id: str, properties: dict[str, Any], inputs: dict[str, Any],
                 mapping: CrmMapping) -> dict[str, Any]:
    """A `LeadIn` body from a contact's properties and the action's input fields (an input
    field wins over a property of the same name). The lead id is the contact's Record ID."""
    fields: dict[str, Any] = {}
    for name, value in {**properties, **inputs}.items():
        fields[HUBSPOT_LABELS.get(name, name)] = value
    fields["Record ID"] = str(object_id)
    became = {k: v for k, v in fields.items() if BECAME.match(k)}
    dated = times({k: fields.get(k) for k in ("Create Date", *became)}, WHERE)
    names = tuple(sorted(k for k in fields if k not in became))
    if (id(mapping), "hubspot", names) not in _TARGETS:
        rules = hubspot_rules(CONTACT_RULES, list(names), mapping, "contacts")
    else:
        rules = {}
    lead = _taken(fields, _targets(names, rules, (id(mapping), "hubspot"), WHERE))
    if "Create Date" not in dated:
        raise RecordError("createdate: missing (add the contact's Create Date to the "
                          "action's input fields)")
    lead["created_at"] = dated["Create Date"].isoformat()
    history = []
    for label in became:
        m = BECAME.match(label)
        stage = mapping.stage_of("lifecycle_stage", m.group(1) or m.group(2)) if m else None
        if label in dated and stage not in (None, NOT_A_STAGE):
            history.append({"stage": stage, "entered_at": dated[label].isoformat()})
    lead["stage_history"] = _first_entries(history)
    return lead


def _first_entries(history: list[dict[str, str]]) -> list[dict[str, str]]:
    """A stage entered twice keeps its first entry (as the import does)."""
    first: dict[str, dict[str, str]] = {}
    for row in sorted(history, key=lambda r: r["entered_at"]):
        first.setdefault(row["stage"], row)
    return sorted(first.values(), key=lambda r: r["entered_at"])


def salesforce_lead(fields: dict[str, str | None], mapping: CrmMapping
                    ) -> tuple[dict[str, Any], Outcome | None]:
    """A Lead notification as a `LeadIn` body, and the stage its Status says it entered (an
    outcome, dated by LastModifiedDate) when the mapping knows it."""
    if not fields.get("Id"):
        raise RecordError("Id: missing (a Lead notification always carries it)")
    names = tuple(sorted(fields))
    rules = {} if (id(mapping), "salesforce", names) in _TARGETS else salesforce_rules(
        "Lead", LEAD_RULES, list(names), mapping, set())
    lead = _taken(dict(fields), _targets(names, rules, (id(mapping), "salesforce"), SALESFORCE))
    dated = times({k: fields.get(k) for k in ("CreatedDate", "LastModifiedDate")}, SALESFORCE)
    if "CreatedDate" not in dated:
        raise RecordError("CreatedDate: missing (add it to the outbound message's fields)")
    lead["created_at"] = dated["CreatedDate"].isoformat()
    stage = mapping.stage_of("lead_status", fields.get("Status"))
    outcome = None
    if stage not in (None, NOT_A_STAGE) and "LastModifiedDate" in dated:
        outcome = Outcome(lead_id=lead["lead_id"], stage=stage, at=dated["LastModifiedDate"])
        if stage in DEFAULT_STAGES:  # scored at its current stage (a terminal one is not)
            lead["stage"] = stage
    return lead, outcome


def salesforce_outcome(fields: dict[str, str | None], mapping: CrmMapping,
                       lead_field: str) -> Outcome | None:
    """An Opportunity notification at a won or lost stage as an outcome of its lead (the
    field `lead_field` names it); None while the opportunity is open."""
    status = mapping.status_of(fields.get("StageName"))
    if status == "open":
        return None
    lead = fields.get(lead_field)
    if not lead:
        raise RecordError(f"{lead_field}: no lead on this {status} opportunity (add the "
                          "lead lookup to the outbound message's fields)")
    dated = times({k: fields.get(k) for k in ("CloseDate", "LastModifiedDate")}, SALESFORCE)
    at = dated.get("LastModifiedDate") or dated.get("CloseDate")
    if at is None:
        raise RecordError("LastModifiedDate / CloseDate: the close cannot be placed in time")
    amount = _value(fields.get("Amount"))
    return Outcome(lead_id=lead, stage="won" if status == "won" else "lost", at=at,
                   opportunity_id=fields.get("Id") or None,
                   amount=amount if isinstance(amount, float) and amount >= 0 else None)
