"""Masked modeling across an image and its caption on the glyph-name pairs (`data/image_text.py`:
32x32 glyphs of 111 characters in 12 faces, captions "latin small letter a"; held out: faces by the
hash of their key, every character on both sides), 3 seeds, every method with the same steps, batch,
learning rate, width and encoder depth, each trained with the one `Trainer`.

UNITER (Chen et al. 2020, arXiv:1909.11740): masked-word recovery on the held-out pairs, each real
word hidden in turn, given the whole image, against the same model with the image removed and
against a text-only MLM (the same network with no image tokens, MLM only) at equal steps; all words
and the last word (the one that names the character, which only the image tells); ITM accuracy on
the held-out pairs (each with its own caption and with a differing one).

M3AE (Geng et al. 2022, arXiv:2205.14204): linear probe (`eval/probe.py`, logistic regression on
standardised mean-pooled features of the image alone) and kNN, fitted on the training glyphs and
scored on the held-out ones, against an image-only MAE (He et al. 2022) at equal steps; and M3AE's
text reconstruction accuracy on the held-out pairs (hidden real words, 5 mask draws).

    .venv/bin/python benchmarks/image_text.py                   # 3 seeds; writes runs/image_text/table.md
    .venv/bin/python benchmarks/image_text.py --seeds 0 --steps 50

Runs are kept under --runs (default runs/image_text/METHOD-sSEED) and reused when their
result.json exists, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse

import torch
from captioned import captioned
from machine import describe
from seeded_runs import budget_arguments, column, keep_table, run_once
from spread import mean_std as ms
from spread import paired_row

from unmask.data.image_text import Vocab
from unmask.eval.probe import knn_probe, linear_probe, pooled_features
from unmask.nn.image_text import ImageTextConfig
from unmask.nn.mae import MAEConfig, MaskedAutoencoder
from unmask.objectives.m3ae import M3AE
from unmask.objectives.mae import MaskedAutoencoding
from unmask.objectives.uniter import UNITER, UNITERModel, matching_accuracy, one_word_recovery

METHODS = ("uniter", "text_mlm", "m3ae", "mae")


def pairs(split: str, vocab: Vocab | None, length: int | None):
    data, s, vocab, length = captioned("glyphs", split, vocab, length)
    return data, s.labels, vocab, length


def config(args, vocab: Vocab, length: int) -> ImageTextConfig:
    return ImageTextConfig(image_size=32, channels=1, patch=args.patch, vocab_size=vocab.size, text_length=length,
                           dim=args.dim, depth=args.depth, heads=4)


def build(method: str, seed: int, args, cfg: ImageTextConfig) -> torch.nn.Module:
    torch.manual_seed(seed)  # the weights' initialisation
    if method == "uniter":
        return UNITER(UNITERModel(cfg))
    if method == "text_mlm":
        return UNITER(UNITERModel(cfg), shares=(1.0, 0.0, 0.0), use_image=False)
    if method == "m3ae":
        return M3AE(cfg, image_ratio=0.75, text_ratio=args.text_ratio, decoder_dim=args.decoder_dim, decoder_depth=2)
    mae = MAEConfig(image_size=(32, 32), channels=1, patch=args.patch, dim=args.dim, depth=args.depth, heads=4,
                    decoder_dim=args.decoder_dim, decoder_depth=2, decoder_heads=4, cls_token=False)
    return MaskedAutoencoding(MaskedAutoencoder(mae), ratio=0.75)


def word_scores(objective, test: dict, with_image: bool) -> dict[str, float]:
    right = one_word_recovery(objective, test["images"] if with_image else None, test["tokens"], test["lengths"])
    lengths = test["lengths"]
    last = right.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
    return {"words": float(right.sum() / lengths.sum()), "last_word": float(last.double().mean())}


@torch.no_grad()
def evaluate(method: str, objective, data, seed: int) -> dict[str, float]:
    (train, train_y), (test, test_y) = data
    objective.eval()
    if method == "uniter":
        g = torch.Generator().manual_seed(1000 + seed)
        return {**{f"with_image_{k}": v for k, v in word_scores(objective, test, True).items()},
                **{f"image_removed_{k}": v for k, v in word_scores(objective, test, False).items()},
                "itm_acc": matching_accuracy(objective, test["images"], test["tokens"], test["lengths"], g)}
    if method == "text_mlm":
        return {f"text_only_{k}": v for k, v in word_scores(objective, test, False).items()}
    encode = objective.image_features if method == "m3ae" else objective.features
    tr, te = pooled_features(encode, train["images"]), pooled_features(encode, test["images"])  # [M, D]
    out = {"linear": linear_probe(tr, train_y, te, test_y), "knn": knn_probe(tr, train_y, te, test_y)}
    if method == "m3ae":
        g = torch.Generator().manual_seed(2000 + seed)
        accs = [objective(test, generator=g).metrics["text_acc"] for _ in range(5)]
        out["text_acc"] = float(torch.stack(accs).mean())
    return out


def run_one(method: str, seed: int, args, data, cfg) -> dict:
    train = data[0][0] if method != "mae" else {"images": data[0][0]["images"]}
    return run_once(method, seed, args, lambda: build(method, seed, args, cfg), train,
                    lambda objective: evaluate(method, objective, data, seed))


def table(results: dict, args) -> str:
    def col(method, key):
        return column(results, method, key)

    rows = ["| figure | ours | baseline | paired delta per seed |", "|---|---|---|---|"]
    for key, label in (("words", "all words"), ("last_word", "the naming (last) word")):
        ours = col("uniter", f"with_image_{key}")
        for base, name in ((col("uniter", f"image_removed_{key}"), "same model, image removed"),
                           (col("text_mlm", f"text_only_{key}"), "text-only MLM")):
            rows.append(paired_row(f"UNITER word recovery, {label}: given image vs {name}", ours, base))
    itm = ms(col("uniter", "itm_acc"))
    rows.append(f"| UNITER ITM accuracy (held-out, half mismatched) | {itm} | 0.500 (chance) | |")
    for key in ("linear", "knn"):
        rows.append(paired_row(f"M3AE vs image-only MAE, {key} probe of image features (111 classes)",
                               col("m3ae", key), col("mae", key)))
    text = ms(col("m3ae", "text_acc"))
    rows.append(f"| M3AE text reconstruction accuracy (hidden real words, held-out) | {text} | | |")
    budget = (f"{args.steps} steps, batch {args.batch}, lr {args.lr}, width {args.dim}, depth {args.depth}, "
              f"patch {args.patch}, seeds {', '.join(map(str, args.seeds))}")
    return "\n".join(rows) + f"\n\nBudget (every method): {budget}.\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    budget_arguments(p, steps=1000, batch=64, dim=64, depth=4, methods=METHODS, runs="runs/image_text")
    p.add_argument("--decoder-dim", type=int, default=64)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--text-ratio", type=float, default=0.5)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(describe(), flush=True)
    train, train_y, vocab, length = pairs("train", None, None)
    test, test_y, _, _ = pairs("test", vocab, length)
    cfg = config(args, vocab, length)
    data = ((train, train_y), (test, test_y))
    results = {m: [run_one(m, s, args, data, cfg) for s in args.seeds] for m in args.methods}
    if set(results) == set(METHODS):
        keep_table(args.runs, table(results, args))


if __name__ == "__main__":
    main()
