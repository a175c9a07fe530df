"""`propensity forecast` as a user meets it: exit codes, one readable line, the JSON shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from propensity.synthetic import write_synthetic
from tests.code.test_cli import error_line, run


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("fc") / "export", n_leads=1500, seed=11)


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--by", "colour"], 2, "--by is one of source, campaign, owner_id, segment"),
    (["--weeks", "0"], 2, "--weeks 0: between 1 and 52"),
    (["--format", "xml"], 2, "--format is one of"),
    (["--backtest", "--as-of", "2025-01-01"], 2, "--backtest picks its own quarter starts"),
    (["--as-of", "2031-01-01"], 1, "after the export's latest timestamp"),
    (["--as-of", "2024-01-10"], 1, "the history before 2024-01-10 is too short"),
    (["--as-of", "yesterday"], 2, "--as-of"),
])
def test_bad_input_is_one_line_and_the_right_exit_code(
        export_dir: Path, args: list[str], code: int, words: str) -> None:
    out = run("forecast", export_dir, *args)
    assert out.returncode == code, out.stderr
    assert words in error_line(out.stderr)
    assert "Traceback" not in out.stderr


def test_a_missing_export_is_exit_1(tmp_path: Path) -> None:
    out = run("forecast", tmp_path / "nowhere")
    assert out.returncode == 1 and "nowhere" in error_line(out.stderr)


def test_forecast_json_adds_up_and_says_how(export_dir: Path, tmp_path: Path) -> None:
    out = run("forecast", export_dir, "--as-of", "2025-07-01", "--weeks", "8", "--by",
              "source", "--format", "json", "--out", tmp_path / "leads.csv")
    assert out.returncode == 0, out.stderr
    fc = json.loads(out.stdout)
    assert fc["weeks"] == 8 and len(fc["rows"]) == 8
    total = fc["total"]["customers"]
    assert total["expected"] == pytest.approx(sum(w["customers"]["expected"]
                                                  for w in fc["rows"]), rel=1e-9)
    assert total["low95"] <= total["low80"] <= total["expected"] <= total["high80"] \
        <= total["high95"]
    assert sum(g["open_leads"] for g in fc["groups"]) == fc["open_leads"]
    assert "Monte Carlo" in fc["method"]
    assert fc["new_leads"]["leads_per_day"] > 0
    assert (tmp_path / "leads.csv").read_text().startswith("lead_id,")
    assert "hazard model" in out.stderr  # progress lines while it works
    assert f"simulating 2,000 draws of 8 weeks: {fc['open_leads']:,}/{fc['open_leads']:,} " \
        "leads" in out.stderr  # and through the simulation, lead by lead
