"""`propensity serve` and `propensity keys`: run the scorer, manage its API keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from propensity.cli._common import console, fail

keys_app = typer.Typer(help="API keys of the scorer.", no_args_is_help=True)


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
    data: Annotated[Path | None, typer.Option(help="Export folder for /v1/funnel")] = None,
) -> None:
    """Run the FastAPI scorer with uvicorn (httptools, uvloop)."""
    import uvicorn

    if data is not None:
        # the scorer reads its settings from the environment when it starts (every worker)
        os.environ["PROPENSITY_DATA_PATH"] = str(data.resolve())
    console.print(f"scorer on http://{host}:{port} (docs at /docs)", highlight=False)
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers,
                http="httptools", loop="uvloop", access_log=False, log_level="warning",
                timeout_graceful_shutdown=30)


@keys_app.command("create")
def create(
    scope: Annotated[list[str], typer.Option(help="score (CRMs) and/or admin (marketing ops)")],
    name: Annotated[str, typer.Option(help="Who the key is for (shown in audit logs)")] = "crm",
) -> None:
    """Create an API key and print it once; only its hash is stored."""
    from propensity.api_keys import create_key
    from propensity.database import engine_for, migrate
    from propensity.settings import get_settings

    settings = get_settings()
    migrate(settings.db_url)
    try:
        key = create_key(engine_for(settings.db_url), name, scope)
    except ValueError as exc:
        raise fail(str(exc)) from None
    console.print(key, highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.add_typer(keys_app, name="keys")
