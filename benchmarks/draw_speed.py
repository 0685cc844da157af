"""The categorical draw every sampler uses, timed against the draws of peer code, in one process.

Four ways to draw one token per row of logits [M, V] at temperature T:
- ours: `unmask.sampling.categorical` (inverse CDF on float64 sums of float32 weights, found chunk
  by chunk; exact in the tail down to 87 nats below the best token);
- float64 reference: softmax in float64, cumsum, searchsorted (the plain exact draw);
- multinomial: `torch.multinomial` on a float32 softmax (diffusers' aMUSEd scheduler, many repositories);
- float32 Gumbel-max: argmax(logits / T + float32 Gumbel noise) (x-transformers' `gumbel_sample`),
  which cannot reach a token 16.6 nats or more below the best (Zheng et al. 2024, P39).
Also argmax against our `first_argmax`. Medians of interleaved repeats, in milliseconds.

    .venv/bin/python benchmarks/draw_speed.py            # about a minute on one CPU core
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import describe

from unmask.sampling import categorical
from unmask.sampling.categorical import first_argmax


def float64_reference(logits, temperature, generator):
    probs = torch.softmax(logits.double() / temperature, -1)
    cdf = probs.cumsum(-1)
    u = torch.rand(len(logits), 1, generator=generator, dtype=torch.float64) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=logits.shape[-1] - 1)


def multinomial(logits, temperature, generator):
    return torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator).squeeze(1)


def gumbel_float32(logits, temperature, generator):
    u = torch.rand(logits.shape, generator=generator).clamp_(1e-20)
    return (logits / temperature - torch.log(-torch.log(u))).argmax(-1)


def ours(logits, temperature, generator):
    return categorical(logits, temperature, generator)


DRAWS = {"ours": ours, "float64 reference": float64_reference, "multinomial (float32)": multinomial,
         "float32 Gumbel-max": gumbel_float32}


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(describe())
    g = torch.Generator().manual_seed(0)
    cases = [("1024 rows, V 1024, logits N(0, 3^2), T 1", torch.randn(1024, 1024, generator=g) * 3, 1.0),
             ("1024 rows, V 1024, logits N(0, 8^2), T 0.2", torch.randn(1024, 1024, generator=g) * 8, 0.2),
             ("64 rows, V 126464, logits N(0, 3^2), T 1", torch.randn(64, 126464, generator=g) * 3, 1.0)]
    for label, logits, temperature in cases:
        print(f"{label}: median ms of {args.repeats}, interleaved")
        times = {name: [] for name in DRAWS}
        for _ in range(3):  # interleave the draws, three rounds
            for name, draw in DRAWS.items():
                times[name].append(median_ms(
                    lambda d=draw, x=logits, t=temperature: d(x, t, torch.Generator().manual_seed(1)), args.repeats))
        base = statistics.median(times["ours"])
        for name, values in times.items():
            ms = statistics.median(values)
            print(f"  {name:24s} {ms:8.2f} ms   / ours {ms / base:5.2f}")
    logits = cases[0][1]
    assert torch.equal(first_argmax(logits), logits.argmax(-1))
    a = statistics.median([median_ms(lambda: logits.argmax(-1), args.repeats) for _ in range(3)])
    b = statistics.median([median_ms(lambda: first_argmax(logits), args.repeats) for _ in range(3)])
    print(f"argmax over 1024 x 1024: torch.argmax {a:.2f} ms, first_argmax {b:.2f} ms (x{a / b:.2f})")


if __name__ == "__main__":
    main()
