"""Logits only where they are needed (Long-VITA, P55): the vocabulary projection and its loss at
the hidden positions only, against the same projection at every position, at BERT-base vocabulary.

    .venv/bin/python benchmarks/masked_head.py

Prints forward+backward ms for both and the ratio; the two give the same loss (checked).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from machine import describe

from unmask.nn import LogitsHead


def main(vocab=30522, batch=32, length=128, dim=256, share=0.15, repeats=10):
    print(describe())
    torch.manual_seed(0)
    head = LogitsHead(dim, vocab)
    h = torch.randn(batch, length, dim, requires_grad=True)
    where = torch.rand(batch, length) < share
    targets = torch.randint(0, vocab, (batch, length))

    def only_hidden():
        return F.cross_entropy(head(h, where), targets[where])

    def everywhere():
        logits = head(h)
        return F.cross_entropy(logits[where], targets[where])

    assert torch.allclose(only_hidden(), everywhere(), rtol=1e-5)
    times = {"hidden only": [], "every position": []}
    for _ in range(repeats):  # interleaved, so load on the machine hits both alike
        for name, fn in (("hidden only", only_hidden), ("every position", everywhere)):
            t = time.perf_counter()
            fn().backward()
            times[name].append(time.perf_counter() - t)
    med = {k: sorted(v)[len(v) // 2] * 1000 for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:>15}: {v:8.1f} ms forward+backward")
    print(f"ratio every/hidden: {med['every position'] / med['hidden only']:.2f}x "
          f"({where.float().mean():.3f} of {batch * length} positions hidden)")


if __name__ == "__main__":
    main()
