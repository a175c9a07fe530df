"""What the feature definitions read: a lead's history before `as_of`, as flat arrays.

Both executors produce this shape and nothing else: the batch executor (`batch.py`) gathers it
for a whole entity frame with one vectorised point-in-time join per table, the online executor
(`online.py`) for one lead posted to the scorer. The definitions (`definitions.py`) never see
where it came from, which is why a lead's features are the same on every path.

Every row-indexed array here is already cut at its entity row's `as_of`: no definition can
look at the future, because the future is not in its input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT = np.dtype("int64")


@dataclass
class FeatureInputs:
    """`n` entity rows; the per-item arrays carry the entity row they belong to (`*_row`)."""

    n: int
    as_of: np.ndarray
    """int64 microseconds, one per entity row."""
    created: np.ndarray
    """int64 microseconds: the lead's creation."""
    lead_attributes: np.ndarray
    """(n, k) float64: coded categoricals then numbers, in the spec's attribute order."""
    account_attributes: np.ndarray
    """(n, k) float64, NaN where the lead has no account (or the account no value)."""
    has_account: np.ndarray
    """bool per entity row."""
    # the lead's own engagement events, strictly before as_of
    event_row: np.ndarray
    event_age: np.ndarray
    """days between the event and as_of (> 0)."""
    event_type: np.ndarray
    """index into the spec's event types; len(event_types) is 'other'."""
    event_channel: np.ndarray
    """index into the spec's channels; len(channels) is 'other'; -1 is no channel."""
    event_value: np.ndarray
    # funnel-stage entries (terminal stages excluded), strictly before as_of
    stage_row: np.ndarray
    stage_rank: np.ndarray
    stage_time: np.ndarray
    # the lead's opportunities created strictly before as_of
    opportunity_row: np.ndarray
    opportunity_closed: np.ndarray
    """int64 microseconds of the close, NEVER while open (a close at or after as_of counts
    as open: it has not happened yet)."""
    opportunity_lost: np.ndarray
    opportunity_amount: np.ndarray
    # the account's contacts (the lead itself included) created strictly before as_of
    contact_row: np.ndarray
    # events of every contact of the account (the lead's own included), before as_of
    account_event_row: np.ndarray
    account_event_age: np.ndarray
    account_event_contact: np.ndarray
    """an id of the contact that is unique within its entity row."""
    account_event_persona: np.ndarray
    """index into PERSONA_GROUPS, -1 for any other persona."""


def empty(dtype: str | np.dtype = INT) -> np.ndarray:
    return np.zeros(0, dtype=dtype)
