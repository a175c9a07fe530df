"""Wire formats: what CRMs send and what they get back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from typing_extensions import TypedDict

Persona = Literal["end_user", "champion", "executive", "unknown"]


class EventIn(TypedDict):
    """A row of the events table without lead_id. A TypedDict, not a model: a batch of 1,000
    leads carries 50,000 of these, and validating dicts is several times cheaper."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    occurred_at: datetime
    event_type: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    channel: NotRequired[Annotated[str, StringConstraints(max_length=100)] | None]
    value: NotRequired[float | None]


class StageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str
    entered_at: datetime


Scalar = str | float | int | bool | None


class OpportunityIn(BaseModel):
    """A row of the opportunities table, without lead_id (it is the lead's)."""

    model_config = ConfigDict(extra="forbid")
    opportunity_id: str | None = Field(None, max_length=200)
    account_id: str | None = Field(None, max_length=200)
    created_at: datetime
    closed_at: datetime | None = Field(None, description="null while open")
    amount: float | None = Field(None, ge=0)
    status: Literal["open", "won", "lost"] = "open"
    owner_id: str | None = Field(None, max_length=200)
    product: str | None = Field(None, max_length=200)


class ContactEventIn(TypedDict):
    """An engagement event of another contact: when it happened is what the committee counts."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    occurred_at: datetime
    event_type: NotRequired[str]


class AccountContactIn(BaseModel):
    """Another contact of the lead's account (a lead of the same account)."""

    model_config = ConfigDict(extra="allow")
    lead_id: str | None = Field(None, max_length=200, description="a contact with the scored "
                                "lead's own id is the lead itself and is skipped")
    persona: Persona | None = None
    created_at: datetime
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
    lead_id: str = Field(min_length=1, max_length=200)
    created_at: datetime | None = Field(
        None, description="required for models trained on exports")
    source: str | None = None
    campaign: str | None = None
    account_id: str | None = None
    persona: Persona | None = None
    owner_id: str | None = None
    product: str | None = None
    events: list[EventIn] = Field(default_factory=list)
    stage: str | None = None
    stage_entered_at: datetime | None = None
    stage_history: list[StageIn] = Field(
        default_factory=list, description="every stage entry, when the CRM has them")
    as_of: datetime | None = Field(None, description="score as of this time (default now)")
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
    leads: list[LeadIn] = Field(min_length=1)
    explain: bool = Field(True, description="false skips the reasons (faster)")


class ReasonOut(BaseModel):
    feature: str
    text: str
    impact: float = Field(description="contribution in log-odds")


class Reasons(BaseModel):
    positive: list[ReasonOut]
    negative: list[ReasonOut]


ContextFrom = Literal["request", "data source", "none"]


class ContextUsed(BaseModel):
    """Where the account context of a score came from."""

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


class ModelRef(BaseModel):
    name: str
    version: str
    horizon_days: int | None = None


class ScoreResponse(BaseModel):
    model: ModelRef
    threshold_version: int
    next_stage_model: ModelRef | None = None
    scores: list[LeadScore]


class AccountIn(BaseModel):
    account_id: str = Field(min_length=1, max_length=200)
    attributes: dict[str, Scalar] = Field(default_factory=dict)
    contacts: list[LeadIn] = Field(min_length=1, description="the account's leads")
    as_of: datetime | None = None


class AccountScore(BaseModel):
    account_id: str
    probability: float
    score: int
    model: ModelRef
    engaged_personas: list[str] = Field(description="personas with an event in the committee "
                                                    "window before as_of")
    missing_personas: list[str]
    reasons: Reasons


class Health(BaseModel):
    status: str
    models: dict[str, str] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict)
    database: str = "ok"
