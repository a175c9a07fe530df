"""What every subcommand shares: the console, progress bars and the one-line failure."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from propensity.problems import PropensityError

if TYPE_CHECKING:
    from pydantic import ValidationError
    from pydantic_core import ErrorDetails

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one readable line to stderr and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def refuse(reason: str, **options: object) -> None:
    """Options given where they do not apply are a usage error (exit 2): ignoring them would
    run something other than what was asked. `options` maps parameter names to their values;
    the ones given (not None, False or empty) are named as their command-line flags."""
    given = [f"--{name.replace('_', '-')}" for name, value in options.items()
             if value is not None and value is not False and value != ""]
    if given:
        raise fail(f"{', '.join(given)}: {reason}")


def output(path: Path) -> Path:
    """`path`, its folder created: an --out naming a new folder is what users expect to
    work (pandas would refuse it as an OSError about a non-existent directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def invalid(exc: ValidationError) -> str:
    """pydantic's complaints on one line, each as `key: problem (got value)`: its own text
    spans lines and links every complaint to its website."""
    def one(error: ErrorDetails) -> str:
        key = ".".join(map(str, error["loc"]))
        if error["type"] == "extra_forbidden":
            return f"{key}: not a known setting"
        text = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        if isinstance(value, str | int | float | bool):
            text += f" (got {value!r})"
        return f"{key}: {text}" if key else text

    return "; ".join(one(e) for e in exc.errors(include_url=False))


@contextmanager
def progress() -> Iterator[Progress]:
    """A progress display that goes quiet when stdout is not a terminal (CI, pipes)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
        disable=not err_console.is_terminal,
    ) as bar:
        yield bar


@contextmanager
def stages() -> Iterator[Callable[[str], None]]:
    """`note(text)` for each stage of a long job: a spinner with the elapsed time on a terminal,
    one timestamped line per stage otherwise, so a minute of work is never a minute of silence.
    """
    start = time.perf_counter()
    if not err_console.is_terminal:
        def line(text: str) -> None:
            err_console.print(f"[{time.perf_counter() - start:7.1f}s] {text}", highlight=False)

        yield line
        return
    with progress() as bar:
        task = bar.add_task("starting", total=None)

        def update(text: str) -> None:
            bar.update(task, description=text)

        yield update


# --- the engine options of validate, funnel, train and score: defined once -------------------

ENGINES = ("pandas", "spark")
EngineOpt = Annotated[str, typer.Option(
    "--engine", help="pandas (one machine) or spark (executors; see docs/spark.md)")]
MasterOpt = Annotated[str | None, typer.Option(
    "--master", help="Spark master URL, e.g. local[*], spark://host:7077, yarn (--engine "
                     "spark; default: whatever spark-submit or the cluster set)")]
ConfOpt = Annotated[list[str] | None, typer.Option(
    "--conf", help="A Spark setting key=value, repeatable (--engine spark)")]


def spark_for(engine: str, master: str | None, conf: list[str] | None) -> Any:
    """The Spark session for `--engine spark`, None for pandas; Spark options without the
    Spark engine are refused rather than silently ignored."""
    if engine not in ENGINES:
        raise fail(f"--engine is one of {', '.join(ENGINES)}")
    if engine == "pandas":
        if master or conf:
            raise fail("--master and --conf need --engine spark")
        return None
    from propensity.spark.session import parse_confs, spark_session

    try:
        confs = parse_confs(conf or [])
    except PropensityError as exc:  # a malformed option is a usage error: exit 2
        raise fail(str(exc)) from None
    return spark_session(master, confs)


# --- how a single table is read: validate and train take the same options --------------------

IdColOpt = Annotated[str | None, typer.Option(help="Id column of --table")]
ExcludeOpt = Annotated[str, typer.Option(help="Columns to ignore, comma-separated")]
PostOutcomeOpt = Annotated[str, typer.Option(
    help="Columns filled in after the outcome (never features), comma-separated")]


def split_columns(option: str) -> list[str]:
    """The column names of a comma-separated option."""
    return [c for c in option.split(",") if c]
