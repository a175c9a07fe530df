"""One typed Settings object, read from the environment (and `.env`) once, overridable in tests."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_models_dir() -> Path:
    """The checkout's `models/` folder when running from one, else ~/.propensity/models:
    never relative to the working directory, so a notebook in `notebooks/` and the CLI at the
    root see the same registry."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "models").is_dir():
        return checkout / "models"
    return Path.home() / ".propensity" / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROPENSITY_", env_file=".env", extra="ignore")

    models_dir: Path = Field(default_factory=default_models_dir)
    """Local model store (PROPENSITY_MODELS_DIR): MLflow's SQLite database and artifacts."""
    mlflow_tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")
    experiment: str = "propensity"
    database_url: str | None = None
    """SQLAlchemy URL of the score log, API keys and thresholds (PROPENSITY_DATABASE_URL);
    default a SQLite file in the model store."""
    target_modules: list[str] = Field(default_factory=list)
    """Modules whose import defines a deployment's own targets (`propensity.targets.define`),
    imported by the scorer before it loads its champions (PROPENSITY_TARGET_MODULES, a JSON
    list): a model the library does not name is served without editing the library."""

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.models_dir / 'mlflow.db').resolve()}"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.models_dir / 'propensity.db').resolve()}"

    @property
    def artifact_location(self) -> str:
        return (self.models_dir / "artifacts").resolve().as_uri()


@lru_cache
def get_settings() -> Settings:
    return Settings()
