"""A real uvicorn server on a free port, over a registry filled by the real pipeline."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from propensity.api_keys import create_key
from propensity.database import engine_for, migrate
from propensity.lifecycle import Gate, Trained, register_and_gate, train_and_register
from propensity.settings import Settings
from propensity.tables import CrmExport
from propensity.targets import ACCOUNT_PROPENSITY, LEAD_CONVERSION, STAGE_ADVANCEMENT
from propensity.training import TrainResult
from tests.conftest import SmallTrained, quick_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def register(export: CrmExport, data: Path, settings: Settings, model: str = LEAD_CONVERSION,
             gate: Gate = "never", result: TrainResult | None = None,
             **config: object) -> Trained:
    """Register `result` (default: train `model` on `export`, read from `data`), through the
    gate as `gate` says (default: it stays challenger)."""
    if result is not None:
        return register_and_gate(result, export, data, gate=gate, settings=settings)
    return train_and_register(export, quick_config(model=model, **config), data, gate=gate,
                              settings=settings)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, small_export: CrmExport,
             small_dir: Path, small_trained: SmallTrained) -> Path:
    """A model store with a champion for each target's model (the session's trainings)."""
    models = tmp_path_factory.mktemp("store") / "models"
    settings = Settings(models_dir=models)
    for name in (LEAD_CONVERSION, STAGE_ADVANCEMENT, ACCOUNT_PROPENSITY):
        promotion = register(small_export, small_dir, settings, model=name,
                             gate="always", result=small_trained(name)).promotion
        assert promotion is not None and promotion.promoted, name
    return models


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    db_url: str
    score_key: str
    admin_key: str
    models_dir: Path

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self) -> bool:
        """SIGTERM; True when the server shut down gracefully (uvicorn re-raises the signal
        after its shutdown, so the exit status is -SIGTERM)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        return code in (0, -signal.SIGTERM)


def start_server(models_dir: Path, db_url: str, workdir: Path, data: Path | None = None,
                 reload_seconds: float = 30, env: dict[str, str] | None = None,
                 ready_seconds: float = 90) -> Server:
    migrate(db_url)
    engine = engine_for(db_url)
    score_key = create_key(engine, "crm", ["score"])
    admin_key = create_key(engine, "ops", ["admin"])
    engine.dispose()
    port = free_port()
    env = {**os.environ, "PROPENSITY_MODELS_DIR": str(models_dir),
           "PROPENSITY_DATABASE_URL": db_url, "PROPENSITY_RELOAD_SECONDS": str(reload_seconds),
           "PROPENSITY_DATA_PATH": str(data or ""),
           "PROPENSITY_SPOOL_DIR": str(workdir / "spool"), **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (workdir / f"server-{port}.log").open("wb")
    process = subprocess.Popen(  # as `propensity serve` runs it (its uvicorn settings)
        [sys.executable, "-c", "from propensity.cli import main; main()", "serve", "--host",
         "127.0.0.1", "--port", str(port)], env=env, cwd=workdir, stdout=log,
        stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((workdir / f"server-{port}.log").read_text()[-3000:])
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return Server(url, process, db_url, score_key, admin_key, models_dir)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("the server did not become ready: "
                       + (workdir / f"server-{port}.log").read_text()[-3000:])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, registry: Path,
           small_dir: Path) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("server")
    srv = start_server(registry, f"sqlite:///{work / 'scores.db'}", work, data=small_dir)
    yield srv
    srv.stop()


ServerFactory = Callable[..., Server]


def answer(http: httpx.Client, path: str, params: dict[str, object] | None = None,
           seconds: float = 300) -> httpx.Response:
    """GET an answer computed from the export (funnel, forecast, backtest), asked again while
    it is 202 (being computed: `serving.export_answers`), as a client would."""
    deadline = time.monotonic() + seconds
    while True:
        r = http.get(path, params=params)  # type: ignore[arg-type]
        if r.status_code != 202 or time.monotonic() > deadline:
            return r
        assert int(r.headers["Retry-After"]) >= 1, r.headers
        time.sleep(0.5)
