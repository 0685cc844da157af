"""Verifiable reasoning data (`data/reasoning.py`, `data/arith.py`, `data/sudoku.py`): the generators'
answers pass their exact checkers; the checkers refuse each kind of corruption, hand-built; Sudoku
puzzles have exactly one solution, counted by the solver and by brute force over all grids; the
data is deterministic under its seed, its splits disjoint, its rows of one fixed length."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from unmask.data import arith, reasoning, sudoku
from unmask.data.reasoning import check_arith, check_sudoku
from unmask.errors import UnmaskError

PROMPT, ANSWER = "12+7*3-5=", "7*3=21,12+21=33,33-5=28#28"


# arithmetic ------------------------------------------------------------------------------------
def test_the_derivation_reduces_products_first_then_left_to_right():
    assert arith.answer_text(arith.derive([12, 7, 3, 5], list("+*-"))) == ANSWER
    assert arith.answer_text(arith.derive([5, 2, 1], list("-+"))) == "5-2=3,3+1=4#4"
    assert arith.answer_text(arith.derive([2, 3, 4, 5], list("*+*"))) == "2*3=6,4*5=20,6+20=26#26"
    assert arith.answer_text(arith.derive([0, 9], ["-"])) == "0-9=-9#-9"
    assert check_arith(PROMPT, ANSWER)


@pytest.mark.parametrize("operands", [2, 3, 4, 5])
def test_generated_arithmetic_passes_its_checker_on_many_seeds(operands):
    for seed in range(40):
        rng = random.Random(seed)
        for _ in range(10):
            prompt, answer = arith.draw(rng, operands, 12)
            assert check_arith(prompt, answer), (prompt, answer)
            assert answer.count(",") == operands - 2 and prompt.count("=") == 1
            assert int(answer.split("#")[1]) == eval(prompt[:-1])  # Python's precedence agrees


@pytest.mark.parametrize("answer, why", [
    ("7*3=21,12+21=33,33-5=28#29", "final value changed"),
    ("7*3=21,12+21=33,33-5=27#28", "last step's result wrong, final right"),
    ("7*3=20,12+20=32,32-4=28#28", "a wrong product, later steps bent to reach the right final"),
    ("7*3=21,12+21=34,34-6=28#28", "a wrong sum, then an operand changed to reach the right final"),
    ("12+7=19,19*3=57,57-5=52#52", "left to right, ignoring precedence (each step's arithmetic right)"),
    ("7*3=21,21-5=16,12+16=28#28", "right final, steps in the wrong order"),
    ("7*3=21,12+21=33#33", "a step missing"),
    ("7*3=21,12+21=33,33-5=28,28+0=28#28", "a step too many"),
    ("7*3=21,12+21=33,33-5=28", "no final value"),
    ("7*3=21,12+21=33,33-5=28#", "empty final value"),
    ("#28", "no steps"),
    ("7*3=21,,12+21=33,33-5=28#28", "an empty step"),
    ("7*3=21;12+21=33;33-5=28#28", "wrong separator"),
    ("07*3=21,12+21=33,33-5=28#28", "a leading zero"),
    ("7*3=21,12+21=33,33-5=28#028", "a leading zero in the final value"),
    ("7*3=21,12+21=33,33-5=28#28#28", "two separators"),
    ("7*3=21_,12+21=33,33-5=28#28", "padding inside"),
    ("", "empty"),
])
def test_the_arithmetic_checker_refuses_each_corruption(answer, why):
    assert not check_arith(PROMPT, answer), why


def test_the_arithmetic_checker_refuses_minus_zero_and_a_bad_prompt():
    assert check_arith("3-3*1=", "3*1=3,3-3=0#0")
    assert not check_arith("3-3*1=", "3*1=3,3-3=-0#0")
    assert not check_arith("3-3*1", "3*1=3,3-3=0#0")  # prompt without "="
    assert not check_arith("3=", "3#3")  # one operand is no task


def test_answer_length_bound_is_hand_computed_and_tight():
    # k=2, 0..9: "9*9=" and "9*9=81#81" / "0-9=-9#-9" (9 characters)
    assert arith.lengths(2, 9) == (4, 9)
    # k=3: "9*9*9=" -> "9*9=81,81*9=729#729" (19 characters)
    assert arith.lengths(3, 9) == (6, 19)
    assert len(arith.answer_text(arith.derive([9, 9, 9], list("**")))) == 19
    rng = random.Random(0)
    longest = max(len(arith.draw(rng, 3, 9)[1]) for _ in range(20000))
    assert longest <= 19


# sudoku -----------------------------------------------------------------------------------------
def all_grids() -> list[list[int]]:
    """Every 4x4 grid by brute force: four rows, each a permutation, filtered by columns and boxes."""
    perms = list(itertools.permutations(range(1, 5)))
    out = []
    for rows in itertools.product(perms, repeat=4):
        if any(len({r[c] for r in rows}) < 4 for c in range(4)):
            continue
        if all(len({rows[r][c] for r in rr for c in cc}) == 4 for rr in ((0, 1), (2, 3)) for cc in ((0, 1), (2, 3))):
            out.append([v for r in rows for v in r])
    return out


@pytest.fixture(scope="module")
def grids():
    return all_grids()


def test_the_solver_counts_all_288_grids_as_brute_force_does(grids):
    assert len(grids) == 288  # the number of 4x4 Sudoku grids
    assert sudoku.count_solutions([0] * 16, limit=1000) == 288
    assert [sudoku.count_solutions([0] * 16, limit=k) for k in (1, 2, 5)] == [1, 2, 5]  # stops at the limit
    assert sudoku.count_solutions([1, 1] + [0] * 14) == 0  # a clash among givens
    assert sorted(map(tuple, grids)).count(tuple(sudoku.base_grid())) == 1


def test_sudoku_puzzles_have_exactly_one_solution_and_are_minimal(grids):
    rng = random.Random(1)
    for _ in range(60):
        prompt, answer = sudoku.draw(rng)
        cells = sudoku.parse(prompt)
        assert check_sudoku(prompt, answer)
        assert sudoku.count_solutions(cells, limit=1000) == 1
        fits = [g for g in grids if all(c in (0, v) for c, v in zip(cells, g, strict=True))]
        assert ["".join(map(str, g)) for g in fits] == [answer]  # brute force agrees
        for i in (i for i, c in enumerate(cells) if c):  # no given can go: a second solution appears
            assert sudoku.count_solutions(cells[:i] + [0] + cells[i + 1 :]) == 2


def test_sudoku_blanks_stop_at_max_blanks():
    rng = random.Random(2)
    for _ in range(30):
        prompt, answer = sudoku.draw(rng, max_blanks=5)
        assert prompt.count(".") == 5 and check_sudoku(prompt, answer)


def test_the_sudoku_checker_refuses_each_corruption():
    rng = random.Random(3)
    prompt, answer = sudoku.draw(rng, max_blanks=10)
    assert check_sudoku(prompt, answer)
    row = list(answer)
    row[0], row[1] = row[1], row[0]  # a swap within a row: the row stays 1..4, columns break
    assert not check_sudoku(prompt, "".join(row))
    given = next(i for i, ch in enumerate(prompt) if ch != ".")
    changed = prompt[:given] + str(int(prompt[given]) % 4 + 1) + prompt[given + 1 :]
    assert not check_sudoku(changed, answer)  # a changed given cell
    relabel = answer.translate(str.maketrans("1234", "2341"))  # a valid grid that ignores the givens
    assert check_sudoku("." * 16, relabel) and not check_sudoku(prompt, relabel)
    for bad in (answer[:15], answer + "1", answer[:15] + ".", answer[:15] + "5", answer[:15] + "_", ""):
        assert not check_sudoku(prompt, bad), bad
    assert not check_sudoku(prompt[:15], answer) and not check_sudoku(prompt[:15] + "x", answer)


# rows, splits, determinism ---------------------------------------------------------------------
@pytest.mark.parametrize("name, sizes", [("arith", {"operands": 3}), ("sudoku", {})])
def test_rows_have_one_length_and_decode_to_the_examples(name, sizes):
    made = reasoning.make(name, train=300, test=40, seed=0, **sizes)
    t = made.task
    for part in (made.train, made.test):
        assert part.tokens.shape == (len(part), t.n) and part.tokens.dtype == torch.long
        assert part.prompt.shape == part.tokens.shape and part.prompt.dtype == torch.bool
        assert part.prompt[:, : t.prompt_length].all() and not part.prompt[:, t.prompt_length :].any()
        assert 0 <= int(part.tokens.min()) and int(part.tokens.max()) < len(t.vocab)
        for row, p, a in zip(part.tokens, part.prompts, part.answers, strict=True):
            assert t.split_row(row) == (p, a) and t.check(p, a)
    assert (len(made.train), len(made.test)) == (300, 40)
    assert made.train.data().keys() == {"tokens", "prompt"}


def test_arith_rows_are_padded_prompt_then_answer():
    t = reasoning.task("arith", operands=3, max_operand=9)
    assert (t.prompt_length, t.answer_length, t.n) == (6, 19, 25)
    assert t.text(t.row("1+2=", "1+2=3#3")) == "1+2=__1+2=3#3"
    assert t.row("1+2=", "1+2=3#3")[4:6] == [t.pad_id, t.pad_id]
    with pytest.raises(ValueError):
        t.row("1+2+3+4=", "")


@pytest.mark.parametrize("name", reasoning.TASKS)
def test_splits_are_disjoint_and_test_prompts_distinct(name):
    made = reasoning.make(name, train=2000, test=100, seed=4)
    test = set(made.test.prompts)
    assert len(test) == len(made.test.prompts) == 100
    assert not test & set(made.train.prompts)
    assert all(reasoning.held_out(p) for p in test) and not any(reasoning.held_out(p) for p in made.train.prompts)


@pytest.mark.parametrize("name", reasoning.TASKS)
def test_the_same_seed_gives_the_same_rows_and_another_seed_others(name):
    a, b = (reasoning.make(name, train=200, test=20, seed=5) for _ in range(2))
    assert torch.equal(a.train.tokens, b.train.tokens) and a.test.prompts == b.test.prompts
    c = reasoning.make(name, train=200, test=20, seed=6)
    assert not torch.equal(a.train.tokens, c.train.tokens)


def test_a_task_too_small_for_the_test_size_is_one_error():
    # 2 operands in 0..1 and 3 operators: 12 prompts in all, about one in ten held out
    with pytest.raises(UnmaskError, match="too few distinct prompts"):
        reasoning.make("arith", train=10, test=20, seed=0, operands=2, max_operand=1)
    with pytest.raises(UnmaskError, match="unknown reasoning task"):
        reasoning.task("chess")
