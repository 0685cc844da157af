"""Text conditioning for masked image generation, kept small and our own (Meissonic: Bai et al. 2024,
arXiv:2410.08261, reads a CLIP text encoder; here the prompt is a class name such as "LATIN SMALL
LETTER A" or "grinning face", and its words are tokens of a prefix segment the masker never hides).

- `WordVocab`: the words of a list of prompts (lower case, runs of letters and digits), ids after
  `PAD` and `UNK`; `encode` turns prompts into Long[B, L] word ids, padded with `PAD`.
- `RatioEmbedding`: the mask ratio as the network's timestep (Meissonic conditions its transformer
  on it, as MaskGIT's successors do): a sin-cos embedding of the ratio through a two-layer MLP,
  added to every token. `MaskedTokenModel` reads the ratio from its input (`ModelConfig.ratio_input`
  names the segment whose hidden share it is), so training and every sampler give it exactly the
  share hidden at that call, and no sampler has to pass a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

PAD, UNK = 0, 1
RATIO_SCALE = 1000.0  # the ratio in [0, 1] spread over the range the sin-cos frequencies resolve, as timesteps are


def prompt_words(text: str) -> list[str]:
    """The words of a prompt: lower case, runs of letters and digits ("A button (blood type)" ->
    ["a", "button", "blood", "type"])."""
    return re.findall(r"[0-9a-z]+", text.lower())


class UnknownWords(ValueError):
    """A prompt holds words the vocabulary lacks (`words`), or more words than fit (`words` empty)."""

    def __init__(self, message: str, words: tuple[str, ...] = ()):
        super().__init__(message)
        self.words = words


@dataclass(frozen=True)
class WordVocab:
    """Word ids: PAD = 0, UNK = 1, then `words` in order."""
    words: tuple[str, ...]

    @staticmethod
    def from_prompts(prompts) -> WordVocab:
        """Every word of `prompts`, sorted, once."""
        return WordVocab(tuple(sorted({w for p in prompts for w in prompt_words(p)})))

    def __len__(self) -> int:
        return len(self.words) + 2

    def longest(self, prompts) -> int:
        return max(len(prompt_words(p)) for p in prompts)

    def encode(self, prompts, length: int, strict: bool = True) -> torch.Tensor:
        """prompts: list of str -> Long[B, length] word ids, PAD after the last word. A word the
        vocabulary lacks is UNK, or with `strict` an `UnknownWords` error naming it; more than
        `length` words is always an error."""
        index = {w: i + 2 for i, w in enumerate(self.words)}
        out = torch.full((len(prompts), length), PAD, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            words = prompt_words(prompt)
            if len(words) > length:
                raise UnknownWords(f"prompt {prompt!r} has {len(words)} words; the model reads at most {length}")
            missing = tuple(w for w in words if w not in index)
            if strict and missing:
                raise UnknownWords(f"prompt {prompt!r} holds words the model never read: "
                                   f"{', '.join(map(repr, missing))}", missing)
            out[row, : len(words)] = torch.tensor([index.get(w, UNK) for w in words], dtype=torch.long)
        return out


class RatioEmbedding(nn.Module):
    """ratio: Float[B] in [0, 1] -> Float[B, D], an MLP of its sin-cos embedding."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"the ratio embedding needs an even width, got {dim}")
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, ratio: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64, device=ratio.device) / half)
        angles = (ratio.double() * RATIO_SCALE)[:, None] * omega  # [B, D / 2]
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=1).to(self.mlp[0].weight.dtype))
