"""The funnel report as data: what the CLI prints, the scorer serves and notebooks plot.

Rates are percentages with their counts and a 95% Wilson interval, so a rep with three leads
cannot top a table by luck without the interval saying so.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Mode = Literal["cohort", "period"]


class Rate(BaseModel):
    numerator: int
    denominator: int
    percent: float | None = Field(description="numerator / denominator x 100")
    low: float | None = Field(description="95% Wilson interval, percent")
    high: float | None


class Duration(BaseModel):
    count: int = Field(description="leads or deals that made the step")
    median_days: float | None
    p75_days: float | None
    mean_days: float | None


class Step(BaseModel):
    from_stage: str
    to_stage: str
    reached: int = Field(description="leads that reached from_stage (in the window)")
    advanced: int = Field(description="of those, leads that reached to_stage")
    lost: int = Field(description="stopped at from_stage: disqualified or lost")
    in_flight: int = Field(description="still at from_stage, neither advanced nor ended")
    stale: int = Field(0, description="of the lost, those idle past stale_days rather than "
                                      "disqualified")
    conversion: Rate
    time: Duration

    @property
    def name(self) -> str:
        return f"{self.from_stage}_to_{self.to_stage}"


class Deals(BaseModel):
    won: int
    lost: int
    open: int
    win_rate: Rate = Field(description="won / (won + lost) opportunities")
    average_deal_size: float | None = Field(description="mean amount of won opportunities")
    sales_cycle: Duration = Field(description="opportunity created -> won")
    pipeline_value: float = Field(description="amount of opportunities open at the as-of time")
    weighted_pipeline_value: float | None = Field(
        description="open amount x historical win rate of opportunities in the same group "
                    "(overall when the group has none closed; none when nothing has closed)")
    sales_velocity_per_day: float | None = Field(
        description="open opportunities x win rate x average deal size / mean cycle days")


class GroupFunnel(BaseModel):
    group: str
    leads: int
    steps: list[Step]
    lead_to_customer: Rate
    time_to_convert: Duration = Field(description="lead created -> converted")
    deals: Deals
    biggest_drop_off: str | None = Field(description="the step that lost the most leads")


class FunnelReport(BaseModel):
    mode: Mode
    by: str | None
    start: datetime | None
    end: datetime | None
    as_of: datetime | None = Field(description="time the pipeline is valued at")
    stages: list[str]
    stale_days: int | None = None
    overall: GroupFunnel
    groups: list[GroupFunnel] = Field(default_factory=list)

    def step(self, name: str, group: str | None = None) -> Step:
        """A step by name ('mql_to_sql'), overall or for one group."""
        source = self.overall if group is None else next(
            g for g in self.groups if g.group == group)
        for s in source.steps:
            if s.name == name:
                return s
        raise KeyError(name)
