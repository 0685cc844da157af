"""Masked Feature Modeling for domain adaptation (MFM, Zhou et al. 2025, arXiv:2509.13801) against its
base method on the same budget: handwritten digits (labelled source) -> typeset digits of unseen
DejaVu faces, shifted, scaled and blurred (unlabelled target; `data/domain_shift.py`).

One small ViT (16 x 16 images, patch 4 -> 16 tokens), the same steps, batch, learning rate,
augmentation and seeds for every method: source-only; self-training with an EMA teacher's
pseudo-labels (DACS's rule: one confidence weight per batch); the same plus MFM (40% of the target
feature tokens hidden, a two-block Rebuilder fills them in, the task head classifies the rebuilt map
against the pseudo-labels); and both again with a per-example confidence mask (FixMatch's rule).
Figure: accuracy of the deployed network (encoder + head, no Rebuilder) on the held-out target
faces; also on the held-out source digits (in-domain). Training never reads a target label.

    .venv/bin/python benchmarks/mfm_uda.py                       # 5 methods x seeds 0 1 2
    .venv/bin/python benchmarks/mfm_uda.py --methods mfm --seeds 0

Runs are kept under --runs (default runs/mfm-uda/METHOD-sSEED) and reused when their result.json
exists, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from machine import describe
from spread import mean_std

from unmask.data.domain_shift import DomainShift, RenderShift, digit_domains, perturb
from unmask.nn.mae import MAEConfig, MaskedEncoder, init_mae
from unmask.objectives.mfm_uda import MaskedFeatureUDA, Rebuilder, TokenClassifier
from unmask.seeding import seeded
from unmask.train.trainer import TrainConfig, fit

METHODS = {  # name -> (label, mfm, self_training, weighting)
    "source": ("source only", False, False, "share"),
    "self-training": ("self-training (EMA teacher, DACS weight)", False, True, "share"),
    "mfm": ("self-training + MFM", True, True, "share"),
    "self-training-mask": ("self-training, per-example confidence mask", False, True, "mask"),
    "mfm-mask": ("self-training + MFM, per-example confidence mask", True, True, "mask"),
}
BASELINE = {"mfm": "self-training", "mfm-mask": "self-training-mask"}


def build(method: str, seed: int, args) -> MaskedFeatureUDA:
    _, mfm, self_training, weighting = METHODS[method]
    cfg = MAEConfig(image_size=(args.size, args.size), channels=1, patch=4, dim=args.dim, depth=args.depth,
                    heads=4, cls_token=False, hide="drop")
    with seeded(seed):
        encoder, head = MaskedEncoder(cfg), TokenClassifier(args.dim, 10)
        init_mae(encoder)
        # built for every method, so that the encoder and head start from the same weights in all three
        rebuilder = Rebuilder(args.dim, cfg.grid, width=args.dim, depth=2, heads=4)
    jitter = RenderShift(shift=args.augment, scale=2 * args.augment, blur=1.0)

    def augment(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return perturb(images, jitter, generator)

    return MaskedFeatureUDA(encoder, head, rebuilder if mfm else None, mfm=mfm, self_training=self_training,
                            ratio=args.ratio, mfm_weight=args.mfm_weight, weighting=weighting,
                            augment=augment if args.augment > 0 else None)


@torch.no_grad()
def accuracy(objective: MaskedFeatureUDA, images: torch.Tensor, labels: torch.Tensor) -> float:
    objective.eval()
    return (objective.predict(images).argmax(-1) == labels).float().mean().item()


def settings(method: str, seed: int, args) -> dict:
    """What a run depends on: a finished run with other settings is not reused."""
    keep = ("steps", "batch", "lr", "warmup", "dim", "depth", "size", "ratio", "mfm_weight", "augment")
    return {"method": method, "seed": seed, **{k: getattr(args, k) for k in keep}}


def run_one(method: str, seed: int, args, domains: DomainShift, runs: Path) -> dict:
    folder = runs / f"{method}-s{seed}"
    if (folder / "result.json").exists():
        return json.loads((folder / "result.json").read_text())
    objective = build(method, seed, args)
    d = domains
    data = {"source": d.source_train.images, "labels": d.source_train.labels, "target": d.target_train.images}
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed,
                      log_every=50, checkpoint_every=0, precision="fp32")
    t0 = time.perf_counter()
    fit(objective, data, cfg, folder, settings(method, seed, args), progress=False)
    ms = (time.perf_counter() - t0) * 1000 / args.steps
    result = {"method": method, "seed": seed, "ms_per_step": ms,
              "target_test": accuracy(objective, d.target_test.images, d.target_test.labels),
              "target_train": accuracy(objective, d.target_train.images, d.target_train.labels),
              "source_test": accuracy(objective, d.source_test.images, d.source_test.labels)}
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    print(f"{method:13s} seed {seed}: target {result['target_test']:.3f}  source {result['source_test']:.3f}  "
          f"{ms:.0f} ms/step", flush=True)
    return result



def deltas(results: dict[str, list[dict]], method: str, base: str, seeds: list[int]) -> str:
    """Paired target-accuracy deltas, method - base, one per seed."""
    if base not in results or base == method:
        return "-"
    ours = {r["seed"]: r["target_test"] for r in results[method]}
    ref = {r["seed"]: r["target_test"] for r in results[base]}
    return " ".join(f"{ours[s] - ref[s]:+.3f}" for s in seeds if s in ref and s in ours)


def table(results: dict[str, list[dict]], args) -> str:
    seeds = args.seeds
    lines = [f"steps {args.steps}, batch {args.batch} source + {args.batch} target, lr {args.lr}, width {args.dim}, "
             f"depth {args.depth}, {args.size}x{args.size} images, patch 4 (16 tokens), MFM ratio {args.ratio}, "
             f"MFM weight {args.mfm_weight}, augmentation {args.augment}, seeds {', '.join(map(str, seeds))}",
             "",
             "| method | target test acc | source test acc | delta vs its self-training, per seed | "
             "delta vs source only, per seed |",
             "|---|---|---|---|---|"]
    for method, rows in results.items():
        lines.append(f"| {METHODS[method][0]} | {mean_std([r['target_test'] for r in rows])} | "
                     f"{mean_std([r['source_test'] for r in rows])} | "
                     f"{deltas(results, method, BASELINE.get(method, ''), seeds)} | "
                     f"{deltas(results, method, 'source', seeds)} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--ratio", type=float, default=0.4)
    p.add_argument("--mfm-weight", type=float, default=1.0)
    p.add_argument("--augment", type=float, default=0.05,
                   help="what the student reads (source, and its target copy): random shift of up to this share of "
                        "the side, scale by up to twice it, blur up to 1 px; 0: none")
    p.add_argument("--runs", type=Path, default=Path("runs/mfm-uda"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(describe(), flush=True)
    domains = digit_domains(size=args.size)
    results = {m: [run_one(m, s, args, domains, args.runs) for s in args.seeds] for m in args.methods}
    print(table(results, args))


if __name__ == "__main__":
    main()
