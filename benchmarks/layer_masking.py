"""Missingness bias on the 32x32 glyphs (Balasubramanian and Feizi 2023, arXiv:2211.14646): a CNN
classifier trained on whole glyphs, then patches of the held-out glyphs removed by layer masking or
painted grey or black; how often the prediction stays as on the whole image, the accuracy, and how
far the predicted classes collapse (KL of the predicted-class histogram from the true one, share of
the top class). 3 seeds of the classifier; the same masks for every removal.

    .venv/bin/python benchmarks/layer_masking.py          # 3 seeds; writes runs/layer-masking/table.md
    .venv/bin/python benchmarks/layer_masking.py --seeds 0 --steps 50

Patches are 8x8 pixels (a 4x4 grid): random patches (4 or 8 of 16) and ink-free patches (up to 4 or
8, every ink-free one where an image has fewer). The glyphs are white on black, so black paint over
ink-free patches changes no pixel: that row is a no-op (agreement 1 by construction), and grey is
the paint that shows the bias there. The classifier trains with the one `Trainer` through a
cross-entropy objective `objectives/classification.py`.
Runs are kept under --runs (default runs/layer-masking/sSEED) and reused when their result.json exists.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from machine import describe
from spread import mean_std as ms

from unmask.data.image_sets import load
from unmask.eval.layer_masking import FILLS, missingness, patch_masks, predict
from unmask.nn.masked_cnn import LAYER_MASKING, CNNClassifier, CNNConfig
from unmask.objectives.classification import Classification
from unmask.train.trainer import TrainConfig, fit

PATCH = 8
SETTINGS = {  # name -> (patches removed, ink-free only)
    "random 4/16": (4, False),
    "random 8/16": (8, False),
    "ink-free <=4": (4, True),
    "ink-free <=8": (8, True),
}
MEASURES = ("agreement", "accuracy", "class_kl", "top_share")


def glyphs(split: str):
    s = load("glyphs", split)
    return s.images.float() / 255.0, s.labels, len(s.classes)


def run_one(seed: int, args, train, test) -> dict:
    folder = args.runs / f"s{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    torch.manual_seed(seed)
    model = CNNClassifier(train[2], CNNConfig(widths=(args.dim // 2, args.dim), stem_stride=2), LAYER_MASKING)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed, log_every=50)
    c0 = time.process_time()
    fit(Classification(model), {"images": train[0], "labels": train[1]}, cfg, folder,
        {"seed": seed, "steps": args.steps, "batch": args.batch, "lr": args.lr, "dim": args.dim}, progress=False)
    cpu_s = time.process_time() - c0
    images, labels, classes = test
    whole = predict(model, images)
    result = {"seed": seed, "train_cpu_s": cpu_s, "whole": missingness(whole, whole, labels, classes).__dict__}
    for name, (count, free_only) in SETTINGS.items():
        g = torch.Generator().manual_seed(1000 + seed)  # the same masks for every removal
        mask = patch_masks(images, PATCH, count, g, ink_free_only=free_only)
        result[name] = {"removed_share": float(mask.float().mean())}
        for how in FILLS:
            scores = missingness(predict(model, images, mask, PATCH, how), whole, labels, classes)
            result[name][how] = scores.__dict__
    done.write_text(json.dumps(result, indent=1))
    print(f"seed {seed}: whole-image accuracy {result['whole']['accuracy']:.3f}, {cpu_s:.0f} CPU s", flush=True)
    return result



def table(results: list[dict], args) -> str:
    lines = [
        f"Missingness bias on held-out glyphs (207 images, 111 classes): CNN classifier (widths {args.dim // 2}, "
        f"{args.dim}) trained on whole glyphs for {args.steps} steps, batch {args.batch}, lr {args.lr}; "
        f"seeds {', '.join(str(r['seed']) for r in results)}; patches {PATCH}x{PATCH} (4x4 grid).",
        "",
        f"Whole images: accuracy {ms([r['whole']['accuracy'] for r in results])}, class KL "
        f"{ms([r['whole']['class_kl'] for r in results])}, top-class share "
        f"{ms([r['whole']['top_share'] for r in results])}.",
        "",
        "| patches removed | share removed | removal | agreement with whole | accuracy | class KL (nats) "
        "| top-class share |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in SETTINGS:
        share = statistics.mean(r[name]["removed_share"] for r in results)
        for how in FILLS:
            cells = [ms([r[name][how][m] for r in results]) for m in MEASURES]
            note = " (no-op: no pixel changes)" if how == "black" and SETTINGS[name][1] else ""
            lines.append(f"| {name} | {share:.2f} | {how}{note} | " + " | ".join(cells) + " |")
    lines += ["", "Paired agreement deltas per seed, layer masking - paint:", ""]
    for name in SETTINGS:
        for how in ("grey", "black"):
            d = [r[name]["layer"]["agreement"] - r[name][how]["agreement"] for r in results]
            lines.append(f"- {name}, layer - {how}: {', '.join(f'{x:+.3f}' for x in d)} (mean {ms(d)})")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--dim", type=int, default=64, help="the CNN's last width")
    p.add_argument("--runs", type=Path, default=Path("runs/layer-masking"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(describe(), flush=True)
    train, test = glyphs("train"), glyphs("test")
    results = [run_one(s, args, train, test) for s in args.seeds]
    text = table(results, args)
    (args.runs / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
