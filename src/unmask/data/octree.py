"""Octree tokens of 3D structures (Uni-3DAR: Lu et al. 2025, "Uni-3DAR: Unified 3D Generation and
Understanding via Autoregression on Compressed Spatial Tokens", arXiv:2503.16278).

Idea: a 3D structure in a bounding cube becomes a coarse-to-fine octree, and each non-empty node of it
emits one token, the byte saying which of its 8 children are occupied, so the whole space costs
hundreds of tokens where a full 2^D grid costs 8^D cells.

    cells = voxelize(points, depth=5, low=-1.0, side=2.0)  # Long[M, 3], occupied cells of a 32^3 grid
    tree = encode(cells, depth=5)                           # tree.bytes: Long[T], breadth-first
    decode(tree.bytes, depth=5).leaves                      # the same M cells, in the tree's order

Conventions. Level 0 is the root (the whole cube); a node at level l has integer coordinates in
0..2^l - 1; level D holds the leaves (the occupied finest cells). Child k of the node at c has
coordinates 2c + (k >> 2 & 1, k >> 1 & 1, k & 1), and bit k (value 1 << k) of the node's byte says it
is occupied. Tokens are listed breadth-first: level by level, and within a level in the order the
parents' bytes named the nodes (parent order, then child index), so a byte never names 0 children and
the node each token describes is known from the tokens before it (`OctreeCursor`).

Subtree compression: one token per non-empty parent holding its 8 children's occupancy (a parent
and its children: a 2-level subtree) replaces one 0/1 token per child, 8x fewer tokens
(`token_counts`: "octree" against "uncompressed"). This is our reading of the paper's 2-level
subtree compression; its reference code (`grid_utils.py`) was not available to check.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

TREE, ATOM, X, Y, Z = 0, 1, 2, 3, 4  # token kinds: a children byte, an atom type, a fine x / y / z bin
KINDS = ("tree", "atom", "x", "y", "z")


@dataclass(frozen=True)
class Octree:
    """An encoded octree of depth D: T tokens (non-empty internal nodes) and M leaves."""
    depth: int
    bytes: torch.Tensor  # Long[T]: children occupancy of each non-empty internal node, 1..255
    level: torch.Tensor  # Long[T]: the node's level, 0..D-1
    cell: torch.Tensor  # Long[T, 3]: the node's coordinates at its level
    leaves: torch.Tensor  # Long[M, 3]: occupied finest cells (level D), in breadth-first order


def _check_depth(depth: int) -> None:
    if not 1 <= depth <= 20:
        raise ValueError(f"depth must lie in 1..20 (a 2^depth grid per axis), got {depth}")


def voxelize(points: torch.Tensor, depth: int, low: float = -1.0, side: float = 2.0) -> torch.Tensor:
    """Occupied cells of the 2^depth grid over the cube [low, low + side]^3. points: Float[N, 3] ->
    Long[M, 3], unique, sorted. A point on the cube's upper face falls in the last cell; a point
    outside the cube is an error (a silent clamp would move it)."""
    _check_depth(depth)
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
        raise ValueError(f"points must be Float[N >= 1, 3], got {tuple(points.shape)}")
    if not side > 0:
        raise ValueError(f"side must be > 0, got {side}")
    x = (points.double() - low) / side  # [N, 3] in [0, 1]
    if bool(((x < 0) | (x > 1)).any()):
        raise ValueError(f"points lie outside the cube [{low}, {low + side}]^3")
    n = 2**depth
    cells = (x * n).floor().long().clamp_(0, n - 1)
    return torch.unique(cells, dim=0)


def cell_centres(cells: torch.Tensor, depth: int, low: float = -1.0, side: float = 2.0) -> torch.Tensor:
    """Long[M, 3] cells of the 2^depth grid -> Float[M, 3], their centres in the cube's coordinates."""
    return low + (cells.double() + 0.5) * (side / 2**depth)


def _keys(cells: torch.Tensor, level: int) -> torch.Tensor:
    n = 2**level
    return (cells[:, 0] * n + cells[:, 1]) * n + cells[:, 2]


def encode(cells: torch.Tensor, depth: int) -> Octree:
    """Long[M >= 1, 3] occupied cells (any order, duplicates allowed) of the 2^depth grid -> Octree."""
    _check_depth(depth)
    if cells.ndim != 2 or cells.shape[1] != 3 or cells.shape[0] == 0:
        raise ValueError(f"cells must be Long[M >= 1, 3], got {tuple(cells.shape)}")
    cells = cells.long()
    if bool(((cells < 0) | (cells >= 2**depth)).any()):
        raise ValueError(f"cells must lie in 0..{2**depth - 1}")
    nodes = torch.zeros(1, 3, dtype=torch.long)  # level 0: the root
    out_bytes, out_level, out_cell = [], [], []
    for level in range(depth):
        children = torch.unique(cells >> (depth - level - 1), dim=0)  # occupied nodes of level + 1
        parents, bits = children >> 1, ((children & 1) * torch.tensor([4, 2, 1])).sum(1)
        order = torch.argsort(_keys(nodes, level))
        at = order[torch.searchsorted(_keys(nodes, level)[order], _keys(parents, level))]  # parent's index
        byte = torch.zeros(len(nodes), dtype=torch.long).index_add_(0, at, 1 << bits)
        out_bytes.append(byte)
        out_level.append(torch.full((len(nodes),), level, dtype=torch.long))
        out_cell.append(nodes)
        nodes = children[torch.argsort(at * 8 + bits)]  # parent order, then child index
    return Octree(depth, torch.cat(out_bytes), torch.cat(out_level), torch.cat(out_cell), nodes)


class OctreeCursor:
    """Reads or writes one token sequence: the octree's bytes breadth-first, then for each leaf the
    tokens of `leaf_kinds` (e.g. (ATOM, X, Y, Z) for atoms; () for bare occupancy). At every point the
    next token's kind, level and cell are known from the tokens so far, and the number of nodes of
    each level from the bytes of the level above, which is what masked next-token prediction needs."""

    def __init__(self, depth: int, leaf_kinds: tuple[int, ...] = ()):
        _check_depth(depth)
        self.depth, self.leaf_kinds = depth, tuple(leaf_kinds)
        self.queue: deque[tuple[int, tuple[int, int, int]]] = deque([(0, (0, 0, 0))])
        self.leaves: list[tuple[int, int, int]] = []
        self.leaf_values: list[list[int]] = []  # per finished leaf, its leaf tokens
        self.tokens: list[int] = []

    def next(self) -> tuple[int, int, tuple[int, int, int]] | None:
        """(kind, level, cell) of the next token, or None when the sequence is complete."""
        if self.queue:
            level, cell = self.queue[0]
            return TREE, level, cell
        done = sum(len(v) for v in self.leaf_values)
        i, j = divmod(done, len(self.leaf_kinds)) if self.leaf_kinds else (len(self.leaves), 0)
        if i >= len(self.leaves):
            return None
        return self.leaf_kinds[j], self.depth, self.leaves[i]

    def push(self, value: int) -> None:
        """Append the next token (for a tree token, the byte 1..255; for a leaf token, its value)."""
        nxt = self.next()
        if nxt is None:
            raise ValueError("the sequence is already complete")
        kind, level, cell = nxt
        if kind == TREE:
            if not 1 <= value <= 255:
                raise ValueError(f"a non-empty node's byte must lie in 1..255, got {value}")
            self.queue.popleft()
            for k in range(8):
                if value >> k & 1:
                    child = (2 * cell[0] + (k >> 2 & 1), 2 * cell[1] + (k >> 1 & 1), 2 * cell[2] + (k & 1))
                    if level + 1 < self.depth:
                        self.queue.append((level + 1, child))
                    else:
                        self.leaves.append(child)
        else:
            if not self.leaf_values or len(self.leaf_values[-1]) == len(self.leaf_kinds):
                self.leaf_values.append([])
            self.leaf_values[-1].append(value)
        self.tokens.append(value)

    @property
    def done(self) -> bool:
        return self.next() is None


def decode(tokens: torch.Tensor, depth: int) -> Octree:
    """The inverse of `encode`: Long[T] bytes -> Octree. A byte out of 1..255, a sequence that ends
    before the tree is complete, or tokens left over are errors."""
    _check_depth(depth)
    cursor = OctreeCursor(depth)
    levels, cells = [], []
    for value in tokens.tolist():
        nxt = cursor.next()
        if nxt is None:
            raise ValueError(f"{len(tokens)} tokens, but the octree was complete after {len(cursor.tokens)}")
        levels.append(nxt[1])
        cells.append(nxt[2])
        cursor.push(int(value))
    if not cursor.done:
        raise ValueError(f"the octree is incomplete after {len(tokens)} tokens ({len(cursor.queue)} nodes pending)")
    leaves = torch.tensor(cursor.leaves, dtype=torch.long).view(-1, 3)
    return Octree(depth, tokens.long().clone(), torch.tensor(levels, dtype=torch.long),
                  torch.tensor(cells, dtype=torch.long).view(-1, 3), leaves)


def token_counts(cells: torch.Tensor, depth: int) -> dict[str, int]:
    """Sizes of one structure's representations: its occupied voxels, its octree tokens (one byte per
    non-empty internal node), the same tree with one 0/1 token per child (no subtree compression),
    and the full grid's 8^depth cells."""
    t = len(encode(cells, depth).bytes)
    return {"occupied": len(torch.unique(cells, dim=0)), "octree": t, "uncompressed": 8 * t, "grid": 8**depth}
