"""Scorer settings: the library's settings plus what only a server needs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from propensity.settings import Settings


class ServingSettings(Settings):
    database_url: str | None = None
    """SQLAlchemy URL of the score log, keys and thresholds (PROPENSITY_DATABASE_URL);
    default a SQLite file in the model store."""
    data_path: Path | None = None
    """Export folder the funnel endpoint reports on (PROPENSITY_DATA_PATH)."""
    reload_seconds: float = 30.0
    log_flush_seconds: float = 0.5
    max_leads: int = 1000
    max_events: int = 10_000
    models: list[str] = Field(default_factory=lambda: [
        "lead-conversion", "stage-advancement", "account-propensity"])

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.models_dir / 'propensity.db').resolve()}"


@lru_cache
def get_serving_settings() -> ServingSettings:
    return ServingSettings()
