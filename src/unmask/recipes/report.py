"""One report writer for every recipe: a recipe declares what it measured (metric rows with their
baseline and which direction is better, figures, a sentence on the set-up) and this renders
`report.md`, so no recipe formats Markdown tables itself.

A row's baseline is another metric of the same run (its key) or a fixed bar (a number); the `holds`
column says whether the value beats it in the declared direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DIRECTIONS = ("higher", "lower", "")


@dataclass(frozen=True)
class Metric:
    key: str                              # key in the metrics dict
    label: str = ""                       # what it is, in words (default: the key)
    baseline: str | float | None = None   # another metric's key, or a fixed bar
    better: str = ""                      # "higher", "lower" or "" (no direction)
    spread: str | None = None             # key of a standard deviation shown as +- beside the value

    def __post_init__(self):
        if self.better not in DIRECTIONS:
            raise ValueError(f"better must be one of {DIRECTIONS}, got {self.better!r}")


@dataclass(frozen=True)
class Table:
    rows: tuple[Metric, ...]
    title: str = ""
    text: str = ""  # a sentence under the title: what the rows were measured on


@dataclass(frozen=True)
class Report:
    title: str
    setup: str                                          # one paragraph: settings, data, budget
    tables: tuple[Table, ...] = ()
    figures: tuple[tuple[str, str], ...] = ()           # (caption, file name in the run folder)
    notes: tuple[str, ...] = field(default=())          # further Markdown (examples of outputs)


def fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def holds(value, base, better: str) -> str:
    if not better or base is None or not isinstance(value, (int, float)) or not isinstance(base, (int, float)):
        return ""
    if not (math.isfinite(value) and math.isfinite(base)):
        return ""
    return "yes" if (value > base if better == "higher" else value < base) else "no"


def render_table(table: Table, metrics: dict) -> list[str]:
    lines = [f"## {table.title}", ""] if table.title else []
    if table.text:
        lines += [table.text, ""]
    lines += ["| metric | value | baseline | better | holds |", "|---|---|---|---|---|"]
    for m in table.rows:
        if m.key not in metrics:
            continue
        value = metrics[m.key]
        shown = fmt(value)
        if m.spread and m.spread in metrics:
            shown += f" +- {fmt(metrics[m.spread])}"
        if isinstance(m.baseline, str):
            base = metrics.get(m.baseline)
            base_text = f"{fmt(base)} ({m.baseline})" if base is not None else ""
        else:
            base, base_text = m.baseline, fmt(m.baseline) if m.baseline is not None else ""
        lines.append(f"| {m.label or m.key} | {shown} | {base_text} | {m.better} | {holds(value, base, m.better)} |")
    return lines


def render(report: Report, metrics: dict) -> str:
    """The Markdown of `report` filled with `metrics`."""
    lines = [f"# {report.title}", "", report.setup, ""]
    for table in report.tables:
        lines += [*render_table(table, metrics), ""]
    for caption, name in report.figures:
        lines += [f"![{caption}]({name})", ""]
    for note in report.notes:
        lines += [note, ""]
    return "\n".join(lines).rstrip() + "\n"


def all_metrics(metrics: dict, title: str = "") -> Table:
    """A table of every metric, in order, without baselines."""
    return Table(tuple(Metric(k) for k in metrics), title)
