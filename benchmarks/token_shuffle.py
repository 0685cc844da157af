"""Token-Shuffle (Ma et al. 2025, arXiv:2504.17789) against no shuffle: time per denoiser call and per
training step of one `MaskedTokenModel` over a class token and an 8x8 (or larger) grid of image
tokens, the size of recipe `glyphs-generators`, interleaved in one process.

    .venv/bin/python benchmarks/token_shuffle.py                  # about a minute
    .venv/bin/python benchmarks/token_shuffle.py --side 16 --dim 256
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import describe, load

from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig


def model(side: int, dim: int, depth: int, heads: int, vocab: int, shuffle: int) -> MaskedTokenModel:
    torch.manual_seed(0)
    layout = Layout.seq(1, "label") + Layout.grid(side, side, name="dense")
    return MaskedTokenModel(ModelConfig(vocab, layout, dim=dim, depth=depth, heads=heads, shuffle=shuffle))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=8)
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=351)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(describe())
    nets = {s: model(args.side, args.dim, args.depth, args.heads, args.vocab, s) for s in (1, 2)}
    n = 1 + args.side * args.side
    tokens = torch.randint(0, args.vocab, (args.batch, n), generator=torch.Generator().manual_seed(0))
    optims = {s: torch.optim.AdamW(m.parameters(), lr=1e-4) for s, m in nets.items()}
    calls, steps = {1: [], 2: []}, {1: [], 2: []}
    for _ in range(args.repeats + 2):
        for s, m in nets.items():  # interleaved, so load changes hit both alike
            with torch.inference_mode():
                t = time.perf_counter()
                m.eval()(tokens)
                calls[s].append(time.perf_counter() - t)
            m.train()
            t = time.perf_counter()
            loss = m(tokens).logsumexp(-1).mean()
            loss.backward()
            optims[s].step()
            optims[s].zero_grad(set_to_none=True)
            steps[s].append(time.perf_counter() - t)
    med = {k: {s: statistics.median(v[2:]) * 1000 for s, v in d.items()} for k, d in (("call", calls), ("step", steps))}
    print(f"model: {n} tokens (class + {args.side}x{args.side}), width {args.dim}, depth {args.depth}, batch "
          f"{args.batch}; median of {args.repeats}, {load()} at the end")
    for what in ("call", "step"):
        a, b = med[what][1], med[what][2]
        print(f"  per {what:4s}: no shuffle {a:7.1f} ms, shuffle 2 {b:7.1f} ms, ratio {b / a:.2f}")


if __name__ == "__main__":
    main()
