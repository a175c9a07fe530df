"""API keys: shown once at creation, stored as SHA-256 hashes, each with scopes.

`score` is for CRMs, `outcomes` for a CRM webhook that only reports outcomes (a `score` key
may report them too), `monitor` for reading the monitoring report (dashboards, cron jobs: it
reads every served score's figures, so a CRM's key does not), `admin` for marketing ops and
promotion (admin implies the others). Keys are
256-bit random tokens, so a plain hash (no salt, no slow KDF) is the right tool: there is no
dictionary to attack, and a lookup stays one indexed query.

A key can expire (`expires_at`) and be revoked (`revoked_at`; the row stays for the audit
trail). Every worker trusts a key it has checked for `ttl` seconds only, so a revocation or an
expiry takes effect everywhere within that bound without any message between workers. While
the database is unreachable a key already checked stays trusted (nothing can be revoked then
anyway) and an unseen one cannot be checked.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from propensity.database import api_keys
from propensity.problems import PropensityError
from propensity.timestamps import maybe_utc

SCOPES = ("score", "outcomes", "monitor", "admin")
PREFIX = "prop_"


class KeyUnavailable(Exception):
    """The key could not be checked: the database did not answer."""


@dataclass(frozen=True)
class KeyInfo:
    name: str
    scopes: frozenset[str]
    expires_at: datetime | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(engine: sa.Engine, name: str, scopes: list[str],
               expires_at: datetime | None = None) -> str:
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ValueError(f"scopes are {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
    now = datetime.now(UTC)
    if expires_at is not None and maybe_utc(expires_at) <= now:  # type: ignore[operator]
        raise ValueError(f"the expiry {expires_at:%Y-%m-%d %H:%M} is in the past")
    key = PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(api_keys.insert().values(name=name, key_hash=digest(key),
                                              scopes=",".join(sorted(set(scopes))),
                                              created_at=now, expires_at=maybe_utc(expires_at)))
    return key


def list_keys(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every key ever created (never the key itself): id, name, scopes, dates, status."""
    now = datetime.now(UTC)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(
            api_keys.c.id, api_keys.c.name, api_keys.c.scopes, api_keys.c.created_at,
            api_keys.c.expires_at, api_keys.c.revoked_at).order_by(api_keys.c.id)).all()
    out = []
    for r in rows:
        expires, revoked = maybe_utc(r.expires_at), maybe_utc(r.revoked_at)
        status = ("revoked" if revoked is not None else
                  "expired" if expires is not None and expires <= now else "active")
        out.append({"id": r.id, "name": r.name, "scopes": r.scopes,
                    "created_at": maybe_utc(r.created_at), "expires_at": expires,
                    "revoked_at": revoked, "status": status})
    return out


def _active(conn: sa.Connection, key_id: int) -> Any:
    row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
    if row is None:
        raise PropensityError(f"no API key with id {key_id}: `propensity keys list` shows them")
    if row.revoked_at is not None:
        raise PropensityError(f"key {key_id} ({row.name}) is already revoked")
    return row


def revoke_key(engine: sa.Engine, key_id: int) -> str:
    """Mark a key revoked; returns its name. Servers stop accepting it within their ttl."""
    with engine.begin() as conn:
        row = _active(conn, key_id)
        conn.execute(api_keys.update().where(api_keys.c.id == key_id)
                     .values(revoked_at=datetime.now(UTC)))
    return str(row.name)


def rotate_key(engine: sa.Engine, key_id: int) -> str:
    """A new key with the same name, scopes and expiry; the old one revoked in the same
    transaction. Returns the new key (shown once)."""
    key = PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        row = _active(conn, key_id)
        conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(revoked_at=now))
        conn.execute(api_keys.insert().values(name=row.name, key_hash=digest(key),
                                              scopes=row.scopes, created_at=now,
                                              expires_at=row.expires_at))
    return key


class KeyRing:
    """Verifies keys against the database, trusting each answer for `ttl` seconds."""

    def __init__(self, engine: sa.Engine, ttl: float = 1.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self._cache: dict[str, tuple[float, KeyInfo | None]] = {}
        self._lock = threading.Lock()

    def cached(self, key: str) -> KeyInfo | None:
        """The key's holder if it was checked within the ttl, without touching the database
        (for an event loop, which must not wait on a query); None means "ask `lookup`"."""
        hit = self._cache.get(digest(key))
        if hit is None or time.monotonic() - hit[0] >= self.ttl:
            return None
        return self._valid(hit[1])

    def refused(self, key: str) -> bool:
        """True when the key was checked within the ttl and found unknown, revoked or expired:
        refused without touching the database (a key never checked, or checked longer ago,
        is False: only `lookup` can tell)."""
        hit = self._cache.get(digest(key))
        return (hit is not None and time.monotonic() - hit[0] < self.ttl
                and self._valid(hit[1]) is None)

    def lookup(self, key: str) -> KeyInfo | None:
        """The key's holder, or None for an unknown, revoked or expired key."""
        h = digest(key)
        hit = self._cache.get(h)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return self._valid(hit[1])
        try:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(
                    api_keys.c.name, api_keys.c.scopes, api_keys.c.expires_at).where(
                    api_keys.c.key_hash == h, api_keys.c.revoked_at.is_(None))).first()
        except sa.exc.SQLAlchemyError as exc:
            if hit is not None:
                return self._valid(hit[1])
            raise KeyUnavailable(str(exc)) from None
        info = None if row is None else KeyInfo(row.name, frozenset(row.scopes.split(",")),
                                                maybe_utc(row.expires_at))
        with self._lock:
            if len(self._cache) > 10_000:  # anyone can send random keys: stay bounded
                self._cache.clear()
            self._cache[h] = (now, info)
        return self._valid(info)

    @staticmethod
    def _valid(info: KeyInfo | None) -> KeyInfo | None:
        if info is None or (info.expires_at is not None
                            and info.expires_at <= datetime.now(UTC)):
            return None
        return info
