"""The contract's rules on one lead's rows, each written once.

Validation applies them to an export's columns at once, the online executor to the one lead a
CRM sends, the wire schema to a request's opportunity: so each predicate takes numpy arrays
and plain values alike (int64 microseconds for times, `propensity.timestamps`), and each rule
carries the id `docs/data-contract.md` lists and the words every path reports it with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from propensity.contract import CLOCK_SKEW

SKEW_US = CLOCK_SKEW.value // 1_000
"""The contract's clock skew in microseconds: a row may precede its lead's creation by this."""


@dataclass(frozen=True)
class Rule:
    id: str
    message: str

    def refusal(self, what: str | None = None) -> str:
        """The rule broken, as one lead's refusal says it (the id names it in the docs)."""
        return f"{what or self.message} (the contract's {self.id})"


EVENT_BEFORE_LEAD_CREATED = Rule("event_before_lead_created",
                                 "more than one day before the lead was created")
STAGE_BEFORE_LEAD_CREATED = Rule("stage_before_lead_created",
                                 "entered a stage more than one day before the lead was created")
CONVERSION_BEFORE_LEAD_CREATED = Rule(
    "conversion_before_lead_created",
    "won, or entered the last stage, more than one day before the lead was created")
STAGES_OUT_OF_ORDER = Rule("stages_out_of_order",
                           "entered before a lower stage of the same lead")
CLOSED_BEFORE_CREATED = Rule("closed_before_created", "closed before it was created")
CLOSED_WITHOUT_DATE = Rule("closed_without_date", "a won or lost opportunity needs closed_at")
OPEN_WITH_CLOSE_DATE = Rule("open_with_close_date", "an open opportunity has no closed_at")


def too_early(t: Any, created: Any) -> Any:
    """Dated more than the clock skew before the lead's creation (microseconds; arrays or
    values): an event, a stage entry, a win."""
    return t < created - SKEW_US


def stage_entry_rule(stage: str | None, last_stage: str) -> Rule:
    """The rule a stage entered too early breaks: entering the last stage is a conversion."""
    return CONVERSION_BEFORE_LEAD_CREATED if stage == last_stage else STAGE_BEFORE_LEAD_CREATED


def closed_before_created(created: Any, closed: Any) -> Any:
    return closed < created


def closed_without_date(status_closed: Any, has_close: Any) -> Any:
    """A won or lost opportunity (`status_closed`) without closed_at (arrays or bools)."""
    return status_closed & (has_close ^ True)


def open_with_close_date(status_open: Any, has_close: Any) -> Any:
    return status_open & has_close


def won_too_early(won: Any, closed: Any, created: Any) -> Any:
    """`conversion_before_lead_created` for an opportunity: won before its lead was created."""
    return won & too_early(closed, created)
