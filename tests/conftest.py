"""Shared factories: small hand-made exports written as real files, and the real data sets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

BASE_TABLES: dict[str, list[dict[str, object]]] = {
    "accounts": [
        {"account_id": "A1", "industry": "software", "employees": "120"},
        {"account_id": "A2", "industry": "retail", "employees": "15"},
    ],
    "leads": [
        {"lead_id": "L1", "created_at": "2024-01-01T09:00:00", "source": "paid_search",
         "account_id": "A1", "persona": "champion", "owner_id": "r1", "country": "DE"},
        {"lead_id": "L2", "created_at": "2024-01-02", "source": "organic_search",
         "account_id": "A1", "persona": "executive", "owner_id": "r2", "country": "FR"},
        {"lead_id": "L3", "created_at": "2024-01-03T00:00:00+02:00", "source": "",
         "account_id": "A2", "persona": "", "owner_id": "r1", "country": ""},
    ],
    "events": [
        {"lead_id": "L1", "occurred_at": "2024-01-01T10:00:00", "event_type": "page_view",
         "channel": "web", "value": "30"},
        {"lead_id": "L1", "occurred_at": "2024-01-05T10:00:00", "event_type": "demo_request",
         "channel": "web", "value": ""},
        {"lead_id": "L2", "occurred_at": "2024-01-01T12:00:00", "event_type": "email_open",
         "channel": "email", "value": ""},
    ],
    "stage_history": [
        {"lead_id": "L1", "stage": "mql", "entered_at": "2024-01-05T11:00:00"},
        {"lead_id": "L1", "stage": "opportunity", "entered_at": "2024-01-10T00:00:00"},
        {"lead_id": "L1", "stage": "customer", "entered_at": "2024-02-01T00:00:00"},
        {"lead_id": "L2", "stage": "mql", "entered_at": "2024-01-03T00:00:00"},
        {"lead_id": "L2", "stage": "disqualified", "entered_at": "2024-01-20T00:00:00"},
    ],
    "opportunities": [
        {"opportunity_id": "O1", "lead_id": "L1", "account_id": "A1",
         "created_at": "2024-01-10", "closed_at": "2024-02-01", "amount": "5000",
         "status": "won", "owner_id": "r1", "product": "core"},
        {"opportunity_id": "O2", "lead_id": "", "account_id": "A2",
         "created_at": "2024-01-15", "closed_at": "", "amount": "1200",
         "status": "open", "owner_id": "r2", "product": "core"},
    ],
}


def write_tables(directory: Path, tables: dict[str, list[dict[str, object]]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        pd.DataFrame(rows).to_csv(directory / f"{name}.csv", index=False)
    return directory


@pytest.fixture
def make_export(tmp_path: Path) -> Callable[..., Path]:
    """Write BASE_TABLES, with `changes(tables)` applied first, as CSV files; returns the folder."""

    def make(changes: Callable[[dict[str, list[dict[str, object]]]], None] | None = None,
             name: str = "export") -> Path:
        tables = {k: [dict(r) for r in v] for k, v in BASE_TABLES.items()}
        if changes is not None:
            changes(tables)
        return write_tables(tmp_path / name, tables)

    return make


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the real data sets live beside the project, in shared/")
    return path
