"""Polyline Path Masked Attention (PPMA, P67) against plain attention: the same small ViT classifier
(patch tokens on an 8x8 grid, learned positions, mean-pooled tokens, a linear head), trained from
scratch with the project's Trainer at the same budget (steps, batch, lr, width, depth, heads); the
only difference is the attention of every block (`nn.polyline_mask`). Figure: top-1 accuracy on the
held-out split, 3 seeds, paired delta per seed. Two data sets (`data.image_sets`):
- `glyphs` (default): 32x32, patch 4; 111 characters x 12 font faces, ~15% of each character's faces
  held out, so about 10 training images per class;
- `digits`: the 8x8 digits, patch 1 (each pixel a token), the fixed stratified 20% held out.

    .venv/bin/python benchmarks/polyline_attention.py                 # glyphs, 3 seeds, both arms
    .venv/bin/python benchmarks/polyline_attention.py --data digits --size 8 --patch 1
    .venv/bin/python benchmarks/polyline_attention.py --seeds 0 --steps 50

Runs are kept under --runs (default runs/polyline-attention/DATA/ARM-sSEED) and reused when their
result.json exists, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from spread import mean_std
from torch import nn

from unmask.data import image_sets
from unmask.nn.patch import PatchEmbed, patchify
from unmask.nn.polyline_mask import polyline_transformer
from unmask.nn.transformer import Transformer, init_weights
from unmask.objectives.classification import Classification
from unmask.train import TrainConfig, fit

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

ARMS = {"vit": "ViT, plain attention (baseline)", "ppma": "ViT, polyline path masked attention (P67)"}


class PatchViT(nn.Module):
    """images: Uint8[B, 1, S, S] -> logits [B, classes]."""

    def __init__(self, polyline: bool, classes: int, size: int, patch: int, dim: int, depth: int, heads: int):
        super().__init__()
        grid = (size // patch, size // patch)
        self.patch = patch
        self.embed = PatchEmbed(patch * patch, dim)
        self.pos = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))
        self.encoder = polyline_transformer(dim, depth, heads, grid) if polyline else Transformer(dim, depth, heads)
        self.head = nn.Linear(dim, classes)
        init_weights(self)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = patchify(images.float() / 255.0, self.patch)  # [B, N, p*p]
        h = self.encoder(self.embed(x) + self.pos)  # [B, N, D]
        return self.head(h.mean(1))


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    net.eval()
    pred = torch.cat([net(chunk).argmax(1) for chunk in images.split(256)])
    return (pred == labels).double().mean().item()


def run_one(arm: str, seed: int, args, runs: Path) -> dict:
    out = runs / f"{arm}-s{seed}"
    if (out / "result.json").exists():
        return json.loads((out / "result.json").read_text())
    train, test = image_sets.load(args.data, "train", args.size), image_sets.load(args.data, "test", args.size)
    torch.manual_seed(seed)
    net = PatchViT(arm == "ppma", len(train.classes), args.size, args.patch, args.dim, args.depth, args.heads)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed,
                      log_every=max(args.steps // 4, 1))
    c0, t0 = time.process_time(), time.perf_counter()
    objective = fit(Classification(net), {"images": train.images, "labels": train.labels}, cfg, out,
                    {"arm": arm, "seed": seed, **vars(args) | {"runs": str(args.runs)}}, progress=False)
    cpu_ms = (time.process_time() - c0) * 1000 / args.steps
    wall = time.perf_counter() - t0
    result = {"arm": arm, "seed": seed, "test_acc": accuracy(objective.net, test.images, test.labels),
              "train_acc": accuracy(objective.net, train.images, train.labels), "cpu_ms_per_step": cpu_ms,
              "wall_s": wall, "params": sum(p.numel() for p in net.parameters()), "n_train": len(train),
              "n_test": len(test), "classes": len(train.classes)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"{arm:5s} seed {seed}: held-out acc {result['test_acc']:.3f}  train acc {result['train_acc']:.3f}  "
          f"{cpu_ms:.0f} CPU ms/step", flush=True)
    return result



def table(results: dict[str, list[dict]], args) -> str:
    base = {r["seed"]: r["test_acc"] for r in results["vit"]}
    r0 = results["vit"][0]
    lines = [
        f"{args.data} {args.size}x{args.size} ({r0['n_train']} train / {r0['n_test']} held-out images, "
        f"{r0['classes']} classes), patch {args.patch} -> {args.size // args.patch}x{args.size // args.patch} grid, "
        f"width {args.dim}, depth {args.depth}, "
        f"{args.heads} heads, {args.steps} steps of batch {args.batch}, lr {args.lr}, warmup {args.warmup}, "
        f"seeds {', '.join(map(str, args.seeds))}.",
        "",
        "| arm | held-out acc | delta vs ViT (per seed) | train acc | params | CPU ms/step |",
        "|---|---|---|---|---|---|",
    ]
    for arm, rows in results.items():
        deltas = [r["test_acc"] - base[r["seed"]] for r in rows]
        per_seed = "—" if arm == "vit" else f"{mean_std(deltas)} ({', '.join(f'{d:+.3f}' for d in deltas)})"
        lines.append(f"| {ARMS[arm]} | {mean_std([r['test_acc'] for r in rows])} | {per_seed} | "
                     f"{mean_std([r['train_acc'] for r in rows])} | {rows[0]['params']} | "
                     f"{statistics.mean(r['cpu_ms_per_step'] for r in rows):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=("glyphs", "digits"), default="glyphs")
    p.add_argument("--size", type=int, default=32, help="image side (digits: 8)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=25)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--runs", type=Path, default=None, help="default runs/polyline-attention/DATA")
    args = p.parse_args(argv)
    args.runs = args.runs or Path("runs/polyline-attention") / args.data
    torch.set_num_threads(args.threads)
    print(describe(), flush=True)
    results = {arm: [run_one(arm, s, args, args.runs) for s in args.seeds] for arm in ARMS}
    print(table(results, args))


if __name__ == "__main__":
    main()
