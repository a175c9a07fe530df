"""Problems found in input data, kept as a table so that a million bad rows stay cheap.

The contract promises that nothing is silently dropped: every row a run does not use is named
here with its file, spreadsheet row, column, value and the rule it breaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

Severity = Literal["error", "warning"]
PROBLEM_COLUMNS = ["severity", "table", "file", "row", "column", "value", "rule", "message"]


class PropensityError(Exception):
    """An error a user can act on; the CLI prints its message as one line, no traceback."""


class ContractError(PropensityError):
    """Input data breaks the contract; `report` holds every problem found."""

    def __init__(self, message: str, report: ProblemReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ProblemReport:
    """Accumulates problems rule by rule as small frames and concatenates them once."""

    _parts: list[pd.DataFrame] = field(default_factory=list)
    _bad_rows: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(
        self,
        *,
        table: str,
        file: str,
        rows: np.ndarray | pd.Index,
        file_rows: np.ndarray,
        column: str | None,
        values: pd.Series | np.ndarray | list[object] | None,
        rule: str,
        message: str,
        severity: Severity = "error",
    ) -> None:
        """Record one rule's failures.

        `rows` are frame index labels (used to drop the rows later); `file_rows` are the
        1-based spreadsheet rows a person looks up.
        """
        n = len(file_rows)
        if n == 0:
            return
        vals: object
        if values is None:
            vals = [""] * n
        else:
            vals = pd.Series(np.asarray(values, dtype=object)).map(_show).to_numpy()
        self._parts.append(
            pd.DataFrame(
                {
                    "severity": severity,
                    "table": table,
                    "file": file,
                    "row": np.asarray(file_rows, dtype="int64"),
                    "column": column or "",
                    "value": vals,
                    "rule": rule,
                    "message": message,
                }
            )
        )
        if severity == "error":
            self._bad_rows.setdefault(table, []).append(np.asarray(rows))

    def note(self, *, table: str, file: str, column: str | None, rule: str, message: str,
             severity: Severity = "error") -> None:
        """A problem of a whole file or column rather than of rows."""
        self._parts.append(
            pd.DataFrame(
                {"severity": [severity], "table": [table], "file": [file], "row": [0],
                 "column": [column or ""], "value": [""], "rule": [rule], "message": [message]}
            )
        )

    def extend(self, other: ProblemReport) -> None:
        self._parts.extend(other._parts)
        for table, rows in other._bad_rows.items():
            self._bad_rows.setdefault(table, []).extend(rows)

    def frame(self) -> pd.DataFrame:
        if not self._parts:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in PROBLEM_COLUMNS})
        out = pd.concat(self._parts, ignore_index=True)
        self._parts = [out]
        return out

    def bad_rows(self, table: str) -> pd.Index:
        """Index labels of the rows of `table` that broke an error-level rule."""
        parts = self._bad_rows.get(table)
        if not parts:
            return pd.Index([])
        return pd.Index(np.unique(np.concatenate(parts)))

    @property
    def error_count(self) -> int:
        f = self.frame()
        return int((f["severity"] == "error").sum())

    @property
    def warning_count(self) -> int:
        f = self.frame()
        return int((f["severity"] == "warning").sum())

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def summary(self) -> pd.DataFrame:
        """Count of problems per table, rule and severity: the first thing a person reads."""
        f = self.frame()
        if f.empty:
            return pd.DataFrame(columns=["severity", "table", "rule", "count"])
        return (
            f.groupby(["severity", "table", "rule"], sort=True)
            .size()
            .rename("count")
            .reset_index()
        )


def _show(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return "<missing>"
    if value is pd.NA:
        return "<missing>"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
