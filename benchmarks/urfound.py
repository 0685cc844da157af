"""UrFound (Yu et al. 2024, "UrFound: Towards Universal Retinal Foundation Models via Knowledge-Guided
Masked Modeling", arXiv:2408.05618) on the glyph-name pairs (`data/image_text.py`: 32x32 glyphs of
111 characters in 12 faces, the Unicode name "latin small letter a" as the category description;
held out: faces by the hash of their key, every character on both sides), 3 seeds, against an
image-only MAE (He et al. 2022) and M3AE (Geng et al. 2022, text inside the encoder), every method
with the same steps, batch, learning rate, encoder width, depth and patch, and the same pixel
decoder, each trained with the one `Trainer`.

UrFound's claim is label efficiency of the image-alone features: linear probes (`eval/probe.py`,
logistic regression on standardised mean-pooled features) with 1 and 5 labelled training glyphs per
character (5 draws each) and with all training labels, scored on the held-out faces; kNN beside them.
UrFound's text decoder is also scored on held-out pairs: hidden words (the training rule, 5 draws)
and the naming word alone (the last word, which only the image tells).

    .venv/bin/python benchmarks/urfound.py                   # 3 seeds; writes runs/urfound/table.md
    .venv/bin/python benchmarks/urfound.py --seeds 0 --steps 50

Runs are kept under --runs (default runs/urfound/METHOD-sSEED) and reused when their result.json
exists, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from captioned import captioned
from machine import describe
from seeded_runs import budget_arguments, column, keep_table, run_once
from spread import mean_std as ms
from spread import paired_row

from unmask.data.image_text import Vocab
from unmask.eval.probe import pooled_features, probe
from unmask.nn.image_text import ImageTextConfig
from unmask.nn.mae import MaskedAutoencoder
from unmask.objectives.m3ae import M3AE
from unmask.objectives.mae import MaskedAutoencoding
from unmask.objectives.urfound import UrFound, mae_config

METHODS = ("urfound", "mae", "m3ae", "urfound_cross")
SHOTS = (1, 5)


def pairs(split: str, vocab: Vocab | None, length: int | None):
    data, s, vocab, length = captioned("glyphs", split, vocab, length)
    return data, s.labels, vocab, length


def build(method: str, seed: int, args, cfg: ImageTextConfig) -> torch.nn.Module:
    torch.manual_seed(seed)  # the weights' initialisation: UrFound's image networks start as the MAE's
    if method.startswith("urfound"):
        return UrFound(cfg, image_ratio=0.75, text_ratio=args.text_ratio, decoder_dim=args.decoder_dim,
                       decoder_depth=2, text_dim=args.decoder_dim, text_depth=args.text_depth,
                       condition="cross" if method == "urfound_cross" else "pooled")
    if method == "m3ae":
        return M3AE(cfg, image_ratio=0.75, text_ratio=args.text_ratio, decoder_dim=args.decoder_dim, decoder_depth=2)
    return MaskedAutoencoding(MaskedAutoencoder(mae_config(cfg, args.decoder_dim, 2, 4)), ratio=0.75)


@torch.no_grad()
def word_scores(objective: UrFound, test: dict, seed: int) -> dict[str, float]:
    """Held-out word accuracy: hidden words as in training (5 draws), and the last word alone."""
    g = torch.Generator().manual_seed(2000 + seed)
    accs = [objective(test, generator=g).metrics["text_acc"] for _ in range(5)]
    lengths = test["lengths"]
    last = torch.arange(test["tokens"].shape[1]) == (lengths - 1).unsqueeze(1)  # [M, T]
    named = [objective(test, masks=(objective.mae.draw_mask(len(lengths), g), last)).metrics["text_acc"]
             for _ in range(5)]
    return {"text_acc": float(torch.stack(accs).mean()), "naming_word_acc": float(torch.stack(named).mean())}


@torch.no_grad()
def evaluate(method: str, objective, data, seed: int) -> dict[str, float]:
    (train, train_y), (test, test_y) = data
    objective.eval()
    encode = objective.features if method == "mae" else objective.image_features
    tr, te = pooled_features(encode, train["images"]), pooled_features(encode, test["images"])  # [M, D]
    out = {}
    for shots in SHOTS:
        scores = probe(tr, train_y, te, test_y, shots=shots, draws=5, seed=seed)
        out |= {f"linear_{shots}shot": scores.linear_few, f"knn_{shots}shot": scores.knn_few,
                "linear": scores.linear, "knn": scores.knn}
    if method.startswith("urfound"):
        out |= word_scores(objective, test, seed)
    return out


def run_one(method: str, seed: int, args, data, cfg) -> dict:
    train = data[0][0] if method != "mae" else {"images": data[0][0]["images"]}
    return run_once(method, seed, args, lambda: build(method, seed, args, cfg), train,
                    lambda objective: evaluate(method, objective, data, seed))


def table(results: dict, args) -> str:
    def col(method, key):
        return column(results, method, key)

    rows = ["| figure (held-out glyph faces, 111 classes, image alone) | UrFound | baseline | "
            "paired delta per seed |", "|---|---|---|---|"]
    keys = [(f"linear_{s}shot", f"linear probe, {s} label{'s' if s > 1 else ''} per class") for s in SHOTS]
    keys += [("linear", "linear probe, all labels"), ("knn", "kNN, all labels")]
    for base in (m for m in ("mae", "m3ae", "urfound_cross") if m in results):
        name = {"mae": "image-only MAE", "m3ae": "M3AE", "urfound_cross": "UrFound, cross-attention decoder"}[base]
        for key, label in keys:
            rows.append(paired_row(f"{label}: UrFound vs {name}", col("urfound", key), col(base, key)))
    rows.append(f"| UrFound text decoder, hidden words of held-out captions | {ms(col('urfound', 'text_acc'))} | | |")
    rows.append(f"| UrFound text decoder, the naming (last) word alone | {ms(col('urfound', 'naming_word_acc'))} | "
                f"1/111 (chance) | |")
    cpu = {m: sum(r["train_cpu_s"] + r["eval_cpu_s"] for r in rs) for m, rs in results.items()}
    budget = (f"{args.steps} steps, batch {args.batch}, lr {args.lr}, width {args.dim}, depth {args.depth}, "
              f"patch {args.patch}, pixel decoder width {args.decoder_dim} depth 2, image ratio 0.75, "
              f"text ratio {args.text_ratio}, seeds {', '.join(map(str, args.seeds))}")
    spent = ", ".join(f"{m} {s:.0f}" for m, s in cpu.items())
    return "\n".join(rows) + f"\n\nBudget (every method): {budget}.\nCPU seconds (train + eval, all seeds): {spent}; " \
        f"total {sum(cpu.values()):.0f}.\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    budget_arguments(p, steps=1000, batch=64, dim=64, depth=4, methods=METHODS, runs="runs/urfound")
    p.add_argument("--decoder-dim", type=int, default=64)
    p.add_argument("--text-depth", type=int, default=2)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--text-ratio", type=float, default=0.5)
    args = p.parse_args()
    torch.set_num_threads(1)
    # 1 label per class: sklearn warns that 111 classes in 111 samples look like a regression target
    warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
    print(describe(), flush=True)
    train, train_y, vocab, length = pairs("train", None, None)
    test, test_y, _, _ = pairs("test", vocab, length)
    cfg = ImageTextConfig(image_size=32, channels=1, patch=args.patch, vocab_size=vocab.size, text_length=length,
                          dim=args.dim, depth=args.depth, heads=4)
    data = ((train, train_y), (test, test_y))
    c0 = time.process_time()
    results = {m: [run_one(m, s, args, data, cfg) for s in args.seeds] for m in args.methods}
    print(f"CPU seconds in this invocation: {time.process_time() - c0:.0f}", flush=True)
    if "urfound" in results:
        keep_table(args.runs, table(results, args))


if __name__ == "__main__":
    main()
