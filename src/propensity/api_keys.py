"""API keys: shown once at creation, stored as SHA-256 hashes, each with scopes.

`score` is for CRMs, `admin` for marketing ops and promotion (admin implies score). Keys are
256-bit random tokens, so a plain hash (no salt, no slow KDF) is the right tool: there is no
dictionary to attack, and a lookup stays one indexed query, cached after the first use.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from propensity.database import api_keys

SCOPES = ("score", "admin")
PREFIX = "prop_"


@dataclass(frozen=True)
class KeyInfo:
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(engine: sa.Engine, name: str, scopes: list[str]) -> str:
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ValueError(f"scopes are {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
    key = PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(api_keys.insert().values(name=name, key_hash=digest(key),
                                              scopes=",".join(sorted(set(scopes))),
                                              created_at=datetime.now(UTC)))
    return key


class KeyRing:
    """Verifies keys against the database, caching the ones it has seen."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._cache: dict[str, KeyInfo] = {}
        self._lock = threading.Lock()

    def cached(self, key: str) -> KeyInfo | None:
        """The key's holder if it was seen before, without touching the database (for an
        event loop, which must not wait on a query)."""
        return self._cache.get(digest(key))

    def lookup(self, key: str) -> KeyInfo | None:
        h = digest(key)
        found = self._cache.get(h)
        if found is not None:
            return found
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys.c.name, api_keys.c.scopes).where(
                api_keys.c.key_hash == h)).first()
        if row is None:
            return None
        info = KeyInfo(row.name, frozenset(row.scopes.split(",")))
        with self._lock:
            self._cache[h] = info
        return info
