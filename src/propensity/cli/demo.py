"""`propensity demo`: the README's main job, end to end on embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from propensity.cli._common import console


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
    train(export_dir, model="stage-advancement")
    models()
    console.print(f"funnel page: {page}; model store: MLflow at models/ "
                  "(`propensity models`, `propensity score ...`)", highlight=False)
    if not serve:
        return
    from propensity.api_keys import create_key
    from propensity.cli.serve import serve as run_server
    from propensity.database import engine_for, migrate
    from propensity.settings import get_settings

    settings = get_settings()
    migrate(settings.db_url)
    key = create_key(engine_for(settings.db_url), "demo", ["score", "admin"])
    base = f"http://127.0.0.1:{port}"
    console.rule("6. the scorer")
    console.print(f"API docs: {base}/docs\nthreshold page for marketing ops: {base}/ui\n"
                  f"API key (shown once; scopes score, admin): {key}\n"
                  "try:\n"
                  f"  curl -s -X POST {base}/v1/score -H 'Authorization: Bearer {key}' "
                  "-H 'content-type: application/json' -d '{\"leads\": [{\"lead_id\": "
                  "\"demo-1\", \"created_at\": \"2025-12-01T09:00:00Z\", \"source\": "
                  "\"referral\", \"persona\": \"champion\", \"events\": [{\"occurred_at\": "
                  "\"2025-12-20T10:00:00Z\", \"event_type\": \"pricing_page_view\"}], "
                  "\"as_of\": \"2025-12-31T00:00:00Z\"}]}'\n"
                  f"  curl -s '{base}/v1/funnel?by=source' -H 'Authorization: Bearer {key}'\n"
                  "Ctrl+C stops the scorer.", highlight=False, soft_wrap=True)
    run_server(port=port, data=export_dir)


def register(app: typer.Typer) -> None:
    app.command()(demo)
