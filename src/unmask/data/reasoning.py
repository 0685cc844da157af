"""Verifiable reasoning data made at run time, deterministic under a seed, nothing downloaded: the
prompt / answer pairs of supervised fine-tuning (LLaDA's SFT, Nie et al. 2025, arXiv:2502.09992;
Masked Thought, Chen et al. 2024, arXiv:2403.02178), each answer checked exactly by a program.

Two tasks, each with its own character vocabulary (token id = index in `vocab`, `_` pads):
- `arith`: multi-step arithmetic with every intermediate step written (`data/arith.py`);
- `sudoku`: 4x4 Sudoku with exactly one solution (`data/sudoku.py`).

Every row of a task has the same length N = P + A: the prompt padded to P characters, then the
answer padded to A (the longest any example of the task can need), so the prompt is the first P
positions: `prompt` Bool[M, N] is True there (given), as `MaskedDiffusion` reads it for SFT.

Splits: examples are drawn from one `random.Random(seed)`; an example is held out when the CRC-32
of its prompt falls in the first of ten buckets, so no test prompt ever appears in training, at any
sizes. Test prompts are distinct; training prompts may repeat, as draws from the task do.

    data = make("arith", train=20_000, test=200, seed=0, operands=3)
    data.train.tokens            # Long[20000, N]
    data.task.check(p, a)        # the exact checker of the task
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import UnmaskError
from ..layout import Layout
from . import arith, sudoku
from .arith import check_arith
from .sudoku import check_sudoku

TASKS = ("arith", "sudoku")
PAD = "_"
HELD_OUT_BUCKETS = 10  # one bucket in ten of the prompt's CRC-32 is held out
TRIES_PER_EXAMPLE = 50  # draws allowed per requested example before the task is too small for it


@dataclass(frozen=True)
class Task:
    """One task's vocabulary, fixed lengths, generator and checker."""

    name: str
    vocab: str
    prompt_length: int
    answer_length: int
    draw: Callable[[random.Random], tuple[str, str]]
    check: Callable[[str, str], bool]  # (prompt, answer) -> correct, padding stripped

    @property
    def n(self) -> int:
        return self.prompt_length + self.answer_length

    @property
    def pad_id(self) -> int:
        return self.vocab.index(PAD)

    def layout(self) -> Layout:
        return Layout.seq(self.prompt_length, "prompt") + Layout.seq(self.answer_length, "answer")

    def encode(self, text: str) -> list[int]:
        return [self.vocab.index(ch) for ch in text]

    def row(self, prompt: str, answer: str) -> list[int]:
        """The N token ids of one example, each part padded to its length."""
        if len(prompt) > self.prompt_length or len(answer) > self.answer_length:
            raise ValueError(f"{prompt!r} / {answer!r} is longer than {self.prompt_length} / {self.answer_length}")
        return self.encode(prompt.ljust(self.prompt_length, PAD) + answer.ljust(self.answer_length, PAD))

    def text(self, ids) -> str:
        """Characters of token ids (a list or Long[L]), padding stripped from the right."""
        ids = ids.tolist() if torch.is_tensor(ids) else ids
        return "".join(self.vocab[i] for i in ids).rstrip(PAD)

    def split_row(self, ids) -> tuple[str, str]:
        """(prompt, answer) text of one row Long[N] (or of a prompt and an answer side by side)."""
        ids = ids.tolist() if torch.is_tensor(ids) else list(ids)
        return self.text(ids[: self.prompt_length]), self.text(ids[self.prompt_length :])


def task(name: str, operands: int = 3, max_operand: int = 9, max_blanks: int = sudoku.CELLS) -> Task:
    """The task called `name` at its sizes (operands and their range for arith; blanks for sudoku)."""
    if name == "arith":
        if operands < 2 or max_operand < 1:
            raise UnmaskError(f"arith needs operands >= 2 and max_operand >= 1, got {operands} and {max_operand}")
        p, a = arith.lengths(operands, max_operand)
        return Task("arith", arith.VOCAB, p, a, lambda rng: arith.draw(rng, operands, max_operand), check_arith)
    if name == "sudoku":
        if not 1 <= max_blanks <= sudoku.CELLS:
            raise UnmaskError(f"sudoku needs max_blanks in [1, {sudoku.CELLS}], got {max_blanks}")
        return Task("sudoku", sudoku.VOCAB, sudoku.CELLS, sudoku.CELLS, lambda rng: sudoku.draw(rng, max_blanks),
                    check_sudoku)
    raise UnmaskError(f"unknown reasoning task {name!r} (tasks: {', '.join(TASKS)})")


@dataclass(frozen=True)
class Examples:
    prompts: list[str]
    answers: list[str]
    tokens: torch.Tensor  # Long[M, N]
    prompt: torch.Tensor  # Bool[M, N], True at the first P positions (given)

    def __len__(self) -> int:
        return len(self.prompts)

    def data(self) -> dict[str, torch.Tensor]:
        """What the trainer draws batches from."""
        return {"tokens": self.tokens, "prompt": self.prompt}


@dataclass(frozen=True)
class ReasoningData:
    task: Task
    train: Examples
    test: Examples


def held_out(prompt: str) -> bool:
    return zlib.crc32(prompt.encode()) % HELD_OUT_BUCKETS == 0


def examples(t: Task, pairs: list[tuple[str, str]]) -> Examples:
    tokens = torch.tensor([t.row(p, a) for p, a in pairs], dtype=torch.long).view(len(pairs), t.n)
    prompt = (torch.arange(t.n) < t.prompt_length).expand(len(pairs), -1).clone()
    return Examples([p for p, _ in pairs], [a for _, a in pairs], tokens, prompt)


def make(name: str, train: int, test: int, seed: int = 0, **sizes) -> ReasoningData:
    """`train` training and `test` distinct held-out examples of task `name`, drawn from `seed`."""
    t = task(name, **sizes)
    rng = random.Random(seed)
    kept_train: list[tuple[str, str]] = []
    kept_test: dict[str, str] = {}
    tries = 0
    while len(kept_train) < train or len(kept_test) < test:
        if tries == TRIES_PER_EXAMPLE * (train + test):
            raise UnmaskError(f"task {name} gave {len(kept_train)} training and {len(kept_test)} distinct held-out "
                              f"prompts of the {train} and {test} asked for in {tries} draws: it has too few "
                              "distinct prompts; ask for fewer or make the task larger")
        tries += 1
        prompt, answer = t.draw(rng)
        if held_out(prompt):
            if len(kept_test) < test:
                kept_test.setdefault(prompt, answer)
        elif len(kept_train) < train:
            kept_train.append((prompt, answer))
    return ReasoningData(t, examples(t, kept_train), examples(t, list(kept_test.items())))


__all__ = ["TASKS", "PAD", "Task", "Examples", "ReasoningData", "task", "make", "held_out", "check_arith",
           "check_sudoku"]
