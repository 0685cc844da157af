"""How the figure benchmarks print a measurement over seeds: mean +- sample standard deviation (0
for one seed; the population one on request), and paired per-seed deltas with their signs."""

from __future__ import annotations

import statistics


def mean_std(xs: list[float], fmt: str = ".3f", sign: str = "", population: bool = False) -> str:
    """'0.734 +- 0.030' (sign='+' writes '+0.734' for deltas); population=True divides by n, not n - 1
    (the point-cloud tables report that spread)."""
    sd = (statistics.pstdev(xs) if population else statistics.stdev(xs)) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):{sign}{fmt}} +- {sd:{fmt}}"


def signed(xs: list[float], fmt: str = ".3f") -> str:
    """'+0.048, -0.101, +0.097': one paired delta per seed."""
    return ", ".join(f"{x:+{fmt}}" for x in xs)


def paired_row(label: str, ours: list[float], base: list[float], fmt: str = ".3f") -> str:
    """'| label | ours mean +- sd | baseline mean +- sd | per-seed deltas |': a Markdown table row of a
    paired comparison (the same seeds, in the same order, on both sides)."""
    delta = signed([a - b for a, b in zip(ours, base, strict=True)], fmt)
    return f"| {label} | {mean_std(ours, fmt)} | {mean_std(base, fmt)} | {delta} |"
