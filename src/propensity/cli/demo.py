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
) -> None:
    """Generate a synthetic export, validate it, print its funnel, train and register a champion."""
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
    models()
    console.print(f"funnel page: {page}; model store: MLflow at models/ "
                  "(`propensity models`, `propensity score ...`)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(demo)
