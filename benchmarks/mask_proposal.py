"""Prompt-guided Mask Proposal, PMP (Li et al. 2024, arXiv:2412.10292), against the prompt-free
two-stage baseline on emoji scenes (`data/canvas.py`: 64x64 white canvases with 2-3 of the 24 SEEN
emoji classes, exact visible masks), 3 seeds, both with the same backbone, queries, decoder depth,
width, steps, batch and learning rate, each trained with the one `Trainer` and the same set loss
(`objectives/mask_proposal.py`). PMP's prompt in training: the name of one object of the scene.

Held-out scenes (`scenes("test", ...)`, never used to choose anything): for each object, the prompt is
its class name. Both models give Q proposals (PMP reads the prompt; the baseline's proposals are the
same for every prompt), and the second stage picks the proposal with the highest class probability
for the prompted class. Reported: mIoU of the picked mask against the truth (64x64, the mask logits
upsampled bilinearly, threshold 0), the share of objects picked with IoU >= 0.5, and the oracle, the
best IoU among the Q proposals (is the wanted mask there at all?).

    .venv/bin/python benchmarks/mask_proposal.py                  # 3 seeds; writes runs/mask_proposal/table.md
    .venv/bin/python benchmarks/mask_proposal.py --seeds 0 --steps 50

Runs are kept under --runs (default runs/mask_proposal/METHOD-sSEED) and reused when their
result.json exists, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from machine import describe
from seeded_runs import budget_arguments, column, keep_table, run_once
from spread import paired_row

from unmask.data.canvas import CLASSES, SEEN, scenes
from unmask.data.image_text import Vocab
from unmask.nn.mask_proposal import MaskProposalConfig, MaskProposalModel
from unmask.objectives.mask_proposal import MaskProposalLoss

METHODS = ("pmp", "two_stage")


def scene_data(split: str, n: int, vocab: Vocab) -> dict:
    s = scenes(split, n, classes=SEEN)
    names, lengths = vocab.encode(list(SEEN), max(len(c.split()) for c in SEEN))  # [C, T], [C]
    slot = s.labels.clamp_min(0)  # an empty slot's name is never drawn (its label is -1)
    return {"images": s.images.float() / 255.0, "masks": s.masks, "labels": s.labels,
            "names": names[slot], "name_lengths": lengths[slot]}


def build(method: str, seed: int, args, vocab: Vocab) -> MaskProposalLoss:
    cfg = MaskProposalConfig(image_size=64, classes=len(SEEN), vocab_size=vocab.size, prompt_length=2,
                             dim=args.dim, queries=args.queries, depth=args.depth, heads=4, prompt=method == "pmp")
    torch.manual_seed(seed)  # the weights' initialisation
    return MaskProposalLoss(MaskProposalModel(cfg))


@torch.no_grad()
def evaluate(objective: MaskProposalLoss, test: dict, chunk: int = 128) -> dict[str, float]:
    """Per object of the test scenes: IoU of the proposal picked for its class name, and the best IoU."""
    model = objective.model.eval()
    scene, slot = (test["labels"] >= 0).nonzero(as_tuple=True)  # one row per object
    picked, best = [], []
    for start in range(0, len(scene), chunk):
        i, k = scene[start:start + chunk], slot[start:start + chunk]
        cls = test["labels"][i, k]
        if model.cfg.prompt:
            out = model(test["images"][i], test["names"][i, k], test["name_lengths"][i, k])
        else:
            out = model(test["images"][i])  # the same proposals for any prompt
        masks = F.interpolate(out.masks, size=test["masks"].shape[-2:], mode="bilinear", align_corners=False) > 0
        truth = test["masks"][i, k][:, None]  # [M, 1, S, S]
        inter = (masks & truth).flatten(2).sum(-1).double()
        union = (masks | truth).flatten(2).sum(-1).double()
        iou = inter / union  # [M, Q]; union > 0 since every object shows >= 40 pixels
        score = out.logits.softmax(-1).gather(2, cls[:, None, None].expand(-1, out.logits.shape[1], 1)).squeeze(2)
        picked.append(iou.gather(1, score.argmax(1, keepdim=True)).squeeze(1))
        best.append(iou.max(1).values)
    picked, best = torch.cat(picked), torch.cat(best)
    return {"miou": float(picked.mean()), "hit50": float((picked >= 0.5).double().mean()),
            "oracle_miou": float(best.mean()), "objects": len(picked)}


def run_one(method: str, seed: int, args, train: dict, test: dict, vocab: Vocab) -> dict:
    return run_once(method, seed, args, lambda: build(method, seed, args, vocab), train,
                    lambda objective: evaluate(objective, test))


def table(results: dict, args) -> str:
    rows = ["| figure (held-out scenes, prompt = each object's class name) | PMP | two-stage baseline | "
            "paired delta per seed |", "|---|---|---|---|"]
    for key, label in (("miou", "mIoU of the picked proposal"), ("hit50", "share of objects with IoU >= 0.5"),
                       ("oracle_miou", "oracle: best IoU among the proposals, mean")):
        rows.append(paired_row(label, column(results, "pmp", key), column(results, "two_stage", key)))
    objects = results["pmp"][0]["objects"]
    cpu = sum(r["train_cpu_s"] + r["eval_cpu_s"] for rs in results.values() for r in rs)
    budget = (f"{args.steps} steps, batch {args.batch}, lr {args.lr}, width {args.dim}, {args.queries} queries, "
              f"decoder depth {args.depth}, {args.train} training scenes, {args.test} test scenes ({objects} objects), "
              f"seeds {', '.join(map(str, args.seeds))}")
    return "\n".join(rows) + f"\n\nBudget (both methods): {budget}. CPU time of all runs: {cpu / 60:.1f} min.\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    budget_arguments(p, steps=600, batch=32, dim=64, depth=3, methods=METHODS, runs="runs/mask_proposal")
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--test", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(describe(), flush=True)
    c0 = time.process_time()
    vocab = Vocab.build(CLASSES)
    train, test = scene_data("train", args.train, vocab), scene_data("test", args.test, vocab)
    results = {m: [run_one(m, s, args, train, test, vocab) for s in args.seeds] for m in args.methods}
    print(f"CPU time of this invocation: {(time.process_time() - c0) / 60:.1f} min", flush=True)
    if set(results) == set(METHODS):
        keep_table(args.runs, table(results, args))


if __name__ == "__main__":
    main()
