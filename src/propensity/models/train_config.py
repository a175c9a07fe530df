"""How one training run is configured (`training/*.toml` files hold these), and how it says
what it is doing: read by the set builders, the fit loop and both engines alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from propensity.features import FeatureConfig
from propensity.models.bundle import LEARNERS, Learner
from propensity.odoo_history import OdooPlsConfig
from propensity.problems import PropensityError
from propensity.snapshots import SnapshotConfig
from propensity.targets import LEAD_CONVERSION, Target, UnknownTarget, target_named

Progress = Callable[[str], None]


class PointsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error

    event_points: dict[str, float] | None = None
    attribute_points: dict[str, dict[str, float]] | None = None
    numeric_thresholds: dict[str, list[list[float]]] | None = None


class TrainConfig(BaseModel):
    """One training run; `training/*.toml` files hold these."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error

    model: str = LEAD_CONVERSION
    """A target's name (`propensity.targets`)."""
    snapshots: SnapshotConfig = Field(default_factory=SnapshotConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    holdout_share: float = Field(0.25, gt=0, lt=1)
    """Share of the (latest) snapshot times, or of single-table rows, held out for evaluation."""
    folds: int = Field(4, ge=2, le=10)
    """Folds of whole entities (or stratified, for a table) for choosing and calibrating."""
    learners: list[Learner] = Field(default_factory=lambda: list(LEARNERS))
    search: bool = True
    """Try the small LightGBM grid (`models/booster.py`), not only its default setting."""
    max_search_rows: int = 150_000
    """Choose the learner on a sample of at most this many rows (whole leads); fits use all."""
    weights: Literal["lead", "row"] = "lead"
    """`lead`: a lead open at many snapshots counts once; `row`: every snapshot row counts."""
    booster: dict[str, Any] = Field(default_factory=dict)
    """LightGBM parameters applied over every setting tried (e.g. num_threads)."""
    points: PointsConfig = Field(default_factory=PointsConfig)
    odoo: OdooPlsConfig = Field(default_factory=OdooPlsConfig)
    """Where the naive-Bayes baseline (Odoo's lead scoring) finds teams and fields."""
    seed: int = 13
    outlook: bool = True
    """Fit the lead's outlook (time to convert, deal amount) with a model whose target ships
    one (`Target.outlook`); false leaves it out (the score's outlook fields are then null)."""

    @field_validator("model")
    @classmethod
    def _known_target(cls, name: str) -> str:
        try:
            target_named(name)
        except UnknownTarget as exc:  # a ValueError, so the file and field are named
            raise ValueError(str(exc)) from None
        return name

    @property
    def target(self) -> Target:
        return target_named(self.model)

    @classmethod
    def from_file(cls, path: Path | str) -> TrainConfig:
        """A config from a TOML file such as `training/default.toml`."""
        import tomllib

        try:
            return cls.model_validate(tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PropensityError(f"{path}: {exc}") from exc


def note(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)
