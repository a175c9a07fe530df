"""A model's way from data to champion, written once: train -> register -> the gate.

The CLI's `train` and `retrain`, the notebooks, the tests and the benchmarks all go through
`train_and_register` (or `register_and_gate`, for a result trained elsewhere: on Spark, or
shown before it is registered), so what a version records of its data, its input example and
when the gate is asked cannot differ between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from propensity.export_reader import fingerprint
from propensity.registry import (
    CHAMPION,
    Note,
    Promotion,
    Registered,
    configure,
    log_and_register,
    promote,
    table_model_name,
    version_of,
)
from propensity.settings import Settings
from propensity.single_table import SingleTable
from propensity.tables import CrmExport
from propensity.targets import target_named
from propensity.training import TrainConfig, TrainResult, train_export, train_table

Gate = Literal["first", "always", "force", "never"]
"""When the new version is put to the gate: `first` only when the model has no champion yet
(`propensity train`); `always` (`retrain`); `force`: promoted without it (benchmarks and tests
that need a champion whatever it scores); `never`: it stays challenger."""


def _silent(_: str) -> None:
    """No progress notes (library callers that show none)."""


@dataclass
class Trained:
    result: TrainResult
    registered: Registered
    promotion: Promotion | None
    """The gate's answer, None when it was not asked."""

    @property
    def refused(self) -> bool:
        """The gate was asked and said no: nothing new ships (for `train`, a first champion,
        so no champion at all). The commands exit 1 on it: a script's next step (`serve`,
        `score`) must not run as if a model had shipped."""
        return self.promotion is not None and not self.promotion.promoted


@dataclass
class _Facts:
    """What registering needs of the data besides the result."""

    data: dict[str, str]
    example: pd.DataFrame
    holdout_rows: pd.DataFrame | None
    name: str


def _facts(result: TrainResult, data: CrmExport | SingleTable, source: Path,
           engine: str) -> _Facts:
    """What a version records of its data (path and fingerprint: promotion re-reads it only
    when unchanged), its input example and, for a table, its holdout's raw rows."""
    if isinstance(data, SingleTable):
        columns = [c for c in data.frame.columns if c != data.target]
        rows = data.frame.iloc[result.holdout["row"].to_numpy()][columns].reset_index(drop=True)
        return _Facts({"path": str(source.resolve()), "fingerprint": fingerprint(source),
                       "target": data.target}, rows.head(3), rows, table_model_name(data.target))
    return _Facts({"path": str(source.resolve()), "engine": engine,
                   "fingerprint": fingerprint(source) if source.is_dir() else str(source)},
                  target_named(result.target).entity.example(data, result.holdout), None,
                  result.target)


def register_and_gate(result: TrainResult, data: CrmExport | SingleTable, source: Path | str,
                      *, gate: Gate = "first", name: str | None = None,
                      engine: str = "pandas", settings: Settings | None = None,
                      note: Note = _silent) -> Trained:
    """Register `result` (trained on `data`, read from `source`) as challenger under `name`
    (default: its target's, or `table-TARGET`), then ask the gate as `gate` says."""
    facts = _facts(result, data, Path(source), engine)
    reg = log_and_register(result, data=facts.data, input_example=facts.example,
                           holdout_rows=facts.holdout_rows, name=name or facts.name,
                           settings=settings, note=note)
    asked = gate in ("always", "force") or (
        gate == "first" and version_of(configure(settings), reg.name, CHAMPION) is None)
    if not asked:
        return Trained(result, reg, None)
    note(f"the gate for {reg.name} v{reg.version}" + (" (forced)" if gate == "force" else ""))
    promotion = promote(reg.name, reg.version, force=gate == "force", settings=settings,
                        note=note)
    return Trained(result, reg, promotion)


def train(data: CrmExport | SingleTable, config: TrainConfig,
          progress: Note | None = None) -> TrainResult:
    """An export's model (out-of-time evaluation) or a single table's (stratified)."""
    if isinstance(data, SingleTable):
        return train_table(data, config, progress)
    return train_export(data, config, progress)


def train_and_register(data: CrmExport | SingleTable, config: TrainConfig,
                       source: Path | str, *, gate: Gate = "first", name: str | None = None,
                       settings: Settings | None = None,
                       progress: Note = _silent) -> Trained:
    """Train on `data` (read from `source`), register the result as challenger, then ask the
    gate as `gate` says."""
    result = train(data, config, progress)
    return register_and_gate(result, data, source, gate=gate, name=name, settings=settings,
                             note=progress)
