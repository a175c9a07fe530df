"""What the OpenAPI schema states is what the server applies (issue 27: the relaxed check in
`schemathesis.toml` shrinks where JSON Schema can state a rule). In-process: the schema the
app builds and the validators the routes run, no server needed.

A request time's range is a `pattern` that agrees with `serving.schemas.When`'s validator on
every edge (so a schema-valid time is never refused, nor a schema-invalid one in RFC 3339
form accepted); an outcome's stage is an enum of the stages the route allows and its ids say
"no NUL"; the HubSpot action documents the body it reads, so schemathesis can generate it.
"""

from __future__ import annotations

import itertools
import re
import typing
from datetime import datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from propensity.contract import PERSONAS
from propensity.timestamps import EARLIEST, LATEST
from serving.app import create_app
from serving.routes.outcomes import allowed_stages
from serving.schemas import WHEN_PATTERN, Persona, When

DAYS = ["0001-01-01", "1899-12-31", "1900-01-01", "1900-01-02", "2025-06-01", "2199-12-30",
        "2199-12-31", "2200-01-01", "9999-12-31"]
TIMES = ["00:00:00", "04:59:59", "05:00:00", "12:00:00.25", "23:59:59"]
OFFSETS = ["Z", "z", "+00:00", "-00:00", "+05:00", "-05:00", "+23:59", "-23:59"]
WHEN = TypeAdapter(When)


def _accepted(text: str) -> bool:
    try:
        WHEN.validate_python(text)
    except ValidationError:
        return False
    return True


def test_the_when_pattern_is_the_validators_rule() -> None:
    """Every edge day x time x offset: the pattern matches exactly what the server accepts,
    and what it accepts is in range in UTC (what the range is for)."""
    cases = [f"{d}T{t}{o}" for d, t, o in itertools.product(DAYS, TIMES, OFFSETS)]
    agree = {c: (re.search(WHEN_PATTERN, c) is not None, _accepted(c)) for c in cases}
    assert all(matched == accepted for matched, accepted in agree.values()), {
        c: v for c, v in agree.items() if v[0] != v[1]}
    accepted = [c for c, (_, ok) in agree.items() if ok]
    assert all(EARLIEST <= datetime.fromisoformat(c.upper()) < LATEST for c in accepted)
    assert 0 < len(accepted) < len(cases)


@pytest.mark.parametrize(("text", "ok"), [
    ("1900-01-01T00:00:00Z", True), ("1900-01-01T00:00:00-05:00", True),
    ("1900-01-01T12:00:00+05:00", False),  # in range in UTC, but an east offset on day one
    ("2199-12-31T23:59:59+14:00", True), ("2199-12-31T01:00:00-01:00", False),
    ("1899-12-31T23:00:00-05:00", False),  # 1900 in UTC, 1899 as written
    ("0001-01-01T00:00:00+05:00", False), ("9999-12-31T23:59:59-05:00", False),
    ("2025-06-01T09:00:60Z", False),  # no leap second: the pattern says so too
])
def test_when_at_its_edges(text: str, ok: bool) -> None:
    assert _accepted(text) is ok
    assert (re.search(WHEN_PATTERN, text) is not None) is ok


def test_the_schema_states_what_outcomes_and_hubspot_take() -> None:
    schema = create_app().openapi()
    outcome = schema["components"]["schemas"]["OutcomeIn"]["properties"]
    assert outcome["stage"]["enum"] == list(allowed_stages(None))
    assert outcome["at"]["pattern"] == WHEN_PATTERN
    for field in ("lead_id", "opportunity_id"):
        pattern = outcome[field]["pattern"]
        assert re.search(pattern, "lead-1") and not re.search(pattern, "lead\x00-1")
    action = schema["paths"]["/v1/crm/hubspot/action"]["post"]
    body = action["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ActionIn"}
    assert {"callbackId", "origin", "object"} <= set(
        schema["components"]["schemas"]["ActionIn"]["required"])
    assert {"400", "401", "429"} <= set(action["responses"]) and not action.get("security")


def test_the_wire_persona_is_the_contracts() -> None:
    """The schema spells the personas out (an OpenAPI enum); they are the contract's, in order,
    and the persona a request may send is exactly one of them."""
    assert typing.get_args(Persona) == PERSONAS
    adapter = TypeAdapter(Persona)
    assert [adapter.validate_python(p) for p in PERSONAS] == list(PERSONAS)
    with pytest.raises(ValidationError):
        adapter.validate_python("buyer")
