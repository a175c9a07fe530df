"""Scorer settings: the library's settings plus what only a server needs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from propensity.settings import Settings


class ServingSettings(Settings):
    data_path: Path | None = None
    """Export folder the funnel endpoint reports on (PROPENSITY_DATA_PATH)."""
    reload_seconds: float = 30.0
    log_flush_seconds: float = 0.5
    max_leads: int = 1000
    max_events: int = 10_000
    monitor_days: int = 28
    """The window /metrics' drift and calibration gauges cover (PROPENSITY_MONITOR_DAYS)."""
    monitor_seconds: float = 300.0
    """How long /metrics reuses the gauges' report before computing it again."""
    models: list[str] = Field(default_factory=lambda: [
        "lead-conversion", "stage-advancement", "account-propensity"])


@lru_cache
def get_serving_settings() -> ServingSettings:
    return ServingSettings()
