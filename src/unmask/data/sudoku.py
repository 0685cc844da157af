"""4x4 Sudoku with exactly one solution: a verifiable reasoning task made at run time, the kind of
constraint puzzle on which masked diffusion models' any-order decoding is compared with
left-to-right models (Ye et al. 2024, "Beyond autoregression: discrete diffusion for complex
reasoning and planning", arXiv:2410.14157).

A grid is 16 cells, row by row, each row, column and 2x2 box holding 1..4 once. Generation: a base
grid `(2 * (r % 2) + r // 2 + c) % 4 + 1`, then random symmetries that keep a grid valid (relabel the
digits, swap rows within a band, swap the bands, the same for columns and stacks, transpose); then
the cells, in random order, are blanked one by one, each blank kept only if the puzzle still has
exactly one solution, as counted by a small exact solver (`count_solutions`), until `max_blanks`
are blank or no cell can go. The prompt is the puzzle (`.` for a blank), the answer the full grid.
"""

from __future__ import annotations

import random

SIZE, BOX = 4, 2
CELLS = SIZE * SIZE
DIGITS = "1234"
BLANK = "."
VOCAB = "_." + DIGITS  # "_" pads (a Sudoku row needs none: prompt and answer are 16 cells each)
UNITS = ([[r * SIZE + c for c in range(SIZE)] for r in range(SIZE)]
         + [[r * SIZE + c for r in range(SIZE)] for c in range(SIZE)]
         + [[(br + r) * SIZE + bc + c for r in range(BOX) for c in range(BOX)]
            for br in range(0, SIZE, BOX) for bc in range(0, SIZE, BOX)])
PEERS = [sorted({p for unit in UNITS if i in unit for p in unit} - {i}) for i in range(CELLS)]


def base_grid() -> list[int]:
    return [(BOX * (r % BOX) + r // BOX + c) % SIZE + 1 for r in range(SIZE) for c in range(SIZE)]


def _lines(rng: random.Random) -> list[int]:
    """A random order of the 4 rows (or columns) that keeps bands together: bands shuffled, then
    the lines within each band."""
    bands = list(range(SIZE // BOX))
    rng.shuffle(bands)
    order = []
    for band in bands:
        inner = list(range(band * BOX, (band + 1) * BOX))
        rng.shuffle(inner)
        order += inner
    return order


def random_grid(rng: random.Random) -> list[int]:
    """A valid solved grid: the base grid under random symmetries."""
    digits = list(range(1, SIZE + 1))
    rng.shuffle(digits)
    rows, cols = _lines(rng), _lines(rng)
    base = base_grid()
    grid = [digits[base[rows[r] * SIZE + cols[c]] - 1] for r in range(SIZE) for c in range(SIZE)]
    if rng.random() < 0.5:
        grid = [grid[c * SIZE + r] for r in range(SIZE) for c in range(SIZE)]
    return grid


def count_solutions(cells: list[int], limit: int = 2) -> int:
    """Solutions of the puzzle `cells` (0 = blank), counted by backtracking: min(the count, `limit`)."""
    cells = list(cells)
    for i in range(CELLS):  # a clash among the given cells: no solution
        if cells[i] and any(cells[p] == cells[i] for p in PEERS[i]):
            return 0

    def search(need: int) -> int:
        try:
            i = cells.index(0)
        except ValueError:
            return 1
        found = 0
        used = {cells[p] for p in PEERS[i]}
        for d in range(1, SIZE + 1):
            if d not in used:
                cells[i] = d
                found += search(need - found)
                cells[i] = 0
                if found >= need:
                    break
        return found

    return search(limit)


def draw(rng: random.Random, max_blanks: int = CELLS) -> tuple[str, str]:
    """One (prompt, answer) with a unique solution."""
    grid = random_grid(rng)
    puzzle = list(grid)
    order = list(range(CELLS))
    rng.shuffle(order)
    blanks = 0
    for i in order:
        if blanks == max_blanks:
            break
        kept, puzzle[i] = puzzle[i], 0
        if count_solutions(puzzle) == 1:
            blanks += 1
        else:
            puzzle[i] = kept
    return "".join(str(v) if v else BLANK for v in puzzle), "".join(map(str, grid))


def parse(prompt: str) -> list[int] | None:
    """The cells of a prompt (0 = blank), or None if it is not 16 cells of `1234.`."""
    if len(prompt) != CELLS or any(ch not in DIGITS + BLANK for ch in prompt):
        return None
    return [0 if ch == BLANK else int(ch) for ch in prompt]


def check_sudoku(prompt: str, answer: str) -> bool:
    """True iff `answer` is a full valid grid (every row, column and box holds 1..4 once) that agrees
    with every given cell of `prompt`."""
    given = parse(prompt)
    if given is None or len(answer) != CELLS or any(ch not in DIGITS for ch in answer):
        return False
    grid = [int(ch) for ch in answer]
    if any(sorted(grid[i] for i in unit) != list(range(1, SIZE + 1)) for unit in UNITS):
        return False
    return all(g == 0 or g == v for g, v in zip(given, grid, strict=True))
