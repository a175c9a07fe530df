"""Scorer settings: the library's settings plus what only a server needs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from propensity.monitoring.report import DEFAULT_DAYS
from propensity.settings import Settings
from serving.crm_config import CrmInboundSettings


class ServingSettings(Settings, CrmInboundSettings):
    data_path: Path | None = None
    """Export folder the funnel endpoint reports on (PROPENSITY_DATA_PATH)."""
    reload_seconds: float = 30.0
    log_flush_seconds: float = 0.5
    max_body_bytes: int = 16 * 1024 * 1024
    """A larger body is refused (413) while it is read, before any parsing."""
    body_timeout_seconds: float = 15.0
    """A body must have arrived whole within this, from the end of its headers (408)."""
    header_timeout_seconds: float = 5.0
    """A request's headers must have arrived within this, from the connection or the request's
    first byte (408, closed): what `propensity serve` runs enforces it (`EdgeProtocol`)."""
    max_header_bytes: int = 64 * 1024
    """The request line and headers together (431, closed)."""
    max_connections: int = 500
    """Open connections per worker; past it a new one is answered 503 with Retry-After."""
    max_leads: int = 1000
    max_events: int = 10_000
    """Events per lead."""
    max_contacts: int = 500
    """Contacts per account (`/v1/accounts/score`, and a lead's `account.contacts`)."""
    max_contact_events: int = 1000
    max_account_events: int = 5000
    """Events of all an account's contacts together: what an account score costs grows with
    them (200,000 took 83 s)."""
    max_funnel_groups: int = 200
    """`/v1/funnel?by=COLUMN` refuses a column with more distinct values (lead_id, ...)."""
    funnel_cache_bytes: int = 32 * 1024 * 1024
    """Funnel reports kept in memory, by their JSON size, least recently used out first."""
    answer_wait_seconds: float = 5.0
    """How long a funnel, forecast or backtest request waits for an answer not cached yet;
    past it the answer is 202 with Retry-After, and the computation goes on (one at a time per
    worker) so that asking again gets it. Under schemathesis's 10 s response limit."""
    key_cache_seconds: float = 1.0
    """How long a worker trusts a key it has checked: a revoked key stops within this."""
    spool_dir: Path | None = None
    """Where score-log rows wait while the database is down, and refused rows are kept
    (default: a `spool` folder beside the models directory)."""
    spool_max_bytes: int = 256 * 1024 * 1024
    """Past this the spool refuses new scores (503) rather than fill the disk."""
    log_durable: bool = True
    """A score is answered only once its log row is on local disk (one fdatasync for the
    requests scored together): a `kill -9` of a worker or of the server
    loses nothing.
    False answers first and writes the rows within `log_flush_seconds` (faster; a crash loses
    what was not written yet). PROPENSITY_LOG_DURABLE."""
    log_backlog_degraded: int = 10_000
    """Rows acknowledged and not yet in the database past which /readyz says degraded."""
    log_max_memory_rows: int = 100_000
    """Score log rows held in memory at most: past it they wait on disk only (durable), or
    new scores are refused with 503 (not durable, and the spool's disk refuses them)."""
    monitor_days: int = DEFAULT_DAYS
    """The window /metrics' drift and calibration gauges cover (PROPENSITY_MONITOR_DAYS)."""
    monitor_seconds: float = 300.0
    """How long /metrics reuses the gauges' report before computing it again."""
    models: list[str] | None = None
    """The models the scorer loads; None: every defined target's (`propensity.targets`, and
    those `target_modules` define), known only once the scorer has imported them."""


@lru_cache
def get_serving_settings() -> ServingSettings:
    return ServingSettings()
