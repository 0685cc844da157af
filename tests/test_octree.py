"""Octree tokens (Uni-3DAR, arXiv:2503.16278): exact round trips, counts against brute force,
hand-made byte sequences, the cursor's known-next-position rule, and the structures built on them."""

from __future__ import annotations

import itertools

import pytest
import torch

from unmask.data.octree import ATOM, TREE, OctreeCursor, X, Z, cell_centres, decode, encode, token_counts, voxelize
from unmask.data.structures import ELEMENTS, OctreeGeometry, Structure, g2_molecules, g2_split

pytestmark = pytest.mark.usefixtures("one_thread")


def as_set(cells: torch.Tensor) -> set[tuple[int, int, int]]:
    return {tuple(c) for c in cells.tolist()}


def brute_internal_nodes(cells: torch.Tensor, depth: int) -> int:
    """Non-empty nodes of levels 0..depth-1: the distinct ancestors of the cells at each level."""
    return sum(len({tuple(x >> (depth - level) for x in c) for c in cells.tolist()}) for level in range(depth))


@pytest.mark.parametrize("depth,count", [(1, 3), (2, 5), (3, 40), (4, 200), (5, 30)])
def test_round_trip_random_sets_and_brute_force_count(depth, count):
    g = torch.Generator().manual_seed(depth)
    cells = torch.randint(0, 2**depth, (count, 3), generator=g)
    tree = encode(cells, depth)
    back = decode(tree.bytes, depth)
    assert as_set(back.leaves) == as_set(cells)
    assert len(back.leaves) == len(as_set(cells))  # no duplicate leaves
    assert torch.equal(back.leaves, tree.leaves) and torch.equal(back.level, tree.level)
    assert torch.equal(back.cell, tree.cell)
    assert len(tree.bytes) == brute_internal_nodes(cells, depth)
    assert bool(((tree.bytes >= 1) & (tree.bytes <= 255)).all())
    assert token_counts(cells, depth) == {"occupied": len(as_set(cells)), "octree": len(tree.bytes),
                                          "uncompressed": 8 * len(tree.bytes), "grid": 8**depth}


def test_hand_made_sequence():
    # (0,0,0) and (3,3,3) at depth 2: the root has children 0 and 7 (bits 0 and 7); then node (0,0,0)
    # has child 0 and node (1,1,1) child 7, in the order the root's byte listed them
    tree = encode(torch.tensor([[3, 3, 3], [0, 0, 0]]), 2)
    assert tree.bytes.tolist() == [129, 1, 128]
    assert tree.level.tolist() == [0, 1, 1]
    assert tree.cell.tolist() == [[0, 0, 0], [0, 0, 0], [1, 1, 1]]
    assert tree.leaves.tolist() == [[0, 0, 0], [3, 3, 3]]
    # child index k = 4x + 2y + z: cell (1, 0, 0) at depth 1 is bit 4, (0, 1, 0) bit 2, (0, 0, 1) bit 1
    assert encode(torch.tensor([[1, 0, 0]]), 1).bytes.tolist() == [16]
    assert encode(torch.tensor([[0, 1, 0], [0, 0, 1]]), 1).bytes.tolist() == [6]


def test_one_point_and_all_cells_full():
    one = encode(torch.tensor([[5, 2, 7]]), 3)
    assert len(one.bytes) == 3 and one.leaves.tolist() == [[5, 2, 7]]
    assert bool((one.bytes.bitwise_and(one.bytes - 1) == 0).all())  # one child per node: powers of two
    full = torch.tensor(list(itertools.product(range(4), repeat=3)))
    tree = encode(full, 2)
    assert tree.bytes.tolist() == [255] * 9
    assert as_set(decode(tree.bytes, 2).leaves) == as_set(full)


def test_points_on_faces_and_outside():
    pts = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    cells = voxelize(pts, 3)
    assert as_set(cells) == {(0, 0, 0), (7, 7, 7), (7, 0, 4), (4, 4, 4)}
    assert as_set(decode(encode(cells, 3).bytes, 3).leaves) == as_set(cells)
    with pytest.raises(ValueError, match="outside"):
        voxelize(torch.tensor([[1.01, 0.0, 0.0]]), 3)


def test_voxelised_points_round_trip_exactly():
    g = torch.Generator().manual_seed(0)
    cells = torch.unique(torch.randint(0, 32, (300, 3), generator=g), dim=0)
    centres = cell_centres(cells, 5, low=-2.0, side=4.0)
    again = voxelize(centres, 5, low=-2.0, side=4.0)
    assert torch.equal(again, cells)  # both unique-sorted
    back = cell_centres(decode(encode(again, 5).bytes, 5).leaves, 5, low=-2.0, side=4.0)
    assert as_set(torch.round(back * 1e6).long()) == as_set(torch.round(centres * 1e6).long())


def test_decode_rejects_bad_sequences():
    with pytest.raises(ValueError, match="1..255"):
        decode(torch.tensor([0]), 2)
    with pytest.raises(ValueError, match="incomplete"):
        decode(torch.tensor([3, 1]), 2)  # the root names 2 children, only one byte follows
    with pytest.raises(ValueError, match="complete after"):
        decode(torch.tensor([1, 1, 1]), 2)
    with pytest.raises(ValueError):
        encode(torch.tensor([[4, 0, 0]]), 2)


def test_cursor_knows_each_next_position_and_level_sizes():
    g = torch.Generator().manual_seed(3)
    depth = 4
    tree = encode(torch.randint(0, 16, (60, 3), generator=g), depth)
    cursor = OctreeCursor(depth)
    for value, level, cell in zip(tree.bytes.tolist(), tree.level.tolist(), tree.cell.tolist(), strict=True):
        assert cursor.next() == (TREE, level, tuple(cell))
        cursor.push(value)
    assert cursor.done and cursor.next() is None
    for level in range(depth - 1):  # nodes of level l + 1 = children named by level l's bytes
        named = sum(bin(b).count("1") for b in tree.bytes[tree.level == level].tolist())
        assert named == int((tree.level == level + 1).sum())
    last = sum(bin(b).count("1") for b in tree.bytes[tree.level == depth - 1].tolist())
    assert last == len(cursor.leaves) == len(tree.leaves)
    with pytest.raises(ValueError, match="complete"):
        cursor.push(1)


def test_cursor_leaf_tokens_follow_the_tree():
    cursor = OctreeCursor(1, (ATOM, X, X + 1, Z))
    cursor.push(0b10000001)  # leaves (0,0,0), (1,1,1)
    kinds = []
    for v in range(8):
        kinds.append(cursor.next()[:2])
        cursor.push(v)
    assert kinds == [(ATOM, 1), (X, 1), (X + 1, 1), (Z, 1)] * 2
    assert cursor.done and cursor.leaf_values == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_molecule_tokens_round_trip_within_a_bin():
    geo = OctreeGeometry(depth=5, low=-4.0, side=8.0, n_types=len(ELEMENTS), bins=5)
    mols = g2_molecules()
    assert len(mols) == 162
    for _, mol in mols[::9]:
        seq = geo.tokenize(mol)
        n = len(mol.positions)
        assert int((seq["kind"] != TREE).sum()) == 4 * n
        cursor = OctreeCursor(geo.depth, geo.leaf_kinds)
        for v in seq["tokens"].tolist():
            cursor.push(v)
        back = geo.detokenize(cursor)
        d = torch.cdist(back.positions, mol.positions)  # [n, n]
        nearest = d.argmin(1)
        assert sorted(nearest.tolist()) == list(range(n))
        assert torch.equal(back.types, mol.types[nearest])
        half_bin = geo.cell_size / geo.bins / 2
        assert float(d.amin(1).max()) <= half_bin * 3**0.5 + 1e-9


def test_atoms_sharing_a_cell_and_split():
    geo = OctreeGeometry(depth=2, low=-1.0, side=2.0, n_types=2, bins=2)
    with pytest.raises(ValueError, match="share"):
        geo.tokenize(Structure(torch.tensor([[0.1, 0.1, 0.1], [0.2, 0.2, 0.2]], dtype=torch.float64),
                               torch.tensor([0, 1])))
    train, test = g2_split(holdout=22, seed=0)
    assert len(train) == 140 and len(test) == 22
    # g2 also holds 14 single atoms, all at the origin: a structure is its types and positions
    keys = {(tuple(m.types.tolist()), tuple(m.positions.flatten().tolist())) for m in train}
    assert not any((tuple(m.types.tolist()), tuple(m.positions.flatten().tolist())) in keys for m in test)
