"""What an adapter did: counts, repairs it made and notes, printable for the CLI."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

REPAIRS_FILE = "repairs.csv"
REPAIR_COLUMNS = ["file", "row", "column", "original", "repaired", "reason"]


@dataclass
class ImportResult:
    out_dir: Path
    counts: dict[str, int]
    repairs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=REPAIR_COLUMNS))
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"wrote {self.out_dir}: "
                 + ", ".join(f"{v:,} {k}" for k, v in self.counts.items())]
        if len(self.repairs):
            lines.append(f"repaired {len(self.repairs)} value(s), each listed in "
                         f"{self.out_dir / REPAIRS_FILE}:")
            counts = self.repairs.groupby(["column", "original", "repaired", "reason"]).size()
            for r in counts.rename("n").reset_index().to_dict("records"):
                lines.append(f"  {r['column']}: {r['original']!r} -> {r['repaired']!r} "
                             f"x{r['n']} ({r['reason']})")
        lines.extend(self.notes)
        return "\n".join(lines)


def snake_case(name: str) -> str:
    """'Total Time Spent on Website' -> 'total_time_spent_on_website'."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")
