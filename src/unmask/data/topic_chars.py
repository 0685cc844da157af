"""English text at the character level: the help topics that ship with Python (`pydoc_data.topics`,
79 topics, about 465,000 characters), lower-cased to 27 ids (`a`..`z` = 0..25, blank = 26): every
run of other characters (digits, punctuation, line breaks) becomes one blank. A topic goes to the
held-out split when the SHA-1 of its name falls in the lowest `test_share` of the hash range; each
split's topics are joined by a blank and cut into non-overlapping windows of `length` ids.

With it, the substitution cipher of the lexinvariance experiments (Huang et al. 2023, "Lexinvariant
Language Models", arXiv:2305.16349): each row relabels its ids by its own random permutation.

    >>> split = load_topic_chars("test", length=128)      # doctest: +SKIP
    >>> split.shape                                        # doctest: +SKIP
    torch.Size([..., 128])
"""

from __future__ import annotations

import hashlib
import re

import torch

from ..layout import Layout

ALPHABET = "abcdefghijklmnopqrstuvwxyz "
VOCAB_SIZE = len(ALPHABET)  # 27


def layout(length: int) -> Layout:
    return Layout.seq(length, name="text")


def clean(text: str) -> str:
    """Lower case; every run of characters outside a..z becomes one blank."""
    return re.sub(r"[^a-z]+", " ", text.lower())


def encode(text: str) -> list[int]:
    return [ALPHABET.index(c) for c in clean(text)]


def decode(ids) -> str:
    return "".join(ALPHABET[int(i)] for i in ids)


def split_of(name: str, test_share: float = 0.1) -> str:
    h = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") / 2**64
    return "test" if h < test_share else "train"


def load_topic_chars(split: str, length: int = 128, test_share: float = 0.1) -> torch.Tensor:
    """Long[M, length] windows of the `split` ("train" or "test") topics."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if length < 2:
        raise ValueError(f"length must be at least 2, got {length}")
    from pydoc_data.topics import topics

    names = sorted(n for n in topics if split_of(n, test_share) == split)
    ids = torch.tensor(encode(" ".join(topics[n] for n in names)), dtype=torch.long)
    m = ids.numel() // length
    return ids[: m * length].view(m, length)


def substitution_cipher(tokens: torch.Tensor, vocab_size: int, *,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens: Long[B, N] in 0..V-1 -> (enciphered Long[B, N], keys Long[B, V]) with enciphered[b, i] =
    keys[b, tokens[b, i]]; each row's key is a uniform random permutation (argsort of uniform noise)."""
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must lie in 0..{vocab_size - 1}")
    device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.rand(tokens.shape[0], vocab_size, generator=generator, device=device)
    keys = noise.argsort(1).to(tokens.device)  # [B, V]
    return keys.gather(1, tokens), keys
