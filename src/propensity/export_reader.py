"""Reading a CRM export (a directory of CSV or Parquet tables) into typed, UTC frames.

Parsing and validation are one step on purpose: the loader is the only place that still knows
which spreadsheet row a value came from, so it is where a bad value gets named. A frame's index
is the 0-based position of its row in the file; `SourceFile.row_of` turns it into the row a
person looks up.
"""

from __future__ import annotations

import codecs
import csv
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from propensity.contract import (
    TABLES,
    TIMESTAMP_DTYPE,
    UNKNOWN_WHEN_MISSING,
    Kind,
    Manifest,
    TableSpec,
)
from propensity.problems import ContractError, ProblemReport, PropensityError
from propensity.tables import CrmExport, SourceFile
from propensity.timestamps import to_utc
from propensity.validation import drop_rejected_rows, validate_export

SUFFIXES = (".parquet", ".csv")


def fingerprint(location: Path) -> str:
    """sha256 over an export's table files and manifest (or over one single-table file):
    which data a model was trained on."""
    import hashlib

    digest = hashlib.sha256()
    location = Path(location)
    paths = [location] if location.is_file() else sorted(location.iterdir())
    for path in paths:
        if path.suffix in SUFFIXES or path.name == "manifest.json":
            if path.stem == "truth":
                continue
            digest.update(path.name.encode())
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def find_table_file(directory: Path, table: str) -> Path | None:
    found = [directory / f"{table}{s}" for s in SUFFIXES if (directory / f"{table}{s}").exists()]
    if len(found) > 1:
        raise PropensityError(
            f"{directory}: both {found[0].name} and {found[1].name} exist; keep one"
        )
    return found[0] if found else None


CSV_ENCODING: ContextVar[str] = ContextVar("csv_encoding", default="utf-8")
"""The text encoding CSV files are read in (`propensity --encoding latin-1 ...`)."""


def _undecodable(path: Path, encoding: str) -> PropensityError:
    """Which line of the file cannot be read in `encoding`, as a sentence a person acts on."""
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError as exc:
                return PropensityError(
                    f"{path}: line {number} is not valid {encoding} text (byte "
                    f"0x{line[exc.start]:02x} at character {exc.start + 1}); if the file is "
                    "in another encoding, name it: propensity --encoding latin-1 (or cp1252, "
                    "utf-16) ...")
    return PropensityError(f"{path}: not readable as {encoding} text")


def _read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file as it is; a damaged one is one readable error."""
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise PropensityError(f"{path}: not a readable Parquet file ({exc})") from exc
    return frame.reset_index(drop=True)


def _is_utf8(encoding: str) -> bool:
    """Whether `encoding` is UTF-8 under any of its names; an unknown encoding is an error."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise PropensityError(f"unknown text encoding {encoding!r} (try utf-8, latin-1, "
                              "cp1252)") from None
    return codecs.lookup(encoding).name == "utf-8"


def _csv_header(path: Path, encoding: str, utf8: bool) -> list[str]:
    """The CSV's header row (a UTF-8 byte order mark dropped); a file that has none, or
    names a column twice, is an error: every later message names columns by it."""
    try:
        with path.open(newline="", encoding="utf-8-sig" if utf8 else encoding) as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError:
        raise _undecodable(path, encoding) from None
    except csv.Error as exc:
        raise PropensityError(f"{path}: line 1 is not a CSV header ({exc})") from None
    if not header:
        raise PropensityError(f"{path}: empty file (no header row)")
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise PropensityError(f"{path}: duplicate column names {dupes}")
    return header


def _read_csv_text(path: Path, header: list[str], encoding: str, utf8: bool) -> pd.DataFrame:
    """Every cell as a string, "" as missing: typing is the contract's job, not the reader's."""
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(encoding="utf8" if utf8 else encoding),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc) or "utf" in str(exc).lower():
            raise _undecodable(path, encoding) from None
        raise PropensityError(f"{path}: not a readable CSV file ({exc})") from exc
    frame = table.to_pandas()
    if not utf8 and len(frame.columns) and str(frame.columns[0]).startswith("\ufeff"):
        frame = frame.rename(columns={frame.columns[0]: str(frame.columns[0])[1:]})
    return frame


def read_raw(path: Path, encoding: str | None = None) -> tuple[pd.DataFrame, SourceFile]:
    """Read a file without interpreting it: CSV cells stay strings, empty cells are missing."""
    if not path.exists():
        raise PropensityError(f"{path}: no such file")
    if path.suffix == ".parquet":
        return _read_parquet(path), SourceFile(path, header_rows=0)
    if path.suffix != ".csv":
        raise PropensityError(f"{path}: expected a .csv or .parquet file")
    encoding = encoding or CSV_ENCODING.get()
    utf8 = _is_utf8(encoding)
    header = _csv_header(path, encoding, utf8)
    return _read_csv_text(path, header, encoding, utf8), SourceFile(path, header_rows=1)


def parse_column(
    raw: pd.Series,
    kind: Kind,
    *,
    table: str,
    source: SourceFile,
    report: ProblemReport,
) -> pd.Series:
    """Type one column; every non-missing value that does not parse is reported, never coerced."""
    if kind is Kind.STRING:
        if pd.api.types.is_float_dtype(raw) or pd.api.types.is_integer_dtype(raw):
            # Parquet ids written as numbers: keep their text, not "1.0"
            out = raw.astype("Int64").astype("string") if _is_integral(raw) else raw.astype(str)
            return out.astype("str").where(raw.notna())
        return _empty_is_missing(raw)
    if kind is Kind.TIMESTAMP:
        parsed = to_utc(raw)
        rule, message = "unparseable_timestamp", "not an ISO 8601 timestamp"
    else:
        parsed = pd.to_numeric(raw, errors="coerce")
        if not pd.api.types.is_float_dtype(parsed):
            parsed = parsed.astype("float64")
        rule, message = "not_a_number", "not a number"
    bad = raw.notna() & parsed.isna()
    if bad.any():
        idx = raw.index[bad.to_numpy()]
        report.add(
            table=table, file=source.name, rows=idx, file_rows=source.row_of(idx),
            column=str(raw.name), values=raw[bad], rule=rule, message=message,
        )
    return parsed


def _empty_is_missing(raw: pd.Series) -> pd.Series:
    """Strings (plain or categorical) with "" as missing, in every file format alike."""
    if isinstance(raw.dtype, pd.CategoricalDtype):
        cats = raw.cat.categories
        if not pd.api.types.is_string_dtype(cats.dtype) or pd.api.types.is_object_dtype(cats):
            raw = raw.cat.rename_categories(list(cats.astype("str")))
        return raw.cat.remove_categories([""]) if "" in raw.cat.categories else raw
    text = raw if raw.dtype == "str" else raw.astype("str").where(raw.notna())
    return text.mask(text == "")


def _is_integral(values: pd.Series) -> bool:
    v = values.dropna()
    return bool((v == np.floor(v)).all()) if len(v) else True


def _require_columns(raw: pd.DataFrame, spec: TableSpec, source: SourceFile,
                     report: ProblemReport) -> None:
    """Every required column absent is noted, then the table refused: nothing can be checked
    row by row without them."""
    missing = [c.name for c in spec.columns if c.required and c.name not in raw.columns]
    for name in missing:
        report.note(table=spec.name, file=source.name, column=name, rule="missing_column",
                    message=f"required column {name!r} is absent")
    if missing:
        raise ContractError(
            f"{source.name}: required column(s) {', '.join(missing)} absent", report
        )


def _typed_column(name: str, col: pd.Series, spec: TableSpec, source: SourceFile,
                  report: ProblemReport, numeric_attributes: set[str] | None) -> pd.Series:
    """A contract column parsed to its kind; an attribute typed from its data (or, for a part
    of a table, as decided over the whole); anything else as it came."""
    if name in spec.names:
        return parse_column(
            col, spec.column(name).kind, table=spec.name, source=source, report=report
        )
    if not spec.has_attributes:
        return col
    if numeric_attributes is None or name in numeric_attributes:
        return type_attribute(col)
    return col.astype("str").where(col.notna())


def _absent_column(kind: Kind, index: pd.Index) -> pd.Series:
    """An optional contract column the file lacks: all missing, of its kind's dtype."""
    dtype = TIMESTAMP_DTYPE if kind is Kind.TIMESTAMP else (
        "float64" if kind is Kind.NUMBER else "str")
    return pd.Series(None, index=index, dtype=dtype)


def parse_table(
    raw: pd.DataFrame, spec: TableSpec, source: SourceFile, report: ProblemReport,
    numeric_attributes: set[str] | None = None,
) -> pd.DataFrame:
    """Columns of the contract to their kinds; attribute columns typed from their data, or,
    for a part of a table (Spark), by `numeric_attributes` decided over the whole table."""
    _require_columns(raw, spec, source, report)
    out = {name: _typed_column(name, raw[name], spec, source, report, numeric_attributes)
           for name in raw.columns}
    frame = pd.DataFrame(out, index=raw.index)
    for absent in spec.columns:
        if absent.name not in frame.columns:
            frame[absent.name] = _absent_column(absent.kind, frame.index)
    return frame


def type_attribute(values: pd.Series) -> pd.Series:
    """Numbers stay numeric; anything else is a category label (the contract's typing rule).

    A dictionary-encoded column (Parquet) is typed by its distinct values and stays
    categorical: a million leads with a dozen countries are not a million strings.
    """
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    if pd.api.types.is_bool_dtype(values):
        return values.astype("str").where(values.notna())
    if isinstance(values.dtype, pd.CategoricalDtype):
        cats = pd.Series(values.cat.categories)
        numeric = pd.to_numeric(cats, errors="coerce")
        codes = values.cat.codes.to_numpy()
        if len(cats) and numeric.notna().all():
            return pd.Series(np.where(codes >= 0, numeric.to_numpy(dtype="float64")[
                np.maximum(codes, 0)], np.nan), index=values.index, name=values.name)
        return values.cat.rename_categories(cats.astype("str").tolist())
    numeric = pd.to_numeric(values, errors="coerce")
    if values.notna().any() and (numeric.notna() == values.notna()).all():
        return numeric.astype("float64")
    return values.astype("str").where(values.notna())


def read_export(directory: Path) -> CrmExport:
    """Parse and validate every table of an export; the result keeps its bad rows.

    Use `load_export` to get only clean rows. This is what `propensity validate` reports on.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PropensityError(f"{directory}: not a directory (an export is a folder of tables)")
    manifest = _read_manifest(directory)
    if manifest.shape == "single_table":
        raise PropensityError(
            f"{directory} holds a single table ({manifest.table}); "
            f"use --table {directory / (manifest.table or '?')} --target {manifest.target}"
        )
    report = ProblemReport()
    frames: dict[str, pd.DataFrame] = {}
    files: dict[str, SourceFile] = {}
    for name, spec in TABLES.items():
        path = find_table_file(directory, name)
        if path is None:
            continue
        raw, source = read_raw(path)
        frames[name] = parse_table(raw, spec, source, report)
        files[name] = source
    if "leads" not in frames:
        raise PropensityError(
            f"{directory}: no leads.csv or leads.parquet (the one required table)")
    if frames["leads"].empty:  # here, not in validate_export: a Spark partition may be empty
        report.note(table="leads", file=files["leads"].name, column=None, rule="empty_table",
                    message="the leads table has no rows: nothing to count or learn from")
    for col in UNKNOWN_WHEN_MISSING:
        frames["leads"][col] = fill_unknown(frames["leads"][col])
    export = CrmExport(
        leads=frames["leads"],
        events=frames.get("events"),
        stage_history=frames.get("stage_history"),
        opportunities=frames.get("opportunities"),
        accounts=frames.get("accounts"),
        manifest=manifest,
        report=report,
        files=files,
    )
    validate_export(export)
    return export


def load_export(directory: Path, *, drop_bad_rows: bool = False) -> CrmExport:
    """A clean export: raises ContractError on any error, or drops and names the bad rows.

    Dropping cascades: a row that points at a rejected lead is rejected too, and named.
    """
    export = read_export(directory)
    if export.report.ok:
        return export
    if not drop_bad_rows:
        n = export.report.error_count
        raise ContractError(
            f"{directory}: {n} problem(s) break the data contract; "
            f"run `propensity validate {directory}` to see them", export.report
        )
    drop_rejected_rows(export)
    if export.leads.empty:  # what is left would fail later, and less clearly
        raise ContractError(f"{directory}: no lead is left to use; run `propensity validate "
                            f"{directory}` to see why", export.report)
    return export


def fill_unknown(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.CategoricalDtype):
        if "unknown" not in values.cat.categories:
            values = values.cat.add_categories(["unknown"])
        return values.fillna("unknown")
    return values.fillna("unknown")


def _read_manifest(directory: Path) -> Manifest:
    try:
        return Manifest.read(directory)
    except Exception as exc:
        raise PropensityError(f"{directory / 'manifest.json'}: invalid manifest ({exc})") from exc
