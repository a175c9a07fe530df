"""Small synthetic exports and models trained by the real pipeline, shared by model tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from propensity.export import CrmExport, load_export
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.training import TrainConfig


def synthetic_export(directory: Path, leads: int, seed: int) -> CrmExport:
    tables, truth = generate_export(SyntheticConfig(n_leads=leads, seed=seed))
    write_export(tables, truth, directory)
    return load_export(directory)


@pytest.fixture(scope="session")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small-export")
    synthetic_export(path, 4000, seed=21)
    return path


@pytest.fixture(scope="session")
def small_export(small_dir: Path) -> CrmExport:
    return load_export(small_dir)


def quick_config(**changes: object) -> TrainConfig:
    """A fast training run: fewer snapshots, fewer rounds."""
    base = {"snapshots": {"every_days": 28, "horizon_days": 90},
            "booster": {"learning_rate": 0.1}}
    base.update(changes)
    return TrainConfig.model_validate(base)
