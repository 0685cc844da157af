"""Typed settings: frozen dataclasses whose fields carry their allowed range or choices, nested in
sections.

`option(default, lo=..., hi=..., choices=...)` declares a value; `section(Default())` declares a
nested settings dataclass (a recipe's `train`, `model`, `data`, `sampler`, `eval` sections).
`apply_overrides(cfg, ["train.lr=3e-4", "model.dim=64"])` parses dotted `key=value` strings by the
field's type; `from_dict(Type, d)` rebuilds settings read from JSON; `validate(cfg)` checks every
value. A misspelled key, a value of the wrong type or out of range is an `UnmaskError` that names the
full dotted key and what is allowed, never a silent default.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import typing

from .errors import UnmaskError

INT_LIMIT = 2**63  # integers travel as int64 (seeds, sizes), so larger ones are refused up front


def option(default, *, lo=None, hi=None, lo_open=False, hi_open=False, choices=None, help=""):
    """A dataclass field with its allowed values: [lo, hi] (open ends with lo_open / hi_open), or choices."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices, "help": help}
    return dataclasses.field(default=default, metadata=meta)


def section(default, help: str = ""):
    """A field holding nested settings (a frozen dataclass instance), with `default` as its value."""
    if not dataclasses.is_dataclass(default) or isinstance(default, type):
        raise TypeError("section() takes a settings instance")
    return dataclasses.field(default_factory=lambda: default, metadata={"section": True, "help": help})


def is_section(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("section"))


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


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


def check_value(f: dataclasses.Field, value, name: str | None = None) -> None:
    """Refuse `value` for field `f` (called `name`, its dotted key) unless it is allowed."""
    name = name or f.name
    m = f.metadata
    if m.get("choices") and value not in m["choices"]:
        raise UnmaskError(f"{name}={value!r} is not allowed; {name} must be {_allowed(f)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UnmaskError(f"{name}={value} is not a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and not -INT_LIMIT < value < INT_LIMIT:
        raise UnmaskError(f"{name}={value} is too large; {name} must be {_allowed(f)} and below 2**63")
    lo, hi = m.get("lo"), m.get("hi")
    too_low = lo is not None and (value <= lo if m.get("lo_open") else value < lo)
    too_high = hi is not None and (value >= hi if m.get("hi_open") else value > hi)
    if too_low or too_high:
        raise UnmaskError(f"{name}={value} is out of range; {name} must be {_allowed(f)}")


def validate(cfg, prefix: str = "") -> None:
    """Check every value of `cfg` and of its sections."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if is_section(f):
            validate(value, f"{prefix}{f.name}.")
        else:
            check_value(f, value, prefix + f.name)


def _parse(name: str, text: str, kind):
    if kind is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UnmaskError(f"{name}={text!r} is not a boolean; use true or false")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise UnmaskError(f"{name}={text!r} is not an integer") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise UnmaskError(f"{name}={text!r} is not a number") from None
    return text


def leaves(cfg, prefix: str = "") -> list[tuple[str, dataclasses.Field, type]]:
    """(dotted key, field, type) of every value of `cfg`, in declaration order, sections expanded."""
    out = []
    for f in dataclasses.fields(cfg):
        if is_section(f):
            out += leaves(getattr(cfg, f.name), f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, f, _hints(type(cfg))[f.name]))
    return out


def keys(cfg, prefix: str = "") -> list[str]:
    """Every dotted key of `cfg`: ['train.steps', ..., 'model.dim', ...]."""
    return [key for key, _, _ in leaves(cfg, prefix)]


def _unknown(key: str, known: list[str]) -> UnmaskError:
    leaves = {k.rsplit(".", 1)[-1]: k for k in known}
    # a truncated key (`data.clip`) names the shortest key it begins, before any fuzzy match
    close = (sorted((k for k in known if k.startswith(key)), key=len)[:1]
             or difflib.get_close_matches(key, known, n=1)
             or [leaves[c] for c in difflib.get_close_matches(key.rsplit(".", 1)[-1], leaves, n=1)])
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UnmaskError(f"unknown key {key!r}{hint} (`unmask recipes NAME` lists the keys)")


def apply_overrides(cfg, overrides: list[str], allowed_sections: tuple[str, ...] | None = None):
    """Return a copy of `cfg` with each dotted `key=value` applied and every value validated.
    With `allowed_sections`, only keys under those top-level sections may change."""
    known = keys(cfg)
    changes: dict[str, object] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UnmaskError(f"override {item!r} is not of the form key=value")
        if key not in known:
            raise _unknown(key, known)
        if allowed_sections is not None and key.split(".", 1)[0] not in allowed_sections:
            raise UnmaskError(f"{key} cannot change here; only {', '.join(s + '.*' for s in allowed_sections)} can")
        if key in changes:
            raise UnmaskError(f"{key} is given twice ({key}={changes[key]} and {item.strip()}); give it once")
        changes[key] = text.strip()
    new = _replace(cfg, changes, "")
    validate(new)
    return new


def _replace(cfg, changes: dict[str, str], prefix: str):
    values = {}
    for f in dataclasses.fields(cfg):
        name = prefix + f.name
        if is_section(f):
            if any(k.startswith(name + ".") for k in changes):
                values[f.name] = _replace(getattr(cfg, f.name), changes, name + ".")
        elif name in changes:
            values[f.name] = _parse(name, changes[name], _hints(type(cfg))[f.name])
    return dataclasses.replace(cfg, **values) if values else cfg


def to_dict(cfg) -> dict:
    """Plain nested dict of `cfg`, for JSON."""
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict, prefix: str = ""):
    """Settings of type `cls` from a nested dict (read from JSON): missing keys take their default,
    unknown keys and values of the wrong type are errors, and every value is validated."""
    if not isinstance(data, dict):
        raise UnmaskError(f"{prefix.rstrip('.') or 'settings'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise _unknown(prefix + key, keys(cls(), prefix))
    values = {}
    for name, value in data.items():
        f, kind = fields[name], _hints(cls)[name]
        if is_section(f):
            values[name] = from_dict(type(f.default_factory()), value, f"{prefix}{name}.")
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
            raise UnmaskError(f"{prefix}{name}={value!r} is not of type {kind.__name__}")
        values[name] = value
    out = cls(**values)
    validate(out, prefix)
    return out


def describe(cfg, prefix: str = "") -> list[tuple[str, object, str, str]]:
    """(dotted key, value, allowed, help) for every value of `cfg`: what `unmask recipes` prints."""
    return [(key, _value(cfg, key[len(prefix):]), "true or false" if kind is bool else _allowed(f),
             f.metadata.get("help", "")) for key, f, kind in leaves(cfg, prefix)]


def _value(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def int_list(key: str, text: str, *, lo: int, count: int | None = None) -> tuple[int, ...]:
    """The integers of a comma-separated setting ("3,3,2"), each >= `lo` and, when `count` is given,
    exactly that many; an `UnmaskError` naming `key` otherwise."""
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < lo or (count is not None and len(values) != count):
        many = "" if count is None else f"{count} "
        raise UnmaskError(f"{key} must be {many}integers >= {lo} separated by commas, got {text!r}")
    return values
