"""The single-table input shape: one row per lead and a binary target, as most teams start.

No dates means no point-in-time features and no funnel: what this shape can honestly support
is a conversion model from attributes, with the post-outcome columns kept out of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from propensity.contract import FALSE_WORDS, TRUE_WORDS, Manifest
from propensity.export_reader import read_raw, type_attribute
from propensity.problems import ContractError, ProblemReport, PropensityError
from propensity.tables import SourceFile

TABLE = "table"


@dataclass
class SingleTable:
    frame: pd.DataFrame
    """Attributes typed from the data, with `target` as 0/1 integers."""
    target: str
    id_column: str | None = None
    excluded: list[str] = field(default_factory=list)
    post_outcome: list[str] = field(default_factory=list)
    report: ProblemReport = field(default_factory=ProblemReport)
    source: SourceFile | None = None

    @property
    def feature_columns(self) -> list[str]:
        banned = {self.target, self.id_column, *self.excluded, *self.post_outcome}
        return [c for c in self.frame.columns if c not in banned]

    @property
    def y(self) -> np.ndarray:
        return self.frame[self.target].to_numpy(dtype="int64")


def _binary(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Target to 0/1; returns (values, mask of values that are not a recognised yes/no)."""
    words = raw.astype("str").str.strip().str.lower()
    out = pd.Series(np.nan, index=raw.index)
    out[words.isin(TRUE_WORDS)] = 1.0
    out[words.isin(FALSE_WORDS)] = 0.0
    unknown = raw.notna() & out.isna()
    return out, unknown


def obvious_id_column(raw: pd.DataFrame, skip: set[str] | frozenset[str] = frozenset()
                      ) -> str | None:
    """The table's id column when there is exactly one obvious one: named like an id (`id`,
    `lead_id`, `Prospect ID`, `LeadId`), every value present and unique, and not a decimal
    measure. Guessing between two would be a guess: then None (give --id-col)."""
    def named_like_an_id(name: str) -> bool:
        spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
        return "id" in re.split(r"[^a-z0-9]+", spaced.lower())

    found = [c for c in raw.columns if c not in skip and named_like_an_id(c)
             and not pd.api.types.is_float_dtype(raw[c]) and len(raw)
             and raw[c].notna().all() and raw[c].is_unique]
    return str(found[0]) if len(found) == 1 else None


def _check_columns(raw: pd.DataFrame, name: str, target: str, declared: list[str],
                   report: ProblemReport) -> None:
    """A missing target stops the read; a missing declared column or no rows is noted."""
    def column_missing(col: str, role: str) -> None:
        report.note(table=TABLE, file=name, column=col, rule="missing_column",
                    message=f"{role} column {col!r} is not in the table")

    if target not in raw.columns:
        column_missing(target, "target")
        raise ContractError(f"{name}: target column {target!r} is not in the table "
                            f"(columns: {', '.join(map(str, raw.columns[:12]))}...)", report)
    for col in declared:
        if col not in raw.columns:
            column_missing(col, "declared")
    if raw.empty:
        report.note(table=TABLE, file=name, column=None, rule="empty_table",
                    message="the table has no rows (a header only): nothing to learn")


def _checked_target(raw: pd.DataFrame, source: SourceFile, target: str,
                    report: ProblemReport) -> pd.Series:
    """The target as 0/1 (NaN where unreadable); rows not yes/no or without a value, and a
    target with one class only, are noted."""
    name = source.name
    y, unknown = _binary(raw[target])
    if unknown.any():
        idx = raw.index[unknown.to_numpy()]
        report.add(table=TABLE, file=name, rows=idx, file_rows=source.row_of(idx), column=target,
                   values=raw.loc[idx, target], rule="target_not_binary",
                   message="target must be yes/no, true/false, 1/0 or won/lost")
    missing = raw[target].isna()
    if missing.any():
        idx = raw.index[missing.to_numpy()]
        report.add(table=TABLE, file=name, rows=idx, file_rows=source.row_of(idx), column=target,
                   values=None, rule="missing_value", message="the target is required")
    if y.dropna().nunique() < 2 and len(y.dropna()):
        report.note(table=TABLE, file=name, column=target, rule="single_class",
                    message="the target has one class only: nothing to learn")
    return y


def _check_ids(raw: pd.DataFrame, source: SourceFile, id_column: str,
               report: ProblemReport) -> None:
    """Rows whose id repeats or is missing are noted: an id names one row."""
    ids = raw[id_column]
    dup = ids.duplicated(keep=False) & ids.notna()
    for mask, rule, msg in ((dup, "duplicate_id", "the id appears more than once"),
                            (ids.isna(), "missing_value", "a value is required")):
        if mask.any():
            idx = raw.index[mask.to_numpy()]
            report.add(table=TABLE, file=source.name, rows=idx, file_rows=source.row_of(idx),
                       column=id_column, values=ids[idx], rule=rule, message=msg)


def read_single_table(
    path: Path,
    target: str,
    *,
    id_column: str | None = None,
    exclude: list[str] | tuple[str, ...] = (),
    post_outcome: list[str] | tuple[str, ...] = (),
) -> SingleTable:
    """Parse and check a single table; bad rows stay in, named in `report`. Without an
    `id_column`, the table's obvious one (`obvious_id_column`) is its id."""
    raw, source = read_raw(Path(path))
    if id_column is None and target in raw.columns:
        id_column = obvious_id_column(raw, {target, *exclude, *post_outcome})
    report = ProblemReport()
    _check_columns(raw, source.name, target,
                   [*exclude, *post_outcome] + ([id_column] if id_column else []), report)
    y = _checked_target(raw, source, target, report)
    if id_column and id_column in raw.columns:
        _check_ids(raw, source, id_column, report)
    frame = pd.DataFrame(
        {c: (raw[c].astype("str").where(raw[c].notna()) if c == id_column else type_attribute(
            raw[c])) for c in raw.columns if c != target},
        index=raw.index,
    )
    frame[target] = y
    return SingleTable(frame=frame, target=target, id_column=id_column,
                       excluded=[c for c in exclude if c in raw.columns],
                       post_outcome=[c for c in post_outcome if c in raw.columns],
                       report=report, source=source)


def load_single_table(
    path: Path,
    target: str,
    *,
    id_column: str | None = None,
    exclude: list[str] | tuple[str, ...] = (),
    post_outcome: list[str] | tuple[str, ...] = (),
) -> SingleTable:
    """A clean single table, or ContractError naming every problem."""
    table = read_single_table(path, target, id_column=id_column, exclude=exclude,
                              post_outcome=post_outcome)
    if not table.report.ok:
        raise ContractError(
            f"{path}: {table.report.error_count} problem(s); run `"
            f"{validate_command(path, target, id_column, exclude, post_outcome)}` to see them",
            table.report)
    table.frame[target] = table.frame[target].astype("int64")
    return table


def validate_command(path: Path, target: str, id_column: str | None,
                     exclude: list[str] | tuple[str, ...],
                     post_outcome: list[str] | tuple[str, ...]) -> str:
    """The `propensity validate` line that checks the table as it was read: every option that
    decides a problem (a declared column may be missing) is on it, or running it says ok."""
    import shlex

    words = ["propensity", "validate", "--table", str(path), "--target", target]
    if id_column:
        words += ["--id-col", id_column]
    for option, columns in (("--exclude", exclude), ("--post-outcome", post_outcome)):
        if columns:
            words += [option, ",".join(columns)]
    return shlex.join(words)


def single_table_options(directory: Path) -> tuple[Path, Manifest]:
    """The table file and manifest of an adapter's single-table output folder."""
    manifest = Manifest.read(directory)
    if manifest.shape != "single_table" or not manifest.table or not manifest.target:
        raise PropensityError(f"{directory}: manifest.json does not describe a single table")
    return directory / manifest.table, manifest


def read_single_table_dir(directory: Path) -> SingleTable:
    path, m = single_table_options(directory)
    return read_single_table(path, m.target or "", id_column=m.id_column, exclude=m.exclude,
                             post_outcome=m.post_outcome_columns(TABLE))
