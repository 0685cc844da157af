"""A `Run`: one run folder and everything a recipe writes or reads there.

    RUN/
      checkpoints/step_*/   model.safetensors, config.json (recipe, settings, model), state.json
      metrics.csv           training curves (the trainer)
      metrics.json          what evaluation measured
      report.md             the report, with the figures beside it
      tokenizer.json, vocab.json, corpus caches, samples: whatever the recipe keeps
      teacher/, ar/         runs of their own that a recipe trains beside the main one

`train`, `evaluate` and `sample` of every recipe are handed the `Run`; none of them guesses a folder
from an output path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..data.source import describe_stats
from ..errors import UnmaskError
from ..train.checkpoint import write_json
from .report import Report, render


@dataclass(frozen=True)
class Run:
    folder: Path
    progress: bool = True  # progress bars for long work
    changes: frozenset = frozenset()  # settings a resumed run may change from its checkpoint's (train.steps)

    def __post_init__(self):
        object.__setattr__(self, "folder", Path(self.folder))
        if self.folder.exists() and not self.folder.is_dir():
            raise UnmaskError(f"run folder {self.folder} is a file; give a folder")

    def file(self, name: str) -> Path:
        """The path of `name` inside the run folder (the folder is created)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / name

    def has(self, name: str) -> bool:
        return (self.folder / name).exists()

    def sub(self, name: str) -> Run:
        """A run of its own inside this one (a teacher, a baseline)."""
        return Run(self.folder / name, self.progress, self.changes)

    def trained_step(self) -> int | None:
        """The step of the newest whole checkpoint (what `load` evaluates), or None."""
        from ..train.checkpoint import newest_whole

        ckpt, _ = newest_whole(self.folder)
        return None if ckpt is None else int(json.loads((ckpt / "state.json").read_text())["step"])

    def write_json(self, name: str, obj) -> Path:
        path = self.file(name)
        write_json(path, obj)
        return path

    def read_json(self, name: str):
        path = self.folder / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise UnmaskError(f"{path} is missing; the run folder is incomplete") from None
        except json.JSONDecodeError as e:
            raise UnmaskError(f"{path} is not valid JSON: {e}") from None

    def write_results(self, metrics: dict, report: Report) -> None:
        """metrics.json and report.md, each written atomically. When the data came from the user's
        source (`data.json`, written by the recipe's reader), the report says what was read and skipped."""
        self.write_json("metrics.json", metrics)
        text = render(report, metrics)
        if self.has("data.json"):
            text += "\n" + describe_stats(self.read_json("data.json")) + "\n"
        path = self.file("report.md")
        tmp = path.with_name(".report.md.tmp")
        tmp.write_text(text)
        tmp.replace(path)
