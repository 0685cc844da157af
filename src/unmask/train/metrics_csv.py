"""`RUN/metrics.csv`: one row per logged step, never a duplicate and never a torn row.

On every start the file is cut back to the step training starts from (no rows at all for a fresh
start), so a run that died before its first checkpoint, or after its last one, leaves no rows that
the resumed run writes again; a last line cut short by a kill or a full disk is dropped. Each row is
appended in one write (with the header, for a new file), so a crash leaves at most one torn line.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path


class MetricsCsv:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.fields: list[str] | None = None  # the columns, from the file or the first row

    def truncate(self, step: int) -> None:
        """Keep only whole rows of steps <= `step`; written atomically."""
        if not self.path.exists():
            return
        text = self.path.read_text(errors="replace")
        if not text.endswith("\n"):  # torn last line
            text = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = [r for r in reader if None not in r and None not in r.values() and _step(r) <= step]
        self.fields = reader.fieldnames
        if not rows:
            self.path.unlink()
            return
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.fields)
        writer.writeheader()
        writer.writerows(rows)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(out.getvalue())
        os.replace(tmp, self.path)

    def append(self, row: dict) -> None:
        """One row (and the header first, for a new file) in a single write."""
        new = not self.path.exists()
        if new or self.fields is None:
            self.fields = list(row)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.fields, restval="", extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)
        with self.path.open("a", newline="") as f:
            f.write(text.getvalue())


def _step(row: dict) -> float:
    try:
        return int(row["step"])
    except (KeyError, ValueError, TypeError):
        return math.inf
