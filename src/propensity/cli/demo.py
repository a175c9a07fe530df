"""`propensity demo`: the README's main job, end to end on embedded defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from propensity.cli._common import console, stages
from propensity.targets import ACCOUNT_PROPENSITY, LEAD_CONVERSION, STAGE_ADVANCEMENT


def _example_lead(export_dir: Path, out: Path) -> str:
    """The open lead the champion scores highest at the export's end, as a request body."""
    import pandas as pd

    from propensity.export_reader import load_export
    from propensity.registry import load_model
    from propensity.rows import lead_rows
    from propensity.scoring import score_export

    export = load_export(export_dir)
    bundle, _ = load_model(LEAD_CONVERSION)
    t = export.latest_time().ceil("D")
    scored = score_export(bundle, export, t).sort_values("probability", ascending=False)
    row = lead_rows(export, scored.head(1)[["lead_id", "as_of"]]).iloc[0].to_dict()
    lead = {k: v for k, v in row.items()
            if k not in ("events", "stage_history", "account", "opportunities")
            and v is not None and not (isinstance(v, float) and pd.isna(v))}
    for key in ("events", "stage_history", "opportunities"):
        lead[key] = json.loads(row[key])
    if isinstance(row.get("account"), str):
        lead["account"] = json.loads(row["account"])
    out.write_text(json.dumps({"leads": [lead]}, indent=1))
    return f"{row['lead_id']} (probability {scored['probability'].iloc[0]:.2f} as of {t:%Y-%m-%d})"


def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes its data")] = Path(
        "data/demo"),
    leads: Annotated[int, typer.Option(min=100, help="Synthetic leads to generate")] = 20000,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic export")] = 7,
    serve: Annotated[bool, typer.Option(help="End by starting the scorer")] = True,
    port: Annotated[int, typer.Option(help="Port of the scorer")] = 8000,
) -> None:
    """Generate, validate, funnel, train and register champions, then start the scorer."""
    from propensity.cli.data import generate, validate
    from propensity.cli.funnel import funnel
    from propensity.cli.models import models, train
    from propensity.settings import get_settings

    export_dir = workdir / "export"
    console.rule("1. generate a synthetic CRM export")
    generate(export_dir, leads=leads, seed=seed, fmt="parquet")
    console.rule("2. validate it against the data contract")
    validate(export_dir, limit=20)
    console.rule("3. the funnel, by source")
    funnel(export_dir, by="source")
    page = workdir / "funnel.html"
    funnel(export_dir, by="source", fmt="html", out=page)
    console.rule("4. train lead-conversion, evaluate out of time, register")
    train(export_dir)
    console.rule("5. train stage-advancement (the scorer's next_stage)")
    train(export_dir, model=STAGE_ADVANCEMENT)
    console.rule("6. train account-propensity (/v1/accounts/score)")
    train(export_dir, model=ACCOUNT_PROPENSITY)
    models()
    settings = get_settings()
    console.print(f"funnel page: {page}; model store: MLflow at {settings.models_dir} "
                  "(`propensity models`, `propensity score ...`)", highlight=False)
    if not serve:
        return
    from propensity.api_keys import create_key
    from propensity.cli.serve import serve as run_server
    from propensity.database import engine_for, migrate

    example = workdir / "example-lead.json"
    with stages() as note:
        note("picking an example lead: the champion scores the export's open leads")
        who = _example_lead(export_dir, example)
        note("creating an API key")
        migrate(settings.db_url)
        key = create_key(engine_for(settings.db_url), "demo", ["score", "admin"])
    base = f"http://127.0.0.1:{port}"
    console.rule("7. the scorer")
    console.print(f"API docs: {base}/docs\nthreshold page for marketing ops: {base}/ui\n"
                  f"API key (shown once; scopes score, admin): {key}\n"
                  f"try the lead scored highest, {who}, with its events, opportunities and "
                  "account:\n"
                  f"  curl -s -X POST {base}/v1/score -H 'Authorization: Bearer {key}' "
                  f"-H 'content-type: application/json' -d @{example}\n"
                  f"  curl -s '{base}/v1/funnel?by=source' -H 'Authorization: Bearer {key}'\n"
                  "Ctrl+C stops the scorer.", highlight=False, soft_wrap=True)
    run_server(port=port, data=export_dir)


def register(app: typer.Typer) -> None:
    app.command()(demo)
