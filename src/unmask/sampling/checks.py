"""The settings checks every sampler runs when it is built: a count must be a whole number (not a bool,
not 2.5), a temperature or probability a finite number in its range (never NaN), a name one of its
choices. Each failure is one line naming the sampler, the setting, what was given and what is
allowed, so a bad setting fails where it is written, not steps later inside the loop.

Each check reads the setting off the sampler by name (`integer(self, "steps")` in `__post_init__`).
"""

from __future__ import annotations

import math
import numbers


def _refuse(owner, name: str, value, allowed: str) -> ValueError:
    return ValueError(f"{type(owner).__name__}: {name} must be {allowed}, got {value!r}")


def _span(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _inside(value, lo, hi, lo_open: bool, hi_open: bool) -> bool:
    above = value > lo if lo_open else value >= lo
    below = hi is None or (value < hi if hi_open else value <= hi)
    return above and below


def is_integer(value) -> bool:
    """A whole number: int or numpy integer, not a bool (True is not a step count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A finite real number (an int counts), not a bool and not NaN or infinite."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def integer(owner, name: str, lo: int = 1, hi: int | None = None, none: bool = False) -> None:
    """`owner.<name>` is a whole number in [lo, hi] (None too when `none`)."""
    value = getattr(owner, name)
    if none and value is None:
        return
    if not (is_integer(value) and _inside(value, lo, hi, False, False)):
        raise _refuse(owner, name, value, f"an integer {_span(lo, hi)}" + (" or None" if none else ""))


def real(owner, name: str, lo: float | None = 0.0, hi: float | None = None, lo_open: bool = False,
         hi_open: bool = False) -> None:
    """`owner.<name>` is a finite number in the range [lo, hi] (open ends with lo_open / hi_open;
    lo None: any finite number)."""
    value = getattr(owner, name)
    if lo is None:
        if not is_real(value):
            raise _refuse(owner, name, value, "a finite number")
        return
    if not (is_real(value) and _inside(value, lo, hi, lo_open, hi_open)):
        raise _refuse(owner, name, value, f"a finite number {_span(lo, hi, lo_open, hi_open)}")


def one_of(owner, name: str, choices) -> None:
    value = getattr(owner, name)
    if not isinstance(value, str) or value not in choices:
        raise _refuse(owner, name, value, f"one of {', '.join(map(repr, choices))}")


def boolean(owner, name: str) -> None:
    value = getattr(owner, name)
    if not isinstance(value, bool):
        raise _refuse(owner, name, value, "True or False")


def function(owner, name: str) -> None:
    """`owner.<name>` can be called (a schedule, a constraint)."""
    value = getattr(owner, name)
    if not callable(value):
        raise _refuse(owner, name, value, "callable")
