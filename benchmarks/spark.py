"""SparK (Tian et al. 2023, arXiv:2301.03580) on the 32x32 glyphs, against the same CNN at random
initialisation and a plain ViT MAE (He et al. 2022) with the same steps, batch, learning rate and
width (64); 3 seeds. Figure: linear probe (logistic regression on standardised, mean-pooled frozen
features, `eval/probe.py`) fitted on the training glyphs and scored on the held-out renders (111
classes, all labels), and DINO's kNN vote. Second figure, SparK's own claim (fine-tuning): the CNN
with a linear head trained on the labels for --finetune-steps, from SparK's weights against from
random init (the same steps, batch and learning rate), held-out accuracy.

    .venv/bin/python benchmarks/spark.py                  # 3 seeds; writes runs/spark/table.md
    .venv/bin/python benchmarks/spark.py --seeds 0 --steps 50

Each method trains with the one `Trainer` (`train/trainer.py`); fine-tuning goes through the
cross-entropy objective of `benchmarks/layer_masking.py`. Runs are kept under --runs (default
runs/spark/METHOD-sSEED, finetune-INIT-sSEED) and reused when their result.json exists, so an
interrupted comparison resumes.
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
from unmask.eval.layer_masking import predict
from unmask.eval.probe import knn_probe, linear_probe, pooled_features
from unmask.nn.mae import MAEConfig, MaskedAutoencoder
from unmask.nn.masked_cnn import SPARSE, CNNClassifier, CNNConfig
from unmask.objectives.classification import Classification
from unmask.objectives.mae import MaskedAutoencoding
from unmask.objectives.spark import SparK
from unmask.train.checkpoint import find_checkpoint, load_checkpoint
from unmask.train.trainer import TrainConfig, fit

METHODS = ("spark", "mae")


def glyphs(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    s = load("glyphs", split)
    return s.images.float() / 255.0, s.labels  # Float[M, 1, 32, 32] in [0, 1], Long[M]


def cnn(args) -> CNNConfig:
    """Stem stride 2 and two stages: final stride 4, an 8x8 grid of 4x4 cells (MAE's 64 patches)."""
    return CNNConfig(widths=(args.dim // 2, args.dim), stem_stride=2)


def build(method: str, seed: int, args) -> torch.nn.Module:
    torch.manual_seed(seed)  # the weights' initialisation
    if method == "spark":
        return SparK((32, 32), cnn(args), decoder_width=args.decoder_dim, ratio=args.spark_ratio)
    cfg = MAEConfig(image_size=(32, 32), channels=1, patch=4, dim=args.dim, depth=args.depth, heads=4,
                    decoder_dim=args.decoder_dim, decoder_depth=2, decoder_heads=4, cls_token=False)
    return MaskedAutoencoding(MaskedAutoencoder(cfg), ratio=args.mae_ratio)


def probes(objective: torch.nn.Module, data) -> dict[str, float]:
    objective.eval()
    (train_x, train_y), (test_x, test_y) = data
    tr = pooled_features(objective.features, train_x)  # [M, D]
    te = pooled_features(objective.features, test_x)
    return {"linear": linear_probe(tr, train_y, te, test_y), "knn": knn_probe(tr, train_y, te, test_y)}


def run_one(method: str, seed: int, args, data) -> dict:
    folder = args.runs / f"{method}-s{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    random_init = probes(build(method, seed, args), data)
    objective = build(method, seed, args)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed,
                      log_every=50)
    c0 = time.process_time()
    fit(objective, {"images": data[0][0]}, cfg, folder, {"method": method, **vars(args) | {"runs": str(args.runs)}},
        progress=False)
    cpu_s = time.process_time() - c0
    result = {"method": method, "seed": seed, "train_cpu_s": cpu_s, **probes(objective, data),
              **{f"random_init_{k}": v for k, v in random_init.items()},
              "params_encoder": sum(p.numel() for p in (objective.encoder if method == "spark"
                                                        else objective.model.encoder).parameters())}
    done.write_text(json.dumps(result, indent=1))
    print(f"{method:6s} seed {seed}: linear {result['linear']:.3f} (random init {result['random_init_linear']:.3f})  "
          f"kNN {result['knn']:.3f}  {cpu_s:.0f} CPU s", flush=True)
    return result


def finetune_one(init: str, seed: int, args, data) -> dict:
    """Held-out accuracy of the CNN and a linear head trained on the labels, from `init` (spark: the
    encoder of runs/spark/spark-sSEED; random: a fresh one)."""
    folder = args.runs / f"finetune-{init}-s{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    (train_x, train_y), (test_x, test_y) = data
    torch.manual_seed(seed)
    model = CNNClassifier(int(train_y.max()) + 1, cnn(args), SPARSE)
    if init == "spark":
        tensors, _, _ = load_checkpoint(find_checkpoint(args.runs / f"spark-s{seed}"))
        weights = tensors.get("ema", tensors["model"])
        model.body.load_state_dict({k.removeprefix("encoder."): v for k, v in weights.items()
                                    if k.startswith("encoder.")})
    cfg = TrainConfig(steps=args.finetune_steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed,
                      log_every=50)
    c0 = time.process_time()
    fit(Classification(model), {"images": train_x, "labels": train_y}, cfg, folder,
        {"init": init, "seed": seed, "steps": args.finetune_steps}, progress=False)
    result = {"init": init, "seed": seed, "train_cpu_s": time.process_time() - c0,
              "accuracy": float((predict(model, test_x) == test_y).double().mean())}
    done.write_text(json.dumps(result, indent=1))
    print(f"fine-tune from {init:6s} seed {seed}: held-out accuracy {result['accuracy']:.3f}", flush=True)
    return result


@torch.no_grad()
def recalibrated(encoder: torch.nn.Module, images: torch.Tensor, batch: int = 256) -> torch.nn.Module:
    """The encoder with its batch-norm running statistics re-estimated on `images`, every cell visible
    (a cumulative average over one pass; no weight changes, no labels)."""
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    encoder.train()
    for chunk in images.split(batch):
        encoder(chunk)
    for m in norms:
        m.momentum = 0.1
    return encoder.eval()


def recal_one(seed: int, args, data) -> dict:
    """Linear probe of SparK's and the random-init CNN's features after `recalibrated` on the
    training glyphs: does the sparse encoder's batch-norm statistics (from visible cells) cost it?"""
    done = args.runs / f"recal-s{seed}.json"
    if done.exists():
        return json.loads(done.read_text())
    trained = build("spark", seed, args)
    tensors, _, _ = load_checkpoint(find_checkpoint(args.runs / f"spark-s{seed}"))
    trained.load_state_dict(tensors.get("ema", tensors["model"]))
    result = {"seed": seed}
    for name, objective in (("spark", trained), ("random_init", build("spark", seed, args))):
        recalibrated(objective.encoder, data[0][0])
        result.update({f"{name}_{k}": v for k, v in probes(objective, data).items()})
    done.write_text(json.dumps(result, indent=1))
    return result




def table(results: dict[str, list[dict]], tuned: dict[str, list[dict]], recal: list[dict], args) -> str:
    sp, mae = results["spark"], results["mae"]
    rows = [
        ("SparK CNN, pretrained", [r["linear"] for r in sp], [r["knn"] for r in sp]),
        ("same CNN, random init", [r["random_init_linear"] for r in sp], [r["random_init_knn"] for r in sp]),
        ("ViT MAE, pretrained", [r["linear"] for r in mae], [r["knn"] for r in mae]),
        ("same ViT, random init", [r["random_init_linear"] for r in mae], [r["random_init_knn"] for r in mae]),
    ]
    lines = [
        f"SparK vs the same CNN at random init and a ViT MAE on glyphs (steps {args.steps}, batch {args.batch}, "
        f"lr {args.lr}, width {args.dim}, seeds {', '.join(map(str, args.seeds))}; SparK ratio {args.spark_ratio}, "
        f"MAE ratio {args.mae_ratio}); probes on 1125 training / 207 held-out glyphs, 111 classes.",
        "",
        "| features | linear probe | kNN | encoder params |",
        "|---|---|---|---|",
    ]
    for (name, lin, knn), res in zip(rows, (sp, sp, mae, mae), strict=True):
        lines.append(f"| {name} | {ms(lin)} | {ms(knn)} | {res[0]['params_encoder']:,} |")
    d_rand = [r["linear"] - r["random_init_linear"] for r in sp]
    by_seed = {r["seed"]: r["linear"] for r in mae}
    d_mae = [r["linear"] - by_seed[r["seed"]] for r in sp]
    lines += [
        "",
        f"Paired linear-probe deltas per seed: SparK - CNN random init {signed(d_rand)} "
        f"(mean {ms(d_rand)}); SparK - ViT MAE {signed(d_mae)} (mean {ms(d_mae)}).",
        f"Training CPU seconds per run (one thread): SparK {ms([r['train_cpu_s'] for r in sp])}, "
        f"MAE {ms([r['train_cpu_s'] for r in mae])}.",
    ]
    if recal:
        d = [r["spark_linear"] - r["random_init_linear"] for r in recal]
        lines += [
            "",
            "Diagnostic: batch-norm statistics re-estimated on the training glyphs with every cell visible "
            f"(no weights changed): linear probe SparK {ms([r['spark_linear'] for r in recal])}, random init "
            f"{ms([r['random_init_linear'] for r in recal])}; kNN SparK {ms([r['spark_knn'] for r in recal])}, "
            f"random init {ms([r['random_init_knn'] for r in recal])}; paired linear delta {signed(d)} (mean {ms(d)}).",
        ]
    if tuned:
        sp_acc, rnd_acc = [r["accuracy"] for r in tuned["spark"]], [r["accuracy"] for r in tuned["random"]]
        d = [a - b for a, b in zip(sp_acc, rnd_acc, strict=True)]
        lines += [
            "",
            f"Fine-tuning (CNN + linear head, {args.finetune_steps} steps, batch {args.batch}, lr {args.lr}), held-out "
            "accuracy:",
            "",
            "| start | held-out accuracy |",
            "|---|---|",
            f"| SparK pretrained | {ms(sp_acc)} |",
            f"| random init | {ms(rnd_acc)} |",
            "",
            f"Paired delta per seed, SparK - random init: {signed(d)} (mean {ms(d)}).",
        ]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--dim", type=int, default=64, help="ViT width and the CNN's last width")
    p.add_argument("--depth", type=int, default=4, help="ViT blocks")
    p.add_argument("--decoder-dim", type=int, default=32)
    p.add_argument("--spark-ratio", type=float, default=0.6)
    p.add_argument("--mae-ratio", type=float, default=0.75)
    p.add_argument("--finetune-steps", type=int, default=300, help="0: no fine-tuning figure")
    p.add_argument("--runs", type=Path, default=Path("runs/spark"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(describe(), flush=True)
    data = (glyphs("train"), glyphs("test"))
    results = {m: [run_one(m, s, args, data) for s in args.seeds] for m in METHODS}
    tuned = ({init: [finetune_one(init, s, args, data) for s in args.seeds] for init in ("spark", "random")}
             if args.finetune_steps else {})
    recal = [recal_one(s, args, data) for s in args.seeds]
    text = table(results, tuned, recal, args)
    (args.runs / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
