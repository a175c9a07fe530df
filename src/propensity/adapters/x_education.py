"""X Education `Leads.csv` -> a single table in the contract's single-table shape.

What the adapter knows about this data set: `Select` is a form default (missing, not a
category); `Tags`, `Lead Quality`, `Lead Profile`, the `Asymmetrique *` columns and the
`Last (Notable) Activity` columns are filled in by the sales team after contact, so they are
declared post-outcome and no model may use them; `Prospect ID` is the id and `Lead Number` a
second id, excluded.
"""

from __future__ import annotations

from pathlib import Path

from propensity.adapters._result import ImportResult, snake_case
from propensity.contract import Manifest
from propensity.export_reader import read_raw
from propensity.problems import PropensityError
from propensity.single_table import TABLE

TARGET = "converted"
ID_COLUMN = "lead_id"
EXCLUDE = ["lead_number"]
POST_OUTCOME = [
    "tags", "lead_quality", "lead_profile",
    "asymmetrique_activity_index", "asymmetrique_profile_index",
    "asymmetrique_activity_score", "asymmetrique_profile_score",
    "last_activity", "last_notable_activity",
]
FORM_DEFAULT = "Select"
OUT_FILE = "leads.csv"


def import_x_education(file: Path, out_dir: Path) -> ImportResult:
    raw, _ = read_raw(Path(file))
    if "Converted" not in raw.columns or "Prospect ID" not in raw.columns:
        raise PropensityError(
            f"{file}: not the X Education leads file (no Converted / Prospect ID column)")
    frame = raw.rename(columns=snake_case).rename(columns={"prospect_id": ID_COLUMN})
    selects = (frame == FORM_DEFAULT)
    frame = frame.mask(selects)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_dir / OUT_FILE, index=False)
    counts = selects.sum()
    notes = [f"'{FORM_DEFAULT}' -> missing in {c}: {int(n):,} rows"
             for c, n in counts[counts > 0].items()]
    Manifest(
        shape="single_table", table=OUT_FILE, target=TARGET, id_column=ID_COLUMN,
        exclude=EXCLUDE, post_outcome={TABLE: POST_OUTCOME},
        source=f"X Education Leads.csv via propensity import x-education ({Path(file).name})",
        notes=notes,
    ).write(out_dir)
    notes.append("post-outcome (never features): " + ", ".join(POST_OUTCOME))
    return ImportResult(out_dir, {"leads": len(frame)}, notes=notes)

