"""`propensity serve` and `propensity keys`: run the scorer, manage its API keys."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from propensity.cli._common import console, fail

if TYPE_CHECKING:
    import sqlalchemy as sa

EDGE_PROTOCOL = "serving.limits:EdgeProtocol"
"""uvicorn's httptools protocol with a connection cap and header limits (imported by each
worker, as the app is)."""
KEEP_ALIVE_SECONDS = 5
"""An idle keep-alive connection is closed after this (uvicorn's timeout_keep_alive)."""
BACKLOG = 32
"""Connections the kernel queues on the listening socket (all workers share it) until a worker
accepts them. uvloop accepts every queued connection in one loop turn, so the queue's length
bounds the work a keyed request already read can wait behind when a flood arrives. Against
1,000 stalled unauthenticated uploads (three rounds, `benchmarks/bench_hostile.py`, quiet
machine, the keyed client in its own process) a concurrent keyed client's score p99 was
33-48 ms with uvicorn's 2048, 21-24 ms with 48-128, 9.5-17.4 ms with 32 (four runs); every
upload still closed, the last after 1.1-2.1 s. The price: past 32 handshakes waiting at once,
a new connection waits out its kernel's handshake retry (1 s, then 3 s), flood or not; clients
that open many connections at once (rather than keeping a pool alive) raise it with
`PROPENSITY_BACKLOG`."""
keys_app = typer.Typer(help="API keys of the scorer.", no_args_is_help=True)


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    workers: Annotated[int, typer.Option(
        min=1, envvar="WEB_CONCURRENCY",
        help="Worker processes (uvicorn's WEB_CONCURRENCY when not given)")] = 1,
    data: Annotated[Path | None, typer.Option(help="Export folder for /v1/funnel")] = None,
    backlog: Annotated[int, typer.Option(
        min=1, envvar="PROPENSITY_BACKLOG",
        help="Connections the kernel queues on the listening socket until a worker accepts "
             "them (32: bounds the work a flood of new connections puts before a keyed "
             "request; raise it for clients that open many connections at once)")] = BACKLOG,
) -> None:
    """Run the FastAPI scorer with uvicorn (httptools, uvloop), with the scorer's limits on
    connections and headers (serving.limits.EdgeProtocol; PROPENSITY_MAX_CONNECTIONS,
    PROPENSITY_HEADER_TIMEOUT_SECONDS, PROPENSITY_MAX_HEADER_BYTES)."""
    import uvicorn

    if data is not None:
        # the scorer reads its settings from the environment when it starts (every worker)
        os.environ["PROPENSITY_DATA_PATH"] = str(data.resolve())
    console.print(f"scorer on http://{host}:{port} (docs at /docs)", highlight=False)
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers,
                http=EDGE_PROTOCOL, loop="uvloop", access_log=False, log_level="warning",
                timeout_keep_alive=KEEP_ALIVE_SECONDS, timeout_graceful_shutdown=30,
                backlog=backlog)


def _engine() -> sa.Engine:
    from propensity.database import engine_for, migrate
    from propensity.settings import get_settings

    settings = get_settings()
    migrate(settings.db_url)
    return engine_for(settings.db_url)


def _expiry(text: str | None) -> datetime | None:
    """`30d`, `12h` from now, or an ISO date / date-time (UTC unless it names a zone)."""
    if text is None:
        return None
    text = text.strip()
    units = {"d": "days", "h": "hours"}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.now(UTC) + timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"--expires {text!r}: give 30d, 12h or a date like 2026-12-31") from None
    from propensity.timestamps import as_utc

    return as_utc(when)


@keys_app.command("create")
def create(
    scope: Annotated[list[str], typer.Option(
        help="score (CRMs), outcomes (a CRM webhook), monitor (the monitoring report) and/or "
             "admin (marketing ops; includes the others)")],
    name: Annotated[str, typer.Option(help="Who the key is for (shown in audit logs)")] = "crm",
    expires: Annotated[str | None, typer.Option(
        help="When the key stops working: 90d, 12h, or a date (2026-12-31)")] = None,
) -> None:
    """Create an API key and print it once; only its hash is stored."""
    from propensity.api_keys import create_key

    when = _expiry(expires)
    try:
        key = create_key(_engine(), name, scope, expires_at=when)
    except ValueError as exc:
        raise fail(str(exc)) from None
    console.print(key, highlight=False)


@keys_app.command("list")
def list_(as_json: Annotated[bool, typer.Option(
        "--json", help="A JSON array, for scripts (times in ISO 8601, UTC)")] = False) -> None:
    """Every key: id, name, scopes, created, expires, revoked, status (never the key)."""
    from propensity.api_keys import list_keys

    keys = list_keys(_engine())
    if as_json:
        print(json.dumps([{k: v.isoformat() if isinstance(v, datetime) else v
                           for k, v in key.items()} for key in keys], indent=1))
        return
    table = Table(title="API keys")
    for c in ("id", "name", "scopes", "created", "expires", "revoked", "status"):
        table.add_column(c)
    for k in keys:
        table.add_row(str(k["id"]), k["name"], k["scopes"], _when(k["created_at"]),
                      _when(k["expires_at"]), _when(k["revoked_at"]), k["status"])
    console.print(table)


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M}"


KeyArg = Annotated[str, typer.Argument(
    metavar="KEY", help="The key's id or name (`keys list`); a name held by two keys not "
                        "revoked is refused: give the id")]


def _key_id(engine: sa.Engine, key: str) -> int:
    """The id `key` names: a number is an id; a name must be held by one key not revoked
    (revoking one of two keys of the same name by guess would cut off the wrong client)."""
    from propensity.api_keys import list_keys

    text = key.strip()
    if text.isdigit():
        return int(text)
    keys = list_keys(engine)
    live = [k for k in keys if k["name"] == text and k["status"] != "revoked"]
    if len(live) > 1:
        ids = ", ".join(str(k["id"]) for k in live)
        raise fail(f"{len(live)} keys are named {text!r} (ids {ids}): give the id")
    if not live:
        was = [k for k in keys if k["name"] == text]
        raise fail(f"no key named {text!r}" + (" that is not revoked already" if was else "")
                   + ": `propensity keys list` shows them", code=1)
    return int(live[0]["id"])


@keys_app.command("revoke")
def revoke(key: KeyArg) -> None:
    """Revoke a key: every scorer refuses it within PROPENSITY_KEY_CACHE_SECONDS."""
    from propensity.api_keys import revoke_key

    engine = _engine()
    key_id = _key_id(engine, key)
    name = revoke_key(engine, key_id)
    console.print(f"key {key_id} ({name}) revoked", highlight=False)


@keys_app.command("rotate")
def rotate(key: KeyArg) -> None:
    """A new key with the same name, scopes and expiry; the old one revoked. Prints the new
    key once."""
    from propensity.api_keys import rotate_key

    engine = _engine()
    console.print(rotate_key(engine, _key_id(engine, key)), highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.add_typer(keys_app, name="keys")
