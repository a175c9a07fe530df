"""Subcommands for models: train, score, promote, models."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from pydantic import ValidationError
from rich.table import Table

from propensity.cli._common import (
    ConfOpt,
    EngineOpt,
    ExcludeOpt,
    IdColOpt,
    MasterOpt,
    PostOutcomeOpt,
    console,
    err_console,
    fail,
    invalid,
    output,
    refuse,
    spark_for,
    split_columns,
    stages,
)
from propensity.problems import PropensityError
from propensity.targets import LEAD_CONVERSION, target_names

ModelOpt = Annotated[str, typer.Option(
    "--model", help="lead-conversion, stage-advancement, account-propensity, or a single-table "
                    "model's name (table-TARGET, or the --name it was trained with)")]


def train_config(config: Path | None, model: str | None, horizon_days: int | None,
                 stale_days: int | None = None) -> Any:
    from propensity.training import TrainConfig

    data: dict[str, Any] = {}
    if config is not None:
        if not config.exists():
            raise fail(f"{config}: no such config file", code=1)
        try:
            data = tomllib.loads(config.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise fail(f"{config}: not valid TOML ({exc})") from None
    if model is not None:
        if model not in target_names():
            raise fail(f"--model is one of {', '.join(target_names())}")
        data["model"] = model
    if horizon_days is not None:
        data.setdefault("snapshots", {})["horizon_days"] = horizon_days
    if stale_days is not None:
        data.setdefault("snapshots", {})["stale_days"] = stale_days
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise fail(f"{config or 'training config'}: {invalid(exc)}") from None


METRIC_COLUMNS = ["roc_auc", "pr_auc", "log_loss", "brier", "ece", "ece_equal_mass",
                  "top_decile_predicted", "top_decile_realised", "precision_top_10",
                  "recall_top_30"]
"""The holdout metrics `print_metrics` tabulates, model and baselines alike."""


def _span_text(part: dict[str, Any]) -> str:
    """`, FROM..TO` (dates) of a fit or decision that has a time span; nothing otherwise."""
    return f", {part['from'][:10]}..{part['to'][:10]}" if "from" in part else ""


def _print_selection(selection: dict[str, Any]) -> None:
    """The learner chosen, why, and the rows and folds it was chosen on."""
    if not selection:
        return
    console.print(f"learner: {selection['chosen']} ({selection['why'].split(';')[0]})",
                  highlight=False)
    on = selection.get("decided_on", {})
    if on:
        console.print(f"chosen on: {on['rows']:,} rows ({on['entities']:,} entities"
                      f"{_span_text(on)}), {on['folds']} folds of whole entities, "
                      f"{selection['fits']} fits", highlight=False)


def _print_fit(label: str, part: dict[str, Any]) -> None:
    """What a model (measured or shipped) was fitted and calibrated on."""
    fit = part.get("fit", {})
    if not fit:
        return
    calibration = part["calibration"]
    console.print(f"{label}: fitted on {fit['rows']:,} rows ({fit['entities']:,} "
                  f"entities{_span_text(fit)}), calibrated ({calibration['kind']}) on "
                  f"{calibration['rows']:,} out-of-fold rows"
                  + (f" from {calibration['from'][:10]}" if "from" in calibration else ""),
                  highlight=False)


def _print_gate(gate: dict[str, Any]) -> None:
    """The fallback that ships instead of the chosen learner, and a gate that will refuse."""
    if fallback := gate.get("fallback"):
        losses = ", ".join(f"{k} {v:.4f}" for k, v in fallback["lost_to"].items())
        console.print(f"[yellow]fallback:[/] {fallback['chosen']} lost to {losses} on its "
                      f"holdout; {fallback['shipped']} ships instead", highlight=False)
    if gate and not gate.get("passed"):
        losses = ", ".join(f"{k} {v:.4f}" for k, v in gate["loses_to"].items())
        console.print(f"[yellow]gate:[/] the model ({gate['model_auc']:.4f}) loses to {losses} "
                      "on its holdout: promotion will refuse it", highlight=False)


def print_metrics(report: dict[str, Any]) -> None:
    table = Table(title="holdout: model vs baselines")
    table.add_column("model")
    for c in METRIC_COLUMNS:
        table.add_column(c, justify="right")
    for name, m in report["metrics"].items():
        table.add_row(name, *(f"{m[c]:.4f}" for c in METRIC_COLUMNS))
    console.print(table)
    _print_selection(report.get("selection", {}))
    _print_fit("measured", report.get("evaluation", {}))
    _print_fit("shipped", report.get("shipped", {}))
    _print_gate(report.get("gate", {}))
    for w in report.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    for w in report.get("post_outcome_checks", []):
        console.print(f"[yellow]post-outcome column check:[/] {w}", highlight=False)


TargetNameOpt = Annotated[str | None, typer.Option(
    "--model", help=f"One of {', '.join(target_names())} (propensity/targets.py)")]
HorizonOpt = Annotated[int | None, typer.Option(min=1, help="Label horizon")]
StaleOpt = Annotated[int | None, typer.Option(
    min=1, help="A lead idle this many days in its stage is over (exports that never record a "
                "loss)")]
ConfigFileOpt = Annotated[Path | None, typer.Option(help="A TOML config (see training/)")]
NameOpt = Annotated[str | None, typer.Option(
    help="Registered name of a single-table model (default: table-TARGET); it keeps its own "
         "champion and challenger")]
FeatureTableOpt = Annotated[str | None, typer.Option(
    help="--engine spark: where to write the Parquet feature table (default: a temporary "
         "folder)")]
MaxRowsOpt = Annotated[int | None, typer.Option(
    min=1000, help="--engine spark: fit on at most about this many rows (every positive kept, "
                   "negatives sampled and weighted; docs/spark.md)")]


def train(
    path: Annotated[Path | None, typer.Argument(help="Export folder")] = None,
    model: TargetNameOpt = None, horizon_days: HorizonOpt = None, stale_days: StaleOpt = None,
    config: ConfigFileOpt = None,
    table: Annotated[Path | None, typer.Option(help="Train from a single table")] = None,
    target: Annotated[str | None, typer.Option(help="Target column of --table")] = None,
    id_col: IdColOpt = None, exclude: ExcludeOpt = "", post_outcome: PostOutcomeOpt = "",
    name: NameOpt = None,
    register: Annotated[bool, typer.Option(help="Log to MLflow and register")] = True,
    drop_bad_rows: Annotated[bool, typer.Option(
        help="Leave out rows that break the contract (each is named)")] = False,
    engine: EngineOpt = "pandas", master: MasterOpt = None, conf: ConfOpt = None,
    feature_table: FeatureTableOpt = None, max_rows: MaxRowsOpt = None,
) -> None:
    """Train a model with out-of-time evaluation against baselines; register it as challenger."""
    from propensity import lifecycle
    from propensity.export_reader import load_export
    from propensity.settings import get_settings

    single_dir = _train_shape(path, table, name, horizon_days=horizon_days,
                              stale_days=stale_days, drop_bad_rows=drop_bad_rows,
                              target=target, id_col=id_col, exclude=exclude,
                              post_outcome=post_outcome)
    if name is not None and (not name.strip() or any(c in name for c in "/:")):
        raise fail(f"--name {name!r}: a registered name cannot be empty or hold '/' or ':'")
    cfg = train_config(config, model, horizon_days, stale_days)
    spark = spark_for(engine, master, conf)
    with stages() as note:
        if spark is not None and (table is not None or path is None):
            raise fail("--engine spark trains from an export folder")
        if table is not None or single_dir:
            data, source = _single_table(path if single_dir else None, table, target, id_col,
                                         exclude, post_outcome, cfg, note)
            result = lifecycle.train(data, cfg, progress=note)
        elif path is None:
            raise fail("give an export folder, or --table FILE --target COLUMN")
        elif spark is not None:
            result, data = _train_spark(spark, str(path), cfg, drop_bad_rows, feature_table,
                                        max_rows, note)
            source = path
        else:
            note(f"reading and validating {path}")
            data, source = load_export(path, drop_bad_rows=drop_bad_rows), path
            note(f"{len(data.leads):,} leads")
            result = lifecycle.train(data, cfg, progress=note)
        print_metrics(result.report)
        if not register:
            return
        note(f"opening the MLflow store at {get_settings().tracking_uri}")
        trained = lifecycle.register_and_gate(result, data, source, name=name, engine=engine,
                                              note=note)
    _print_registered(trained)


def _train_shape(path: Path | None, table: Path | None, name: str | None,
                 **options: Any) -> bool:
    """Refuse options of the other shape; True when `path` is an adapter's single-table
    folder (trained as `--table` would be)."""
    from propensity.contract import Manifest

    if path is not None and table is not None:
        raise fail(f"give an export folder ({path}) or --table FILE ({table}), not both")
    single_dir = table is None and path is not None and path.is_dir() and (
        Manifest.read(path).shape == "single_table")
    export_only = {k: options[k] for k in ("horizon_days", "stale_days", "drop_bad_rows")}
    table_only = {k: v for k, v in options.items() if k not in export_only}
    if table is not None or single_dir:
        refuse("only for an export folder, not a single table", **export_only)
    elif path is not None:
        refuse(f"only for a single table, given as --table FILE ({path} is read as an "
               "export folder)", **table_only, name=name)
    return single_dir


def _single_table(folder: Path | None, table: Path | None, target: str | None,
                  id_col: str | None, exclude: str, post_outcome: str, cfg: Any,
                  note: Any) -> tuple[Any, Path]:
    """The single table to train on (from `--table`, or an adapter's folder's manifest)."""
    from propensity.single_table import TABLE, load_single_table, single_table_options

    if folder is not None:
        table, manifest = single_table_options(folder)
        target = target or manifest.target
        id_col = id_col or manifest.id_column
        exclude = exclude or ",".join(manifest.exclude)
        post_outcome = post_outcome or ",".join(manifest.post_outcome_columns(TABLE))
    assert table is not None
    if not target:
        raise fail("--table needs --target COLUMN")
    if cfg.model != LEAD_CONVERSION:
        raise fail(f"a single table trains {LEAD_CONVERSION} only")
    note(f"reading {table}")
    single = load_single_table(table, target, id_column=id_col, exclude=split_columns(exclude),
                               post_outcome=split_columns(post_outcome))
    note(f"{len(single.frame):,} rows, {len(single.feature_columns)} columns"
         + (f", id column {single.id_column}" if single.id_column else
            ", no id column (scores name spreadsheet rows; --id-col COLUMN)"))
    return single, table


def _print_registered(trained: Any) -> None:
    """The version registered, and the gate's answer when it was asked (a first champion)."""
    from propensity.settings import get_settings

    reg, outcome = trained.registered, trained.promotion
    console.print(f"registered {reg.name} v{reg.version} as challenger "
                  f"(holdout ROC AUC {reg.holdout_auc:.4f}, run {reg.run_id}) in "
                  f"{get_settings().models_dir}", highlight=False)
    if outcome is None:
        return
    if outcome.promoted:
        console.print(f"{reg.name} v{outcome.version} is the champion ({outcome.reason})",
                      highlight=False)
    else:
        console.print(f"[yellow]{reg.name} v{reg.version} is not the champion:[/] "
                      f"{outcome.reason}", highlight=False)
    if trained.refused:  # the README's exit 1: the first gate refused, so nothing ships
        raise typer.Exit(1)


def _train_spark(spark: Any, path: str, cfg: Any, drop_bad_rows: bool,
                 feature_table: str | None, max_rows: int | None,
                 note: Any) -> tuple[Any, Any]:
    """Training sets on Spark, the fit on the driver; the input example needs a few leads'
    rows, so the driver also holds the leads and opportunities (not the events)."""
    import tempfile

    from propensity.spark.export import read_spark_export
    from propensity.spark.funnel import driver_export
    from propensity.spark.training import spark_training_sets
    from propensity.spark.validation import checked_export
    from propensity.training import train_sets

    note(f"reading and validating {path} on Spark")
    export = checked_export(spark, read_spark_export(spark, path), drop_bad_rows)
    with tempfile.TemporaryDirectory(prefix="propensity-features-") as tmp:
        sets = spark_training_sets(spark, export, cfg, feature_table or f"{tmp}/features",
                                   max_rows=max_rows, progress=note)
    result = train_sets(sets, cfg, progress=note)
    return result, driver_export(export)


def _check_score_args(path: Path | None, as_of: datetime | None, out: Path | None,
                      table: Path | None, drop_bad_rows: bool, engine: str) -> None:
    """Refuse, before anything is read, an output format, a mix of export and table, or a
    Spark run the command cannot serve."""
    if out is not None and out.suffix not in (".csv", ".parquet"):
        raise fail("--out must end in .csv or .parquet")
    if table is not None:
        if path is not None:
            raise fail(f"give an export folder ({path}) or --table FILE ({table}), not both")
        refuse("only for an export folder", as_of=as_of, drop_bad_rows=drop_bad_rows)
    if table is None and (path is None or as_of is None):
        raise fail("give an export folder and --as-of TIME (or --table FILE)")
    if engine == "spark" and (table is not None or path is None or as_of is None):
        raise fail("--engine spark scores an export folder with --as-of TIME")


Loading = Future[tuple[Any, str, str]]


def _score_table_file(table: Path, loading: Loading, alias: str,
                      note: Callable[[str], None]) -> tuple[pd.DataFrame, str, str]:
    """Score a single table with the single-table model being loaded; the rows keep their
    obvious id column when the model was trained without one."""
    from propensity.export_reader import read_raw
    from propensity.scoring import check_table_columns, score_table
    from propensity.single_table import obvious_id_column

    frame, source = read_raw(table)
    bundle, version, model = loading.result()
    if bundle.kind != "table":
        raise fail(f"{model}@{alias} was trained on an export: score an export folder")
    note(f"scoring {table} with {model} v{version}")
    check_table_columns(bundle, frame, source)
    result = score_table(bundle, frame)
    ids = None if bundle.id_column else obvious_id_column(frame)
    if ids is not None:  # trained without one: the rows are still named by it
        result.insert(0, ids, frame[ids].astype("str").to_numpy())
    return result, version, model


def _score_export_folder(path: Path, as_of: datetime, loading: Loading, alias: str,
                         drop_bad_rows: bool,
                         note: Callable[[str], None]) -> tuple[pd.DataFrame, str, str]:
    """Score every lead of an export open at `as_of` with the export model being loaded."""
    from propensity.export_reader import load_export
    from propensity.scoring import score_export
    from propensity.timestamps import utc

    note(f"reading and validating {path}")
    export = load_export(path, drop_bad_rows=drop_bad_rows)
    bundle, version, model = loading.result()
    if bundle.kind != "export":
        raise fail(f"{model}@{alias} was trained on a single table: use --table FILE")
    note(f"scoring every lead open at {as_of:%Y-%m-%d %H:%M} with {model} v{version}")
    result = score_export(bundle, export, pd.Timestamp(as_of))
    _warn_about_the_time(export.latest_time(), utc(as_of), len(result))
    return result, version, model


def _write_scores(result: pd.DataFrame, out: Path | None, model: str, version: str) -> None:
    """The scores to standard output as CSV, or to `out` (.csv or .parquet) with a line."""
    import sys

    if out is None:
        result.to_csv(sys.stdout, index=False)
        return
    if out.suffix == ".csv":
        result.to_csv(output(out), index=False)
    else:
        result.to_parquet(output(out), index=False)
    console.print(f"scored {len(result):,} rows with {model} v{version} -> {out}",
                  highlight=False)


def score(
    path: Annotated[Path | None, typer.Argument(help="Export folder")] = None,
    as_of: Annotated[datetime | None, typer.Option(help="Score leads open at this time (UTC)")
                     ] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="lead-conversion (default for an export), stage-advancement, "
                        "account-propensity, or a single-table model's name (default for "
                        "--table: the one registered)")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Output .csv or .parquet (default: CSV to standard output)")] = None,
    table: Annotated[Path | None, typer.Option(help="Score a single table instead")] = None,
    alias: Annotated[str, typer.Option(help="Registry alias to score with")] = "champion",
    drop_bad_rows: Annotated[bool, typer.Option(help="Leave out rows that break the contract")
                             ] = False,
    engine: EngineOpt = "pandas",
    master: MasterOpt = None,
    conf: ConfOpt = None,
) -> None:
    """Batch scoring from the registered champion: an id and a probability per lead."""
    from concurrent.futures import ThreadPoolExecutor

    _check_score_args(path, as_of, out, table, drop_bad_rows, engine)
    if engine == "spark":
        assert path is not None and as_of is not None
        _score_spark(str(path), pd.Timestamp(as_of), model or LEAD_CONVERSION, alias, out,
                     drop_bad_rows, master, conf)
        return
    spark_for(engine, master, conf)  # refuses an unknown engine, and Spark options here

    with stages() as note, ThreadPoolExecutor(1) as pool:
        # importing MLflow and reading the model take seconds: beside the data, not before
        note(f"loading {model or ('the single-table model' if table else 'lead-conversion')}"
             f"@{alias} while reading {table or path}")
        loading = pool.submit(_load, model, alias, table is not None)
        if table is not None:
            result, version, model = _score_table_file(table, loading, alias, note)
        else:
            assert path is not None and as_of is not None
            result, version, model = _score_export_folder(path, as_of, loading, alias,
                                                          drop_bad_rows, note)
    result["model"] = model
    result["model_version"] = version
    _write_scores(result, out, model, version)


def _load(model: str | None, alias: str, table: bool) -> tuple[Any, str, str]:
    """The bundle, version and name `score` uses: `model`, or for a table the single-table
    model registered (one only: with several, the user names it)."""
    from propensity.registry import load_model, table_models

    if model is None and table:
        names = table_models()
        if not names:
            raise PropensityError("no single-table model in the registry: `propensity train "
                                  "--table FILE --target COLUMN` first")
        if len(names) > 1:
            raise fail(f"several single-table models ({', '.join(names)}): give --model NAME")
        model = names[0]
    model = model or LEAD_CONVERSION
    bundle, version = load_model(model, alias)
    return bundle, version, model


def _warn_about_the_time(latest: pd.Timestamp | None, as_of: pd.Timestamp, scored: int
                         ) -> None:
    """An as-of time the export does not reach is almost always a typo, yet it scores
    without error: before the first lead, nothing; long after the last record, leads that
    went quiet only because the export stops (their idleness counts against them)."""
    if not scored:
        err_console.print(f"[yellow]warning:[/] no lead was open at {as_of:%Y-%m-%d %H:%M}",
                          highlight=False)
    elif latest is not None and (late := (as_of - latest).days) > 30:
        err_console.print(f"[yellow]warning:[/] --as-of is {late} days after the export's "
                          f"last record ({latest:%Y-%m-%d}): its leads look idle since then",
                          highlight=False)


def _score_spark(path: str, as_of: pd.Timestamp, model: str, alias: str, out: Path | None,
                 drop_bad_rows: bool, master: str | None, conf: list[str] | None) -> None:
    """`score --engine spark`: validated like the pandas engine, scored in the executors,
    written by Spark (a Parquet dataset, or one CSV) or printed when small."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from propensity.spark.validation import refuse_drop_bad_rows

    refuse_drop_bad_rows(drop_bad_rows)

    def load() -> tuple[Any, str]:
        from propensity.registry import load_model

        return load_model(model, alias)

    with stages() as note:
        note(f"starting Spark and loading {model}@{alias}")
        # the JVM takes seconds to start and importing MLflow and loading the model as long:
        # side by side, not one after the other (nothing else can run while either does)
        with ThreadPoolExecutor(1) as pool:
            loading = pool.submit(load)
            spark = spark_for("spark", master, conf)
            from pyspark.sql import functions as F

            from propensity.spark.export import read_spark_export
            from propensity.spark.scoring import checked_scores
            from propensity.spark.session import to_pandas
            from propensity.timestamps import utc

            bundle, version = loading.result()
        if bundle.kind != "export":
            raise fail(f"{model}@{alias} was trained on a single table: use the pandas engine")
        note(f"validating {path} and scoring every lead open at {as_of:%Y-%m-%d %H:%M} in "
             "the executors (one pass)")
        checked = checked_scores(spark, read_spark_export(spark, path), bundle, as_of)
        _warn_about_the_time(checked.latest, utc(as_of), checked.scored)
        scored = checked.frame.withColumns({"model": F.lit(model),
                                            "model_version": F.lit(str(version))})
        if out is None:
            to_pandas(scored).to_csv(sys.stdout, index=False)
            return
        if out.suffix == ".csv":
            to_pandas(scored).to_csv(output(out), index=False)
        else:
            scored.write.mode("overwrite").parquet(str(out))
    console.print(f"scored with {model} v{version} on Spark -> {out}", highlight=False)


def promote_cmd(
    model: ModelOpt = LEAD_CONVERSION,
    version: Annotated[str | None, typer.Option(help="Version to promote (default challenger)")
                       ] = None,
    force: Annotated[bool, typer.Option(help="Promote without beating the champion")] = False,
    rollback: Annotated[bool, typer.Option(
        help="Give champion back to the one it replaced; again: one further back")] = False,
) -> None:
    """Move `champion` to the challenger when it beats the champion on the same holdout."""
    if rollback:
        refuse("a rollback goes back to the champion replaced last, through no gate",
               force=force, version=version)
    with stages() as note:
        note("opening the model registry")
        from propensity.registry import promote
        from propensity.registry import rollback as do_rollback

        result = do_rollback(model) if rollback else promote(model, version, force=force,
                                                            note=note)
    if result.warning:
        console.print(f"[yellow]warning:[/] {result.warning}", highlight=False)
    if result.promoted:
        console.print(f"{model}: champion is now v{result.version} ({result.reason}; was "
                      f"v{result.previous or '-'})", highlight=False)
        return
    if result.version is not None and result.version == result.previous:
        console.print(f"{model}: v{result.version} is already the champion; nothing to do",
                      highlight=False)
        return
    console.print(f"{model}: not promoted: {result.reason}", highlight=False)
    raise typer.Exit(1)


def models() -> None:
    """Registered versions, their aliases and holdout metrics."""
    from propensity.registry import list_versions

    frame = list_versions()
    if frame.empty:
        console.print("no registered models yet: `propensity train PATH`")
        return
    table = Table(title="registered models")
    numbers = ("roc_auc", "pr_auc", "ece", "ece_equal_mass", "top_decile_predicted",
               "top_decile_realised")
    heads = ("roc_auc", "pr_auc", "ece", "ece (15 equal-mass)", "top 10% predicted",
             "top 10% realised")
    for c in ("model", "version", "aliases", "learner", *heads, "gate", "created"):
        table.add_column(c)
    for r in frame.to_dict("records"):
        table.add_row(str(r["model"]), str(r["version"]), str(r["aliases"]), str(r["learner"]),
                      *(f"{r[c]:.4f}" if r.get(c) is not None and r[c] == r[c] else "-"
                        for c in numbers), str(r["gate"]),
                      f"{r['created']:%Y-%m-%d %H:%M}")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(score)
    app.command("promote")(promote_cmd)
    app.command()(models)
