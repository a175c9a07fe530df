"""The CRM data contract as code: tables, columns, stages and the rules every export obeys.

Everything downstream (validation, funnel metrics, point-in-time features, training, scoring)
imports its vocabulary from here, so an export from any CRM only needs an adapter into these
shapes. `docs/data-contract.md` is the prose of the same contract; `tests/code/test_contract.py`
keeps the two in step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, Literal

import pandas as pd
import pandera.pandas as pa
from pydantic import BaseModel, Field, field_validator

DEFAULT_STAGES: tuple[str, ...] = ("lead", "mql", "sql", "opportunity", "customer")
"""Ordered funnel stages; a lead that reached a stage has passed every stage below it."""

TERMINAL_STAGES: tuple[str, ...] = ("disqualified", "lost")
"""Stages that end a lead's journey without a purchase; they have no rank in the funnel."""

BUYER_PERSONAS: tuple[str, ...] = ("end_user", "champion", "executive")
"""The buying committee's roles a contact can hold; features count each one apart."""
PERSONAS: tuple[str, ...] = (*BUYER_PERSONAS, "unknown")
OPPORTUNITY_STATUSES: tuple[str, ...] = ("open", "won", "lost")
CLOCK_SKEW = pd.Timedelta(days=1)
UNKNOWN_WHEN_MISSING: tuple[str, ...] = ("source", "persona")
"""Lead columns whose missing value means `unknown` (the contract), on every path."""
"""Events may precede their lead's creation by this much (CRM clocks and form syncs disagree)."""

MANIFEST_FILE = "manifest.json"
TIMESTAMP_DTYPE: Final = "datetime64[us, UTC]"


class Kind(StrEnum):
    STRING = "string"
    TIMESTAMP = "timestamp"
    NUMBER = "number"


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: Kind
    required: bool = True
    """The column must be present in the file."""
    nullable: bool = True
    unique: bool = False
    allowed: tuple[str, ...] | None = None
    min_value: float | None = None
    description: str = ""


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[ColumnSpec, ...]
    key: str | None = None
    """Column that identifies a row (unique), if any."""
    has_attributes: bool = False
    """Extra columns are attributes (candidate features) rather than a mistake."""

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name} has no column {name!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


S, T, N = Kind.STRING, Kind.TIMESTAMP, Kind.NUMBER

LEADS = TableSpec(
    "leads",
    (
        ColumnSpec("lead_id", S, nullable=False, unique=True, description="unique, non-empty"),
        ColumnSpec("created_at", T, nullable=False, description="when the lead entered the CRM"),
        ColumnSpec("source", S, required=False, description="channel; missing becomes unknown"),
        ColumnSpec("campaign", S, required=False),
        ColumnSpec("account_id", S, required=False, description="must exist in accounts"),
        ColumnSpec("persona", S, required=False, allowed=PERSONAS),
        ColumnSpec("owner_id", S, required=False, description="the sales rep"),
        ColumnSpec("product", S, required=False),
    ),
    key="lead_id",
    has_attributes=True,
)
EVENTS = TableSpec(
    "events",
    (
        ColumnSpec("lead_id", S, nullable=False, description="must exist in leads"),
        ColumnSpec("occurred_at", T, nullable=False),
        ColumnSpec("event_type", S, nullable=False, description="open set"),
        ColumnSpec("channel", S, required=False),
        ColumnSpec("value", N, required=False),
    ),
)
STAGE_HISTORY = TableSpec(
    "stage_history",
    (
        ColumnSpec("lead_id", S, nullable=False, description="must exist in leads"),
        ColumnSpec("stage", S, nullable=False, description="a configured stage or terminal"),
        ColumnSpec("entered_at", T, nullable=False),
    ),
)
OPPORTUNITIES = TableSpec(
    "opportunities",
    (
        ColumnSpec("opportunity_id", S, nullable=False, unique=True),
        ColumnSpec("lead_id", S, required=False),
        ColumnSpec("account_id", S, required=False),
        ColumnSpec("created_at", T, nullable=False),
        ColumnSpec("closed_at", T, required=False, description="null while open"),
        ColumnSpec("amount", N, required=False, min_value=0.0),
        ColumnSpec("status", S, nullable=False, allowed=OPPORTUNITY_STATUSES),
        ColumnSpec("owner_id", S, required=False),
        ColumnSpec("product", S, required=False),
    ),
    key="opportunity_id",
)
ACCOUNTS = TableSpec(
    "accounts",
    (ColumnSpec("account_id", S, nullable=False, unique=True),),
    key="account_id",
    has_attributes=True,
)

TABLES: dict[str, TableSpec] = {
    t.name: t for t in (LEADS, EVENTS, STAGE_HISTORY, OPPORTUNITIES, ACCOUNTS)
}
"""Tables of a CRM export, in the order they are read and validated."""

TRUE_WORDS = frozenset({"1", "1.0", "true", "t", "yes", "y", "won", "converted"})
FALSE_WORDS = frozenset({"0", "0.0", "false", "f", "no", "n", "lost", "not converted"})


class Manifest(BaseModel):
    """What an export says about itself, in `manifest.json` beside its tables.

    Optional: a directory without one is a plain export with the default stages. Adapters write
    one so that what they know about their source (post-outcome columns, the target of a single
    table) travels with the data instead of living in someone's head.
    """

    shape: Literal["export", "single_table"] = "export"
    stages: list[str] = Field(default_factory=lambda: list(DEFAULT_STAGES))
    post_outcome: dict[str, list[str]] = Field(default_factory=dict)
    """Columns per table filled in only after the outcome was known: never features."""
    table: str | None = None
    """File name of the single table (single_table shape)."""
    target: str | None = None
    id_column: str | None = None
    exclude: list[str] = Field(default_factory=list)
    source: str = ""
    notes: list[str] = Field(default_factory=list)

    @field_validator("stages")
    @classmethod
    def _stages_are_distinct(cls, v: list[str]) -> list[str]:
        if len(v) < 2 or len(set(v)) != len(v):
            raise ValueError("stages must be at least two distinct names")
        if set(v) & set(TERMINAL_STAGES):
            raise ValueError(f"{', '.join(TERMINAL_STAGES)} are terminal, not funnel stages")
        return v

    def post_outcome_columns(self, table: str) -> list[str]:
        return list(self.post_outcome.get(table, []))

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST_FILE
        if not path.exists():
            return cls()
        return cls.model_validate(json.loads(path.read_text()))

    def write(self, directory: Path) -> None:
        (directory / MANIFEST_FILE).write_text(self.model_dump_json(indent=2) + "\n")


def stage_rank(stages: tuple[str, ...] | list[str]) -> dict[str, int]:
    """Rank of each funnel stage (0 = first); terminal stages are absent on purpose."""
    return {s: i for i, s in enumerate(stages)}


def pandera_schema(spec: TableSpec, stages: tuple[str, ...] | list[str]) -> pa.DataFrameSchema:
    """Column-level rules of one table, for frames already parsed to their types.

    Presence of required columns and parsing are checked by the loader (it must know the file
    row of an unparseable value); this schema holds the rules on the parsed values.
    """
    columns: dict[str, pa.Column] = {}
    for col in spec.columns:
        checks: list[pa.Check] = []
        allowed = col.allowed
        if spec is STAGE_HISTORY and col.name == "stage":
            allowed = tuple(stages) + TERMINAL_STAGES
        if allowed is not None:
            checks.append(pa.Check.isin(list(allowed)))
        if col.min_value is not None:
            checks.append(pa.Check.ge(col.min_value))
        columns[col.name] = pa.Column(
            None,
            checks=checks,
            nullable=col.nullable,
            unique=col.unique,
            required=False,
            name=col.name,
        )
    return pa.DataFrameSchema(columns, name=spec.name, strict=False, coerce=False)
