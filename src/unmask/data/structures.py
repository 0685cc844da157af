"""3D structures as octree token sequences (Uni-3DAR: Lu et al. 2025, arXiv:2503.16278): the small
molecules with coordinates that ase bundles (`ase.collections.g2`, 162 molecules, 1-14 atoms) and
the generated shapes of `data/points.py` as occupied voxels.

A structure in a cube becomes one sequence: the octree's children bytes breadth-first (`data/octree.py`),
then, for molecules, four tokens per occupied finest cell: the atom type and the atom's position
inside its cell, one bin per axis (Uni-3DAR's fine-grained "level-0" tokens). Every token comes with
its kind, its level and the centre of its cell in the unit cube, known before the token itself: what
masked next-token prediction puts at the predicted position.

    geo = OctreeGeometry(depth=5, low=-4.0, side=8.0, n_types=len(ELEMENTS), bins=5)  # 0.25 A cells
    train, test = g2_split(holdout=22, seed=0)
    seq = geo.tokenize(train[0])  # {"tokens", "kind", "level", "centre"}, T tokens each
    data = geo.batch([geo.tokenize(s) for s in train])  # padded, with "valid"
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .octree import ATOM, TREE, OctreeCursor, X, Y, Z, cell_centres, encode, voxelize

ELEMENTS = ("H", "Li", "Be", "B", "C", "N", "O", "F", "Na", "Al", "Si", "P", "S", "Cl")  # those in g2


@dataclass(frozen=True)
class Structure:
    positions: torch.Tensor  # Float64[M, 3]
    types: torch.Tensor | None = None  # Long[M], index into ELEMENTS; None for bare occupancy (shapes)


@dataclass(frozen=True)
class OctreeGeometry:
    """The cube [low, low + side]^3 split `depth` times, and the token vocabulary: bytes 0..255 (0 never
    occurs), then `n_types` atom types, then `bins` fine-position bins shared by the three axes."""
    depth: int
    low: float
    side: float
    n_types: int = 0
    bins: int = 0

    def __post_init__(self):
        if not 1 <= self.depth <= 12 or not self.side > 0:
            raise ValueError(f"depth must lie in 1..12 and side be > 0, got {self.depth}, {self.side}")
        if self.n_types < 0 or self.bins < 0 or (self.n_types > 0) != (self.bins > 0):
            raise ValueError(f"n_types and bins must both be 0 (shapes) or both > 0, got {self.n_types}, {self.bins}")

    @property
    def vocab_size(self) -> int:
        return 256 + self.n_types + self.bins

    @property
    def leaf_kinds(self) -> tuple[int, ...]:
        return (ATOM, X, Y, Z) if self.n_types else ()

    @property
    def cell_size(self) -> float:
        return self.side / 2**self.depth

    def start(self, kind: int) -> int:
        """The first token id of `kind`'s range."""
        return {TREE: 0, ATOM: 256}.get(kind, 256 + self.n_types)

    def allowed(self) -> torch.Tensor:
        """Bool[5, V]: the token ids each kind may take (a tree byte is never 0: a listed node is non-empty)."""
        ok = torch.zeros(5, self.vocab_size, dtype=torch.bool)
        ok[TREE, 1:256] = True
        ok[ATOM, 256 : 256 + self.n_types] = True
        ok[X:, 256 + self.n_types :] = True
        return ok

    def tokenize(self, s: Structure) -> dict[str, torch.Tensor]:
        """One structure -> {"tokens": Long[T], "kind": Long[T], "level": Long[T], "centre": Float[T, 3]}.
        Atoms must lie in distinct finest cells (pick depth so that a cell is smaller than any bond)."""
        cells = voxelize(s.positions, self.depth, self.low, self.side)
        tree = encode(cells, self.depth)
        kind, level = torch.full_like(tree.bytes, TREE), tree.level
        centre = (tree.cell.double() + 0.5) / (2.0**tree.level).unsqueeze(1)  # [T, 3] in the unit cube
        tokens = tree.bytes
        if self.n_types:
            if s.types is None or len(s.types) != len(s.positions):
                raise ValueError("a molecule needs one type per atom")
            if len(cells) != len(s.positions):
                raise ValueError(f"{len(s.positions)} atoms share {len(cells)} cells: use a deeper octree")
            x = (s.positions.double() - self.low) / self.cell_size  # [M, 3] in finest-cell units
            own = x.floor().long().clamp_(0, 2**self.depth - 1)
            # atoms in the leaves' order: match each leaf to the atom in it
            n = 2**self.depth
            key = (own[:, 0] * n + own[:, 1]) * n + own[:, 2]
            leaf_key = (tree.leaves[:, 0] * n + tree.leaves[:, 1]) * n + tree.leaves[:, 2]
            order = torch.argsort(key)
            atom = order[torch.searchsorted(key[order], leaf_key)]  # [M]: the atom of each leaf
            fine = ((x[atom] - own[atom]) * self.bins).floor().long().clamp_(0, self.bins - 1)  # [M, 3]
            leaf = torch.stack([s.types[atom] + 256, *(fine + 256 + self.n_types).unbind(1)], 1)  # [M, 4]
            m = len(atom)
            tokens = torch.cat([tokens, leaf.reshape(-1)])
            kind = torch.cat([kind, torch.tensor(self.leaf_kinds).repeat(m)])
            level = torch.cat([level, torch.full((4 * m,), self.depth)])
            leaf_centre = (tree.leaves.double() + 0.5) / 2**self.depth
            centre = torch.cat([centre, leaf_centre.repeat_interleave(4, dim=0)])
        return {"tokens": tokens, "kind": kind, "level": level, "centre": centre.float()}

    def batch(self, seqs: list[dict[str, torch.Tensor]], length: int | None = None) -> dict[str, torch.Tensor]:
        """Pad sequences to one length (the longest, or `length`): Long[B, L] / Float[B, L, 3] tensors
        and "valid" Bool[B, L]. Padding sits after each sequence's end."""
        top = max(len(s["tokens"]) for s in seqs)
        length = top if length is None else length
        if length < top:
            raise ValueError(f"length {length} is shorter than the longest sequence ({top})")
        out = {"tokens": torch.zeros(len(seqs), length, dtype=torch.long),
               "kind": torch.zeros(len(seqs), length, dtype=torch.long),
               "level": torch.zeros(len(seqs), length, dtype=torch.long),
               "centre": torch.full((len(seqs), length, 3), 0.5),
               "valid": torch.zeros(len(seqs), length, dtype=torch.bool)}
        for i, s in enumerate(seqs):
            t = len(s["tokens"])
            for k in ("tokens", "kind", "level", "centre"):
                out[k][i, :t] = s[k]
            out["valid"][i, :t] = True
        return out

    def detokenize(self, cursor: OctreeCursor) -> Structure:
        """A complete sequence (held by a cursor) -> the structure: cell centres for shapes; atom types
        and positions (finest cell plus the centre of the fine bin) for molecules."""
        if not cursor.done:
            raise ValueError("the sequence is incomplete")
        cells = torch.tensor(cursor.leaves, dtype=torch.long).view(-1, 3)
        if not self.n_types:
            return Structure(cell_centres(cells, self.depth, self.low, self.side))
        values = torch.tensor(cursor.leaf_values, dtype=torch.long).view(-1, 4)
        fine = (values[:, 1:] - 256 - self.n_types).double()
        positions = self.low + (cells.double() + (fine + 0.5) / self.bins) * self.cell_size
        return Structure(positions, values[:, 0] - 256)


def g2_molecules() -> list[tuple[str, Structure]]:
    """The 162 molecules of ase's g2 set, by name (sorted), each centred on its bounding box."""
    from ase.collections import g2

    out = []
    for atoms in sorted(g2, key=lambda a: a.get_chemical_formula() + str(len(a))):
        p = torch.tensor(atoms.positions, dtype=torch.float64)
        p = p - (p.amax(0) + p.amin(0)) / 2
        types = torch.tensor([ELEMENTS.index(e) for e in atoms.get_chemical_symbols()])
        out.append((atoms.get_chemical_formula(), Structure(p, types)))
    return out


def rotated(s: Structure, rotation: torch.Tensor) -> Structure:
    """The structure turned by `rotation` (Float64[3, 3]) and re-centred on its bounding box."""
    p = s.positions @ rotation.T
    return Structure(p - (p.amax(0) + p.amin(0)) / 2, s.types)


def g2_split(holdout: int = 22, seed: int = 0) -> tuple[list[Structure], list[Structure]]:
    """(train, held-out) molecules of g2: `holdout` of the 162 drawn by `seed`, the rest for training."""
    mols = [s for _, s in g2_molecules()]
    if not 0 < holdout < len(mols):
        raise ValueError(f"holdout must lie in 1..{len(mols) - 1}, got {holdout}")
    perm = torch.randperm(len(mols), generator=torch.Generator().manual_seed(seed)).tolist()
    return [mols[i] for i in perm[holdout:]], [mols[i] for i in perm[:holdout]]


def shape_structures(split: str = "train", *, per_class: int = 20, points: int = 512, seed: int = 0) -> list[Structure]:
    """The generated shapes of `data/points.py` (normalised to the unit ball, jittered by 0.01) as point
    structures; tokenized in a cube such as [-1.1, 1.1]^3 they become occupied voxels."""
    from .points import load

    clouds = load(split, per_class=per_class, points=points, seed=seed)
    return [Structure(p.double()) for p in clouds.points]
