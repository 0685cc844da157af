"""Uni-3DAR (Lu et al. 2025, arXiv:2503.16278) at small scale: octree token counts, and masked
next-token prediction against plain next-token prediction on the same network and budget.

    .venv/bin/python benchmarks/uni3dar.py                  # all three figures, seeds 0 1 2
    .venv/bin/python benchmarks/uni3dar.py --only counts    # the token counts alone (no training)

Figures:
1. tokens of the octree (one byte per non-empty internal node) against the same tree without subtree
   compression (one 0/1 token per child), the occupied voxels and the full 8^D grid, for the shapes of
   `data/points.py` and the g2 molecules at stated depths;
2. g2 molecules (140 train, 22 held out, each in 8 random rotations for training and 4 for the
   held-out NLL): held-out NLL per token, and validity of 64 generated molecules per run: share with
   every bond (pair closer than 1.2 x the sum of covalent radii) within 0.1 A of the range of that
   element pair's bond lengths in the training molecules and no atom without a bond, and share with no
   two atoms closer than 0.7 A. The held-out molecules' own scores are the ceiling;
3. shapes (8 classes, 16 train and 4 held-out clouds each, voxelised at depth 4 in [-1.1, 1.1]^3):
   held-out NLL, and Chamfer distance between 16 generated shapes and the held-out shapes (fidelity:
   mean over samples of the distance to the nearest held-out shape; coverage: mean over held-out
   shapes of the distance to the nearest sample), against a per-level byte-frequency baseline and the
   training shapes themselves (the floor).

Runs are kept under runs/uni3dar/TASK-METHOD-sSEED and reused when their result.json exists.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402
from spread import mean_std as ms

from unmask.data.octree import token_counts, voxelize  # noqa: E402
from unmask.data.points import random_rotation  # noqa: E402
from unmask.data.structures import (  # noqa: E402
    ELEMENTS,
    OctreeGeometry,
    Structure,
    g2_molecules,
    g2_split,
    rotated,
    shape_structures,
)
from unmask.nn.chamfer import chamfer_l2  # noqa: E402
from unmask.objectives.octree_ar import OctreeAR, OctreeARConfig  # noqa: E402
from unmask.sampling.octree import level_unigram, sample_sequences, sample_shapes, sample_structures  # noqa: E402
from unmask.train.trainer import TrainConfig, fit  # noqa: E402

MOL = OctreeGeometry(depth=5, low=-4.0, side=8.0, n_types=len(ELEMENTS), bins=5)  # 0.25 A cells, 0.05 A bins
SHAPE = OctreeGeometry(depth=4, low=-1.1, side=2.2)  # 16^3 grid
BOND_FACTOR, BOND_TOL, MIN_DIST = 1.2, 0.1, 0.7


# --- figure 1 ------------------------------------------------------------------------------------
def counts_table() -> str:
    lines = ["| data | depth | grid 8^D | occupied voxels | octree tokens | uncompressed (8 per node) "
             "| grid / octree |", "|---|---|---|---|---|---|---|"]
    shapes = shape_structures("train", per_class=4, points=1024, seed=0)
    mols = [s for _, s in g2_molecules()]
    for name, structs, low, side, depths in (("shapes (1024 pts)", shapes, -1.1, 2.2, (3, 4, 5, 6)),
                                             ("g2 molecules (8 A cube)", mols, -4.0, 8.0, (5, 6))):
        for d in depths:
            rows = [token_counts(voxelize(s.positions, d, low, side), d) for s in structs]
            mean = {k: statistics.mean(r[k] for r in rows) for k in rows[0]}
            lines.append(f"| {name} | {d} | {8**d:,} | {mean['occupied']:.1f} | {mean['octree']:.1f} | "
                         f"{mean['uncompressed']:.0f} | {8**d / mean['octree']:,.0f}x |")
    return "\n".join(lines)


# --- shared training -----------------------------------------------------------------------------
def train(task: str, method: str, seed: int, geo: OctreeGeometry, data: dict, args, runs: Path) -> OctreeAR:
    cfg = OctreeARConfig(dim=args.dim, layers=args.layers, heads=4, masked=method == "masked")
    torch.manual_seed(seed)  # the initial weights
    objective = OctreeAR(geo, cfg)
    steps = args.steps if task == "mol" else args.shape_steps
    batch = args.batch if task == "mol" else args.shape_batch
    t0 = time.perf_counter()
    fit(objective, data, TrainConfig(steps=steps, batch_size=batch, lr=args.lr, warmup=50, seed=seed, log_every=100),
        runs / f"{task}-{method}-s{seed}", {"task": task, "method": method, "seed": seed}, progress=False)
    objective.train_seconds = time.perf_counter() - t0
    return objective.eval()


@torch.no_grad()
def heldout_bits(objective: OctreeAR, data: dict) -> float:
    nll = objective.token_nll(data)
    return float(nll.sum() / data["valid"].sum()) / math.log(2)


# --- figure 2 ------------------------------------------------------------------------------------
def bond_ranges(mols: list[Structure]) -> dict[tuple[int, int], tuple[float, float]]:
    """Per unordered element pair, (min, max) bond length in `mols`."""
    out: dict[tuple[int, int], list[float]] = {}
    for _, pair, d in (b for m in mols for b in bonds(m)):
        out.setdefault(pair, []).append(d)
    return {k: (min(v), max(v)) for k, v in out.items()}


def bonds(m: Structure):
    from ase.data import atomic_numbers, covalent_radii

    radii = torch.tensor([covalent_radii[atomic_numbers[ELEMENTS[t]]] for t in m.types.tolist()])
    d = torch.cdist(m.positions, m.positions)
    cut = BOND_FACTOR * (radii[:, None] + radii[None, :])
    for i, j in (torch.triu((d < cut) & (d > 0), 1)).nonzero().tolist():
        a, b = sorted((int(m.types[i]), int(m.types[j])))
        yield m, (a, b), float(d[i, j])


def validity(m: Structure | None, ranges) -> tuple[bool, bool]:
    """(bond-valid, distance-valid) of one molecule; an incomplete sample is neither."""
    if m is None or len(m.positions) == 0:
        return False, False
    d = torch.cdist(m.positions, m.positions) + torch.eye(len(m.positions)) * 1e9
    far = bool((d >= MIN_DIST).all())
    found = list(bonds(m))
    ok = all(p in ranges and ranges[p][0] - BOND_TOL <= x <= ranges[p][1] + BOND_TOL for _, p, x in found)
    if len(m.positions) > 1:
        from ase.data import atomic_numbers, covalent_radii
        radii = torch.tensor([covalent_radii[atomic_numbers[ELEMENTS[t]]] for t in m.types.tolist()])
        bonded = (d < BOND_FACTOR * (radii[:, None] + radii[None, :])).any(1)
        ok = ok and bool(bonded.all())
    return ok, far


def augmented(mols: list[Structure], copies: int, seed: int) -> list[Structure]:
    g = torch.Generator().manual_seed(seed)
    return [rotated(m, random_rotation(g)) for m in mols for _ in range(copies)]


def molecules(args, runs: Path) -> tuple[dict, dict]:
    train_mols, test_mols = g2_split(holdout=22, seed=0)
    ranges = bond_ranges(train_mols)
    data = MOL.batch([MOL.tokenize(s) for s in augmented(train_mols, 8, seed=100)])
    test = MOL.batch([MOL.tokenize(s) for s in augmented(test_mols, 4, seed=101)])
    ref = [validity(m, ranges) for m in test_mols]
    ceiling = {"bond_valid": statistics.mean(r[0] for r in ref), "dist_valid": statistics.mean(r[1] for r in ref)}
    results: dict[str, list[dict]] = {"masked": [], "ntp": []}
    for seed in args.seeds:
        for method in results:
            path = runs / f"mol-{method}-s{seed}" / "result.json"
            if not path.exists():
                obj = train("mol", method, seed, MOL, data, args, runs)
                t0 = time.perf_counter()
                samples = sample_structures(obj, args.mol_samples, torch.Generator().manual_seed(1000 + seed),
                                            max_tokens=400)
                v = [validity(m, ranges) for m in samples]
                res = {"seed": seed, "heldout_bits": heldout_bits(obj, test),
                       "complete": statistics.mean(m is not None for m in samples),
                       "bond_valid": statistics.mean(a for a, _ in v), "dist_valid": statistics.mean(b for _, b in v),
                       "both_valid": statistics.mean(a and b for a, b in v),
                       "atoms": statistics.mean([len(m.positions) for m in samples if m is not None] or [0]),
                       "train_s": obj.train_seconds, "sample_s": time.perf_counter() - t0}
                path.write_text(json.dumps(res, indent=1))
            results[method].append(json.loads(path.read_text()))
            print(f"mol {method} seed {seed}: {results[method][-1]}", flush=True)
    return results, ceiling


# --- figure 3 ------------------------------------------------------------------------------------
def chamfer_scores(samples: list[torch.Tensor], refs: list[torch.Tensor]) -> tuple[float, float]:
    """(fidelity, coverage): mean over samples of the Chamfer distance to the nearest reference, and
    mean over references of the distance to the nearest sample. An empty sample counts as 4 (the
    squared diagonal of the cube is about 14.5; 4 is far beyond any real pair)."""
    d = torch.full((len(samples), len(refs)), 4.0)
    for i, s in enumerate(samples):
        if len(s):
            for j, r in enumerate(refs):
                d[i, j] = chamfer_l2(s[None], r[None])[0]
    return float(d.amin(1).mean()), float(d.amin(0).mean())


def voxel_points(s: Structure) -> torch.Tensor:
    from unmask.data.octree import cell_centres
    return cell_centres(voxelize(s.positions, SHAPE.depth, SHAPE.low, SHAPE.side), SHAPE.depth, SHAPE.low,
                        SHAPE.side).float()


def shapes(args, runs: Path) -> tuple[dict, dict]:
    train_s = shape_structures("train", per_class=16, points=1024, seed=0)
    test_s = shape_structures("test", per_class=4, points=1024, seed=0)
    data = SHAPE.batch([SHAPE.tokenize(s) for s in train_s])
    test = SHAPE.batch([SHAPE.tokenize(s) for s in test_s])
    refs = [voxel_points(s) for s in test_s]
    n = args.shape_samples
    results: dict[str, list[dict]] = {"masked": [], "ntp": [], "level-unigram": [], "train-set": []}
    unigram = level_unigram(data, SHAPE)
    for seed in args.seeds:
        for method in results:
            path = runs / f"shape-{method}-s{seed}" / "result.json"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                g = torch.Generator().manual_seed(2000 + seed)
                res = {"seed": seed}
                if method in ("masked", "ntp"):
                    obj = train("shape", method, seed, SHAPE, data, args, runs)
                    t0 = time.perf_counter()
                    samples = sample_shapes(obj, n, g)
                    res |= {"heldout_bits": heldout_bits(obj, test), "train_s": obj.train_seconds,
                            "sample_s": time.perf_counter() - t0}
                elif method == "level-unigram":
                    cursors = sample_sequences(SHAPE, unigram, n, g)
                    samples = [SHAPE.detokenize(c).positions.float() for c in cursors]
                else:
                    pick = torch.randperm(len(train_s), generator=g)[:n].tolist()
                    samples = [voxel_points(train_s[i]) for i in pick]
                res["fidelity"], res["coverage"] = chamfer_scores(samples, refs)
                res["voxels"] = statistics.mean(len(s) for s in samples)
                path.write_text(json.dumps(res, indent=1))
            results[method].append(json.loads(path.read_text()))
            print(f"shape {method} seed {seed}: {results[method][-1]}", flush=True)
    return results, {"voxels": statistics.mean(len(r) for r in refs)}


# --- tables --------------------------------------------------------------------------------------

def paired(a: list[dict], b: list[dict], key: str) -> str:
    by = {r["seed"]: r[key] for r in b}
    d = [r[key] - by[r["seed"]] for r in a if r["seed"] in by]
    return f"{ms(d)} ({', '.join(f'{x:+.3f}' for x in d)})"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--only", nargs="*", default=["counts", "mol", "shape"], choices=["counts", "mol", "shape"])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--shape-steps", type=int, default=200)
    p.add_argument("--shape-batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--mol-samples", type=int, default=64)
    p.add_argument("--shape-samples", type=int, default=16)
    p.add_argument("--runs", default="runs/uni3dar")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(describe())
    runs = Path(args.runs)
    if "counts" in args.only:
        print("\n## Token counts (mean per structure)\n\n" + counts_table())
    if "mol" in args.only:
        res, ceil = molecules(args, runs)
        print(f"\n## g2 molecules (steps {args.steps}, batch {args.batch}, width {args.dim}, {args.layers} layers, "
              f"lr {args.lr}, {args.mol_samples} samples per run, seeds {args.seeds})\n")
        print("| method | held-out bits/token | complete | bond-valid | distance-valid | both | atoms "
              "| train s (wall, shared CPU) |")
        print("|---|---|---|---|---|---|---|---|")
        for m, rows in res.items():
            print(f"| {m} | {ms([r['heldout_bits'] for r in rows])} | {ms([r['complete'] for r in rows], '.2f')} | "
                  f"{ms([r['bond_valid'] for r in rows], '.2f')} | {ms([r['dist_valid'] for r in rows], '.2f')} | "
                  f"{ms([r['both_valid'] for r in rows], '.2f')} | {ms([r['atoms'] for r in rows], '.1f')} | "
                  f"{ms([r['train_s'] for r in rows], '.0f')} |")
        print(f"| held-out molecules | | | {ceil['bond_valid']:.2f} | {ceil['dist_valid']:.2f} | | | |")
        for key in ("heldout_bits", "bond_valid", "dist_valid", "both_valid"):
            print(f"paired delta masked - ntp, {key}: {paired(res['masked'], res['ntp'], key)}")
    if "shape" in args.only:
        res, info = shapes(args, runs)
        print(f"\n## Shapes, depth 4 (steps {args.shape_steps}, batch {args.shape_batch}, width {args.dim}, "
              f"{args.layers} layers, {args.shape_samples} samples, 32 held-out shapes of {info['voxels']:.0f} voxels "
              f"on average, seeds {args.seeds})\n")
        print("| method | held-out bits/token | Chamfer fidelity | Chamfer coverage | voxels |")
        print("|---|---|---|---|---|")
        for m, rows in res.items():
            bits = ms([r["heldout_bits"] for r in rows]) if "heldout_bits" in rows[0] else "—"
            print(f"| {m} | {bits} | {ms([r['fidelity'] for r in rows], '.4f')} | "
                  f"{ms([r['coverage'] for r in rows], '.4f')} | {ms([r['voxels'] for r in rows], '.0f')} |")
        for key in ("heldout_bits", "fidelity", "coverage"):
            print(f"paired delta masked - ntp, {key}: {paired(res['masked'], res['ntp'], key)}")


if __name__ == "__main__":
    main()
