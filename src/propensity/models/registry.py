"""MLflow: every run logged, every model registered, promotion gated and reversible.

Registered models are `lead-conversion`, `stage-advancement` and `account-propensity`. A new
version gets the alias `challenger`; `promote` moves `champion` to it only when it beats the
current champion on the challenger's own out-of-time holdout (both re-scored on the same
rows), or when forced; the champion it replaces is remembered for `rollback`. Models are
always referred to by alias, never by stage or "latest".
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from propensity.models.bundle import ModelBundle
from propensity.models.evaluation import dumps, report_html
from propensity.problems import PropensityError
from propensity.settings import Settings, get_settings

if TYPE_CHECKING:
    from mlflow.entities.model_registry import RegisteredModel

    from propensity.monitoring.reference import Reference
    from propensity.training import TrainResult

MODEL_NAMES = ("lead-conversion", "stage-advancement", "account-propensity")
CHAMPION, CHALLENGER = "champion", "challenger"
PREVIOUS_TAG = "previous_champion"


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


def log_and_register(result: TrainResult, *, data: dict[str, Any],
                     input_example: pd.DataFrame, settings: Settings | None = None,
                     holdout_rows: pd.DataFrame | None = None) -> Registered:
    """Log params, metrics, evaluation artifacts and the pyfunc; register as `challenger`.

    Stored with the version, under `monitoring/`: the binned training distributions drift is
measured against; under `evaluation/`: the report, the holdout with every model's
    predictions, the evaluation model and its matrix of the holdout rows (what promotion
    re-scores: never whatever lies at the training path later), and for a single table the
    holdout's raw rows.
    """
    from propensity.scoring import score_rows

    client = configure(settings)
    bundle = result.bundle
    name = bundle.target
    with _quiet(), mlflow.start_run(run_name=f"{name}") as run, \
            tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        flat = pd.json_normalize(result.params, sep=".").iloc[0].to_dict()
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        mlflow.log_params({f"data.{k}": str(v)[:500] for k, v in data.items()})
        if bundle.spec is not None:
            mlflow.log_param("feature_set", bundle.spec.key)
        mlflow.log_param("learner", str(result.report["selection"]["chosen"])[:500])
        for model, values in result.report["metrics"].items():
            prefix = "holdout" if model == "model" else f"baseline.{model}"
            mlflow.log_metrics({f"{prefix}.{k}": float(v) for k, v in values.items()})
        folder = tmpdir / "evaluation"
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
        mlflow.log_artifacts(str(folder), artifact_path="evaluation")
        if result.reference is not None:
            mlflow.log_text(result.reference.to_json(), f"{MONITORING}/{REFERENCE_FILE}")
        bundle.save(tmpdir / "bundle")
        example_out = score_rows(bundle, input_example)
        signature = mlflow.models.infer_signature(input_example, example_out)
        # every input but the lead's id and creation is optional, as in the contract
        for col in signature.inputs.inputs:
            if col.name not in ("lead_id", "created_at"):
                col._required = False
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={"bundle": str(tmpdir / "bundle")}, signature=signature,
            input_example=input_example, registered_model_name=name,
        )
        version = str(info.registered_model_version)
    gate = result.report["gate"]
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.set_model_version_tag(name, version, "holdout_roc_auc",
                                 f"{result.holdout_auc:.6f}")
    client.set_model_version_tag(name, version, GATE_TAG, _gate_text(gate))
    return Registered(name=name, version=version, run_id=run.info.run_id,
                      holdout_auc=result.holdout_auc, gate=gate)


GATE_TAG = "gate"


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
        raise PropensityError(f"no {name}@{alias} in the registry at "
                              f"{(settings or get_settings()).tracking_uri}: train one first "
                              f"(`propensity train`)" + (" and promote it" if alias == CHAMPION
                                                         else ""))
    return _bundle(name, version), version


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


def _evaluation(client: MlflowClient, name: str, version: str) -> Evaluation:
    mv = client.get_model_version(name, version)
    folder = Path(mlflow.artifacts.download_artifacts(run_id=str(mv.run_id),
                                                      artifact_path="evaluation"))
    if not (folder / EVALUATION_BUNDLE).exists():
        raise PropensityError(f"{name} v{version} was registered before evaluation models were "
                              "stored with versions: retrain it, or --force")
    params = client.get_run(str(mv.run_id)).data.params
    rows = folder / "holdout_rows.parquet"
    return Evaluation(
        bundle=ModelBundle.load(folder / EVALUATION_BUNDLE),
        holdout=pd.read_parquet(folder / "holdout.parquet"),
        features=pd.read_parquet(folder / HOLDOUT_FEATURES),
        rows=pd.read_parquet(rows) if rows.exists() else None,
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
    from propensity.export import fingerprint, load_export

    path = challenger.data_path
    if not path or not Path(path).exists():
        raise PropensityError(f"the challenger's data ({path}) is not here to compute the "
                              "champion's features of its holdout: --force to promote "
                              "without the comparison")
    if challenger.fingerprint and fingerprint(Path(path)) != challenger.fingerprint:
        raise PropensityError(f"{path} changed since the challenger was trained on it: the "
                              "holdout cannot be rebuilt as it was (retrain, or --force)")
    export = load_export(Path(path), drop_bad_rows=True)
    key = "account_id" if champion.target == "account-propensity" else "lead_id"
    return champion.predict(champion.features_for_export(export, challenger.holdout[[
        key, "as_of"]]))


def _registered(client: MlflowClient, name: str, settings: Settings | None) -> RegisteredModel:
    """The registered model `name`, or a one-line error naming the registry looked in (a name
    mistyped on the command line must not surface as MLflow's exception)."""
    try:
        return client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    known = [rm.name for rm in client.search_registered_models()]
    raise PropensityError(
        f"no model named {name} in the registry at {(settings or get_settings()).tracking_uri}"
        + (": train one first" if name in MODEL_NAMES else
           f" (models: {', '.join(sorted(known)) or 'none yet'})")) from None


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


def promote(name: str, version: str | None = None, *, force: bool = False,
            settings: Settings | None = None) -> Promotion:
    """Move `champion` to the challenger (or `version`) when it passes the gate.

    The gate, the first champion included: the challenger ranks its own holdout at least as
    well as each of its baselines, and (when there is a champion) better than the champion's
    evaluation model does on the same rows. `force` skips it and says what was skipped.
    A model or version the registry does not hold is a PropensityError naming what it holds.
    """
    client = configure(settings)
    _registered(client, name, settings)
    candidate = (_existing_version(client, name, version) if version is not None
                 else version_of(client, name, CHALLENGER))
    if candidate is None:
        raise PropensityError(f"{name} has no challenger: train one first")
    current = version_of(client, name, CHAMPION)
    if current == candidate:
        return Promotion(name, False, candidate, current, None, None, "already the champion")
    tag = (client.get_model_version(name, candidate).tags or {}).get(GATE_TAG, "")
    warning = None
    if tag.startswith("failed"):
        if not force:
            return Promotion(name, False, candidate, current, None, None,
                             f"v{candidate} {tag} (the gate refuses a model that a baseline "
                             "beats); --force to promote anyway")
        warning = f"v{candidate} {tag}: promoted anyway (--force)"
    cand_auc = champ_auc = None
    if current is not None and not force:
        challenger = _evaluation(client, name, candidate)
        champion = _evaluation(client, name, current).bundle
        y = challenger.holdout["label"].to_numpy()
        cand_auc = _auc(y, challenger.holdout["probability"].to_numpy())
        champ_auc = _auc(y, _score_holdout(champion, challenger))
        if not cand_auc > champ_auc:
            return Promotion(name, False, candidate, current, cand_auc, champ_auc,
                             f"v{candidate} does not beat the champion v{current} on the same "
                             f"holdout (AUC {cand_auc:.4f} vs {champ_auc:.4f}); --force to "
                             "promote anyway")
    elif current is not None and force:
        warning = warning or (f"v{candidate} was not compared with the champion v{current} "
                              "(--force)")
    client.set_registered_model_alias(name, CHAMPION, candidate)
    if current is not None:
        client.set_registered_model_tag(name, PREVIOUS_TAG, current)
    reason = "forced" if force else ("first champion: passes the gate" if current is None
                                     else "beats the champion on the same holdout")
    if cand_auc is not None and champ_auc is not None:
        reason += f" (AUC {cand_auc:.4f} vs {champ_auc:.4f})"
    _record_promotion(client, name, candidate, reason)
    return Promotion(name, True, candidate, current, cand_auc, champ_auc, reason, warning)


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
    return float(roc_auc_score(y, p)) if len(np.unique(y)) > 1 else float("nan")


def rollback(name: str, settings: Settings | None = None) -> Promotion:
    """Give `champion` back to the version it replaced last."""
    client = configure(settings)
    previous = _registered(client, name, settings).tags.get(PREVIOUS_TAG)
    if not previous:
        raise PropensityError(f"{name} has no previous champion to roll back to")
    current = version_of(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, previous)
    if current is not None:
        client.set_registered_model_tag(name, PREVIOUS_TAG, current)
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
                "gate": (mv.tags or {}).get(GATE_TAG, "-").split(":")[0],
                "created": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC"),
            })
    frame = pd.DataFrame(rows)
    return frame.sort_values(["model", "version"]) if len(frame) else frame


def metrics_json(frame: pd.DataFrame) -> str:
    return json.dumps(frame.to_dict("records"), default=str, indent=2)
