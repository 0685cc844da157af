"""docs/papers.md stays true to the tree: every row has a status, the summary counts them, every
module a row names exists, every test file it names exists, and every recipe it names is registered."""

import re
from collections import Counter
from pathlib import Path

from unmask.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ROOT / "docs" / "papers.md"
STATUSES = ("works", "tested", "planned")


def rows() -> list[list[str]]:
    return [line.split(" | ") for line in PAPERS.read_text().splitlines() if re.match(r"\| \d+ \|", line)]


def test_every_seed_paper_has_one_row_with_a_known_status():
    numbers = [int(r[0].lstrip("| ")) for r in rows()]
    assert sorted(numbers) == list(range(1, 76))
    assert {r[3] for r in rows()} <= set(STATUSES)


def test_the_summary_line_counts_the_rows():
    counts = Counter(r[3] for r in rows())
    expected = " · ".join(f"{s}: {counts[s]}" for s in STATUSES)
    assert expected in PAPERS.read_text()


def test_named_modules_tests_and_recipes_exist():
    for r in rows():
        if r[3] == "planned":
            continue
        for path in re.findall(r"`([a-z_]+/[a-z_0-9]+\.py)`", r[4]):
            assert (ROOT / "src" / "unmask" / path).is_file(), (r[0], path)
        for path in re.findall(r"tests/[a-z_0-9]+\.py", r[5]):
            assert (ROOT / path).is_file(), (r[0], path)
        for name in re.findall(r"recipes? `([a-z0-9-]+)", r[4]):
            assert name in RECIPES, (r[0], name)
