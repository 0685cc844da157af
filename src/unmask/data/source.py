"""Where a recipe's data comes from when the user names it: `data.source=PATH` is a file, a folder
(searched recursively) or a glob; the readers of each modality (`data/user_*.py`) take the files this
module finds and count what they skip.

    files = expand("corpus/**/*.py", suffixes=(".py", ".txt"))
    skips = Skips()
    for f in files:
        try:
            text = f.read_text()
        except UnicodeDecodeError:
            skips.add(f, "not UTF-8 text")
    stats = DataStats(source, files=len(files), examples=n, skips=skips)   # -> RUN/data.json

Data that cannot be used at all (a missing path, an empty folder, a truncated Parquet file) is an
`UnmaskError` whose one line names the file and the reason; a single file that is skipped (bad
encoding, an invalid SMILES, an empty file) is counted, and the counts reach the run's report.
"""

from __future__ import annotations

import glob
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UnmaskError

EXAMPLES_KEPT = 3  # paths named per skip reason in data.json


def unreadable(path, reason: str) -> UnmaskError:
    """The one-line error for data that cannot be used: `path: reason`."""
    return UnmaskError(f"cannot read data {path}: {reason}")


def expand(source: str | Path, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    """The files `source` names, sorted: the file itself, every file under a folder (recursively,
    hidden files and folders left out) or every match of a glob (`**` allowed). With `suffixes`, only
    files ending in one of them (case-insensitive) are kept from folders and globs; a single file is
    taken whatever its suffix. Nothing found is an error."""
    text = str(source)
    if not text:
        raise UnmaskError("data.source is empty; give a file, a folder or a glob")
    path = Path(text).expanduser()
    if any(ch in text for ch in "*?["):
        found = [Path(p) for p in glob.glob(str(path), recursive=True)]
        what = f"the glob {text!r} matches"
    elif path.is_file():
        return [path]
    elif path.is_dir():
        found = [p for p in path.rglob("*") if not any(part.startswith(".") for part in p.relative_to(path).parts)]
        what = f"the folder {path} holds"
    else:
        raise unreadable(path, "no such file or folder")
    files = sorted(p for p in found if p.is_file() and (suffixes is None or p.suffix.lower() in suffixes))
    if not files:
        kinds = f" ({', '.join(suffixes)})" if suffixes else ""
        raise UnmaskError(f"{what} no data files{kinds}")
    return files


@dataclass
class Skips:
    """What a reader left out, by reason: counts and the first few paths (or row numbers)."""
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, where, reason: str) -> None:
        self.counts[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < EXAMPLES_KEPT:
            kept.append(str(where))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {reason: {"count": n, "examples": self.examples[reason]} for reason, n in sorted(self.counts.items())}


@dataclass
class DataStats:
    """What was read from a user's source, written by the recipe as `RUN/data.json` and shown in the
    report: the source, files read, examples made and what was skipped."""
    source: str
    files: int
    examples: int
    skips: Skips = field(default_factory=Skips)

    def to_dict(self) -> dict:
        return {"source": self.source, "files": self.files, "examples": self.examples,
                "skipped": self.skips.total, "skipped_by_reason": self.skips.to_dict()}


def describe_stats(stats: dict) -> str:
    """One paragraph for the report from a `DataStats.to_dict()`."""
    text = f"Data: {stats['examples']} examples from {stats['files']} files of `{stats['source']}`"
    if stats.get("skipped"):
        reasons = "; ".join(f"{reason}: {v['count']}" for reason, v in stats["skipped_by_reason"].items())
        text += f"; {stats['skipped']} skipped ({reasons})"
    return text + "."
