"""MLflow: every run logged, every model registered, promotion gated and reversible.

Registered models are named for their target (`propensity.targets`: `lead-conversion`,
`stage-advancement`, `account-propensity`), or for a single table's. A new version gets the
alias `challenger`; `promote` moves `champion` to it only when it beats the current champion
on the challenger's own out-of-time holdout (both re-scored on the same rows), or when
forced; the champion it replaces is remembered for `rollback`. Models are always referred to
by alias, never by stage or "latest". It sits above `models/` (the bundle, the learners):
it imports training, scoring and monitoring, which import `models`.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from propensity.problems import PropensityError
from propensity.settings import Settings, get_settings
from propensity.targets import target_named, target_names

if TYPE_CHECKING:  # models, plots and scikit-learn are imported where used: `promote
    # --rollback`, `models` and the alias look-ups of every command need none of them
    from mlflow.entities.model_registry import RegisteredModel

    from propensity.models.bundle import ModelBundle
    from propensity.monitoring.reference import Reference
    from propensity.training import TrainResult

CHAMPION, CHALLENGER = "champion", "challenger"
PREVIOUS_TAG = "previous_champion"
CHAIN_TAG = "earlier_champions"
"""The champions replaced, oldest first, comma-separated: each rollback takes the last one
off, so a second rollback goes further back instead of forward again."""
KIND_TAG = "kind"
"""`export` or `table` on the registered model: what its versions score."""
TABLE_PREFIX = "table-"

Note = Callable[[str], None]


def _silent(_: str) -> None:
    """The default progress note: library callers that show no progress."""


class UnknownModel(PropensityError):
    """A model name that is neither a target's nor registered: a mistyped command
    line (the CLI exits 2), not a state of the registry."""

    exit_code = 2


def table_model_name(target: str) -> str:
    """The registered name of a single-table model of `target`: its own name, so that it
    never takes the aliases of the export models (MLflow refuses '/' and ':' in names)."""
    text = re.sub(r"[^a-z0-9_.-]+", "-", target.strip().lower()).strip("-.")
    return TABLE_PREFIX + (text or "target")


def configure(settings: Settings | None = None) -> MlflowClient:
    """Point MLflow at the configured store (created on first use, never at import)."""
    settings = settings or get_settings()
    if settings.tracking_uri.startswith("sqlite:"):
        settings.models_dir.mkdir(parents=True, exist_ok=True)
    # MLflow also exports the URI to MLFLOW_TRACKING_URI; put the environment back, or every
    # Settings() created later in this process would silently follow this store
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    with _quiet():  # the client creates (and migrates) a new store: chatter
        client = MlflowClient()
        if client.get_experiment_by_name(settings.experiment) is None:
            # a database store keeps artifacts in the local model store; a server its own
            remote = settings.tracking_uri.startswith(("http:", "https:", "databricks"))
            location = None if remote else settings.artifact_location
            client.create_experiment(settings.experiment, artifact_location=location)
        mlflow.set_experiment(settings.experiment)
    return client


@dataclass
class Registered:
    name: str
    version: str
    run_id: str
    holdout_auc: float
    gate: dict[str, Any]


HOLDOUT_FEATURES = "holdout_features.parquet"
MONITORING, REFERENCE_FILE = "monitoring", "reference.json"
EVALUATION_BUNDLE = "bundle"


def _same_kind(client: MlflowClient, name: str, kind: str) -> None:
    """Refuse to register a version under a name whose versions score the other shape: their
    champion and challenger could not be compared, nor one stand in for the other."""
    try:
        held = (client.get_registered_model(name).tags or {}).get(KIND_TAG)
    except mlflow.exceptions.MlflowException:
        return
    if held is not None and held != kind:
        what = {"table": "a single table", "export": "exports"}
        raise PropensityError(f"{name} holds models that score {what.get(held, held)}, this "
                              f"one scores {what.get(kind, kind)}: register it under another "
                              "name (train --table ... --name NAME)")


PYFUNC_PACKAGES = ("propensity", "mlflow", "numpy", "pandas", "pyarrow", "scipy",
                   "scikit-learn", "lightgbm", "pydantic")
"""What the pyfunc imports when it loads and scores, pinned to the installed versions. Named
here, not inferred: MLflow's inference starts a Python process that loads the model to see
what it imports (11 of the 13 s registering took on the demo), and missed lightgbm."""


def _pyfunc_code() -> str:
    """The models-from-code file MLflow stores with each version (it loads the bundle)."""
    from importlib.util import find_spec

    spec = find_spec("propensity.pyfunc_model")
    assert spec is not None and spec.origin is not None
    return spec.origin


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    pins = []
    for package in PYFUNC_PACKAGES:
        try:
            pins.append(f"{package}=={installed(package)}")
        except PackageNotFoundError:  # run from a checkout without `pip install -e`
            pins.append(package)
    return pins


def _run_params(result: TrainResult, data: dict[str, Any]) -> dict[str, str]:
    """The run's parameters: the training config flattened, the data's description, the
    feature set and the learner chosen (each cut to MLflow's 500 characters)."""
    bundle = result.bundle
    flat = pd.json_normalize(result.params, sep=".").iloc[0].to_dict()
    params = {k: str(v)[:500] for k, v in flat.items()}
    params.update({f"data.{k}": str(v)[:500] for k, v in data.items()})
    if bundle.spec is not None:
        params["feature_set"] = bundle.spec.key
    params["learner"] = str(result.report["selection"]["chosen"])[:500]
    return params


def _run_metrics(result: TrainResult) -> dict[str, float]:
    """Every holdout metric of the model (`holdout.*`) and its baselines (`baseline.NAME.*`)."""
    return {f"{'holdout' if model == 'model' else f'baseline.{model}'}.{k}": float(v)
            for model, values in result.report["metrics"].items()
            for k, v in values.items()}


def _write_evaluation(result: TrainResult, folder: Path, name: str,
                      holdout_rows: pd.DataFrame | None) -> None:
    """The evaluation artifacts: the report (JSON, HTML), the holdout with every model's
    predictions, the evaluation model's matrix of it, its raw rows and the evaluation model."""
    from propensity.models.evaluation import dumps, report_html

    folder.mkdir()
    (folder / "evaluation.json").write_text(dumps(result.report))
    (folder / "evaluation.html").write_text(report_html(result.report, f"{name} evaluation"))
    result.holdout.to_parquet(folder / "holdout.parquet")
    features = pd.DataFrame(result.holdout_X, columns=result.evaluation_bundle.feature_names)
    features["__label__"] = result.holdout["label"].to_numpy()
    features.to_parquet(folder / HOLDOUT_FEATURES)
    if holdout_rows is not None:
        holdout_rows.to_parquet(folder / "holdout_rows.parquet")
    result.evaluation_bundle.save(folder / EVALUATION_BUNDLE)


def _log_pyfunc(result: TrainResult, tmpdir: Path, input_example: pd.DataFrame,
                name: str) -> str:
    """Log the bundle as a pyfunc registered under `name`; its new version. Every input but
    the lead's id and creation is optional in the signature, as in the contract."""
    from propensity.scoring import score_rows

    bundle = result.bundle
    bundle.save(tmpdir / "bundle")
    example_out = score_rows(bundle, input_example)
    signature = mlflow.models.infer_signature(input_example, example_out)
    for col in signature.inputs.inputs:
        if col.name not in ("lead_id", "created_at"):
            col._required = False
    info = mlflow.pyfunc.log_model(
        name="model", python_model=_pyfunc_code(),
        artifacts={"bundle": str(tmpdir / "bundle")}, signature=signature,
        input_example=input_example, registered_model_name=name,
        pip_requirements=_pip_requirements(),
    )
    return str(info.registered_model_version)


def log_and_register(result: TrainResult, *, data: dict[str, Any],
                     input_example: pd.DataFrame, settings: Settings | None = None,
                     holdout_rows: pd.DataFrame | None = None, name: str | None = None,
                     note: Note = _silent) -> Registered:
    """Log params, metrics, evaluation artifacts and the pyfunc; register as `challenger`.

    Stored with the version, under `monitoring/`: the binned training distributions drift is
    measured against; under `evaluation/`: the report, the holdout with every model's
    predictions, the evaluation model and its matrix of the holdout rows (what promotion
    re-scores: never whatever lies at the training path later), and for a single table the
    holdout's raw rows. `name`: the registered model (default: the bundle's target; a
    single table's model has its own, `table_model_name`). `note` hears each step.
    """
    from mlflow.entities import Metric, Param

    from propensity.models.bundle import learner_name

    client = configure(settings)
    bundle = result.bundle
    name = name or bundle.target
    _same_kind(client, name, bundle.kind)
    with _quiet(), mlflow.start_run(run_name=f"{name}") as run, \
            tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        note(f"logging the {name} run: parameters, metrics, evaluation")
        params, metrics = _run_params(result, data), _run_metrics(result)
        # one call for all of them (MLflow writes each log_* call in its own transaction)
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()],
                         metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
        _write_evaluation(result, tmpdir / "evaluation", name, holdout_rows)
        mlflow.log_artifacts(str(tmpdir / "evaluation"), artifact_path="evaluation")
        if result.reference is not None:
            mlflow.log_text(result.reference.to_json(), f"{MONITORING}/{REFERENCE_FILE}")
        note(f"registering the {name} model (pyfunc)")
        version = _log_pyfunc(result, tmpdir, input_example, name)
    gate = result.report["gate"]
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.set_registered_model_tag(name, KIND_TAG, bundle.kind)
    client.set_model_version_tag(name, version, "holdout_roc_auc",
                                 f"{result.holdout_auc:.6f}")
    client.set_model_version_tag(name, version, GATE_TAG, _gate_text(gate))
    client.set_model_version_tag(name, version, LEARNER_TAG, learner_name(bundle.learner))
    return Registered(name=name, version=version, run_id=run.info.run_id,
                      holdout_auc=result.holdout_auc, gate=gate)


GATE_TAG = "gate"
LEARNER_TAG = "learner"
"""Which learner a version is (odoo-pls, lightgbm, logistic, blend): `propensity models`."""


def _gate_text(gate: dict[str, Any]) -> str:
    if gate.get("passed") and (fallback := gate.get("fallback")):
        lost = ", ".join(f"{k} {v:.4f}" for k, v in fallback["lost_to"].items())
        return (f"passed as fallback: {fallback['shipped']} ships, {fallback['chosen']} lost "
                f"to {lost} on the holdout")
    if gate.get("passed"):
        return "passed: at least as good as every baseline on its holdout"
    losses = ", ".join(f"{k} {v:.4f}" for k, v in gate.get("loses_to", {}).items())
    return f"failed: AUC {gate.get('model_auc', float('nan')):.4f} loses to {losses}"


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's chatter (database set-up, run links, "Successfully registered model") stays
    out of the CLI's output. MLflow prints it on a stream of its own; its own counted switch
    is used, because MLflow switches that stream back on inside `log_model` otherwise."""
    from mlflow.utils.autologging_utils.logging_and_warnings import (
        MlflowEventsAndWarningsBehaviorGlobally,
    )

    loggers = [logging.getLogger(n) for n in ("alembic", "mlflow")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with MlflowEventsAndWarningsBehaviorGlobally(disable_event_logs=True,
                                                     disable_warnings=False,
                                                     reroute_warnings=False):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def version_of(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def load_model(name: str, alias: str = CHAMPION,
               settings: Settings | None = None) -> tuple[ModelBundle, str]:
    """The bundle behind `models:/name@alias`, and its version."""
    client = configure(settings)
    version = version_of(client, name, alias)
    if version is None:
        _registered(client, name, settings)  # an unknown name says so, and lists the known
        raise PropensityError(f"no {name}@{alias} in the registry at "
                              f"{(settings or get_settings()).tracking_uri}: train one first "
                              f"(`propensity train`)" + (" and promote it" if alias == CHAMPION
                                                         else ""))
    return _bundle(name, version), version


def load_version(name: str, version: str, settings: Settings | None = None) -> ModelBundle:
    """The bundle of one registered version (the scorer falls back to an earlier champion
    when the champion's files do not load)."""
    configure(settings)
    return _bundle(name, version)


def load_holdout(name: str, version: str, settings: Settings | None = None) -> pd.DataFrame:
    """The holdout a version was evaluated on, with its predictions (for threshold curves)."""
    client = configure(settings)
    run_id = client.get_model_version(name, version).run_id
    folder = mlflow.artifacts.download_artifacts(run_id=str(run_id), artifact_path="evaluation")
    return pd.read_parquet(Path(folder) / "holdout.parquet")


def load_reference(name: str, version: str, settings: Settings | None = None) -> Reference:
    """The binned training distributions stored with a version (drift's baseline)."""
    from propensity.monitoring.reference import Reference

    client = configure(settings)
    run_id = client.get_model_version(name, version).run_id
    text = mlflow.artifacts.load_text(
        f"runs:/{run_id}/{MONITORING}/{REFERENCE_FILE}")
    return Reference.from_json(text)


def _bundle(name: str, version: str) -> ModelBundle:
    from propensity.models.bundle import ModelBundle

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    return ModelBundle.load(local / "artifacts" / "bundle")


@dataclass
class Evaluation:
    """What a version was judged on: its evaluation model, holdout and data."""

    bundle: ModelBundle
    holdout: pd.DataFrame
    features: pd.DataFrame
    rows: pd.DataFrame | None
    data_path: str | None
    fingerprint: str | None
    gate: str


def _artifacts(client: MlflowClient, run_id: str, path: str) -> Path:
    """A run's artifact folder: read where it lies in a local store (MLflow would copy it to
    a temporary folder first), downloaded from a server."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    uri = str(client.get_run(run_id).info.artifact_uri)
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        local = Path(url2pathname(parsed.path) if parsed.scheme else uri) / path
        if local.is_dir():
            return local
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))


def _evaluation(client: MlflowClient, name: str, version: str,
                holdout: bool = True) -> Evaluation:
    """What `version` was judged on; `holdout=False`: its evaluation model only (the
    champion's part in the gate), its holdout left unread."""
    from propensity.models.bundle import ModelBundle

    mv = client.get_model_version(name, version)
    folder = _artifacts(client, str(mv.run_id), "evaluation")
    if not (folder / EVALUATION_BUNDLE).exists():
        raise PropensityError(f"{name} v{version} was registered before evaluation models were "
                              "stored with versions: retrain it, or --force")
    params = client.get_run(str(mv.run_id)).data.params
    rows = folder / "holdout_rows.parquet"
    empty = pd.DataFrame()
    return Evaluation(
        bundle=ModelBundle.load(folder / EVALUATION_BUNDLE),
        holdout=pd.read_parquet(folder / "holdout.parquet") if holdout else empty,
        features=pd.read_parquet(folder / HOLDOUT_FEATURES) if holdout else empty,
        rows=pd.read_parquet(rows) if holdout and rows.exists() else None,
        data_path=params.get("data.path"), fingerprint=params.get("data.fingerprint"),
        gate=(mv.tags or {}).get(GATE_TAG, ""))


def _score_holdout(champion: ModelBundle, challenger: Evaluation) -> np.ndarray:
    """The champion's evaluation model on the challenger's holdout rows.

    Same columns: the stored matrix, as is. Otherwise the champion needs its own features
    of those rows: from the stored raw rows (a table), or from the export the challenger was
    trained on, re-read only if its fingerprint still matches (the data must not have moved).
    """
    if champion.feature_names == challenger.bundle.feature_names and (
            champion.categories == challenger.bundle.categories):
        return champion.predict(challenger.features[champion.feature_names].to_numpy("float64"))
    if challenger.rows is not None:
        if champion.kind != "table":
            raise PropensityError("the champion scores exports, the challenger a single table")
        return champion.predict(champion.features_for_table(challenger.rows))
    from propensity.export_reader import fingerprint, load_export

    path = challenger.data_path
    if not path or not Path(path).exists():
        raise PropensityError(f"the challenger's data ({path}) is not here to compute the "
                              "champion's features of its holdout: --force to promote "
                              "without the comparison")
    if challenger.fingerprint and fingerprint(Path(path)) != challenger.fingerprint:
        raise PropensityError(f"{path} changed since the challenger was trained on it: the "
                              "holdout cannot be rebuilt as it was (retrain, or --force)")
    export = load_export(Path(path), drop_bad_rows=True)
    key = target_named(champion.target).entity.key
    return champion.predict(champion.features_for_export(export, challenger.holdout[[
        key, "as_of"]]))


def _registered(client: MlflowClient, name: str, settings: Settings | None) -> RegisteredModel:
    """The registered model `name`, or a one-line error naming the registry looked in (a name
    mistyped on the command line must not surface as MLflow's exception): UnknownModel for a
    name no command knows, a PropensityError for a known one not trained yet."""
    try:
        return client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    where = f"in the registry at {(settings or get_settings()).tracking_uri}"
    if name in target_names():
        raise PropensityError(f"no model named {name} {where}: train one first") from None
    known = [rm.name for rm in client.search_registered_models()]
    raise UnknownModel(f"no model named {name} {where} (models: "
                       f"{', '.join(sorted(known)) or 'none yet'})") from None


def table_models(settings: Settings | None = None) -> list[str]:
    """The registered single-table models, by name."""
    client = configure(settings)
    return sorted(rm.name for rm in client.search_registered_models()
                  if (rm.tags or {}).get(KIND_TAG) == "table")


def _existing_version(client: MlflowClient, name: str, version: str) -> str:
    """`version` as the registry spells it, or a one-line error listing the versions there are
    (MLflow raises on a version that is not a number, and on one that is not registered)."""
    versions = sorted(int(mv.version) for mv in client.search_model_versions(f"name='{name}'"))
    text = version.strip()
    if not text.isdigit() or int(text) not in versions:
        raise PropensityError(f"{name} has no version {version} (versions: "
                              f"{', '.join(map(str, versions)) or 'none'})")
    return str(int(text))


@dataclass
class Promotion:
    name: str
    promoted: bool
    version: str
    previous: str | None
    challenger_auc: float | None
    champion_auc: float | None
    reason: str
    warning: str | None = None


def _candidate_version(client: MlflowClient, name: str, version: str | None) -> str:
    """The version asked for, else the challenger; none is a PropensityError."""
    candidate = (_existing_version(client, name, version) if version is not None
                 else version_of(client, name, CHALLENGER))
    if candidate is None:
        raise PropensityError(f"{name} has no challenger: train one first")
    return candidate


def _gate_tag_refusal(client: MlflowClient, name: str, candidate: str, current: str | None,
                      force: bool) -> tuple[Promotion | None, str | None]:
    """The refusal of a version whose own gate failed at training (unless forced), or the
    warning that a forced promotion carries past it."""
    tag = (client.get_model_version(name, candidate).tags or {}).get(GATE_TAG, "")
    if not tag.startswith("failed"):
        return None, None
    if not force:
        return Promotion(name, False, candidate, current, None, None,
                         f"v{candidate} {tag} (the gate refuses a model that a baseline "
                         "beats); --force to promote anyway"), None
    return None, f"v{candidate} {tag}: promoted anyway (--force)"


def _against_champion(client: MlflowClient, name: str, candidate: str, current: str,
                      note: Note) -> tuple[float, float]:
    """The challenger's and the champion's evaluation model's AUC on the challenger's
    holdout: the same rows for both."""
    note(f"the gate: reading v{candidate}'s holdout and v{current}'s evaluation model")
    challenger = _evaluation(client, name, candidate)
    champion = _evaluation(client, name, current, holdout=False).bundle
    note(f"the gate: scoring v{candidate}'s holdout with both")
    y = challenger.holdout["label"].to_numpy()
    cand_auc = _auc(y, challenger.holdout["probability"].to_numpy())
    return cand_auc, _auc(y, _score_holdout(champion, challenger))


def _promotion_reason(force: bool, current: str | None, cand_auc: float | None,
                      champ_auc: float | None) -> str:
    """Why the alias moved, with both AUCs when they were compared."""
    reason = "forced" if force else ("first champion: passes the gate" if current is None
                                     else "beats the champion on the same holdout")
    if cand_auc is not None and champ_auc is not None:
        reason += f" (AUC {cand_auc:.4f} vs {champ_auc:.4f})"
    return reason


def promote(name: str, version: str | None = None, *, force: bool = False,
            settings: Settings | None = None, note: Note = _silent) -> Promotion:
    """Move `champion` to the challenger (or `version`) when it passes the gate.

    The gate, the first champion included: the challenger ranks its own holdout at least as
    well as each of its baselines, and (when there is a champion) better than the champion's
    evaluation model does on the same rows. `force` skips it and says what was skipped.
    A model or version the registry does not hold is a PropensityError naming what it holds.
    `note` hears each step (the comparison reads both versions' evaluations).
    """
    client = configure(settings)
    registered = _registered(client, name, settings)
    candidate = _candidate_version(client, name, version)
    current = (str(registered.aliases[CHAMPION]) if CHAMPION in (registered.aliases or {})
               else None)
    if current == candidate:
        return Promotion(name, False, candidate, current, None, None, "already the champion")
    refusal, warning = _gate_tag_refusal(client, name, candidate, current, force)
    if refusal is not None:
        return refusal
    cand_auc = champ_auc = None
    if current is not None and not force:
        cand_auc, champ_auc = _against_champion(client, name, candidate, current, note)
        if not cand_auc > champ_auc:
            return Promotion(name, False, candidate, current, cand_auc, champ_auc,
                             f"v{candidate} does not beat the champion v{current} on the same "
                             f"holdout (AUC {cand_auc:.4f} vs {champ_auc:.4f}); --force to "
                             "promote anyway")
    elif current is not None and force:
        warning = warning or (f"v{candidate} was not compared with the champion v{current} "
                              "(--force)")
    note(f"moving {name}@champion to v{candidate}")
    client.set_registered_model_alias(name, CHAMPION, candidate)
    if current is not None:
        _set_chain(client, name, [*_chain(registered), current])
    reason = _promotion_reason(force, current, cand_auc, champ_auc)
    _record_promotion(client, name, candidate, reason)
    return Promotion(name, True, candidate, current, cand_auc, champ_auc, reason, warning)


def _chain(registered: RegisteredModel) -> list[str]:
    """The champions replaced, oldest first (a store from before the chain: its one
    previous champion)."""
    tags = registered.tags or {}
    text = tags.get(CHAIN_TAG, tags.get(PREVIOUS_TAG, ""))
    return [v for v in text.split(",") if v]


def _set_chain(client: MlflowClient, name: str, chain: list[str]) -> None:
    client.set_registered_model_tag(name, CHAIN_TAG, ",".join(chain))
    client.set_registered_model_tag(name, PREVIOUS_TAG, chain[-1] if chain else "")


PROMOTED_TAG = "champion_since"


def _record_promotion(client: MlflowClient, name: str, version: str, reason: str) -> None:
    """When and why a version became champion, kept on the version (its history)."""
    from datetime import UTC, datetime

    client.set_model_version_tag(name, version, PROMOTED_TAG,
                                 f"{datetime.now(UTC).isoformat(timespec='seconds')} {reason}")


def champion_history(name: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every version that was champion, newest promotion first: version, when, why, and
    whether it serves now. A version promoted twice shows its latest promotion."""
    client = configure(settings)
    current = version_of(client, name, CHAMPION)
    out = []
    for mv in client.search_model_versions(f"name='{name}'"):
        tag = (mv.tags or {}).get(PROMOTED_TAG)
        if not tag:
            continue
        when, _, why = tag.partition(" ")
        out.append({"version": str(mv.version), "since": when, "reason": why,
                    "holdout_roc_auc": (mv.tags or {}).get("holdout_roc_auc"),
                    "champion": str(mv.version) == current})
    return sorted(out, key=lambda r: r["since"], reverse=True)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) > 1 else float("nan")


def rollback(name: str, settings: Settings | None = None) -> Promotion:
    """Give `champion` back to the version it replaced last; a second rollback goes one
    further back (the version replaced before that), never forward again."""
    client = configure(settings)
    registered = _registered(client, name, settings)
    chain = _chain(registered)
    current = (str(registered.aliases[CHAMPION]) if CHAMPION in (registered.aliases or {})
               else None)
    while chain and chain[-1] == current:  # a promotion of the champion it had replaced
        chain.pop()
    if not chain:
        raise PropensityError(f"{name} has no earlier champion to roll back to"
                              + (f" (v{current} is the first)" if current else ""))
    previous = chain.pop()
    client.set_registered_model_alias(name, CHAMPION, previous)
    _set_chain(client, name, chain)
    _record_promotion(client, name, previous, f"rolled back from v{current}")
    return Promotion(name, True, previous, current, None, None, "rolled back")


def list_versions(settings: Settings | None = None) -> pd.DataFrame:
    """Every registered version with its aliases and holdout metrics."""
    client = configure(settings)
    rows = []
    for rm in client.search_registered_models():
        aliases: dict[str, list[str]] = {}
        for alias, v in (rm.aliases or {}).items():
            aliases.setdefault(str(v), []).append(alias)
        for mv in client.search_model_versions(f"name='{rm.name}'"):
            metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            rows.append({
                "model": rm.name, "version": int(mv.version),
                "aliases": ",".join(sorted(aliases.get(str(mv.version), []))),
                "roc_auc": metrics.get("holdout.roc_auc"), "pr_auc": metrics.get("holdout.pr_auc"),
                "ece": metrics.get("holdout.ece"),
                "ece_equal_mass": metrics.get("holdout.ece_equal_mass"),
                "top_decile_predicted": metrics.get("holdout.top_decile_predicted"),
                "top_decile_realised": metrics.get("holdout.top_decile_realised"),
                "learner": (mv.tags or {}).get(LEARNER_TAG, "-"),
                "gate": (mv.tags or {}).get(GATE_TAG, "-").split(":")[0],
                "created": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC"),
            })
    frame = pd.DataFrame(rows)
    return frame.sort_values(["model", "version"]) if len(frame) else frame
