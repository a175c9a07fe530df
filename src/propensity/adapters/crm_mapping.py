"""What the Salesforce and HubSpot imports share: the stage mapping, the ledger of every row
and field, dating values, building stage history, and writing the export.

Two rules run through both imports. **Only dated rows go in time**: a stage comes from a
history row or a "Became a ... Date", never from the current status, and a value that holds
only a date (no time) is placed at the end of its day, the first instant it has surely
happened. **Snapshots are not features**: fields whose value is the one at export time
(a status, a page-view count, a last-activity date) are left out unless named with
`--allow-snapshot`, and the field report (`fields.csv`) says of every source column what became
of it. Every source row is imported, explained in bulk by a note, or listed in `left-out.csv`
with its file, row, column and reason.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from propensity.adapters._result import REPAIR_COLUMNS, REPAIRS_FILE, ImportResult, snake_case
from propensity.contract import (
    CLOCK_SKEW,
    DEFAULT_STAGES,
    OPPORTUNITY_STATUSES,
    TABLES,
    TERMINAL_STAGES,
    Manifest,
)
from propensity.problems import PropensityError
from propensity.tables import SourceFile

LEFT_OUT_FILE = "left-out.csv"
FIELDS_FILE = "fields.csv"
LEFT_OUT_COLUMNS = ["file", "row", "column", "value", "record_id", "left_out", "reason"]
"""`left_out` is `row` (the whole row did not go in) or `value` (the row did, without it)."""
FIELD_COLUMNS = ["file", "field", "use", "reason"]
NOT_A_STAGE = "none"
"""Mapping value for a status or lifecycle stage that is no step of the funnel."""
DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ZONED = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")
"""A time that names its offset; any other is in the export's time zone."""

DEFAULT_LEAD_STATUS = {
    "Open - Not Contacted": "lead", "New": "lead", "Open": "lead",
    "Working - Contacted": "mql", "MQL": "mql", "Marketing Qualified": "mql",
    "SQL": "sql", "Sales Qualified": "sql", "Qualified": "sql",
    "Closed - Converted": "opportunity", "Customer": "customer",
    "Closed - Not Converted": "disqualified", "Unqualified": "disqualified",
    "Disqualified": "disqualified",
}
DEFAULT_LIFECYCLE_STAGE = {
    "Subscriber": "lead", "Lead": "lead", "Marketing Qualified Lead": "mql",
    "Sales Qualified Lead": "sql", "Opportunity": "opportunity", "Customer": "customer",
    "Evangelist": NOT_A_STAGE, "Other": NOT_A_STAGE,
    "Disqualified": "disqualified", "Unqualified": "disqualified",
}
DEFAULT_DEAL_STAGE = {"Closed Won": "won", "Closed Lost": "lost"}
"""Opportunity (Salesforce) and deal (HubSpot) stages that close; any other stage is open."""


class CrmMapping(BaseModel):
    """How a CRM's own words map to the contract: the defaults, overridden by a TOML file
    (`[salesforce.lead_status]`, `[hubspot.lifecycle_stage]`, `[*.deal_stage]`,
    `[*.fields.OBJECT]`). Labels match without regard to case."""

    model_config = ConfigDict(extra="forbid")

    lead_status: dict[str, str] = Field(default_factory=dict)
    lifecycle_stage: dict[str, str] = Field(default_factory=dict)
    deal_stage: dict[str, str] = Field(default_factory=dict)
    fields: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Object (Lead, Task, contacts, ...) -> source field -> contract column."""

    @field_validator("lead_status", "lifecycle_stage")
    @classmethod
    def _stages(cls, v: dict[str, str]) -> dict[str, str]:
        allowed = {*DEFAULT_STAGES, *TERMINAL_STAGES, NOT_A_STAGE}
        for label, stage in v.items():
            if stage not in allowed:
                raise ValueError(f"{label!r} = {stage!r}: a stage is one of "
                                 f"{', '.join(sorted(allowed))}")
        return v

    @field_validator("deal_stage")
    @classmethod
    def _statuses(cls, v: dict[str, str]) -> dict[str, str]:
        for label, status in v.items():
            if status not in OPPORTUNITY_STATUSES:
                raise ValueError(f"{label!r} = {status!r}: a deal stage maps to "
                                 f"{', '.join(OPPORTUNITY_STATUSES)}")
        return v

    def stage_of(self, kind: str, label: object) -> str | None:
        """Our stage for a status / lifecycle label; None when the mapping does not know it."""
        table = self.lead_status if kind == "lead_status" else self.lifecycle_stage
        return _lookup(table, label)

    def status_of(self, label: object) -> str:
        """open, won or lost for an opportunity / deal stage (unknown stages are open)."""
        return _lookup(self.deal_stage, label) or "open"

    def stages(self, kind: str, labels: pd.Series) -> pd.Series:
        """`stage_of` for a column, looked up once per distinct label."""
        return labels.map({v: self.stage_of(kind, v) for v in labels.dropna().unique()})

    def statuses(self, labels: pd.Series) -> pd.Series:
        """`status_of` for a column (a missing stage is open)."""
        return labels.map({v: self.status_of(v) for v in labels.dropna().unique()}).fillna(
            "open")

    def field_map(self, obj: str) -> dict[str, str]:
        return dict(self.fields.get(obj, {}))


def _lookup(table: dict[str, str], label: object) -> str | None:
    if not isinstance(label, str):
        return None
    want = label.strip().casefold()
    for key, value in table.items():
        if key.casefold() == want:
            return value
    return None


def _mapping_file(path: Path, crm: str) -> dict[str, object]:
    """The `[crm]` table of the TOML file; an unreadable file or a table for no known CRM is
    an error naming the file."""
    try:
        loaded = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PropensityError(f"{path}: {exc}") from exc
    unknown = set(loaded) - {"salesforce", "hubspot"}
    if unknown:
        raise PropensityError(f"{path}: unknown table(s) {sorted(unknown)} (salesforce, "
                              "hubspot)")
    return dict(loaded.get(crm, {}))


def _laid_over(defaults: dict[str, dict[str, str]], field_defaults: dict[str, dict[str, str]],
               mine: dict[str, object]) -> dict[str, object]:
    """The defaults with the file's keys laid over them: tables merge key by key (`fields`
    object by object), anything else replaces the default."""
    merged: dict[str, object] = {k: dict(v) for k, v in defaults.items()}
    for key, value in mine.items():
        if key == "fields" and isinstance(value, dict):
            fields = {o: dict(m) for o, m in field_defaults.items()}
            for obj, mapping in value.items():
                fields.setdefault(obj, {}).update(mapping)
            merged["fields"] = fields
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}  # type: ignore[dict-item]
        else:
            merged[key] = value
    merged.setdefault("fields", {o: dict(m) for o, m in field_defaults.items()})
    return merged


def load_mapping(path: Path | None, crm: str, defaults: dict[str, dict[str, str]],
                 field_defaults: dict[str, dict[str, str]]) -> CrmMapping:
    """The defaults, with the `[crm]` table of the TOML file at `path` laid over them."""
    mine = _mapping_file(path, crm) if path is not None else {}
    merged = _laid_over(defaults, field_defaults, mine)
    try:
        return CrmMapping.model_validate(merged)
    except ValidationError as exc:
        where = path if path is not None else "the default mapping"
        raise PropensityError(f"{where} [{crm}]: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None


@dataclass
class Ledger:
    """Where every source row and field went: imported, explained in bulk, or left out."""

    left_out: list[pd.DataFrame] = field(default_factory=list)
    fields: list[dict[str, str]] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    imported: dict[str, int] = field(default_factory=dict)
    explained: dict[str, dict[str, int]] = field(default_factory=dict)
    repairs: list[pd.DataFrame] = field(default_factory=list)

    def leave_out(self, source: SourceFile, index: pd.Index | np.ndarray, column: str,
                  values: object, ids: object, reason: str, whole_row: bool = True) -> None:
        """Name each row (by its frame index) that did not go in, or whose value in `column`
        did not (`whole_row=False`), and why."""
        index = np.asarray(index)
        if index.size == 0:
            return
        self.left_out.append(pd.DataFrame({
            "file": source.name, "row": source.row_of(index), "column": column,
            "value": _values(values, index.size), "record_id": _values(ids, index.size),
            "left_out": "row" if whole_row else "value", "reason": reason},
            columns=LEFT_OUT_COLUMNS))

    def explain(self, file: str, reason: str, count: int) -> None:
        """Rows of `file` that carry nothing to import, explained together (no row is lost:
        the reason says why none of them is data)."""
        if count:
            bucket = self.explained.setdefault(file, {})
            bucket[reason] = bucket.get(reason, 0) + count

    def field(self, file: str, name: str, use: str, reason: str = "") -> None:
        self.fields.append({"file": file, "field": name, "use": use, "reason": reason})

    def fields_of(self, src: Source, used: dict[str, str]) -> None:
        """List every column of a file read by hand: `used` ones with their use, the rest
        as not needed."""
        for col in src.frame.columns:
            self.field(src.name, col, used.get(col, "left out: not needed"))

    def unused_files(self, sources: dict[str, Source | None], directory: Path,
                     ) -> list[str]:
        """Files read but not drawn on (their rows are explained), and the CSV files of the
        folder not read at all: named, not passed over in silence."""
        for src in sources.values():
            if src is not None and src.name not in self.totals:
                self.count(src.name, len(src.frame), 0)
                self.explain(src.name, "not used: nothing in the export refers to it",
                             len(src.frame))
        read = {s.name for s in sources.values() if s is not None}
        other = sorted(p.name for p in Path(directory).glob("*.csv") if p.name not in read)
        if not other:
            return []
        shown = ", ".join(other[:12]) + (", ..." if len(other) > 12 else "")
        return [f"not read ({len(other)} file(s) no table of the contract draws on): {shown}"]

    def repair(self, source: SourceFile, index: pd.Index | np.ndarray, column: str,
               original: object, repaired: object, reason: str) -> None:
        index = np.asarray(index)
        if index.size:
            self.repairs.append(pd.DataFrame({
                "file": source.name, "row": source.row_of(index), "column": column,
                "original": _values(original, index.size),
                "repaired": _values(repaired, index.size), "reason": reason},
                columns=REPAIR_COLUMNS))

    def count(self, file: str, total: int, imported: int) -> None:
        self.totals.setdefault(file, total)  # read_object counted deleted rows already
        self.imported[file] = self.imported.get(file, 0) + imported

    def left_out_frame(self) -> pd.DataFrame:
        return (pd.concat(self.left_out, ignore_index=True) if self.left_out
                else pd.DataFrame(columns=LEFT_OUT_COLUMNS))

    def unexplained(self) -> dict[str, int]:
        """Rows per file neither imported, explained nor left out: 0 everywhere, or a bug."""
        left = self.left_out_frame()
        left = left[left["left_out"] == "row"]
        rows = left.drop_duplicates(["file", "row"]).groupby("file").size()
        out = {}
        for file, total in self.totals.items():
            done = (self.imported.get(file, 0) + sum(self.explained.get(file, {}).values())
                    + int(rows.get(file, 0)))
            out[file] = total - done
        return out


def _values(values: object, n: int) -> object:
    if values is None:
        return [None] * n
    if isinstance(values, pd.Series | pd.Index):
        return values.to_numpy()
    return values


def parse_times(raw: pd.Series, source: SourceFile, column: str, ledger: Ledger,
                ids: pd.Series | None = None, tz: str = "UTC", refuse: bool = True,
                whole_row: bool = True) -> pd.Series:
    """UTC timestamps; a date with no time is the end of its day (the first instant it has
    surely happened); naive times are in `tz`. An unreadable value is NaT and, when `refuse`,
    its row is named in the ledger."""
    text = raw.astype("string").str.strip()
    dated = text.str.fullmatch(DATE_ONLY.pattern).fillna(False).astype(bool)
    aware = text.str.contains(ZONED.pattern, regex=True).fillna(False).astype(bool)
    out = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    if aware.any():  # each with its own offset, as UTC
        out[aware] = pd.to_datetime(text[aware], errors="coerce", format="ISO8601", utc=True)
    if (~aware).any():
        naive = pd.to_datetime(text[~aware], errors="coerce", format="ISO8601")
        out[~aware] = naive.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert(
            "UTC")
    out[dated] = out[dated] + pd.Timedelta(days=1)
    bad = text.notna() & out.isna()
    if refuse and bad.any():
        ledger.leave_out(source, raw.index[bad], column, raw[bad],
                         None if ids is None else ids[bad],
                         "not a date/time (ISO 8601 expected)", whole_row)
    return out


def build_stage_history(candidates: pd.DataFrame, stages: tuple[str, ...],
                        ledger: Ledger, sources: dict[str, SourceFile],
                        created: pd.Series) -> pd.DataFrame:
    """Stage rows from dated candidates (lead_id, stage, entered_at, file, index, column,
    value, whole_row: the candidate is a row of its file, not one value of a row): the first
    stage is implied by creation and the first entry of a stage is kept;
    a later entry of a stage at or below the highest one reached is a move back the contract
    cannot hold, so it is left out by name, as is a stage dated before its lead was created
    (`created`: lead id -> creation time)."""
    rank = {s: i for i, s in enumerate(stages)}
    early = candidates["entered_at"] < candidates["lead_id"].map(created)
    for (file, whole), part in candidates[early].groupby(["file", "whole_row"]):
        ledger.leave_out(sources[str(file)], part["index"].to_numpy(),
                         str(part["column"].iloc[0]), part["value"], part["lead_id"],
                         "a stage dated before its lead was created", bool(whole))
    candidates = candidates[~early]
    frame = candidates.assign(rank=candidates["stage"].map(rank)).sort_values(
        ["lead_id", "entered_at", "rank"], kind="stable")
    first = frame["stage"] == stages[0]
    rows = frame["whole_row"].astype(bool)
    for file, n in frame[first & rows].groupby("file").size().items():
        ledger.explain(str(file), f"entries of the first stage ({stages[0]}): implied by "
                       "the lead's creation", int(n))
    frame = frame[~first]
    again = frame.duplicated(["lead_id", "stage"])
    for file, n in frame[again & frame["whole_row"].astype(bool)].groupby("file").size().items():
        ledger.explain(str(file), "a stage entered again: the contract keeps its first entry",
                       int(n))
    frame = frame[~again]
    best = frame["rank"].fillna(-1).groupby(frame["lead_id"]).cummax()
    back = frame["rank"].notna() & (frame["rank"] < best)
    for (file, whole), part in frame[back].groupby(["file", "whole_row"]):
        ledger.leave_out(sources[str(file)], part["index"].to_numpy(),
                         str(part["column"].iloc[0]), part["value"], part["lead_id"],
                         "a move back to a lower stage: the contract records stages going up",
                         bool(whole))
    kept = frame[~back]
    for file, n in kept[kept["whole_row"].astype(bool)].groupby("file").size().items():
        ledger.imported[str(file)] = ledger.imported.get(str(file), 0) + int(n)
    return kept[["lead_id", "stage", "entered_at"]].reset_index(drop=True)


def attribute_name(field_name: str) -> str:
    """`Job_Function__c` -> `job_function`; `Country/Region` -> `country_region`."""
    return snake_case(re.sub(r"__c$", "", field_name))


def _repairs(ledger: Ledger) -> pd.DataFrame:
    """Every repair made on the way in, one frame (empty, with its columns, when none)."""
    return (pd.concat(ledger.repairs, ignore_index=True) if ledger.repairs
            else pd.DataFrame(columns=REPAIR_COLUMNS))


def _write_tables(out_dir: Path, present: dict[str, pd.DataFrame]) -> None:
    """The contract tables as CSV, times as ISO UTC; any table of an earlier import removed,
    so a table this import does not feed is absent rather than stale."""
    for name in TABLES:
        (out_dir / f"{name}.parquet").unlink(missing_ok=True)
        (out_dir / f"{name}.csv").unlink(missing_ok=True)
    for name, table in present.items():
        out = table.copy()
        for col in out.columns:
            if isinstance(out[col].dtype, pd.DatetimeTZDtype):
                out[col] = out[col].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").where(
                    out[col].notna(), None)
        out.to_csv(out_dir / f"{name}.csv", index=False)


def _write_ledger(out_dir: Path, ledger: Ledger, left: pd.DataFrame) -> None:
    """`left-out.csv` and `repairs.csv` (only when not empty) and `fields.csv`."""
    for path, frame in ((out_dir / LEFT_OUT_FILE, left),
                        (out_dir / REPAIRS_FILE, _repairs(ledger))):
        path.unlink(missing_ok=True)
        if len(frame):
            frame.to_csv(path, index=False)
    pd.DataFrame(ledger.fields, columns=FIELD_COLUMNS).to_csv(out_dir / FIELDS_FILE,
                                                              index=False)


def _file_lines(ledger: Ledger, left: pd.DataFrame) -> list[str]:
    """One line per source file accounting for each of its rows, then any unexplained."""
    lines = []
    per_file = left[left["left_out"] == "row"].drop_duplicates(["file", "row"]).groupby(
        "file").size()
    values = left[left["left_out"] == "value"].groupby("file").size()
    for file, total in ledger.totals.items():
        parts = [f"{ledger.imported.get(file, 0):,} imported"]
        parts += [f"{n:,} {why}" for why, n in ledger.explained.get(file, {}).items()]
        if per_file.get(file, 0):
            parts.append(f"{int(per_file[file]):,} left out (listed in {LEFT_OUT_FILE})")
        if values.get(file, 0):
            parts.append(f"{int(values[file]):,} value(s) left out of imported rows (listed "
                         f"in {LEFT_OUT_FILE})")
        lines.append(f"{file}: {total:,} rows: " + "; ".join(parts))
    for file, n in ledger.unexplained().items():
        if n:
            lines.append(f"{file}: {n:,} row(s) unexplained (a bug: please report it)")
    return lines


def _snapshot_line(ledger: Ledger) -> list[str]:
    """The snapshot fields left out, and how to use one anyway (no line when none)."""
    snapshots = [f for f in ledger.fields if f["use"] == "left out: snapshot"]
    if not snapshots:
        return []
    return ["snapshot fields left out (their value is the one at export time; "
            "--allow-snapshot FIELD to use one anyway): "
            + ", ".join(f"{f['file']}:{f['field']}" for f in snapshots)]


def write_import(out_dir: Path, tables: dict[str, pd.DataFrame | None], ledger: Ledger,
                 source: str, notes: list[str]) -> ImportResult:
    """Write the contract tables, `left-out.csv`, `fields.csv`, `repairs.csv` and the
    manifest; the result's summary accounts for every source row. A table is None when no
    source file feeds it: absent (nothing known), not empty (nothing happened)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    present = {k: v for k, v in tables.items() if v is not None}
    _write_tables(out_dir, present)
    left = ledger.left_out_frame()
    _write_ledger(out_dir, ledger, left)
    lines = list(notes) + _file_lines(ledger, left) + _snapshot_line(ledger)
    lines.append(f"what became of every source column: {out_dir / FIELDS_FILE}")
    Manifest(source=source, notes=lines).write(out_dir)
    from propensity.export_reader import read_export

    report = read_export(out_dir).report  # what came in, against the contract
    if not report.ok:
        lines.append(f"{report.error_count:,} contract problem(s) in what came in (e.g. a "
                     f"persona outside the allowed values): propensity validate {out_dir}")
    return ImportResult(out_dir, {k: len(v) for k, v in present.items()}, _repairs(ledger),
                        lines)


@dataclass(frozen=True)
class FieldRule:
    """What a source field is: a contract `column`, an `attribute`, a `snapshot` (value as of
    the export), `identity` (names a person or company), `elsewhere` (read by another step,
    e.g. dates that become stages) or `system` (CRM bookkeeping)."""

    use: str
    target: str = ""
    reason: str = ""


SNAPSHOT = "snapshot"


def field_rules(columns: dict[str, str], attributes: dict[str, str], snapshots: dict[str, str],
                identity: Iterable[str] = (), system: Iterable[str] = (),
                elsewhere: dict[str, str] | None = None) -> dict[str, FieldRule]:
    """An object's known fields: contract columns, attributes (renamed), snapshots with why,
    identifying and bookkeeping fields, and fields read by another step (`"target: why"`)."""
    rules = {k: FieldRule("column", v) for k, v in columns.items()}
    rules |= {k: FieldRule("attribute", v) for k, v in attributes.items()}
    rules |= {k: FieldRule(SNAPSHOT, reason=v) for k, v in snapshots.items()}
    rules |= {k: FieldRule("identity") for k in identity}
    rules |= {k: FieldRule("system") for k in system}
    rules |= {k: FieldRule("elsewhere", *v.split(": ", 1)) if ": " in v
              else FieldRule("elsewhere", v) for k, v in (elsewhere or {}).items()}
    return rules


def mapped_fields(rules: dict[str, FieldRule], mapping: CrmMapping,
                  obj: str) -> dict[str, FieldRule]:
    """`rules` with the mapping file's fields of `obj` laid over them."""
    return rules | {k: FieldRule("column", v, "named in the mapping file")
                    for k, v in mapping.field_map(obj).items()}
USE_TEXT = {"identity": "left out: identifies a person or company, not a feature",
            "system": "left out: CRM bookkeeping", "empty": "left out: no value in any row"}


def _rule_here(name: str, rule: FieldRule, contract: tuple[str, ...], table: str,
               allowed: set[str], attributes: bool) -> FieldRule:
    """The rule for `name` in this import: an attribute named like a contract column fills
    it, an allowed snapshot is an attribute, and a table without attributes leaves them out."""
    if rule.use == "attribute" and not rule.target and attribute_name(name) in contract:
        rule = FieldRule("column", attribute_name(name))
    if rule.use == SNAPSHOT and name in allowed:
        rule = FieldRule("attribute", reason="snapshot allowed by --allow-snapshot: "
                         "its value is the one at export time")
    if rule.use == "attribute" and not attributes:
        rule = FieldRule("left out", reason=f"the contract's {table} have no attributes")
    return rule


def _note_not_taken(ledger: Ledger, file: str, name: str, rule: FieldRule) -> None:
    """Account for a field that fills nothing: a snapshot, read by another step, or left out."""
    if rule.use == SNAPSHOT:
        ledger.field(file, name, "left out: snapshot", rule.reason)
    elif rule.use == "elsewhere":
        ledger.field(file, name, rule.target, rule.reason)
    else:
        ledger.field(file, name, USE_TEXT.get(rule.use, "left out"), rule.reason)


def _refuse_clash(taken: dict[str, str], target: str, file: str, name: str) -> None:
    """Two source fields filling one column is an error: which one wins would be a guess."""
    if target in taken.values():
        other = next(k for k, v in taken.items() if v == target)
        raise PropensityError(f"{file}: {other} and {name} both map to {target}; "
                              "map one elsewhere in the mapping file")


def take_fields(frame: pd.DataFrame, file: str, table: str, rules: dict[str, FieldRule],
                unknown: FieldRule, allowed: set[str], ledger: Ledger,
                attributes: bool = True) -> pd.DataFrame:
    """The contract columns and attributes of one object's rows, every field accounted for.

    A field named after a contract column of `table` (`Persona__c`, "Product") fills that
    column; a snapshot comes through as an attribute only when `allowed` names it.
    """
    contract = TABLES[table].names
    taken: dict[str, str] = {}
    for name in frame.columns:
        rule = _rule_here(name, rules.get(name, unknown), contract, table, allowed, attributes)
        if rule.use not in ("column", "attribute"):
            _note_not_taken(ledger, file, name, rule)
            continue
        target = rule.target or attribute_name(name)
        _refuse_clash(taken, target, file, name)
        if frame[name].isna().all() and rule.use == "attribute":
            ledger.field(file, name, USE_TEXT["empty"])
            continue
        taken[name] = target
        ledger.field(file, name, f"{table}.{target}" if rule.use == "column"
                     else f"attribute {target}", rule.reason)
    out = frame[list(taken)].rename(columns=taken)
    ordered = [c for c in contract if c in out.columns]
    out = out[ordered + [c for c in out.columns if c not in contract]]
    out.attrs["source_columns"] = {v: k for k, v in taken.items()}
    return out


def source_column(frame: pd.DataFrame, column: str) -> str:
    """The source field a column of `take_fields`' result came from (to name it in reports)."""
    return str(frame.attrs.get("source_columns", {}).get(column, column))


@dataclass
class Source:
    """One CRM file as read: raw string cells, where each row came from, and (for campaign
    members) which rows gave a lead its campaign."""

    frame: pd.DataFrame
    source: SourceFile
    attribution: set[int] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.source.name


def read_object(path: Path, ledger: Ledger, deleted_column: str | None = "IsDeleted",
                ) -> Source | None:
    """A CRM file, or None when the export does not have it; rows the CRM marks deleted are
    left out by name."""
    from propensity.export_reader import read_raw

    if not path.exists():
        return None
    frame, source = read_raw(path)
    if deleted_column and deleted_column in frame.columns:
        gone = frame[deleted_column].astype("string").str.lower().isin(["true", "1"])
        ledger.leave_out(source, frame.index[gone], deleted_column, frame.loc[gone,
                         deleted_column], frame.get("Id", pd.Series(index=frame.index))[gone],
                         "deleted in the CRM (the export included deleted records)")
        frame = frame[~gone.to_numpy()]
        ledger.totals[source.name] = len(gone)  # deleted rows still count as rows of the file
    return Source(frame, source)


def refuse_unlinked(src: Source, frame: pd.DataFrame, key: str, field_name: str,
                    ledger: Ledger) -> pd.Series:
    """Rows with an id, each id once: an empty or repeated id is left out by name (every copy
    of a repeated one, since which is right cannot be told)."""
    ids = frame[key]
    empty = ids.isna()
    ledger.leave_out(src.source, frame.index[empty], field_name, ids[empty], None,
                     "no id")
    dup = ids.duplicated(keep=False) & ~empty
    ledger.leave_out(src.source, frame.index[dup], field_name, ids[dup], ids[dup],
                     "the same id on several rows")
    return ~empty & ~dup


def link_column(raw: pd.DataFrame, names: tuple[str, ...]) -> pd.Series:
    """The first non-empty of several id columns (LeadId, else ContactId)."""
    out = pd.Series(None, index=raw.index, dtype="object")
    for name in names:
        if name in raw.columns:
            out = out.fillna(raw[name])
    return out


def numbers(raw: pd.Series, source: SourceFile, column: str, ledger: Ledger,
            ids: pd.Series) -> pd.Series:
    """Numbers; a value that is not one is left out of its row by name."""
    out = pd.to_numeric(raw, errors="coerce")
    bad = raw.notna() & out.isna()
    ledger.leave_out(source, raw.index[bad], column, raw[bad], ids[bad], "not a number",
                     whole_row=False)
    return out


def stage_candidates(frame: pd.DataFrame, file: str, column: str,
                     whole_row: bool = False) -> pd.DataFrame:
    """Rows for `build_stage_history`, remembering where each came from."""
    out = pd.DataFrame({"lead_id": frame.get("lead_id"), "stage": frame.get("stage"),
                        "entered_at": frame.get("entered_at"), "value": frame.get("value")},
                       index=frame.index, columns=["lead_id", "stage", "entered_at", "value"])
    out["file"], out["column"], out["whole_row"] = file, column, whole_row
    out["index"] = frame.index
    return out.reset_index(drop=True)


CONTRACT_EVENT_COLUMNS = ("event_type", "channel", "value")


def activity_events(src: Source | None, who: dict[str, str], ledger: Ledger,
                    times: Callable[[pd.DataFrame], tuple[pd.Series, str]], channel_field: str,
                    value_field: str, default_type: str, who_field: str = "WhoId",
                    type_field: str = "Type", tz: str = "UTC",
                    created: pd.Series | None = None) -> pd.DataFrame:
    """Activities of a lead or contact as events. `event_type` is the activity's Type (else
    `default_type`), `channel` its subtype and `value` `value_field`; a field named after an
    event column (`Channel__c`, "Value") fills that column instead. An activity more than the
    contract's clock skew before its lead's creation (`created`) is left out by name."""
    columns = ["lead_id", "occurred_at", "event_type", "channel", "value"]
    if src is None:
        return pd.DataFrame(columns=columns)
    raw = src.frame
    named = {attribute_name(c): c for c in raw.columns
             if attribute_name(c) in CONTRACT_EVENT_COLUMNS and c != type_field}
    when, time_field = times(raw)
    t = parse_times(when, src.source, time_field, ledger, raw.get("Id"), tz=tz)
    lead = raw.get(who_field, pd.Series(index=raw.index, dtype="object")).map(who)
    orphan = lead.isna() & t.notna()
    ledger.leave_out(src.source, raw.index[orphan], who_field, raw.get(who_field, pd.Series(
        index=raw.index))[orphan], raw.get("Id", pd.Series(index=raw.index))[orphan],
        "not tied to an imported lead or contact")
    use = lead.notna() & t.notna()
    if created is not None:
        early = use & (t < lead.map(created) - CLOCK_SKEW)
        ledger.leave_out(src.source, raw.index[early], time_field, when[early],
                         raw.get("Id", pd.Series(index=raw.index))[early],
                         "more than a day before its lead was created")
        use &= ~early
    ledger.count(src.name, len(raw), int(use.sum()))

    def pick(col: str, fallback: str | None) -> pd.Series:
        if col in named:
            return raw[named[col]]
        if fallback and fallback in raw.columns:
            return raw[fallback]
        return pd.Series(None, index=raw.index, dtype="object")

    kind = pick("event_type", type_field).fillna(default_type)
    value = numbers(pick("value", value_field), src.source, named.get("value", value_field),
                    ledger, raw.get("Id", pd.Series(index=raw.index)))
    used = {who_field: "events.lead_id", time_field: "events.occurred_at",
            named.get("event_type", type_field): "events.event_type",
            named.get("channel", channel_field): "events.channel",
            named.get("value", value_field): "events.value"}
    for col in raw.columns:
        ledger.field(src.name, col, used.get(col, "left out: not an event column"))
    out = pd.DataFrame({"lead_id": lead, "occurred_at": t, "event_type": kind,
                        "channel": pick("channel", channel_field), "value": value})
    return out[use].reset_index(drop=True)


def opportunity_stages(opps: pd.DataFrame, file: str, created_column: str,
                       closed_column: str) -> pd.DataFrame:
    """Stage candidates an opportunity of a lead dates: `opportunity` at its creation,
    `customer` / `lost` at its close. `opps` keeps its source rows' index, so a candidate
    left out later is named by its row."""
    linked = opps[opps["lead_id"].notna()]
    parts = [stage_candidates(pd.DataFrame({
        "lead_id": linked["lead_id"], "stage": "opportunity", "entered_at": linked["created_at"],
        "value": linked["opportunity_id"]}), file, created_column)]
    for status, stage in (("won", "customer"), ("lost", "lost")):
        part = linked[linked["status"] == status]
        parts.append(stage_candidates(pd.DataFrame({
            "lead_id": part["lead_id"], "stage": stage, "entered_at": part["closed_at"],
            "value": part["opportunity_id"]}), file, closed_column))
    return pd.concat(parts, ignore_index=True)


OPPORTUNITY_COLUMNS = ["opportunity_id", "lead_id", "account_id", "created_at", "closed_at",
                       "amount", "status", "owner_id", "product"]


def keep_linked_accounts(frame: pd.DataFrame, src: Source, column: str, key: str,
                         accounts: pd.DataFrame, ledger: Ledger) -> None:
    """Blank (and name) each account id that is not in the accounts file: the row comes in
    without its account rather than breaking the contract."""
    if "account_id" not in frame.columns or not len(accounts):
        return
    bad = frame["account_id"].notna() & ~frame["account_id"].isin(accounts["account_id"])
    ledger.leave_out(src.source, frame.index[bad], column, frame.loc[bad, "account_id"],
                     frame.loc[bad, key], "no such account in the accounts file: the row "
                     "comes in without it", whole_row=False)
    frame.loc[bad, "account_id"] = None
