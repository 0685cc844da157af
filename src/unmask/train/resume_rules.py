"""What may differ when a run resumes: a resumed run must reach what an unbroken run with its
checkpoint's settings reaches, so every setting that changes what training computes must be the
checkpoint's. Settings that only change what is logged, kept or evaluated (FREE) may differ;
`train.steps` (CHANGEABLE) when the user asks for it (`--change train.steps`), and never below the
checkpoint's step.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UnmaskError

FREE = ("eval.", "sampler.", "train.log_every", "train.checkpoint_every", "train.keep", "train.log",
        "train.timeout", "train.parallel")
CHANGEABLE = frozenset({"train.steps"})
SHOWN = 4  # differing keys named in the message


def check_changes(changes: frozenset) -> None:
    """Refuse a `--change` of a key that is not CHANGEABLE."""
    unknown = sorted(set(changes) - CHANGEABLE)
    if unknown:
        raise UnmaskError(f"{unknown[0]} cannot change on resume; only {', '.join(sorted(CHANGEABLE))} can")


def check_resume(run_dir: Path, ckpt: Path, saved: dict, here: dict, step: int, steps: int,
                 changes: frozenset) -> None:
    """Refuse to resume `run_dir` from `ckpt` (at `step`, with settings `saved`) under settings `here`
    (training to `steps`), naming each key that differs and both values."""
    if steps < step:
        raise UnmaskError(f"checkpoint {ckpt} is at step {step}, past train.steps={steps}; "
                          "use --fresh or a new --out to train a shorter run")
    saved, here = flat(saved), flat(here)
    differ = [k for k in sorted(saved.keys() & here.keys())
              if saved[k] != here[k] and not k.startswith(FREE) and k not in changes]
    if differ:
        listed = "; ".join(f"{k} is {short(saved[k])} there, {short(here[k])} here" for k in differ[:SHOWN])
        more = f" (and {len(differ) - SHOWN} more)" if len(differ) > SHOWN else ""
        hint = " (train.steps may change with --change train.steps)" if "train.steps" in differ else ""
        raise UnmaskError(f"cannot resume {run_dir} under other settings than its checkpoint {ckpt.name}: "
                          f"{listed}{more}; use --fresh or a new --out{hint}")


def flat(tree, prefix: str = "") -> dict:
    """{dotted key: value} of nested settings read from JSON."""
    if not isinstance(tree, dict):
        return {}
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def short(value, limit: int = 24) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
