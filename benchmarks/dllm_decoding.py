"""Decoding speed of a LLaDA-shaped masked diffusion LM: no cache, Fast-dLLM's prefix and dual caches
(Wu et al. 2025, arXiv:2505.22618), low-confidence and threshold decoding, in one process.

One `MaskedTokenModel` (width 512, depth 8, 8 heads, vocabulary 4096; weights as initialised, so the
model is untrained and its confidences are low) decodes a batch of 8 rows: a prompt of 128 given
tokens and an answer of 256 hidden ones, in blocks of 32, at temperature 0. Rows:
- low-confidence: LLaDA's sampler, one token per step (steps = answer length), no cache: the baseline;
- threshold: Fast-dLLM's parallel decoding (commit every token of probability >= 0.9, at least one);
- threshold + prefix cache, threshold + dual cache (`BlockCached`).
An untrained model is rarely sure, so threshold decoding commits about one token per step here and
the speed-up measured is the caches'; a trained model adds the threshold's (fewer steps).

    .venv/bin/python benchmarks/dllm_decoding.py                   # about 10 minutes on 2 CPU cores
    .venv/bin/python benchmarks/dllm_decoding.py --answer 64 --batch 2   # a quick look
"""

from __future__ import annotations

import argparse
import time

import torch
from machine import describe

from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.sampling import BlockCached, CachedDenoiser, LLaDASampler, ThresholdSampler, generate


def build(vocab: int, n: int, dim: int, depth: int, heads: int) -> MaskedTokenModel:
    torch.manual_seed(0)
    return MaskedTokenModel(ModelConfig(vocab, Layout.seq(n), dim=dim, depth=depth, heads=heads)).eval()


def run(denoiser, canvas, sampler, vocab: int) -> dict:
    start = time.perf_counter()
    out = generate(denoiser, canvas, sampler, mask_id=vocab)
    seconds = time.perf_counter() - start
    filled = int((canvas == vocab).sum())
    return {"seconds": seconds, "tokens_per_s": filled / seconds, "nfe": out.nfe, "light": out.light,
            "steps": out.steps, "tokens": out.tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--answer", type=int, default=256)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(describe())
    n = args.prompt + args.answer
    model = build(args.vocab, n, args.dim, args.depth, args.heads)
    print(f"model: width {args.dim}, depth {args.depth}, {args.heads} heads, vocabulary {args.vocab}, untrained; "
          f"batch {args.batch}, prompt {args.prompt}, answer {args.answer}, block {args.block}, temperature 0")
    g = torch.Generator().manual_seed(0)
    canvas = torch.full((args.batch, n), args.vocab)
    canvas[:, :args.prompt] = torch.randint(0, args.vocab, (args.batch, args.prompt), generator=g)
    denoiser = CachedDenoiser(model)
    threshold = ThresholdSampler(args.threshold, block_length=args.block)
    rows = {
        "low-confidence, no cache": LLaDASampler(steps=args.answer, block_length=args.block),
        "threshold, no cache": threshold,
        "threshold, prefix cache": BlockCached(threshold, "prefix"),
        "threshold, dual cache": BlockCached(threshold, "dual"),
    }
    with torch.inference_mode():
        model(canvas[:1])  # warm-up
        results = {name: run(denoiser, canvas, sampler, args.vocab) for name, sampler in rows.items()}
    base = results["low-confidence, no cache"]
    print(f"{'decoding':28s} {'tokens/s':>9s} {'x base':>7s} {'full reads':>10s} {'light reads':>11s} "
          f"{'seconds':>8s} {'same tokens as threshold':>25s}")
    for name, r in results.items():
        agree = (r["tokens"] == results["threshold, no cache"]["tokens"]).float().mean()
        same = "" if name.startswith("low") else f"{float(agree):.3f}"
        print(f"{name:28s} {r['tokens_per_s']:9.1f} {r['tokens_per_s'] / base['tokens_per_s']:7.2f} "
              f"{r['nfe']:10d} {r['light']:11d} {r['seconds']:8.1f} {same:>25s}")


if __name__ == "__main__":
    main()
