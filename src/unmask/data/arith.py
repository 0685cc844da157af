"""Multi-step arithmetic with every intermediate step written out: a verifiable reasoning task made at
run time (the kind of chain-of-thought data that Masked Thought, Chen et al. 2024, arXiv:2403.02178,
and diffusion language models such as LLaDA, Nie et al. 2025, arXiv:2502.09992, are scored on).

A prompt is `k` operands in 0..m joined by `+ - *`, then `=`; the answer reduces the expression one
operation at a time in the usual order (every `*` first, left to right, then `+` and `-` left to
right), writes each step as `a<op>b=c`, separates the steps by `,`, and gives the value after `#`:

    12+7*3-5=   ->   7*3=21,12+21=33,33-5=28#28

The number of operands sets the difficulty (k - 1 steps). `check_arith` replays the written steps on
the prompt: each must be the next reduction in that order with the right result, and the final value
must be what the steps reach, so a wrong intermediate step fails even when the final number is right.
Numbers are written plainly (no leading zeros, no `-0`, no `+` sign).
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass

OPS = "+-*"
VOCAB = "_0123456789+-*=,#"  # "_" pads prompts and answers to their fixed lengths
STEP = re.compile(r"(-?\d+)([+\-*])(-?\d+)=(-?\d+)")
PROMPT = re.compile(r"\d+(?:[+\-*]\d+)+=")
NUMBER = re.compile(r"-?\d+")


def apply(a, op: str, b):
    return a + b if op == "+" else a - b if op == "-" else a * b


def derive(values: list, ops: list[str]) -> list[tuple]:
    """The steps (a, op, b, c) that reduce `values[0] ops[0] values[1] ...` in the usual order: the
    leftmost `*` first while there is one, then the leftmost `+` or `-`. Works on any numbers with
    + - * (ints, or `Interval`s for the length bound)."""
    values, ops, steps = list(values), list(ops), []
    while ops:
        i = ops.index("*") if "*" in ops else 0
        a, op, b = values[i], ops[i], values[i + 1]
        c = apply(a, op, b)
        steps.append((a, op, b, c))
        values[i : i + 2], ops[i : i + 1] = [c], []
    return steps


def answer_text(steps: list[tuple]) -> str:
    """`a<op>b=c,...#value` of integer steps."""
    return ",".join(f"{a}{op}{b}={c}" for a, op, b, c in steps) + f"#{steps[-1][3]}"


def draw(rng: random.Random, operands: int, max_operand: int) -> tuple[str, str]:
    """One (prompt, answer): operands uniform in 0..max_operand, operators uniform in + - *."""
    values = [rng.randint(0, max_operand) for _ in range(operands)]
    ops = [rng.choice(OPS) for _ in range(operands - 1)]
    prompt = "".join(f"{v}{o}" for v, o in zip(values, ops, strict=False)) + f"{values[-1]}="
    return prompt, answer_text(derive(values, ops))


def _plain(text: str) -> int | None:
    """The integer `text` writes, if written plainly (no leading zero, no -0)."""
    if not NUMBER.fullmatch(text):
        return None
    value = int(text)
    return value if str(value) == text else None


def check_arith(prompt: str, answer: str) -> bool:
    """True iff `answer` is the reduction of `prompt` in the usual order, every step's result right,
    and its final value the value the steps reach. Padding must be stripped first."""
    if not PROMPT.fullmatch(prompt):
        return False
    values = [int(v) for v in re.findall(r"\d+", prompt)]
    ops = re.findall(r"[+\-*]", prompt)
    body, sep, final = answer.partition("#")
    if not sep or not body:
        return False
    written = body.split(",")
    if len(written) != len(ops):
        return False
    for step in written:
        m = STEP.fullmatch(step)
        if m is None:
            return False
        a, op, b, c = _plain(m[1]), m[2], _plain(m[3]), _plain(m[4])
        i = ops.index("*") if "*" in ops else 0
        if (a, op, b) != (values[i], ops[i], values[i + 1]) or c != apply(a, op, b):
            return False
        values[i : i + 2], ops[i : i + 1] = [c], []
    return _plain(final) == values[0]


@dataclass(frozen=True)
class Interval:
    """Every value an integer expression of independent operands can take: [lo, hi]."""

    lo: int
    hi: int

    def __add__(self, o):
        return Interval(self.lo + o.lo, self.hi + o.hi)

    def __sub__(self, o):
        return Interval(self.lo - o.hi, self.hi - o.lo)

    def __mul__(self, o):
        corners = [x * y for x in (self.lo, self.hi) for y in (o.lo, o.hi)]
        return Interval(min(corners), max(corners))

    @property
    def width(self) -> int:
        """Characters of the longest integer in the interval (always at an end)."""
        return max(len(str(self.lo)), len(str(self.hi)))


def lengths(operands: int, max_operand: int) -> tuple[int, int]:
    """(prompt, answer) characters that every example fits. The answer bound runs `derive` on
    intervals for each operator pattern: each operand appears once in the expression, so the interval
    of every written number is exact, and the sum of the longest numbers bounds the answer."""
    prompt = operands * len(str(max_operand)) + operands
    digit = Interval(0, max_operand)
    longest = 0
    for ops in itertools.product(OPS, repeat=operands - 1):
        steps = derive([digit] * operands, list(ops))
        chars = sum(a.width + b.width + c.width + 2 for a, _, b, c in steps) + len(steps) - 1
        longest = max(longest, chars + 1 + steps[-1][3].width)
    return prompt, longest
