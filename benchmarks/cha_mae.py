"""ChA-MAEViT (P63) against patch-only masking on multi-channel images made from moving digits: each
clip's frames are its channels, so a hidden channel can be rebuilt only from the others (the digit is
in every frame, shifted along its motion). Same encoder, steps, batch and learning rate for every
variant, 3 seeds; the figure is the linear probe of frozen, mean-pooled encoder features on the
held-out clips (digits never seen in training), for two labels: the digit and its motion direction
(8 classes; readable only across channels).

    .venv/bin/python benchmarks/cha_mae.py                       # all variants, seeds 0 1 2
    .venv/bin/python benchmarks/cha_mae.py --only patch cha-mae --seeds 0

Variants (module docstrings give each rule):
- patch: patch-only masking (ratio 0.75 in every channel), no memory tokens, MAE's decoder (baseline);
- dcp: dynamic channel-patch masking alone (p_patch = p_channel = 0.5, ratio 0.75), MAE's decoder;
- cha-mae: DCP + 4 memory tokens + the channel-aware decoder (ChA-MAEViT's MAE part).
Runs are kept under --runs (default runs/cha-mae/VARIANT-sSEED) and reused when their result exists.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from spread import mean_std

from unmask.data.video import moving_digits
from unmask.eval.probe import pooled_features, probe
from unmask.masking.channel_patch import PATCH_ONLY, ChannelPatchMask
from unmask.nn.channel_vit import ChannelAutoencoder, ChannelViTConfig
from unmask.objectives.cha_mae import ChannelMaskedAutoencoding
from unmask.train import TrainConfig, fit
from unmask.train.checkpoint import find_checkpoint, load_checkpoint

# name -> (what it is, DCP probabilities (p_patch, p_channel), memory tokens, channel-aware decoder)
VARIANTS = {
    "patch": ("patch-only masking, MAE decoder (baseline)", (1.0, 0.0), 0, False),
    "dcp": ("DCP alone, MAE decoder", (0.5, 0.5), 0, False),
    "cha-mae": ("ChA-MAEViT: DCP + 4 memory tokens + channel-aware decoder", (0.5, 0.5), 4, True),
}
TASKS = ("digit", "direction")
CLIPS = dict(frames=4, size=16, scale=1, speeds=(1, 2))  # 4 channels of 16x16, an 8x8 digit moving 1-2 px/frame


def clips(split: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """images Float[M, 4, 16, 16] (frames as channels) and the labels of each task."""
    d = moving_digits(split, clips_per_digit=2 if split == "train" else 1, seed=0 if split == "train" else 1,
                      **CLIPS)
    return d.videos[:, 0], {"digit": d.digit[:, 0], "direction": d.direction[:, 0]}


def objective_for(name: str, seed: int, args) -> ChannelMaskedAutoencoding:
    _, (p_patch, p_channel), memory, aware = VARIANTS[name]
    cfg = ChannelViTConfig(image_size=(16, 16), channels=4, patch=4, dim=args.dim, depth=args.depth, heads=4,
                           decoder_dim=args.dim, decoder_depth=args.decoder_depth, decoder_heads=4,
                           memory_tokens=memory, channel_aware_decoder=aware)
    torch.manual_seed(seed)
    return ChannelMaskedAutoencoding(ChannelAutoencoder(cfg), ChannelPatchMask(p_patch, p_channel), ratio=0.75)


def probes(objective, data) -> dict[str, float]:
    (train_x, train_y), (test_x, test_y) = data
    objective.eval()
    tr, te = (pooled_features(objective.features, x) for x in (train_x, test_x))
    out = {}
    for task in TASKS:
        s = probe(tr, train_y[task], te, test_y[task], shots=10, draws=5, seed=0)
        out.update({f"{task}_linear": s.linear, f"{task}_linear_few": s.linear_few})
    return out


@torch.no_grad()
def heldout_losses(objective, images: torch.Tensor) -> dict[str, float]:
    """The hidden-token MSE on held-out clips under fixed masks: 75% of the patches of every channel
    (`patch`), or one whole channel, each of the C in turn (`channel`: a frame rebuilt from the others)."""
    objective.eval()
    layout, b = objective.layout, len(images)
    c, p = layout.segments[0].shape
    masks = {"patch": [ChannelPatchMask().draw(layout, b, ratio=0.75, generator=torch.Generator().manual_seed(0),
                                               strategy=PATCH_ONLY).mask]}
    masks["channel"] = [torch.arange(c * p).div(p, rounding_mode="floor").eq(k).expand(b, -1) for k in range(c)]
    return {f"heldout_{kind}_loss": statistics.mean(float(objective.reconstruction(images, m)[0]) for m in ms)
            for kind, ms in masks.items()}


def add_heldout_losses(result: dict, folder: Path, args, data) -> dict:
    """Results written before the held-out losses were measured get them from the run's checkpoint."""
    if "heldout_channel_loss" in result:
        return result
    objective = objective_for(result["name"], result["seed"], args)
    tensors, _, _ = load_checkpoint(find_checkpoint(folder))
    objective.load_state_dict(tensors["model"])
    result = {**result, **heldout_losses(objective, data[1][0])}
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    return result


def run_one(name: str, seed: int, args, data) -> dict:
    folder = args.runs / f"{name}-s{seed}"
    done = folder / "result.json"
    if done.exists():
        return add_heldout_losses(json.loads(done.read_text()), folder, args, data)
    objective = objective_for(name, seed, args)
    random_init = probes(objective, data)  # the same encoder before training (this seed's init)
    train = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=50, seed=seed, log_every=50)
    c0 = time.process_time()
    fit(objective, {"images": data[0][0]}, train, folder, {"variant": name, "seed": seed, **vars(args)} | {
        "runs": str(args.runs)}, progress=False)
    cpu_ms = (time.process_time() - c0) * 1000 / args.steps
    result = {"name": name, "seed": seed, "cpu_ms_per_step": cpu_ms, **probes(objective, data),
              **{f"random_init_{k}": v for k, v in random_init.items()}, **heldout_losses(objective, data[1][0])}
    done.write_text(json.dumps(result, indent=1))
    print(f"{name:8s} seed {seed}: " + "  ".join(f"{k} {result[k]:.3f}" for k in
          ("digit_linear_few", "digit_linear", "direction_linear_few", "direction_linear")) +
          f"  {cpu_ms:.0f} CPU ms/step", flush=True)
    return result



def table(results: dict[str, list[dict]], args) -> str:
    keys = [f"{t}_{s}" for t in TASKS for s in ("linear_few", "linear")]
    head = ["10-shot digit", "all-label digit", "10-shot direction", "all-label direction"]
    lines = [f"steps {args.steps}, batch {args.batch}, lr {args.lr}, width {args.dim}, depth {args.depth}, decoder "
             f"depth {args.decoder_depth}; 4 channels x 16 patches (4x4 px) = 64 tokens; seeds "
             f"{', '.join(map(str, args.seeds))}; mean +- std over seeds; delta = variant - patch, same seed "
             "(paired); 10-shot = mean over 5 draws of 10 labels per class; held-out: 360 clips of unseen digits.",
             "", "| variant | " + " | ".join(head) + " | CPU ms/step |", "|---|" + "---|" * (len(head) + 1)]
    base = {r["seed"]: r for r in results.get("patch", [])}
    for name, rows in results.items():
        cells = [mean_std([r[k] for r in rows]) for k in keys]
        cost = statistics.mean(r["cpu_ms_per_step"] for r in rows)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {cost:.0f} |")
    rows = results.get("patch") or next(iter(results.values()))
    lines.append("| (same encoder, random init) | " + " | ".join(
        mean_std([r[f"random_init_{k}"] for r in rows]) for k in keys) + " | |")
    lines += ["", "Paired deltas against patch (per seed):", "", "| variant | " + " | ".join(head) + " |",
              "|---|" + "---|" * len(head)]
    for name, rows in results.items():
        if name == "patch":
            continue
        cells = []
        for k in keys:
            d = [r[k] - base[r["seed"]][k] for r in rows if r["seed"] in base]
            cells.append(f"{mean_std(d, '+')} ({' '.join(f'{x:+.3f}' for x in d)})" if d else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Held-out reconstruction (hidden-token MSE of norm-pix targets, lower is better; fixed masks): "
              "`patch` hides 75% of the patches of every channel, `channel` one whole channel (each in turn), "
              "which must be rebuilt from the other channels.", "",
              "| variant | patch-masked loss | one-channel-hidden loss | delta vs patch (per seed) |",
              "|---|---|---|---|"]
    for name, rows in results.items():
        d = [r["heldout_channel_loss"] - base[r["seed"]]["heldout_channel_loss"] for r in rows if r["seed"] in base]
        delta = f"{mean_std(d, '+')} ({' '.join(f'{x:+.3f}' for x in d)})" if name != "patch" and d else "-"
        lines.append(f"| {name} | {mean_std([r['heldout_patch_loss'] for r in rows])} | "
                     f"{mean_std([r['heldout_channel_loss'] for r in rows])} | {delta} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=list(VARIANTS), help="variants to run (default all)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--decoder-depth", type=int, default=1)
    p.add_argument("--runs", type=Path, default=Path("runs/cha-mae"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from machine import describe

    print(describe(), flush=True)
    data = (clips("train"), clips("test"))
    names = args.only or list(VARIANTS)
    results = {n: [run_one(n, s, args, data) for s in args.seeds] for n in names}
    print(table(results, args))


if __name__ == "__main__":
    main()
