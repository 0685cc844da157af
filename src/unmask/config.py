"""Typed configs: dataclasses whose fields carry their allowed range or choices.

`option(default, lo=..., hi=..., choices=...)` declares a field; `validate(cfg)` checks every field;
`apply_overrides(cfg, ["lr=3e-4", "steps=500"])` parses `key=value` strings by the field's type. A
misspelled key, a value of the wrong type or out of range is an `UnmaskError` that names the key and
what is allowed, never a silent default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing

from .errors import UnmaskError

INT_LIMIT = 2**63  # integers travel as int64 (seeds, sizes), so larger ones are refused up front


def option(default, *, lo=None, hi=None, lo_open=False, hi_open=False, choices=None, help=""):
    """A dataclass field with its allowed values: [lo, hi] (open ends with lo_open / hi_open), or choices."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices, "help": help}
    return dataclasses.field(default=default, metadata=meta)


def _allowed(f: dataclasses.Field) -> str:
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(map(str, m["choices"]))
    lo, hi = m.get("lo"), m.get("hi")
    left = "(" if m.get("lo_open") else "["
    right = ")" if m.get("hi_open") else "]"
    if lo is not None and hi is not None:
        return f"in {left}{lo}, {hi}{right}"
    if lo is not None:
        return f"{'>' if m.get('lo_open') else '>='} {lo}"
    if hi is not None:
        return f"{'<' if m.get('hi_open') else '<='} {hi}"
    return "any value"


def check_value(f: dataclasses.Field, value) -> None:
    m = f.metadata
    if m.get("choices") and value not in m["choices"]:
        raise UnmaskError(f"{f.name}={value!r} is not allowed; {f.name} must be {_allowed(f)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UnmaskError(f"{f.name}={value} is not a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and not -INT_LIMIT < value < INT_LIMIT:
        raise UnmaskError(f"{f.name}={value} is too large; {f.name} must be {_allowed(f)} and below 2**63")
    lo, hi = m.get("lo"), m.get("hi")
    too_low = lo is not None and (value <= lo if m.get("lo_open") else value < lo)
    too_high = hi is not None and (value >= hi if m.get("hi_open") else value > hi)
    if too_low or too_high:
        raise UnmaskError(f"{f.name}={value} is out of range; {f.name} must be {_allowed(f)}")


def validate(cfg) -> None:
    for f in dataclasses.fields(cfg):
        check_value(f, getattr(cfg, f.name))


def _parse(f: dataclasses.Field, text: str, kind):
    if kind is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UnmaskError(f"{f.name}={text!r} is not a boolean; use true or false")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise UnmaskError(f"{f.name}={text!r} is not an integer") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise UnmaskError(f"{f.name}={text!r} is not a number") from None
    return text


def apply_overrides(cfg, overrides: list[str], other_keys=()):
    """Return a copy of `cfg` with each `key=value` applied and every field validated. `other_keys`
    are keys handled elsewhere: they count when suggesting the closest key to a misspelled one."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    changes = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UnmaskError(f"override {item!r} is not of the form key=value")
        if key not in fields:
            known = [*fields, *(k for k in other_keys if k not in fields)]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnmaskError(f"unknown key {key!r}{hint} (keys: {', '.join(known)})")
        changes[key] = _parse(fields[key], text.strip(), hints[key])
    new = dataclasses.replace(cfg, **changes)
    validate(new)
    return new


def describe_field(f: dataclasses.Field) -> str:
    """What a field allows, in words: 'in [0.0, 1.0]', '>= 1', 'one of ddp, fsdp'."""
    return _allowed(f)


def describe(cfg) -> list[tuple[str, object, str, str]]:
    """(name, value, allowed, help) for every field: what `unmask recipes` prints."""
    return [
        (f.name, getattr(cfg, f.name), _allowed(f), f.metadata.get("help", ""))
        for f in dataclasses.fields(cfg)
    ]
