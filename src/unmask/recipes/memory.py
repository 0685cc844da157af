"""Will it fit? An estimate, from a recipe's settings alone, of the memory training and evaluation
need, checked against the machine before anything is allocated, so that `model.dim=1000000` or
`train.batch_size=1000000000` is refused in one line with the estimate instead of a native abort,
a swap storm or a hang.

The estimate is deliberately an upper-bound sketch of a pre-norm Transformer (the only network the
recipes build), not an accountant: weights, gradients, AdamW's two moments and an EMA copy at 4 bytes
each; per example and block, about 24 float activations per token and width kept for the backward
pass plus one attention map per head; logits over the vocabulary at every token. A run is refused only
when that sketch exceeds the machine's whole memory (RAM, or the GPU's when one is used), so a run
that fits is never refused on a guess.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UnmaskError

FLOAT = 4  # bytes
ACTIVATIONS_PER_TOKEN_AND_WIDTH = 24  # residual, norms, q/k/v, attention out, 4x MLP in and out, kept for backward
DEFAULT_TOKENS = 256  # tokens per example when a recipe's settings do not say


@dataclass(frozen=True)
class Estimate:
    params: int
    train_bytes: int
    eval_bytes: int

    @property
    def peak(self) -> int:
        return max(self.train_bytes, self.eval_bytes)


def _get(settings, path: str, default=0):
    node = settings
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return default
    return node


def example_tokens(settings) -> int:
    """Tokens a network sees per example, from whichever of the usual data settings the recipe has."""
    for path, scale in (("data.length", 1), ("data.window", 4), ("data.groups", 1)):
        value = _get(settings, path)
        if value:
            return int(value) * scale + 1
    return DEFAULT_TOKENS


def estimate(settings, n_generate: int = 0) -> Estimate:
    """The memory sketch of a recipe's `settings` (and of generating `n_generate` examples at once)."""
    dim, depth = int(_get(settings, "model.dim")), int(_get(settings, "model.depth"))
    heads = max(int(_get(settings, "model.heads", 1)), 1)
    ddim, ddepth = int(_get(settings, "model.decoder_dim")), int(_get(settings, "model.decoder_depth"))
    vocab = int(_get(settings, "data.vocab_size")) or 256
    tokens = example_tokens(settings)
    params = 12 * dim * dim * depth + 12 * ddim * ddim * ddepth + 2 * (vocab + 1) * dim + tokens * (dim + ddim)
    copies = 4 + (1 if _get(settings, "train.ema", 0.0) else 0)  # weights, grads, two moments (+ EMA)
    batch = int(_get(settings, "train.micro_batch")) or int(_get(settings, "train.batch_size", 1))
    per_example = FLOAT * tokens * (ACTIVATIONS_PER_TOKEN_AND_WIDTH * (dim * depth + ddim * ddepth)
                                    + heads * tokens * (depth + ddepth) + 3 * vocab)
    n_eval = max(n_generate, int(_get(settings, "eval.n_samples")))
    eval_bytes = FLOAT * params + FLOAT * n_eval * tokens * (2 * dim + 2 * vocab)
    return Estimate(params, FLOAT * params * copies + batch * per_example, eval_bytes)


def machine_memory() -> int:
    """Bytes of memory this process can use: the GPU's when one is present, else physical RAM."""
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[1])
    except Exception:  # no usable CUDA: fall back to RAM
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: refuse nothing


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_fits(settings, name: str, n_generate: int = 0, available: int | None = None) -> Estimate:
    """Refuse, in one line with the estimate, settings whose sketch exceeds the machine's memory."""
    est = estimate(settings, n_generate)
    have = machine_memory() if available is None else available
    if est.train_bytes > have:
        raise UnmaskError(f"{name}: training at these settings needs about {_gib(est.train_bytes)} "
                          f"({est.params:,} parameters; model.dim, model.depth, train.batch_size, data sizes), "
                          f"more than the {_gib(have)} this machine has")
    if est.eval_bytes > have:
        what = f"generating {n_generate:,} samples" if n_generate else "evaluation (eval.n_samples)"
        raise UnmaskError(f"{name}: {what} needs about {_gib(est.eval_bytes)}, more than the "
                          f"{_gib(have)} this machine has")
    return est
