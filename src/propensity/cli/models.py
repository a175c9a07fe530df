"""Subcommands for models: train, score, promote, models."""

from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.table import Table

from propensity.cli._common import console, fail, progress

ModelOpt = Annotated[str, typer.Option(
    "--model", help="lead-conversion, stage-advancement or account-propensity")]


def _config(config: Path | None, model: str | None, horizon_days: int | None) -> Any:
    from propensity.snapshots import TARGETS
    from propensity.training import TrainConfig

    data: dict[str, Any] = {}
    if config is not None:
        if not config.exists():
            raise fail(f"{config}: no such config file")
        try:
            data = tomllib.loads(config.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise fail(f"{config}: not valid TOML ({exc})") from None
    if model is not None:
        if model not in TARGETS:
            raise fail(f"--model is one of {', '.join(TARGETS)}")
        data["model"] = model
    if horizon_days is not None:
        data.setdefault("snapshots", {})["horizon_days"] = horizon_days
    try:
        return TrainConfig.model_validate(data)
    except Exception as exc:
        raise fail(f"invalid training config: {exc}".replace("\n", "; ")) from None


def _print_metrics(report: dict[str, Any]) -> None:
    table = Table(title="holdout: model vs baselines")
    cols = ["roc_auc", "pr_auc", "log_loss", "brier", "ece", "precision_top_10",
            "recall_top_30"]
    table.add_column("model")
    for c in cols:
        table.add_column(c, justify="right")
    for name, m in report["metrics"].items():
        table.add_row(name, *(f"{m[c]:.4f}" for c in cols))
    console.print(table)
    for w in report.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    for w in report.get("post_outcome_checks", []):
        console.print(f"[yellow]post-outcome column check:[/] {w}", highlight=False)


def train(
    path: Annotated[Path | None, typer.Argument(help="Export folder")] = None,
    model: Annotated[str | None, typer.Option(
        help="lead-conversion, stage-advancement or account-propensity")] = None,
    horizon_days: Annotated[int | None, typer.Option(min=1, help="Label horizon")] = None,
    config: Annotated[Path | None, typer.Option(help="A TOML config (see training/)")] = None,
    table: Annotated[Path | None, typer.Option(help="Train from a single table")] = None,
    target: Annotated[str | None, typer.Option(help="Target column of --table")] = None,
    id_col: Annotated[str | None, typer.Option(help="Id column of --table")] = None,
    exclude: Annotated[str, typer.Option(help="Columns to ignore, comma-separated")] = "",
    post_outcome: Annotated[str, typer.Option(
        help="Columns filled in after the outcome (never features), comma-separated")] = "",
    register: Annotated[bool, typer.Option(help="Log to MLflow and register")] = True,
    drop_bad_rows: Annotated[bool, typer.Option(
        help="Leave out rows that break the contract (each is named)")] = False,
) -> None:
    """Train a model with out-of-time evaluation against baselines; register it as challenger."""
    from propensity.contract import Manifest
    from propensity.export import fingerprint, load_export
    from propensity.models.bundle import from_training
    from propensity.models.online import account_example_rows, example_rows
    from propensity.models.registry import CHAMPION, load_model, log_and_register, promote
    from propensity.single_table import TABLE, load_single_table, single_table_options
    from propensity.training import train_export, train_table

    cfg = _config(config, model, horizon_days)
    holdout_rows = None
    with progress() as bar:
        task = bar.add_task("loading", total=None)

        def note(text: str) -> None:
            bar.update(task, description=text)

        if table is None and path is not None and path.is_dir() and (
                Manifest.read(path).shape == "single_table"):
            table, manifest = single_table_options(path)
            target = target or manifest.target
            id_col = id_col or manifest.id_column
            exclude = exclude or ",".join(manifest.exclude)
            post_outcome = post_outcome or ",".join(manifest.post_outcome_columns(TABLE))
        if table is not None:
            if not target:
                raise fail("--table needs --target COLUMN")
            if cfg.model != "lead-conversion":
                raise fail("a single table trains lead-conversion only")
            single = load_single_table(
                table, target, id_column=id_col,
                exclude=[c for c in exclude.split(",") if c],
                post_outcome=[c for c in post_outcome.split(",") if c])
            result = train_table(single, cfg, progress=note)
            bundle = from_training(result, "table", id_column=id_col)
            holdout_rows = single.frame.iloc[result.holdout["row"].to_numpy()][
                [*result.table_columns, *([id_col] if id_col else [])]].reset_index(drop=True)
            example = holdout_rows.head(3)
            data = {"path": str(table.resolve()), "fingerprint": fingerprint(table),
                    "target": target}
        else:
            if path is None:
                raise fail("give an export folder, or --table FILE --target COLUMN")
            export = load_export(path, drop_bad_rows=drop_bad_rows)
            result = train_export(export, cfg, progress=note)
            bundle = from_training(result, "export")
            key = "account_id" if cfg.model == "account-propensity" else "lead_id"
            if key == "lead_id":
                example = example_rows(export, result.holdout[[key, "as_of"]])
            else:
                example = account_example_rows(export, result.holdout[[key, "as_of"]])
            data = {"path": str(Path(path).resolve()), "fingerprint": fingerprint(path)}
    _print_metrics(result.report)
    if not register:
        return
    with progress() as bar:
        bar.add_task("logging to MLflow and registering", total=None)
        reg = log_and_register(result, bundle, data=data, input_example=example,
                               holdout_rows=holdout_rows)
    console.print(f"registered {reg.name} v{reg.version} as challenger "
                  f"(holdout ROC AUC {reg.holdout_auc:.4f}, run {reg.run_id})", highlight=False)
    try:
        load_model(reg.name, CHAMPION)
    except Exception:
        outcome = promote(reg.name, reg.version)
        console.print(f"{reg.name} v{outcome.version} is the champion ({outcome.reason})",
                      highlight=False)


def score(
    path: Annotated[Path | None, typer.Argument(help="Export folder")] = None,
    as_of: Annotated[datetime | None, typer.Option(help="Score leads open at this time (UTC)")
                     ] = None,
    model: ModelOpt = "lead-conversion",
    out: Annotated[Path | None, typer.Option(help="Output .csv or .parquet")] = None,
    table: Annotated[Path | None, typer.Option(help="Score a single table instead")] = None,
    alias: Annotated[str, typer.Option(help="Registry alias to score with")] = "champion",
    drop_bad_rows: Annotated[bool, typer.Option(help="Leave out rows that break the contract")
                             ] = False,
) -> None:
    """Batch scoring from the registered champion: lead_id and probability per open lead."""
    from propensity.models.registry import load_model
    from propensity.scoring import score_export, score_table

    if out is None:
        raise fail("--out FILE (.csv or .parquet) is required")
    if out.suffix not in (".csv", ".parquet"):
        raise fail("--out must end in .csv or .parquet")
    with progress() as bar:
        bar.add_task(f"scoring with {model}@{alias}", total=None)
        bundle, version = load_model(model, alias)
        if table is not None:
            result = score_table(bundle, table)
        else:
            if path is None or as_of is None:
                raise fail("give an export folder and --as-of TIME (or --table FILE)")
            result = score_export(bundle, path, pd.Timestamp(as_of), drop_bad_rows=drop_bad_rows)
    result["model"] = model
    result["model_version"] = version
    if out.suffix == ".csv":
        result.to_csv(out, index=False)
    else:
        result.to_parquet(out, index=False)
    console.print(f"scored {len(result):,} rows with {model} v{version} -> {out}",
                  highlight=False)


def promote_cmd(
    model: ModelOpt = "lead-conversion",
    version: Annotated[str | None, typer.Option(help="Version to promote (default challenger)")
                       ] = None,
    force: Annotated[bool, typer.Option(help="Promote without beating the champion")] = False,
    rollback: Annotated[bool, typer.Option(help="Give champion back to the previous one")
                        ] = False,
) -> None:
    """Move `champion` to the challenger when it beats the champion on the same holdout."""
    from propensity.models.registry import promote
    from propensity.models.registry import rollback as do_rollback

    result = do_rollback(model) if rollback else promote(model, version, force=force)
    if result.promoted:
        console.print(f"{model}: champion is now v{result.version} ({result.reason}; was "
                      f"v{result.previous or '-'})", highlight=False)
        return
    console.print(f"{model}: not promoted: {result.reason}", highlight=False)
    raise typer.Exit(1)


def models() -> None:
    """Registered versions, their aliases and holdout metrics."""
    from propensity.models.registry import list_versions

    frame = list_versions()
    if frame.empty:
        console.print("no registered models yet: `propensity train PATH`")
        return
    table = Table(title="registered models")
    for c in ("model", "version", "aliases", "roc_auc", "pr_auc", "ece", "created"):
        table.add_column(c)
    for r in frame.to_dict("records"):
        table.add_row(str(r["model"]), str(r["version"]), str(r["aliases"]),
                      *(f"{r[c]:.4f}" if r[c] is not None and r[c] == r[c] else "-"
                        for c in ("roc_auc", "pr_auc", "ece")), f"{r['created']:%Y-%m-%d %H:%M}")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(score)
    app.command("promote")(promote_cmd)
    app.command()(models)
