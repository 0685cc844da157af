"""Mask-Adapter (Li et al. 2025, arXiv:2412.04533) against mask pooling, on emoji scenes
(`data/canvas.py`: 64x64 white canvases with 2-3 Twemoji objects, exact visible masks), 3 seeds.

The frozen "vision-language model" at this scale: a small conv net giving an 8x8 grid of 64-d dense
embeddings, pretrained CLIP-style on one-object canvases of all 36 classes (global average of the
grid, cosine to a learned class-embedding matrix that plays the text embeddings, learned
temperature), then frozen with its text embeddings. Then, on the same frozen features and text:

- mask pooling: the mean of the dense embeddings inside the mask (training-free, as in FC-CLIP);
- mask pooling + linear: the same with a trained linear map (identity at start), a fair trained baseline;
- Mask-Adapter (`nn/mask_adapter.py`): the adapter trained on the training scenes' masks.
Both trained heads use the one objective (`objectives/mask_adapter.py`: cross-entropy on ground-truth
and perturbed masks, IoU 0.7-0.95 with the truth, plus the mask-consistency loss), the same steps,
batch, lr and data, on the 24 SEEN classes only.

Scored on held-out scenes (`scenes("test")`): accuracy of each object's mask among the 24 SEEN
classes, with the ground-truth masks and with degraded masks (shifted and dilated/eroded to IoU
0.5-0.8 with the truth, drawn once with a fixed generator, the same for every method and seed); and
on scenes of the 12 UNSEEN classes (never seen by the heads; the backbone saw them), among those 12.

    .venv/bin/python benchmarks/mask_adapter.py                  # 3 seeds; writes runs/mask_adapter/table.md
    .venv/bin/python benchmarks/mask_adapter.py --seeds 0 --steps 50 --pretrain-steps 100

Runs are kept under --runs (default runs/mask_adapter/METHOD-sSEED) and reused when their result.json
exists (the backbone's checkpoint too), so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import describe
from spread import mean_std as ms
from spread import signed
from torch import nn

from unmask.data.canvas import CLASSES, SEEN, UNSEEN, scenes
from unmask.nn.mask_adapter import MaskAdapter, mask_pool, text_logits
from unmask.objectives.base import ObjectiveOutput, as_metric
from unmask.objectives.mask_adapter import MaskClassification, PooledProjection, jitter_masks, mask_iou
from unmask.train.trainer import TrainConfig, fit

HEADS = ("pool_linear", "adapter")
METHODS = ("pool", *HEADS)
NAMES = {"pool": "mask pooling (training-free)", "pool_linear": "mask pooling + trained linear map",
         "adapter": "Mask-Adapter"}


class TinyCLIPImage(nn.Module):
    """images: Uint8[B, 3, 64, 64] -> dense embeddings Float[B, dim, 8, 8]. The last layer is a linear
    1x1 conv, so pooling the dense embeddings equals embedding the pooled features."""

    def __init__(self, width: int = 64, dim: int = 64):
        super().__init__()

        def conv(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(8, cout), nn.GELU()]

        self.trunk = nn.Sequential(*conv(3, 32, 2), *conv(32, width, 2), *conv(width, width, 2),
                                   *conv(width, width, 1), *conv(width, width, 1))
        self.head = nn.Conv2d(width, dim, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images.float() / 127.5 - 1.0))


class CLIPStylePretraining(nn.Module):
    """Image-level classification by cosine to learned class ("text") embeddings, CLIP's classifier:
    the dense grid is averaged over space, as an image-level model's pooled output."""

    def __init__(self, encoder: TinyCLIPImage, classes: int, dim: int):
        super().__init__()
        self.encoder = encoder
        self.text = nn.Parameter(torch.randn(classes, dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()  # CLIP clamps its scale at 100

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        logits = text_logits(self.encoder(batch["images"]).mean((2, 3)), self.text, self.scale())
        loss = F.cross_entropy(logits, batch["labels"])
        acc = (logits.argmax(-1) == batch["labels"]).float().mean()
        return ObjectiveOutput(loss, {"acc": as_metric(acc, loss)})


def backbone(seed: int, args) -> CLIPStylePretraining:
    torch.manual_seed(seed)  # the weights' initialisation
    model = CLIPStylePretraining(TinyCLIPImage(args.width, args.dim), len(CLASSES), args.dim)
    s = scenes("train", args.pretrain_n, objects=(1, 1), classes=CLASSES, sides=(16, 20, 24, 28, 32, 40))
    tc = TrainConfig(steps=args.pretrain_steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed,
                     log_every=100)
    fit(model, {"images": s.images, "labels": s.labels[:, 0]}, tc, args.runs / f"backbone-s{seed}",
        {"method": "backbone", **vars(args) | {"runs": str(args.runs)}}, progress=False)
    return model.eval()


@torch.no_grad()
def dense(encoder: TinyCLIPImage, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([encoder(images[i:i + 256]) for i in range(0, len(images), 256)])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    valid = labels >= 0
    return float((logits.argmax(-1) == labels)[valid].float().mean())


@torch.no_grad()
def evaluate(embed, tests: dict, text: torch.Tensor, scale: float) -> dict[str, float]:
    """embed: (features, masks) -> [B, Q, D]; tests: name -> (features, masks, labels, class ids)."""
    out = {}
    for name, (feats, masks, labels, ids) in tests.items():
        embs = torch.cat([embed(feats[i:i + 128], masks[i:i + 128]) for i in range(0, len(feats), 128)])
        out[name] = accuracy(text_logits(embs, text[ids], scale), labels)
    return out


def run_seed(seed: int, args, data) -> dict[str, dict]:
    folders = {m: args.runs / f"{m}-s{seed}" / "result.json" for m in METHODS}
    if all(f.exists() for f in folders.values()):
        return {m: json.loads(f.read_text()) for m, f in folders.items()}
    c0 = time.process_time()
    pre = backbone(seed, args)
    pre_cpu = time.process_time() - c0
    text, scale = pre.text.detach(), float(pre.scale().detach())
    train, tests_raw = data
    feats = {"train": dense(pre.encoder, train.images)}
    tests = {name: (dense(pre.encoder, images), masks, labels, ids) for name, (images, masks, labels, ids)
             in tests_raw.items()}
    seen = torch.arange(len(SEEN))
    results = {}
    for method in METHODS:
        if folders[method].exists():
            results[method] = json.loads(folders[method].read_text())
            continue
        c0 = time.process_time()
        if method == "pool":
            scores = evaluate(mask_pool, tests, text, scale)
        else:
            torch.manual_seed(seed)  # the head's initialisation
            head = PooledProjection(args.dim) if method == "pool_linear" else MaskAdapter(
                args.dim, maps=args.maps, channels=args.channels, blocks=args.blocks)
            objective = MaskClassification(head, text[seen], scale, jitter_iou=(0.7, 0.95),
                                           consistency=args.consistency)
            batch = {"features": feats["train"], "masks": train.masks, "labels": train.labels}
            tc = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed,
                             log_every=100)
            config = {"method": method, **vars(args) | {"runs": str(args.runs)}}
            fit(objective, batch, tc, folders[method].parent, config, progress=False)
            objective.eval()
            scores = evaluate(objective.embed, tests, text, scale)
        cpu = time.process_time() - c0
        results[method] = {"method": method, "seed": seed, "cpu_s": cpu, "backbone_cpu_s": pre_cpu, **scores}
        folders[method].parent.mkdir(parents=True, exist_ok=True)
        folders[method].write_text(json.dumps(results[method], indent=1))
        print(f"{method:12s} seed {seed}: " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items())
              + f"  ({cpu:.0f} CPU s; backbone {pre_cpu:.0f})", flush=True)
    return results


def load_data(args):
    """The heads' training scenes (SEEN), and the test sets: name -> (images, masks, labels, class ids)."""
    train = scenes("train", args.train_n)
    test = scenes("test", args.test_n)
    unseen = scenes("test", args.test_n // 2, classes=UNSEEN)
    g = torch.Generator().manual_seed(20250)  # the degraded masks: one draw for every method and seed
    degraded = jitter_masks(test.masks, (0.5, 0.8), generator=g, tries=24)
    iou = mask_iou(degraded, test.masks)[test.labels >= 0]
    seen_ids, unseen_ids = torch.arange(len(SEEN)), torch.arange(len(SEEN), len(CLASSES))
    tests = {"seen_gt": (test.images, test.masks, test.labels, seen_ids),
             "seen_degraded": (test.images, degraded, test.labels, seen_ids),
             "unseen_gt": (unseen.images, unseen.masks, unseen.labels, unseen_ids)}
    return (train, tests), iou


def table(results: list[dict], args, iou: torch.Tensor) -> str:
    rows = ["| test masks | " + " | ".join(NAMES[m] for m in METHODS)
            + " | Mask-Adapter - pooling, per seed | Mask-Adapter - pooling + linear, per seed |",
            "|---|" + "---|" * (len(METHODS) + 2)]
    labels = {"seen_gt": "ground truth, 24 SEEN classes",
              "seen_degraded": f"degraded (IoU {float(iou.mean()):.2f} mean, {float(iou.quantile(0.1)):.2f}-"
                               f"{float(iou.quantile(0.9)):.2f} 10-90%), 24 SEEN",
              "unseen_gt": "ground truth, 12 UNSEEN classes (open vocabulary)"}
    for key, label in labels.items():
        col = {m: [r[m][key] for r in results] for m in METHODS}
        deltas = [signed([a - b for a, b in zip(col["adapter"], col[base], strict=True)])
                  for base in ("pool", "pool_linear")]
        rows.append(f"| {label} | " + " | ".join(ms(col[m]) for m in METHODS) + f" | {deltas[0]} | {deltas[1]} |")
    budget = (f"backbone {args.pretrain_steps} steps on {args.pretrain_n} one-object canvases (36 classes); heads "
              f"{args.steps} steps, batch {args.batch}, lr {args.lr} on {args.train_n} scenes; test {args.test_n} "
              f"SEEN + {args.test_n // 2} UNSEEN scenes; adapter {args.maps} maps, {args.channels} channels, "
              f"{args.blocks} ConvNeXt blocks; features {args.dim}-d on 8x8; seeds {', '.join(map(str, args.seeds))}")
    return "\n".join(rows) + f"\n\nBudget: {budget}.\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pretrain-steps", type=int, default=600)
    p.add_argument("--pretrain-n", type=int, default=3000)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--maps", type=int, default=16)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--consistency", type=float, default=1.0)
    p.add_argument("--train-n", type=int, default=2000)
    p.add_argument("--test-n", type=int, default=600)
    p.add_argument("--runs", type=Path, default=Path("runs/mask_adapter"))
    args = p.parse_args()
    torch.set_num_threads(1)
    print(describe(), flush=True)
    c0 = time.process_time()
    data, iou = load_data(args)
    results = [run_seed(s, args, data) for s in args.seeds]
    text = table(results, args, iou)
    total = time.process_time() - c0
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "table.md").write_text(text)
    print(text)
    print(f"CPU time of this invocation: {total:.0f} s (runs reused from result.json not counted again)")


if __name__ == "__main__":
    main()
