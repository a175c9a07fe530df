"""What a model predicts, defined once: its entity, its label, how its rows and matrix are built.

Training (pandas and Spark), the bundle, batch scoring, the registry, monitoring and the
scorer's settings all read a model's `Target` from here, never its name: adding a model is one
`define(Target(...))` (plus its feature families, if it needs new ones).

- An `Entity` is what a row is about (a lead, an account): its key column, the model matrix of
  entity rows (key, as_of) built by the feature plan, its columns, and the pyfunc's input
  example of a few rows.
- A `Target` is a question about an entity: its entity frame (which entities are open at each
  snapshot time t, labelled by what happened in (t, t + horizon]), its label column, the
  words a refusal uses, and which baselines it is judged against.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from propensity.problems import PropensityError

if TYPE_CHECKING:  # the CLI reads the names at start-up: the feature code loads when used
    import numpy as np

    from propensity.coding import Column
    from propensity.features.definitions import FeaturePlan
    from propensity.funnel.journeys import Journeys
    from propensity.snapshots import LeadLabel, SnapshotConfig
    from propensity.tables import CrmExport, ExportIndex

LEAD_CONVERSION = "lead-conversion"
"""The main model: the scorer's probability, the thresholds, monitoring and the CRM push."""
STAGE_ADVANCEMENT = "stage-advancement"
"""The scorer's `next_stage`."""
ACCOUNT_PROPENSITY = "account-propensity"
"""`/v1/accounts/score`."""
BASELINES: tuple[str, ...] = ("points", "naive_bayes", "logistic_regression")
"""Every baseline the gate knows: a model that one of its target's baselines beats on the
holdout is not promoted."""


@dataclass(frozen=True)
class Entity:
    """What a model row is about, and how its model matrix is built."""

    name: str
    key: str
    """The id column of an entity frame (with `as_of`)."""
    columns: Callable[[FeaturePlan], list[Column]]
    """The model matrix's columns under a feature plan."""
    matrix: Callable[[CrmExport | ExportIndex, FeaturePlan, pd.DataFrame], np.ndarray]
    """(export or its index, plan, entity rows) -> the model matrix, point in time at each
    row's as_of."""
    example: Callable[[CrmExport, pd.DataFrame], pd.DataFrame]
    """(export, holdout entity rows) -> a few pyfunc input rows (the registered example)."""


def _lead_columns(plan: FeaturePlan) -> list[Column]:
    return list(plan.columns)


def _lead_matrix(export: CrmExport | ExportIndex, plan: FeaturePlan,
                 entities: pd.DataFrame) -> np.ndarray:
    from propensity.features.batch import lead_feature_matrix

    return lead_feature_matrix(export, plan, entities)


def _lead_example(export: CrmExport, holdout: pd.DataFrame) -> pd.DataFrame:
    from propensity.rows import lead_rows

    return lead_rows(export, holdout[["lead_id", "as_of"]].head(3))


def _account_columns(plan: FeaturePlan) -> list[Column]:
    from propensity.features.account import account_columns

    return account_columns(plan)


def _account_matrix(export: CrmExport | ExportIndex, plan: FeaturePlan,
                    entities: pd.DataFrame) -> np.ndarray:
    """An account's row: its leads' features summed up (`features/account.py`)."""
    from propensity.coding import as_matrix
    from propensity.features.account import build_account_features

    return as_matrix(build_account_features(export, plan, entities), _account_columns(plan))


def _account_example(export: CrmExport, holdout: pd.DataFrame) -> pd.DataFrame:
    from propensity.rows import account_rows

    return account_rows(export, holdout[["account_id", "as_of"]])


LEAD = Entity(name="lead", key="lead_id", columns=_lead_columns, matrix=_lead_matrix,
              example=_lead_example)
ACCOUNT = Entity(name="account", key="account_id", columns=_account_columns,
                 matrix=_account_matrix, example=_account_example)
ENTITIES: tuple[Entity, ...] = (LEAD, ACCOUNT)


def entity_of(frame: pd.DataFrame) -> Entity:
    """The entity whose key an entity frame holds (an account frame may name leads too: the
    account key wins)."""
    for entity in sorted(ENTITIES, key=lambda e: e is LEAD):
        if entity.key in frame:
            return entity
    raise PropensityError(f"an entity frame has one of {', '.join(e.key for e in ENTITIES)} "
                          f"(got {', '.join(map(str, frame.columns))})")


EntityFrame = Callable[..., pd.DataFrame]
"""(export, times, horizon_days, *, journeys, labelled, snapshots, stale_days, label) ->
entity rows (key, as_of[, label]): `Target.entities` documents the arguments."""


@dataclass(frozen=True)
class Target:
    """One model's question. `frame` builds its entity frame; the default (`lead_frame`)
    takes the leads open at each time and labels them by `lead_label`."""

    name: str
    entity: Entity
    label: str
    """The entity frame's 0/1 column."""
    outcomes: tuple[str, str]
    """(the outcome counted, the entities without it): a refusal's words."""
    frame: EntityFrame
    lead_label: LeadLabel | None = None
    """`lead_frame`'s label; None: `snapshots.LEAD_LABELS`' label named `label`."""
    baselines: tuple[str, ...] = BASELINES
    outlook: bool = False
    """Ship the lead's outlook with the model (time to convert, deal amount: `models.outlook`),
    fitted at training time on the model's own features: the scorer's probability model
    only, since a lead's `horizons` and `expected_revenue` go with its probability."""

    def entities(self, export: CrmExport, times: list[pd.Timestamp], horizon_days: int, *,
                 journeys: Journeys, labelled: bool = True,
                 snapshots: SnapshotConfig | None = None,
                 stale_days: int | None = None) -> pd.DataFrame:
        """The entities open at each time (with `snapshots`: training's sample and stale
        rule; `stale_days`: a scoring model's), labelled unless `labelled` is False;
        `journeys`: the export's, built once by the caller (`funnel.journeys`)."""
        return self.frame(self, export, times, horizon_days, journeys=journeys,
                          labelled=labelled, snapshots=snapshots, stale_days=stale_days)


def lead_frame(target: Target, export: CrmExport, times: list[pd.Timestamp], horizon_days: int,
               *, journeys: Journeys, labelled: bool, snapshots: SnapshotConfig | None,
               stale_days: int | None) -> pd.DataFrame:
    """Open leads, labelled by the target's `lead_label`."""
    from propensity.snapshots import LEAD_LABELS, lead_entities

    label = target.lead_label or LEAD_LABELS[target.label]
    return lead_entities(export, times, horizon_days, journeys=journeys, labelled=labelled,
                         config=snapshots, stale_days=stale_days,
                         labels={target.label: label})


def account_frame(target: Target, export: CrmExport, times: list[pd.Timestamp],
                  horizon_days: int, *, journeys: Journeys, labelled: bool,
                  snapshots: SnapshotConfig | None, stale_days: int | None) -> pd.DataFrame:
    """Accounts that had not bought by t (no stale rule and no sample: an account is open
    until it buys)."""
    from propensity.snapshots import account_entities

    return account_entities(export, times, horizon_days, journeys=journeys, labelled=labelled)


_TARGETS: dict[str, Target] = {}


def define(target: Target) -> Target:
    """Add a model to every part that reads targets (training, scoring, the registry's known
    names, the scorer's settings); a name defined twice is a mistake."""
    if target.name in _TARGETS and _TARGETS[target.name] != target:
        raise ValueError(f"the target {target.name} is defined already")
    unknown = set(target.baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"{target.name}: unknown baselines {', '.join(sorted(unknown))}")
    _TARGETS[target.name] = target
    return target


def forget(name: str) -> None:
    """Remove a target `define` added (a test's own target, when the test ends)."""
    _TARGETS.pop(name, None)


class UnknownTarget(PropensityError):
    """A model name no target defines (a mistyped option: the CLI exits 2)."""

    exit_code = 2


def target_named(name: str) -> Target:
    """The target of a model name, or a one-line error listing the targets there are."""
    try:
        return _TARGETS[name]
    except KeyError:
        raise UnknownTarget(f"no target {name!r}: the targets are "
                            f"{', '.join(target_names())}") from None


def import_targets(modules: Sequence[str]) -> tuple[str, ...]:
    """Import the modules that define a deployment's own targets (`Settings.target_modules`),
    then every defined target: a target defined in one process is unknown to another (a
    scorer) until that one imports its definition too."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise PropensityError(f"the target module {module!r} (PROPENSITY_TARGET_MODULES) "
                                  f"cannot be imported: {exc}") from None
    return target_names()


def target_names() -> tuple[str, ...]:
    """Every defined target, in definition order (the built-in three first)."""
    return tuple(_TARGETS)


define(Target(LEAD_CONVERSION, LEAD, "converted",
              ("conversions", "leads that never converted"), lead_frame, outlook=True))
define(Target(STAGE_ADVANCEMENT, LEAD, "advanced",
              ("advancements", "leads that never advanced"), lead_frame))
define(Target(ACCOUNT_PROPENSITY, ACCOUNT, "bought",
              ("purchases", "accounts that never bought"), account_frame))
