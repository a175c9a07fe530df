"""Active thresholds per model in the database: every change a new version, none forgotten.

The active set is the highest version of the model; restoring an old one writes it again as a
new version, so the history reads as what actually happened. Workers cache the active set for
at most `ttl` seconds, and the worker that made a change sees it at once.

A change names the version it was based on (`base_version`); the database keeps at most one
successor per version (a unique constraint), so of two admins who read the same version and
both change it, the second is refused with `StaleVersion` instead of undoing the first.

While the database is unreachable, `active` answers with the last set it read (scoring goes
on with it) and tries again once per `ttl`; `stale` says since when it could not refresh.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from propensity.database import thresholds
from propensity.problems import PropensityError
from propensity.targets import LEAD_CONVERSION
from propensity.thresholds import BANDS, ThresholdSet
from propensity.timestamps import maybe_utc

log = logging.getLogger("propensity.thresholds")


class StaleVersion(PropensityError):
    """The change was based on a version that is no longer the active one."""

    def __init__(self, base: int, current: int) -> None:
        super().__init__(f"the thresholds changed since version {base}: version {current} is "
                         "active now; read it and apply your change to it")
        self.base = base
        self.current = current


class ThresholdStore:
    def __init__(self, engine: sa.Engine, ttl: float = 1.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self._cache: dict[str, tuple[float, ThresholdSet]] = {}
        self._lock = threading.Lock()
        self.stale_since: float | None = None
        """time.monotonic() of the first failed refresh; None while the database answers."""

    def _read(self, model: str) -> ThresholdSet:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(thresholds).where(thresholds.c.model == model)
                               .order_by(thresholds.c.version.desc()).limit(1)).first()
        return ThresholdSet(model=model) if row is None else ThresholdSet(
            version=row.version, model=model, **{b: getattr(row, b) for b in BANDS})

    def fresh(self, model: str = LEAD_CONVERSION) -> ThresholdSet | None:
        """The active set if read within the ttl, without touching the database (for an
        event loop, which must not wait on a connection that may hang); None: call active."""
        hit = self._cache.get(model)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        return None

    def active(self, model: str = LEAD_CONVERSION) -> ThresholdSet:
        hit = self._cache.get(model)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        try:
            found = self._read(model)
        except sa.exc.SQLAlchemyError:
            if hit is None:
                raise
            if self.stale_since is None:
                log.warning("thresholds: the database is unreachable; scoring with version %d",
                            hit[1].version)
                self.stale_since = time.monotonic()
            with self._lock:  # try again in a ttl, not on every request
                self._cache[model] = (time.monotonic(), hit[1])
            return hit[1]
        self.stale_since = None
        with self._lock:
            self._cache[model] = (time.monotonic(), found)
        return found

    def current(self, model: str = LEAD_CONVERSION) -> ThresholdSet:
        """The active set as the database holds it now, not as this worker's cache did up to
        a ttl ago: what an admin reads before a change must be what the change is checked
        against (else a read on one worker, then a PUT, is a 409). The last known set while
        the database is unreachable."""
        try:
            found = self._read(model)
        except sa.exc.SQLAlchemyError:
            return self.active(model)
        with self._lock:
            self._cache[model] = (time.monotonic(), found)
        return found

    def details(self, model: str = LEAD_CONVERSION, version: int | None = None,
                ) -> dict[str, Any]:
        """A version (default the active one, read now) with who changed it, when and why."""
        current = self.current(model) if version is None else self.get(version)
        if current is None:
            raise KeyError(version)
        meta: dict[str, Any] = {"changed_by": None, "changed_at": None, "reason": "defaults"}
        if current.version:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(thresholds).where(
                    thresholds.c.version == current.version)).one()
            meta = {"changed_by": row.changed_by, "changed_at": maybe_utc(row.changed_at),
                    "reason": row.reason}
        return {**current.model_dump(), **meta}

    def set(self, values: ThresholdSet, changed_by: str, reason: str,
            base_version: int) -> ThresholdSet:
        """Write `values` as the successor of `base_version`; StaleVersion when that is not
        the active version any more (or another change to it won the race). Values equal to
        the active version's are not written again: the active set comes back, its version
        unchanged (a history of identical versions says nothing)."""
        try:
            with self.engine.begin() as conn:
                current = conn.execute(sa.select(sa.func.max(thresholds.c.version)).where(
                    thresholds.c.model == values.model)).scalar_one_or_none() or 0
                if current != base_version:
                    raise StaleVersion(base_version, int(current))
                active = self._row(conn, values.model, int(current))
                if active.same_values(values):
                    return active
                version = conn.execute(thresholds.insert().values(
                    model=values.model, changed_by=changed_by, changed_at=datetime.now(UTC),
                    reason=reason, base_version=base_version,
                    **{b: getattr(values, b) for b in BANDS}
                ).returning(thresholds.c.version)).scalar_one()
        except sa.exc.IntegrityError:
            raise StaleVersion(base_version, self._read(values.model).version) from None
        saved = values.model_copy(update={"version": int(version)})
        with self._lock:
            self._cache[values.model] = (time.monotonic(), saved)
        return saved

    def history(self, model: str = LEAD_CONVERSION) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(thresholds).where(thresholds.c.model == model)
                                .order_by(thresholds.c.version.desc())).all()
        return [{**r._mapping, "changed_at": maybe_utc(r.changed_at)} for r in rows]

    def get(self, version: int) -> ThresholdSet | None:
        """Version `version`; 0 is the defaults (what `restore 0` brings back)."""
        if version == 0:
            return ThresholdSet()
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(thresholds).where(
                thresholds.c.version == version)).first()
        if row is None:
            return None
        return ThresholdSet(version=row.version, model=row.model,
                            **{b: getattr(row, b) for b in BANDS})

    @staticmethod
    def _row(conn: sa.Connection, model: str, version: int) -> ThresholdSet:
        """Version `version` of `model` inside a transaction (0: the defaults)."""
        row = conn.execute(sa.select(thresholds).where(thresholds.c.version == version)
                           ).first() if version else None
        return ThresholdSet(model=model) if row is None else ThresholdSet(
            version=row.version, model=model, **{b: getattr(row, b) for b in BANDS})
