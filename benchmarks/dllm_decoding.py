"""Decoding speed of a LLaDA-shaped masked diffusion LM: no cache, Fast-dLLM's prefix and dual caches
(Wu et al. 2025, arXiv:2505.22618), low-confidence and threshold decoding, in one process.

One `MaskedTokenModel` (width 512, depth 8, 8 heads, vocabulary 4096; weights as initialised, so the
model is untrained and its confidences are low) decodes a batch of 8 rows: a prompt of 128 given
tokens and an answer of 256 hidden ones, in blocks of 32, at temperature 0. Rows:
- low-confidence: LLaDA's sampler, one token per step (steps = answer length), no cache: the baseline;
- threshold: Fast-dLLM's parallel decoding (commit every token of probability >= 0.9, at least one);
- threshold + prefix cache, threshold + dual cache (`BlockCached`).
An untrained model is rarely sure, so threshold decoding commits about one token per step and the
speed-up measured is the caches'. With `--train STEPS` the model is first fitted (the one Trainer,
MDLM's ELBO with the prompt never hidden, bf16 autocast where the CPU has AMX) to a small closed
language (`closed_language`: each prompt has a few answers that differ at a tenth of their places),
so the model is sure where the data allow it and the threshold's own saving (fewer steps) adds to
the caches'. `--content C` keeps only the first C tokens of each answer and pads the rest with an
end-of-text token, as LLaDA's SFT pads answers to the generation length. The decoded prompts are the
language's own; "right" is the share of rows decoded to one of their prompt's answers, then the share
of answer places decoded to one of those answers' tokens there, before the padding and in it.

    .venv/bin/python benchmarks/dllm_decoding.py                   # untrained: about 10 minutes on 2 CPU cores
    .venv/bin/python benchmarks/dllm_decoding.py --train 300       # trained first: about 25 minutes more
    .venv/bin/python benchmarks/dllm_decoding.py --threads 2 --train 600 --train-batch 4 --lr 2e-3 \
        --groups 4 --members 4 --content 128                          # half of each answer padded
    .venv/bin/python benchmarks/dllm_decoding.py --answer 64 --batch 2   # a quick look
    .venv/bin/python benchmarks/dllm_decoding.py --reads-only --threads 1   # read costs and the cache's bound

After the table: one full read and one light read of a block timed, and from them the most the dual
cache can gain over low-confidence decoding at 1, 2 and 4 tokens committed per read, reads alone.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch
from machine import describe, has_bf16_matrix_units, load

from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.objectives import MaskedDiffusion
from unmask.sampling import BlockCached, CachedDenoiser, LLaDASampler, ThresholdSampler, generate
from unmask.train import TrainConfig, fit

END = 0  # the end-of-text token that pads an answer after its `--content` tokens


def closed_language(args, generator: torch.Generator) -> torch.Tensor:
    """Long[groups * members, prompt + answer]: a small closed language. Each group has its own prompt
    and answer; its members' answers differ from the group's at a random `--vary` share of places. A
    prompt names the group, not the member: a decoder is sure of most places at once and of the rest
    once the first differing token it commits tells the member apart. With `--content C` below the answer
length only an answer's first C tokens are drawn and the rest is `END`, as LLaDA pads its answers."""
    groups, members, answer = args.groups, args.members, args.answer
    prompts = torch.randint(0, args.vocab, (groups, args.prompt), generator=generator)
    base = torch.randint(0, args.vocab, (groups, answer), generator=generator).repeat_interleave(members, 0)
    varied = torch.rand(base.shape, generator=generator) < args.vary
    other = torch.randint(0, args.vocab, base.shape, generator=generator)
    answers = torch.where(varied, other, base)
    answers[:, args.content :] = END  # LLaDA's SFT pads every answer to the generation length with |EOS|
    return torch.cat([prompts.repeat_interleave(members, 0), answers], 1)


def teach(model: MaskedTokenModel, steps: int, tokens: torch.Tensor, args) -> None:
    """Fit `model` to the rows (prompt given, answer hidden as MDLM's ELBO draws it)."""
    prompt = torch.zeros_like(tokens, dtype=torch.bool)
    prompt[:, : args.prompt] = True
    config = TrainConfig(steps=steps, batch_size=args.train_batch, lr=args.lr, warmup=min(50, steps // 5),
                         log_every=max(1, steps // 10), precision="auto" if not has_bf16_matrix_units() else "bf16")
    with tempfile.TemporaryDirectory() as run:
        start = time.perf_counter()
        fit(MaskedDiffusion(model.train()), {"tokens": tokens, "prompt": prompt}, config, Path(run),
            {"benchmark": "dllm_decoding"}, progress=False)
        with open(Path(run) / "metrics.csv") as f:
            losses = [float(row["loss"]) for row in csv.DictReader(f)]
        print(f"trained {steps} steps of {args.train_batch} rows in {time.perf_counter() - start:.0f} s "
              f"({tokens.shape[0]} rows of a closed language), loss {losses[0]:.2f} -> {losses[-1]:.2f}")
    model.eval()


class CountingDenoiser(CachedDenoiser):
    """Counts the light reads that read every place of the canvas: in a batch, when any row enters a
    block (its cache's refresh), the read is as wide as the row, so it costs a full read."""

    whole = 0

    def light(self, tokens, queries, cache, width=None):
        self.whole += int((width if width is not None else int(queries.sum(1).max())) >= tokens.shape[1])
        return super().light(tokens, queries, cache, width=width)


def build(vocab: int, n: int, dim: int, depth: int, heads: int) -> MaskedTokenModel:
    torch.manual_seed(0)
    return MaskedTokenModel(ModelConfig(vocab, Layout.seq(n), dim=dim, depth=depth, heads=heads)).eval()


def run(denoiser, canvas, sampler, vocab: int) -> dict:
    denoiser.whole = 0
    start = time.perf_counter()
    out = generate(denoiser, canvas, sampler, mask_id=vocab)
    seconds = time.perf_counter() - start
    filled = int((canvas == vocab).sum())
    return {"seconds": seconds, "tokens_per_s": filled / seconds, "nfe": out.nfe, "light": out.light,
            "steps": out.steps, "tokens": out.tokens, "whole": denoiser.whole}


def read_costs(denoiser, canvas, args, repeats: int = 3) -> tuple[float, float]:
    """Seconds of one full read of the canvas and of one light read of a block of `args.block` places
    against its cache (medians of `repeats`), timed on the canvas as decoding starts."""
    _, cache = denoiser.full(canvas)
    block = torch.zeros_like(canvas, dtype=torch.bool)
    block[:, args.prompt : args.prompt + args.block] = True

    def median(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    return (median(lambda: denoiser.full(canvas)),
            median(lambda: denoiser.light(canvas, block, cache, width=args.block)))


def dual_cache_bound(full: float, light: float, answer: int, block: int, per_call: float) -> float:
    """The most the dual cache can gain over one-token-per-call decoding without a cache (answer full
    reads), reads alone: every block is entered with a read of all places (as costly as a full read)
    and its other steps are light reads of the block, `per_call` tokens committed per read."""
    blocks = answer / block
    return answer * full / (blocks * full + max(answer / per_call - blocks, 0) * light)


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
    parser.add_argument("--train", type=int, default=0, help="fit the model to a closed language first (steps)")
    parser.add_argument("--groups", type=int, default=16, help="closed language: prompts")
    parser.add_argument("--members", type=int, default=4, help="closed language: answers per prompt")
    parser.add_argument("--vary", type=float, default=0.1, help="closed language: share of places where members differ")
    parser.add_argument("--content", type=int, default=0,
                        help="closed language: tokens of each answer before END pads it (0: the whole answer)")
    parser.add_argument("--train-batch", type=int, default=16, help="rows per training step")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the training")
    parser.add_argument("--weights", type=Path, default=None,
                        help="with --train: read the trained weights from this file if it exists, else write them "
                             "there after training (same arguments, same language)")
    parser.add_argument("--reads-only", action="store_true",
                        help="time one full and one light read and print the dual cache's bound, no decoding")
    args = parser.parse_args()
    args.content = args.content or args.answer
    if args.threads:
        torch.set_num_threads(args.threads)
    print(describe())
    n = args.prompt + args.answer
    model = build(args.vocab, n, args.dim, args.depth, args.heads)
    g = torch.Generator().manual_seed(0)
    if args.train:
        language = closed_language(args, torch.Generator().manual_seed(1))
        if args.weights and args.weights.exists():  # trained before with the same arguments
            model.load_state_dict(torch.load(args.weights))
            print(f"weights read from {args.weights} (not trained again)")
        else:
            teach(model, args.train, language, args)
            if args.weights:
                torch.save(model.state_dict(), args.weights)
        truth = language[torch.randperm(language.shape[0], generator=g)[: args.batch]]
    else:
        truth = torch.randint(0, args.vocab, (args.batch, n), generator=g)
    state = (f"trained {args.train} steps on a closed language ({args.groups} prompts x {args.members} answers, "
             f"{args.vary:.0%} of places vary, {args.content} of {args.answer} answer tokens before END)"
             if args.train else "untrained")
    print(f"model: width {args.dim}, depth {args.depth}, {args.heads} heads, vocabulary {args.vocab}, {state}; "
          f"batch {args.batch}, prompt {args.prompt}, answer {args.answer}, block {args.block}, temperature 0")
    canvas = torch.full((args.batch, n), args.vocab)
    canvas[:, :args.prompt] = truth[:, :args.prompt]
    denoiser = CountingDenoiser(model)
    threshold = ThresholdSampler(args.threshold, block_length=args.block)
    rows = {
        "low-confidence, no cache": LLaDASampler(steps=args.answer, block_length=args.block),
        "threshold, no cache": threshold,
        "threshold, prefix cache": BlockCached(threshold, "prefix"),
        "threshold, dual cache": BlockCached(threshold, "dual"),
    }
    with torch.inference_mode():
        model(canvas[:1])  # warm-up
        results = {} if args.reads_only else {name: run(denoiser, canvas, sampler, args.vocab)
                                              for name, sampler in rows.items()}
        full, light = read_costs(denoiser, canvas, args)
    bounds = ", ".join(f"{c} per read {dual_cache_bound(full, light, args.answer, args.block, c):.1f}x"
                       for c in (1, 2, 4))
    reads = (f"reads: full {full * 1000:.0f} ms, light read of a block {light * 1000:.0f} ms ({full / light:.1f}x "
             f"less); the dual cache's most over low-confidence from reads alone, tokens per read: {bounds}")
    if args.reads_only:
        print(reads)
        return
    base = results["low-confidence, no cache"]

    def right(r: dict) -> str:
        """When trained: the share of rows decoded to one of their prompt's answers, then the share of
        answer places whose token is one of the prompt's answers' tokens there, before END and after."""
        if not args.train:
            return ""
        same = (r["tokens"][:, None, :] == language[None, :, :]).all(-1)  # [B, rows of the language]
        group = (truth[:, None, : args.prompt] == language[None, :, : args.prompt]).all(-1)  # [B, rows]
        hit = ((r["tokens"][:, None, :] == language[None]) & group[:, :, None]).any(1)[:, args.prompt :]
        content, pad = hit[:, : args.content].float().mean(), hit[:, args.content :].float().mean()
        return f"{float(same.any(1).float().mean()):.3f} {float(content):7.3f} " + (
            f"{float(pad):7.3f}" if args.content < args.answer else "")

    print(f"{'decoding':28s} {'tokens/s':>9s} {'x base':>7s} {'full reads':>10s} {'light reads (whole rows)':>24s} "
          f"{'seconds':>8s} {'same tokens as threshold':>25s} {'right: rows, tokens, END':>24s}"
          f"   ({load()} at the end)")
    for name, r in results.items():
        agree = (r["tokens"] == results["threshold, no cache"]["tokens"]).float().mean()
        same = "" if name.startswith("low") else f"{float(agree):.3f}"
        print(f"{name:28s} {r['tokens_per_s']:9.1f} {r['tokens_per_s'] / base['tokens_per_s']:7.2f} "
              f"{r['nfe']:10d} {r['light']:17d} ({r['whole']:3d}) {r['seconds']:8.1f} {same:>25s} {right(r):>24s}")
    print(reads)


if __name__ == "__main__":
    main()
