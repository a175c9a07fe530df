"""The notebooks run top to bottom on a fresh clone, end on an assertion, and are stored clean."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, shared_file

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_three_notebooks() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01_retrain_lead_model.ipynb",
                                           "02_funnel_analysis.ipynb",
                                           "03_x_education_scoring.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: clear outputs before committing")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared_file("olist-mql", "olist_closed_deals_dataset.csv")  # skip where shared/ is absent
    monkeypatch.setenv("PROPENSITY_ROOT", str(ROOT))
    monkeypatch.setenv("PROPENSITY_NOTEBOOK_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("PROPENSITY_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("PROPENSITY_NOTEBOOK_LEADS", "8000")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(book, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on failure
    last = [c for c in book.cells if c.cell_type == "code"][-1]
    assert "assert" in last.source and not any(o.get("output_type") == "error"
                                               for o in last.outputs)
