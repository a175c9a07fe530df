"""Wire formats: what CRMs send and what they get back."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.config import JsonDict
from typing_extensions import TypedDict

from propensity import lead_rules as rules
from propensity.context import ContextFrom
from propensity.monitoring.outcomes import Outcome
from propensity.timestamps import EARLIEST, LATEST, micros

Persona = Literal["end_user", "champion", "executive", "unknown"]
"""`contract.PERSONAS` spelt out for the OpenAPI schema (a test holds them equal)."""


def _iso_only(value: Any) -> Any:
    """pydantic reads a number (or a numeric string) as Unix seconds: `start=2.49e-139` was
    a date. Here a time is ISO 8601 text, as the schema says."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError("a date-time in ISO 8601 (2025-01-31T09:00:00Z), not a number")
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("a date-time in ISO 8601 (2025-01-31T09:00:00Z), not a number")
    return value


Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A finite JSON number: not NaN or Infinity (1e309 is Infinity), not true, not "3"."""
def _when_pattern() -> str:
    """`When`'s range as a JSON Schema `pattern` on RFC 3339 text, so that the schema states
    it and a generated time the server refuses is not schema-valid: the year as written is
    1900-2199, and a time on 1900-01-01 has no offset east of UTC (it would be 1899 in UTC),
    nor one on 2199-12-31 west of it (2200). An offset is under 24 hours, so every other day
    stays in range in UTC. The day within its month is left to `format`."""
    day = r"(0[1-9]|[12]\d|3[01])"
    other_days = "|".join((  # every day of 1900-2199 but the first and the last
        r"1900-01-(0[2-9]|[12]\d|3[01])", rf"1900-(0[2-9]|1[0-2])-{day}",
        rf"(19(0[1-9]|[1-9]\d)|20\d\d|21([0-8]\d|9[0-8]))-(0[1-9]|1[0-2])-{day}",
        rf"2199-(0[1-9]|1[01])-{day}", r"2199-12-(0[1-9]|[12]\d|30)"))
    time = r"[Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?"
    hours = r"([01]\d|2[0-3]):[0-5]\d"
    return (rf"^({other_days}){time}([Zz]|[+-]{hours})$"
            rf"|^1900-01-01{time}([Zz]|-{hours}|\+00:00)$"
            rf"|^2199-12-31{time}([Zz]|\+{hours}|-00:00)$")


WHEN_PATTERN = _when_pattern()
WHEN_SCHEMA = {"type": "string", "format": "date-time", "pattern": WHEN_PATTERN}
"""What the OpenAPI schema says of a `When`."""
_FIRST, _LAST = EARLIEST.replace(tzinfo=None), LATEST.replace(tzinfo=None)


def _in_range(value: datetime) -> datetime:
    """`When`'s range (`WHEN_PATTERN`, in any form pydantic reads; naive is UTC): from 1900
    and before 2200 as written, and on the first and last day no offset that would move the
    time out of that range in UTC. Exactly what the pattern states, so the schema and the
    server agree on every time."""
    local, offset = value.replace(tzinfo=None), value.utcoffset()
    seconds = 0 if offset is None else offset.total_seconds()
    if not _FIRST <= local < _LAST or (local.date() == _FIRST.date() and seconds > 0) or (
            local.date() == (_LAST - timedelta(days=1)).date() and seconds < 0):
        raise ValueError(f"a time from {EARLIEST:%Y-%m-%d} and before {LATEST:%Y-%m-%d}, as "
                         "written and in UTC (on the first day no offset east of UTC, on the "
                         "last none west)")
    return value


_IN_RANGE = Field(ge=EARLIEST, lt=LATEST)  # compared in UTC, in Rust
When = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_in_range),
                 WithJsonSchema(WHEN_SCHEMA)]
"""A time in a request: ISO 8601 text (a date alone is its midnight, no zone is UTC), from
1900 and before 2200 as written and in UTC (`_in_range`; `propensity.timestamps.EARLIEST`,
`LATEST`), which its schema's `pattern` states."""
EventTime = Annotated[datetime, Strict(), _IN_RANGE]
"""An event's time: RFC 3339 text only, checked in Rust (a batch carries 50,000 of them; a
Python validator per event would cost 40 ms), in the same range as `When`."""
NUL = b"\\u0000"
"""A NUL in JSON text (a raw one is not JSON): SQLite stores it, PostgreSQL refuses it."""


class _Object(list[tuple[str, Any]]):
    """A JSON object as its pairs in order, duplicates kept (to say where one is)."""


def _no_dicts(pairs: list[tuple[str, Any]]) -> None:
    """`json.loads`' object hook for the check: raises at a key given twice, builds nothing."""
    if len(pairs) > 1 and len({k for k, _ in pairs}) < len(pairs):
        raise _Duplicate


class _Duplicate(Exception):
    pass


def json_problem(body: bytes) -> dict[str, Any] | None:
    """What a body's JSON holds that a model cannot see, as a validation error (`loc` from the
    body, `msg`, `type`): a key given twice in one object (pydantic keeps the last silently)
    or a NUL in a string (stored on SQLite, refused by PostgreSQL: refused here on both).
    None when there is neither, or when the body is not JSON (pydantic says why)."""
    try:
        json.loads(body, object_pairs_hook=_no_dicts)
    except _Duplicate:
        pass
    except (ValueError, RecursionError):
        return None
    else:
        if NUL not in body:
            return None
    try:
        return _locate(json.loads(body, object_pairs_hook=_Object), [])
    except RecursionError:
        return {"loc": [], "msg": "a key given twice or a NUL character (\\u0000)",
                "type": "value_error"}


def _locate(value: Any, loc: list[str | int]) -> dict[str, Any] | None:
    if isinstance(value, _Object):
        seen: set[str] = set()
        for key, item in value:
            if key in seen:
                return {"loc": [*loc, key], "type": "duplicate_key",
                        "msg": f"{key!r} is given twice in one object (which one is meant?)"}
            seen.add(key)
            if (found := _locate(key, [*loc, key]) or _locate(item, [*loc, key])) is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _locate(item, [*loc, i])) is not None:
                return found
    elif isinstance(value, str) and "\x00" in value:
        return {"loc": loc, "type": "nul_character",
                "msg": "text may not hold a NUL character (\\u0000)"}
    return None


class EventIn(TypedDict):
    """A row of the events table without lead_id. A TypedDict, not a model: a batch of 1,000
    leads carries 50,000 of these, and validating dicts is several times cheaper."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    occurred_at: EventTime
    event_type: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    channel: NotRequired[Annotated[str, StringConstraints(max_length=100)] | None]
    value: NotRequired[Number | None]


class StageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str
    entered_at: When


Scalar = str | Number | int | bool | None


class OpportunityIn(BaseModel):
    """A row of the opportunities table, without lead_id (it is the lead's)."""

    model_config = ConfigDict(extra="forbid")
    opportunity_id: str | None = Field(None, max_length=200)
    account_id: str | None = Field(None, max_length=200)
    created_at: When
    closed_at: When | None = Field(None, description="null while open")
    amount: Number | None = Field(None, ge=0)
    status: Literal["open", "won", "lost"] = "open"
    owner_id: str | None = Field(None, max_length=200)
    product: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _dates_agree(self) -> OpportunityIn:
        """The contract's rules on an opportunity's dates, as validation applies them to an
        export's rows (scored anyway, a lost one without a date counted as open)."""
        has_close = self.closed_at is not None
        if self.closed_at is not None and rules.closed_before_created(
                micros(self.created_at), micros(self.closed_at)):
            raise ValueError(rules.CLOSED_BEFORE_CREATED.refusal("closed_at is before "
                                                                 "created_at"))
        if rules.closed_without_date(self.status != "open", has_close):
            raise ValueError(rules.CLOSED_WITHOUT_DATE.refusal(
                f"a {self.status} opportunity needs closed_at"))
        return self


NO_NUL: JsonDict = {"pattern": r"^[^\x00]*$"}
"""The schema's word for `json_problem`'s NUL rule, on a string field."""


class OutcomeIn(Outcome):
    """An outcome as a CRM sends it: `at` is ISO 8601 text in range, `amount` finite; its
    schema states every rule the route applies (the stage's enum is the champion's:
    `serving.app`), so generated valid outcomes are stored, not refused."""

    lead_id: str = Field(min_length=1, max_length=200, json_schema_extra=NO_NUL)
    opportunity_id: str | None = Field(default=None, max_length=200, json_schema_extra=NO_NUL)
    at: When = Field(description="when it happened (naive means UTC)")
    amount: Number | None = Field(default=None, ge=0)


class ContactEventIn(TypedDict):
    """An engagement event of another contact: when it happened is what the committee counts."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    occurred_at: EventTime
    event_type: NotRequired[str]


class AccountContactIn(BaseModel):
    """Another contact of the lead's account (a lead of the same account)."""

    model_config = ConfigDict(extra="allow")
    lead_id: str | None = Field(None, max_length=200, description="a contact with the scored "
                                "lead's own id is the lead itself and is skipped")
    persona: Persona | None = None
    created_at: When
    events: list[ContactEventIn] = Field(default_factory=list)


class AccountContextIn(BaseModel):
    """The lead's account: its attributes (any field) and, optionally, its other contacts."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Scalar]
    contacts: list[AccountContactIn] | None = Field(
        None, description="the account's other contacts; left out, the scorer's data source "
                          "(serve --data) fills them in when it knows the account")


class LeadIn(BaseModel):
    """A `leads` row (any extra field is an attribute), with its events and current stage,
    and optionally its opportunities and its account's other contacts."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Scalar]  # an attribute is a value, not a list or an object
    lead_id: str = Field(min_length=1, max_length=200)
    created_at: When | None = Field(
        None, description="required for models trained on exports")
    source: str | None = None
    campaign: str | None = None
    account_id: str | None = None
    persona: Persona | None = None
    owner_id: str | None = None
    product: str | None = None
    events: list[EventIn] = Field(default_factory=list)
    stage: str | None = None
    stage_entered_at: When | None = None
    stage_history: list[StageIn] = Field(
        default_factory=list, description="every stage entry, when the CRM has them")
    as_of: When | None = Field(None, description="score as of this time (default now)")
    account: AccountContextIn | None = Field(
        None, description="the lead's account: attributes (industry, employees, ...) and its "
                          "other contacts")
    opportunities: list[OpportunityIn] | None = Field(
        None, description="the lead's opportunities; left out, the scorer's data source fills "
                          "them in when it knows the lead")

    def attributes(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("source", "campaign", "account_id", "persona",
                                              "owner_id", "product")}
        out.update(self.model_extra or {})
        return out


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not ignored
    leads: list[LeadIn] = Field(min_length=1)
    explain: StrictBool = Field(True, description="false skips the reasons (faster)")
    outlook: StrictBool = Field(False, description="true adds each lead's outlook (horizons, "
                                "expected_days, expected_amount and its interval, "
                                "expected_revenue, amount_reasons); asked for, not given by "
                                "default: its models cost more than the probability's")


class ReasonOut(BaseModel):
    feature: str
    text: str
    impact: float = Field(description="contribution in log-odds")


class Reasons(BaseModel):
    positive: list[ReasonOut]
    negative: list[ReasonOut]


class ContextUsed(BaseModel):
    """Where the account context of a score came from: the request, the scorer's data source
    (serve --data) for what the request left out, or neither ("none": read as missing)."""

    account: dict[str, ContextFrom] = Field(
        default_factory=dict, description="each account attribute the model reads, with where "
        "its value came from (a field the request sends is the request's, null included); "
        "empty for a lead without an account_id")
    contacts: ContextFrom
    opportunities: ContextFrom


class LeadScore(BaseModel):
    lead_id: str
    probability: float = Field(description="calibrated probability of converting within the "
                                           "model's horizon")
    score: int = Field(ge=0, le=100)
    grade: Literal["A", "B", "C", "D"]
    mql: bool
    reasons: Reasons | None = Field(None, description="null when the request set explain=false")
    context: ContextUsed | None = Field(None, description="for models trained on exports")
    next_stage: float | None = Field(
        None, description="probability of advancing beyond the current stage")
    horizons: dict[str, float] | None = Field(
        None, description="days -> probability of converting within that many days of as_of "
        "(30, 60, 90, 180), never lower at a later day; from the time-to-convert model "
        "shipped with this model version. Null unless the request set outlook=true, and when "
        "the model ships no outlook", examples=[{"30": 0.08, "60": 0.14, "90": 0.19, "180": 0.26}])
    expected_days: float | None = Field(
        None, description="median days to convert among leads like it that will (within the "
        "longest window the training history observed); null when none will")
    expected_amount: float | None = Field(
        None, description="mean amount its deal would be won for (currency of the export's "
        "opportunity amounts); null when the training history holds no won amount")
    amount_low: float | None = Field(
        None, description="80% interval of the won amount: 10% of deals like it below this")
    amount_high: float | None = Field(
        None, description="80% interval of the won amount: 10% of deals like it above this")
    expected_revenue: float | None = Field(
        None, description="probability of converting within 90 days x expected_amount")
    amount_reasons: Reasons | None = Field(
        None, description="top features of the expected amount (impact in log amount); null "
        "when explain or outlook is false")


class ModelRef(BaseModel):
    name: str
    version: str
    horizon_days: int | None = None
    fallback: bool = Field(False, description="true when the learner training chose lost its "
                                              "holdout and this one, which did not, shipped")
    learner: str | None = Field(None, description="which learner this version is: odoo-pls, "
                                                  "lightgbm, logistic or blend")


class ScoreResponse(BaseModel):
    model: ModelRef
    threshold_version: int
    next_stage_model: ModelRef | None = None
    scores: list[LeadScore]


class AccountContactLeadIn(LeadIn):
    """A lead of the scored account: when it was created is what the account model needs."""

    created_at: When


class AccountIn(BaseModel):
    """An account as `/v1/score` takes a lead's `account`: its attributes as fields of the
    account itself (`"industry": "software"`), beside its contacts. The older shape, the
    attributes under `"attributes"`, is still read (both at once: a field in both must agree)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Scalar]  # an attribute is a value, not a list or an object
    account_id: str = Field(min_length=1, max_length=200)
    attributes: dict[str, Scalar] = Field(
        default_factory=dict, description="the account's attributes (the older shape; they "
                                          "can be fields of the account itself)")
    contacts: list[AccountContactLeadIn] = Field(min_length=1,
                                                 description="the account's leads")
    as_of: When | None = None


class AccountScore(BaseModel):
    account_id: str
    probability: float
    score: int
    model: ModelRef
    engaged_personas: list[str] = Field(description="personas with an event in the committee "
                                                    "window before as_of")
    missing_personas: list[str]
    reasons: Reasons


class ScoreLogHealth(BaseModel):
    pending: int = Field(description="rows in memory, written within a second")
    spooled_bytes: int = Field(description="rows on local disk while the database is down; "
                                           "replayed when it is back")
    quarantined: int = Field(description="rows the database refused, kept with the reason in "
                                         "quarantine.jsonl in the spool folder")


class KeyOut(BaseModel):
    name: str
    scopes: list[str] = Field(description="what the key may call; admin includes every scope")
    expires_at: datetime | None = None


class Health(BaseModel):
    status: Literal["ok", "ready", "degraded", "not ready"]
    models: dict[str, str] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict)
    database: str = "ok"
    score_log: ScoreLogHealth | None = None
    reasons: list[str] = Field(default_factory=list, description="why the status is not ready")


class ProblemCount(BaseModel):
    severity: str
    table: str
    rule: str
    count: int


class DataProblems(BaseModel):
    """What the data source's rows broke: the rows named here were left out of the answer
    (errors) or used as they are (warnings). `propensity validate` lists every one."""

    errors: int
    warnings: int
    summary: list[ProblemCount] = Field(description="problems per table and rule")


def data_problems(report: Any) -> DataProblems:
    """A `ProblemReport` as the summary a response carries."""
    rows = report.summary().to_dict("records")
    return DataProblems(errors=report.error_count, warnings=report.warning_count,
                        summary=[ProblemCount(**{k: r[k] for k in ("severity", "table", "rule")},
                                              count=int(r["count"])) for r in rows])


class TargetLeadScore(BaseModel):
    """One lead scored on a target's model: no grade nor MQL flag (their thresholds are the
    lead-conversion model's)."""

    lead_id: str
    probability: float = Field(description="calibrated probability of the target's outcome "
                                           "within the model's horizon")
    score: int = Field(ge=0, le=100)
    reasons: Reasons | None = Field(None, description="null when the request set explain=false")


class TargetScoreResponse(BaseModel):
    model: ModelRef
    scores: list[TargetLeadScore]
