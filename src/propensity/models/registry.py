"""MLflow: every run logged, every model registered, promotion gated and reversible.

Registered models are `lead-conversion`, `stage-advancement` and `account-propensity`. A new
version gets the alias `challenger`; `promote` moves `champion` to it only when it beats the
current champion on the challenger's own out-of-time holdout (both re-scored on the same
rows), or when forced; the champion it replaces is remembered for `rollback`. Models are
always referred to by alias, never by stage or "latest".
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from propensity.models.bundle import ModelBundle
from propensity.models.evaluation import dumps, report_html
from propensity.problems import PropensityError
from propensity.settings import Settings, get_settings

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
    client = MlflowClient()
    if client.get_experiment_by_name(settings.experiment) is None:
        # a database store keeps artifacts in the local model store; a tracking server its own
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


def log_and_register(result: Any, bundle: ModelBundle, *, data: dict[str, Any],
                     input_example: pd.DataFrame, settings: Settings | None = None,
                     holdout_rows: pd.DataFrame | None = None) -> Registered:
    """Log params, metrics, evaluation artifacts and the pyfunc; register as `challenger`."""
    client = configure(settings)
    name = bundle.target
    with mlflow.start_run(run_name=f"{name}") as run, tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        flat = pd.json_normalize(result.params, sep=".").iloc[0].to_dict()
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        mlflow.log_params({f"data.{k}": str(v)[:500] for k, v in data.items()})
        if bundle.spec is not None:
            mlflow.log_param("feature_set", bundle.spec.key)
        for model, values in result.report["metrics"].items():
            prefix = "holdout" if model == "model" else f"baseline.{model}"
            mlflow.log_metrics({f"{prefix}.{k}": float(v) for k, v in values.items()})
        (tmpdir / "evaluation.json").write_text(dumps(result.report))
        (tmpdir / "evaluation.html").write_text(report_html(result.report, f"{name} evaluation"))
        result.holdout.to_parquet(tmpdir / "holdout.parquet")
        if holdout_rows is not None:
            holdout_rows.to_parquet(tmpdir / "holdout_rows.parquet")
        for f in ("evaluation.json", "evaluation.html", "holdout.parquet",
                  "holdout_rows.parquet"):
            if (tmpdir / f).exists():
                mlflow.log_artifact(str(tmpdir / f), artifact_path="evaluation")
        bundle.save(tmpdir / "bundle")
        from propensity.models.online import score_rows

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
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.set_model_version_tag(name, version, "holdout_roc_auc",
                                 f"{result.holdout_auc:.6f}")
    return Registered(name=name, version=version, run_id=run.info.run_id,
                      holdout_auc=result.holdout_auc)


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


def _bundle(name: str, version: str) -> ModelBundle:
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    return ModelBundle.load(local / "artifacts" / "bundle")


def _holdout_auc(client: MlflowClient, name: str, version: str,
                 challenger_version: str) -> float:
    """AUC of `version` on the challenger's holdout, re-scored from the raw data."""
    from propensity.export import load_export

    mv = client.get_model_version(name, challenger_version)
    run = client.get_run(str(mv.run_id))
    folder = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="evaluation")
    holdout = pd.read_parquet(Path(folder) / "holdout.parquet")
    bundle = _bundle(name, version)
    params = run.data.params
    if (Path(folder) / "holdout_rows.parquet").exists():
        rows = pd.read_parquet(Path(folder) / "holdout_rows.parquet")
        if bundle.kind != "table":
            raise PropensityError("the champion scores exports, the challenger a single table")
        p = bundle.predict_features(bundle.features_for_table(rows))
    else:
        path = params.get("data.path")
        if not path or not Path(path).exists():
            raise PropensityError(f"the challenger's data ({path}) is not here to re-score the "
                                  "holdout: pass --force to promote without the comparison")
        export = load_export(Path(path), drop_bad_rows=True)
        key = "account_id" if name == "account-propensity" else "lead_id"
        p = bundle.predict_features(bundle.features_for_export(export, holdout[[key, "as_of"]]))
    y = holdout["label"].to_numpy()
    return float(roc_auc_score(y, p)) if len(np.unique(y)) > 1 else float("nan")


@dataclass
class Promotion:
    name: str
    promoted: bool
    version: str
    previous: str | None
    challenger_auc: float | None
    champion_auc: float | None
    reason: str


def promote(name: str, version: str | None = None, *, force: bool = False,
            settings: Settings | None = None) -> Promotion:
    """Move `champion` to the challenger (or `version`) if it beats the champion, or forced."""
    client = configure(settings)
    candidate = version or version_of(client, name, CHALLENGER)
    if candidate is None:
        raise PropensityError(f"{name} has no challenger: train one first")
    current = version_of(client, name, CHAMPION)
    if current == candidate:
        return Promotion(name, False, candidate, current, None, None, "already the champion")
    cand_auc = champ_auc = None
    if current is not None and not force:
        cand_auc = _holdout_auc(client, name, candidate, candidate)
        champ_auc = _holdout_auc(client, name, current, candidate)
        if not cand_auc > champ_auc:
            return Promotion(name, False, candidate, current, cand_auc, champ_auc,
                             f"v{candidate} does not beat the champion v{current} on the same "
                             f"holdout (AUC {cand_auc:.4f} vs {champ_auc:.4f}); --force to "
                             "promote anyway")
    client.set_registered_model_alias(name, CHAMPION, candidate)
    if current is not None:
        client.set_registered_model_tag(name, PREVIOUS_TAG, current)
    reason = "forced" if force and current else ("first champion" if current is None else
                                                  "beats the champion on the same holdout")
    return Promotion(name, True, candidate, current, cand_auc, champ_auc, reason)


def rollback(name: str, settings: Settings | None = None) -> Promotion:
    """Give `champion` back to the version it replaced last."""
    client = configure(settings)
    previous = client.get_registered_model(name).tags.get(PREVIOUS_TAG)
    if not previous:
        raise PropensityError(f"{name} has no previous champion to roll back to")
    current = version_of(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, previous)
    if current is not None:
        client.set_registered_model_tag(name, PREVIOUS_TAG, current)
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
                "created": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC"),
            })
    frame = pd.DataFrame(rows)
    return frame.sort_values(["model", "version"]) if len(frame) else frame


def metrics_json(frame: pd.DataFrame) -> str:
    return json.dumps(frame.to_dict("records"), default=str, indent=2)
