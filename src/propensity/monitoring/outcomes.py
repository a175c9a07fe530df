"""Outcomes the CRM reports (stage changes, won and lost deals), stored once each.

An outcome is keyed by (lead, stage, time, opportunity): a CRM that retries a webhook, or an
import run twice, stores nothing new. A lead converts when it enters the last funnel stage or
an opportunity of it is won (the contract's rule, the same one training labels with).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from propensity.contract import DEFAULT_STAGES, TERMINAL_STAGES
from propensity.database import outcomes
from propensity.tables import CrmExport
from propensity.timestamps import as_utc

WON = "won"


def outcome_stages(stages: Sequence[str] = DEFAULT_STAGES) -> tuple[str, ...]:
    """What an outcome's `stage` may be: a funnel stage, a terminal one, or `won`."""
    return (*stages, *TERMINAL_STAGES, WON)


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lead_id: str = Field(min_length=1, max_length=200)
    stage: str = Field(min_length=1, max_length=50,
                       description="a funnel stage entered, disqualified, lost, or won")
    at: datetime = Field(description="when it happened (naive means UTC)")
    opportunity_id: str | None = Field(default=None, max_length=200)
    amount: float | None = Field(default=None, ge=0)

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)


def record(engine: sa.Engine, items: Sequence[Outcome]) -> int:
    """Store outcomes; returns how many were new (the rest were stored before)."""
    if not items:
        return 0
    now = datetime.now(UTC)
    rows = [{"lead_id": o.lead_id, "stage": o.stage, "at": o.at,
             "opportunity_id": o.opportunity_id or "", "amount": o.amount, "received_at": now}
            for o in items]
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        stmt = pg_insert(outcomes).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert
        stmt = sqlite_insert(outcomes).on_conflict_do_nothing()  # type: ignore[assignment]
    stored = 0
    with engine.begin() as conn:  # RETURNING names only the rows a conflict did not skip
        for start in range(0, len(rows), 5000):
            stored += len(conn.execute(stmt.returning(outcomes.c.id),
                                       rows[start:start + 5000]).all())
    return stored


def from_export(export: CrmExport, since: pd.Timestamp | None = None) -> tuple[list[Outcome], int]:
    """An export's outcomes (stage entries, closed opportunities linked to a lead), at or after
    `since` when given; and how many closed opportunities were left out for having no lead."""
    found: list[Outcome] = []
    sh = export.stage_history
    if sh is not None and len(sh):
        frame = pd.DataFrame({"lead_id": sh["lead_id"].astype("str").to_numpy(),
                              "stage": sh["stage"].astype("str").to_numpy(),
                              "at": pd.to_datetime(sh["entered_at"], utc=True).to_numpy()})
        if since is not None:
            frame = frame[frame["at"] >= since]
        found += [Outcome(lead_id=r.lead_id, stage=r.stage, at=r.at.to_pydatetime())
                  for r in frame.assign(at=pd.to_datetime(frame["at"], utc=True)).itertuples()]
    skipped = 0
    opps = export.opportunities
    if opps is not None and len(opps):
        status = opps["status"].astype("str").to_numpy()
        closed = np.isin(status, [WON, "lost"]) & opps["closed_at"].notna().to_numpy()
        has_lead = opps["lead_id"].notna().to_numpy()
        skipped = int((closed & ~has_lead).sum())
        part = opps[closed & has_lead]
        at = pd.to_datetime(part["closed_at"], utc=True)
        keep = np.ones(len(part), dtype=bool) if since is None else (at >= since).to_numpy()
        amount = pd.to_numeric(part["amount"], errors="coerce")
        for lead, opp, st, t, amt in zip(part["lead_id"].astype("str")[keep],
                                         part["opportunity_id"].astype("str")[keep],
                                         part["status"].astype("str")[keep], at[keep],
                                         amount[keep], strict=True):
            found.append(Outcome(lead_id=lead, stage=st, at=t.to_pydatetime(),
                                 opportunity_id=opp, amount=None if pd.isna(amt) else float(amt)))
    return found, skipped


def conversion_stages(stages: Sequence[str] = DEFAULT_STAGES) -> list[str]:
    """The outcome stages that mean a lead converted: the last funnel stage, and `won`."""
    return [stages[-1], WON]


def conversions(engine: sa.Engine, stages: Sequence[str] = DEFAULT_STAGES) -> pd.Series:
    """Each lead's first conversion time (entering the last stage, or a won opportunity)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(outcomes.c.lead_id, sa.func.min(outcomes.c.at)).where(
            outcomes.c.stage.in_(conversion_stages(stages))).group_by(outcomes.c.lead_id)).all()
    return pd.Series(pd.to_datetime([r[1] for r in rows], utc=True),
                     index=pd.Index([r[0] for r in rows], name="lead_id"), name="converted_at",
                     dtype="datetime64[us, UTC]")
