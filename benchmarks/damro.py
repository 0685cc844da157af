"""DAMRO (Gong et al. 2024, arXiv:2410.04514) on a ViT classifier of the digits at 32x32 (scikit-learn's
8x8 digits enlarged by nearest neighbour, `data/image_sets.py`: 1,437 training and 360 held-out
images, 10 classes; a 4x4 patch is one original pixel, and about half the patches are blank
background), 3 seeds of the classifier. Figure: how concentrated the [CLS] attention of the
penultimate block is (its share on the top-k patches, against k / L for an even spread), whether those
patches have high norms (their mean norm over the mean patch norm; overlap with the top-k by norm)
and lie on the background (blank patches),
and what the contrastive logits `(1 + a) logits(all) - a logits(top-k only)` do to the held-out
errors for a few a: accuracy, errors fixed and errors introduced (as shares of the plain model's
errors and of its correct answers). Control: the same contrast against k random patches of the same
image (what the choice of the top-k buys over any k patches); and DAMRO with the paper's adaptive
plausibility cut (--beta: classes below beta times the top probability of the plain logits are out).

    .venv/bin/python benchmarks/damro.py                  # 3 seeds; writes runs/damro/table.md
    .venv/bin/python benchmarks/damro.py --seeds 0 --steps 100

The classifier trains with the one `Trainer` (`train/trainer.py`) through `ClassTokenViT`'s
cross-entropy; runs are kept under --runs (default runs/damro/vit-sSEED) and reused when their
result.json exists, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from machine import describe
from spread import mean_std as ms
from spread import signed

from unmask.data.image_sets import load
from unmask.eval.damro import ClassTokenViT, damro_logits, find_outliers, top_k_tokens
from unmask.nn.mae import MAEConfig
from unmask.nn.patch import patchify
from unmask.train.trainer import TrainConfig, fit


def images(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    s = load("digits", split)
    return s.images.float() / 255.0, s.labels  # Float[M, 1, 32, 32] in [0, 1], Long[M]


def build(seed: int, args, classes: int) -> ClassTokenViT:
    torch.manual_seed(seed)
    cfg = MAEConfig(image_size=(32, 32), channels=1, patch=args.patch, dim=args.dim, depth=args.depth, heads=4,
                    cls_token=True)
    return ClassTokenViT(cfg, classes)


def random_ids(b: int, tokens: int, k: int, seed: int) -> torch.Tensor:
    """Long[B, k]: k distinct random patches per image, ascending (the control)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    return top_k_tokens(torch.rand(b, tokens, generator=g), k)


def error_flow(plain: torch.Tensor, new: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy of `new`, the share of the plain model's errors it fixes and of its correct answers it breaks."""
    ok0, ok1 = plain == labels, new == labels
    return {"acc": float(ok1.double().mean()),
            "fixed": float((~ok0 & ok1).sum() / max(int((~ok0).sum()), 1)),
            "broken": float((ok0 & ~ok1).sum() / max(int(ok0.sum()), 1))}


@torch.no_grad()
def measure(model: ClassTokenViT, images: torch.Tensor, labels: torch.Tensor, seed: int, args) -> dict:
    model.eval()
    out = find_outliers(model.encoder, images, args.k, args.layer)
    tokens = out.attention.shape[1]
    by_norm = top_k_tokens(out.norms, args.k)
    overlap = (out.ids.unsqueeze(2) == by_norm.unsqueeze(1)).any(2).double().mean()
    top_norm = out.norms.gather(1, out.ids).mean(1) / out.norms.mean(1)  # [B]
    blank = patchify(images, args.patch).amax(-1) == 0  # [B, L]: patches without ink (background)
    plain = model.logits(images).argmax(-1)
    result = {"acc_plain": float((plain == labels).double().mean()), "share": float(out.share.mean()),
              "even_share": args.k / tokens, "norm_ratio": float(top_norm.mean()), "norm_overlap": float(overlap),
              "norm_overlap_chance": args.k / tokens,
              "blank_top": float(blank.gather(1, out.ids).double().mean()), "blank_all": float(blank.double().mean())}
    control = random_ids(len(images), tokens, args.k, seed)
    for a in args.alphas:
        for name, ids, beta in (("damro", None, 0.0), ("cut", None, args.beta), ("random", control, 0.0)):
            pred = damro_logits(model, images, args.k, a, layer=args.layer, beta=beta, ids=ids).argmax(-1)
            result |= {f"{name}_{a}_{k}": v for k, v in error_flow(plain, pred, labels).items()}
    return result


def run_one(seed: int, args, data) -> dict:
    folder = args.runs / f"vit-s{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    (train_x, train_y), (test_x, test_y) = data
    model = build(seed, args, int(train_y.max()) + 1)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed,
                      log_every=50)
    c0 = time.process_time()
    fit(model, {"images": train_x, "labels": train_y}, cfg, folder,
        {"seed": seed, **{k: getattr(args, k) for k in ("steps", "batch", "lr", "dim", "depth", "patch")}},
        progress=False)
    result = {"seed": seed, "train_cpu_s": time.process_time() - c0, **measure(model, test_x, test_y, seed, args)}
    done.write_text(json.dumps(result, indent=1))
    print(f"seed {seed}: plain accuracy {result['acc_plain']:.3f}, top-{args.k} share {result['share']:.3f}, "
          f"{result['train_cpu_s']:.0f} CPU s", flush=True)
    return result


def table(results: list[dict], args) -> str:
    col = lambda key: [r[key] for r in results]  # noqa: E731
    lines = [
        f"DAMRO on a ViT classifier of digits (10 classes, 32x32; {args.steps} steps, batch {args.batch}, "
        f"lr {args.lr}, "
        f"width {args.dim}, depth {args.depth}, patch {args.patch} -> 64 patches; seeds "
        f"{', '.join(map(str, args.seeds))}); [CLS] attention of block {args.layer}, k = {args.k}; "
        "360 held-out digits.",
        "",
        f"[CLS] attention share on the top-{args.k} patches: {ms(col('share'))} (even spread: "
        f"{results[0]['even_share']:.3f}). Their norm / mean patch norm: {ms(col('norm_ratio'))}; overlap of the "
        f"top-{args.k} by attention with the top-{args.k} by norm: {ms(col('norm_overlap'))} (chance "
        f"{results[0]['norm_overlap_chance']:.3f}). Share of the top-{args.k} that are blank background patches: "
        f"{ms(col('blank_top'))} (of all patches: {ms(col('blank_all'))}).",
        "",
        "| logits | a | held-out accuracy | errors fixed | correct broken | delta vs plain per seed |",
        "|---|---|---|---|---|---|",
        f"| plain | 0 | {ms(col('acc_plain'))} | - | - | - |",
    ]
    for a in args.alphas:
        for name, label in (("damro", f"DAMRO (top-{args.k} [CLS])"),
                            ("cut", f"DAMRO + plausibility cut beta {args.beta}"),
                            ("random", f"control ({args.k} random patches)")):
            d = [r[f"{name}_{a}_acc"] - r["acc_plain"] for r in results]
            lines.append(f"| {label} | {a} | {ms(col(f'{name}_{a}_acc'))} | {ms(col(f'{name}_{a}_fixed'))} | "
                         f"{ms(col(f'{name}_{a}_broken'))} | {signed(d)} |")
    lines += ["", f"Training CPU seconds per classifier (one thread): {ms(col('train_cpu_s'), '.0f')}."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--layer", type=int, default=-2)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    p.add_argument("--runs", type=Path, default=Path("runs/damro"))
    args = p.parse_args()
    torch.set_num_threads(1)
    print(describe(), flush=True)
    data = (images("train"), images("test"))
    results = [run_one(s, args, data) for s in args.seeds]
    text = table(results, args)
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
