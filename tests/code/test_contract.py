"""The contract in code and the contract in docs/ say the same thing."""

from __future__ import annotations

import re

import pytest

from propensity.contract import DEFAULT_STAGES, TABLES, Manifest
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "data-contract.md").read_text()


def _doc_tables() -> dict[str, dict[str, str]]:
    tables: dict[str, dict[str, str]] = {}
    current = None
    for line in DOC.splitlines():
        if m := re.match(r"^### (\w+)", line):
            current = m.group(1)
            tables[current] = {}
        elif current and (m := re.match(r"^\| (\w+) \| (\w+) \|", line)):
            if m.group(1) not in ("column", "rule"):
                tables[current][m.group(1)] = m.group(2)
        elif line.startswith("## "):
            current = None
    return tables


def test_every_table_and_column_is_documented_with_its_type() -> None:
    documented = _doc_tables()
    for name, spec in TABLES.items():
        assert name in documented, f"docs lack table {name}"
        assert set(documented[name]) == set(spec.names), name
        for col in spec.columns:
            assert documented[name][col.name] == str(col.kind), (name, col.name)


def test_rule_ids_in_code_and_docs_agree() -> None:
    doc_rules = set(re.findall(r"^\| (\w+) \| (?:error|warning) \|", DOC, re.M))
    code = "".join(p.read_text() for p in (ROOT / "src" / "propensity").rglob("*.py"))
    reported = set(re.findall(r'rule="(\w+)"', code))  # report.add(..., rule="x")
    reported |= set(re.findall(r'(?:return|: \(|, \(\w+, ) ?"(\w+)", "', code))  # rule, message
    lead_rules = (ROOT / "src" / "propensity" / "lead_rules.py").read_text()
    reported |= set(re.findall(r'Rule\(\s*"(\w+)"', lead_rules))  # one lead's rules
    assert reported - doc_rules == set(), "rules the docs do not list"
    assert {r for r in doc_rules if f'"{r}"' not in code} == set(), "documented, never reported"


def test_default_stages_are_documented() -> None:
    assert " < ".join(f"`{s}`" for s in DEFAULT_STAGES) in DOC


@pytest.mark.parametrize("stages", [["lead"], ["lead", "lead"], ["lead", "lost"]])
def test_manifest_refuses_bad_stage_lists(stages: list[str]) -> None:
    with pytest.raises(ValueError):
        Manifest(stages=stages)
