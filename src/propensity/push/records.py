"""A record a push writes and the values it should hold: light, so the writing side (and a
worker that only writes) needs neither pandas nor the models."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Crm = Literal["hubspot", "salesforce"]


@dataclass(frozen=True)
class Outgoing:
    """One CRM record and the values it should hold; `digest` stands for the values."""

    record_id: str
    values: dict[str, str]

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.values, sort_keys=True).encode()).hexdigest()


def plan_digest(plan: Sequence[Outgoing]) -> str:
    """Stands for a whole plan: a run resumes only the plan it started."""
    h = hashlib.sha256()
    for o in plan:
        h.update(f"{o.record_id}\0{o.digest}\n".encode())
    return h.hexdigest()
