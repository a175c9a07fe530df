"""Active thresholds per model in the database: every change a new version, none forgotten.

The active set is the highest version of the model; restoring an old one writes it again as a
new version, so the history reads as what actually happened. Workers cache the active set for
at most `ttl` seconds, and the worker that made a change sees it at once.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from propensity.database import thresholds
from propensity.thresholds import ThresholdSet

BANDS = ("mql", "grade_a", "grade_b", "grade_c")


class ThresholdStore:
    def __init__(self, engine: sa.Engine, ttl: float = 1.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self._cache: dict[str, tuple[float, ThresholdSet]] = {}
        self._lock = threading.Lock()

    def active(self, model: str = "lead-conversion") -> ThresholdSet:
        hit = self._cache.get(model)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(thresholds).where(thresholds.c.model == model)
                               .order_by(thresholds.c.version.desc()).limit(1)).first()
        found = ThresholdSet(model=model) if row is None else ThresholdSet(
            version=row.version, model=model, **{b: getattr(row, b) for b in BANDS})
        with self._lock:
            self._cache[model] = (time.monotonic(), found)
        return found

    def details(self, model: str = "lead-conversion", version: int | None = None,
                ) -> dict[str, Any]:
        """A version (default the active one) with who changed it, when and why."""
        current = self.active(model) if version is None else self.get(version)
        if current is None:
            raise KeyError(version)
        meta = {"changed_by": None, "changed_at": None, "reason": "defaults"}
        if current.version:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(thresholds).where(
                    thresholds.c.version == current.version)).one()
            meta = {"changed_by": row.changed_by, "changed_at": row.changed_at,
                    "reason": row.reason}
        return {**current.model_dump(), **meta}

    def set(self, values: ThresholdSet, changed_by: str, reason: str) -> ThresholdSet:
        with self.engine.begin() as conn:
            version = conn.execute(thresholds.insert().values(
                model=values.model, changed_by=changed_by, changed_at=datetime.now(UTC),
                reason=reason, **{b: getattr(values, b) for b in BANDS}
            ).returning(thresholds.c.version)).scalar_one()
        saved = values.model_copy(update={"version": int(version)})
        with self._lock:
            self._cache[values.model] = (time.monotonic(), saved)
        return saved

    def history(self, model: str = "lead-conversion") -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(thresholds).where(thresholds.c.model == model)
                                .order_by(thresholds.c.version.desc())).all()
        return [dict(r._mapping) for r in rows]

    def get(self, version: int) -> ThresholdSet | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(thresholds).where(
                thresholds.c.version == version)).first()
        if row is None:
            return None
        return ThresholdSet(version=row.version, model=row.model,
                            **{b: getattr(row, b) for b in BANDS})
