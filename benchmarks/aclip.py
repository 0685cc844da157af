"""Attentive Mask CLIP (A-CLIP, Yang et al. 2023, arXiv:2212.08653) on the glyph-name pairs
(`data/image_text.py`: 32x32 glyphs of 111 characters in several faces, captions "latin small letter
a"; held out: faces by the hash of their key, every character on both sides), 3 seeds, every method
with the same steps, batch, learning rate, width and depth, each trained with the one `Trainer`.

Methods (`objectives/aclip.py`, patch 4 -> an 8 x 8 grid, 16 cells of 2 x 2 patches):
- aclip: the online image encoder reads the 9 of 16 cells (36 of 64 patches) that the EMA
  encoder's [CLS] attention favours (A-CLIP's int(16 * 0.5) + 1), masking from step 0;
- random: the same 36 patches' worth, drawn uniformly (A-CLIP's ablation baseline, FLIP's masking);
- clip: every patch (a reference, not the claim: it reads 64 / 36 as many image tokens per step).

Metric, held-out glyphs only: zero-shot classification = image -> text retrieval among the 111
class captions (top-1, top-5), and text -> image recall@1 (the share of the class captions whose
nearest held-out image shows that character), each with the online encoders on whole images.

    .venv/bin/python benchmarks/aclip.py                      # 3 seeds; writes runs/aclip/table.md
    .venv/bin/python benchmarks/aclip.py --seeds 0 --steps 100

Runs are kept under --runs (default runs/aclip/METHOD-sSEED) and reused when their result.json
exists, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import time

import torch
from captioned import captioned
from machine import describe
from seeded_runs import budget_arguments, column, keep_table, run_once
from spread import mean_std as ms
from spread import paired_row

from unmask.data.image_text import Vocab
from unmask.nn.image_text import ImageTextConfig
from unmask.objectives.aclip import AttentiveMaskCLIP

METHODS = {"aclip": "attentive", "random": "random", "clip": "none"}  # name -> masking


def pairs(split: str, vocab: Vocab | None, length: int | None):
    data, s, vocab, length = captioned("glyphs", split, vocab, length)
    return data, s.labels, s.classes, vocab, length


def build(method: str, seed: int, args, cfg: ImageTextConfig) -> AttentiveMaskCLIP:
    torch.manual_seed(seed)  # the weights' initialisation
    return AttentiveMaskCLIP(cfg, masking=METHODS[method], keep=0.5, text_depth=args.text_depth,
                             embed_dim=args.embed_dim, momentum=args.momentum, momentum_steps=args.steps)


@torch.no_grad()
def zero_shot(objective: AttentiveMaskCLIP, images, labels, class_tokens, class_lengths) -> dict[str, float]:
    """images Float[M, C, H, W] with labels Long[M]; class captions Long[K, T], Long[K] ->
    image->text top-1 / top-5 accuracy among the K captions and text->image recall@1 over the
    classes present among the images."""
    objective.eval()
    img = objective.image_embedding(images)  # [M, E]
    txt = objective.text_embedding(class_tokens, class_lengths)  # [K, E]
    sims = img @ txt.T  # [M, K]
    top5 = sims.topk(5, dim=1).indices  # [M, 5]
    present = labels.unique()
    nearest = labels[sims[:, present].argmax(0)]  # [K']: the class of each caption's nearest image
    return {"top1": float((top5[:, 0] == labels).double().mean()),
            "top5": float((top5 == labels[:, None]).any(1).double().mean()),
            "t2i_r1": float((nearest == present).double().mean())}


def run_one(method: str, seed: int, args, data, cfg) -> dict:
    train, test, test_y, class_tokens, class_lengths = data
    return run_once(method, seed, args, lambda: build(method, seed, args, cfg), train,
                    lambda objective: zero_shot(objective, test["images"], test_y, class_tokens, class_lengths))


def table(results: dict, args) -> str:
    def col(method, key):
        return column(results, method, key)

    rows = ["| held-out figure | A-CLIP (attentive) | random, same kept count | paired delta per seed | "
            "CLIP, every patch (reference) |", "|---|---|---|---|---|"]
    for key, label in (("top1", "zero-shot top-1 (image -> 111 captions)"), ("top5", "zero-shot top-5"),
                       ("t2i_r1", "text -> image recall@1")):
        ref = ms(col("clip", key)) if "clip" in results else "not run"
        rows.append(f"{paired_row(label, col('aclip', key), col('random', key))} {ref} |")
    cpu = {m: sum(col(m, "train_cpu_s")) / len(results[m]) for m in results}
    rows.append("| training CPU s per run | " + " | ".join(
        f"{cpu[m]:.0f}" if m in cpu else "" for m in ("aclip", "random")) + " | | "
        + (f"{cpu['clip']:.0f}" if "clip" in cpu else "") + " |")
    budget = (f"{args.steps} steps, batch {args.batch}, lr {args.lr}, width {args.dim}, image depth {args.depth}, "
              f"text depth {args.text_depth}, patch 4 (8x8 grid), keep 0.5 -> 36 of 64 patches, EMA momentum "
              f"{args.momentum} -> 1 (cosine), seeds {', '.join(map(str, args.seeds))}")
    return "\n".join(rows) + f"\n\nBudget (every method): {budget}.\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    budget_arguments(p, steps=700, batch=64, dim=64, depth=4, methods=METHODS, runs="runs/aclip")
    p.add_argument("--text-depth", type=int, default=2)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--momentum", type=float, default=0.99)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(describe(), flush=True)
    c0 = time.process_time()
    train, _, classes, vocab, length = pairs("train", None, None)
    test, test_y, _, _, _ = pairs("test", vocab, length)
    class_tokens, class_lengths = vocab.encode(classes, length)
    cfg = ImageTextConfig(image_size=32, channels=1, patch=4, vocab_size=vocab.size, text_length=length,
                          dim=args.dim, depth=args.depth, heads=4)
    data = (train, test, test_y, class_tokens, class_lengths)
    results = {m: [run_one(m, s, args, data, cfg) for s in args.seeds] for m in args.methods}
    print(f"CPU time of this invocation: {time.process_time() - c0:.0f} s", flush=True)
    if {"aclip", "random"} <= set(results):
        keep_table(args.runs, table(results, args))


if __name__ == "__main__":
    main()
