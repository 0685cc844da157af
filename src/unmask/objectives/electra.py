"""ELECTRA: replaced-token detection (Clark et al. 2020, arXiv:2003.10555, P36). A small masked LM
(the generator) fills the hidden places with plausible tokens; the main network (the discriminator)
reads the whole corrupted sequence and says, for every token, whether it was replaced. The
discriminator learns from all N tokens, not only the 15% hidden, which is why ELECTRA beats MLM at
equal compute.

As in google-research/electra (`run_pretraining.py`):
- the generator is a quarter of the discriminator's width (`generator_hidden_size=0.25`), as deep,
  and shares the token and position embeddings: it projects them down to its width and its head
  projects back up (dense, GELU, LayerNorm) and scores against the shared token embeddings;
- 15% of tokens are hidden (here an exact count per row; ELECTRA samples positions with
  replacement), 85% of them become [MASK] and 15% stay (no random branch);
- the generator's draws (float64 inverse CDF, `sampling.categorical`) carry no gradient; they are
  made on the CPU with the step's generator, so its logits are copied there once per step;
- a token is "replaced" only where the drawn token differs from the original (a lucky draw of the
  original is labelled real);
- loss = MLM loss of the generator + 50 * mean BCE of the discriminator over all tokens.
Only the discriminator (`features`) is kept for downstream use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layout import Layout
from ..masking import BertCorruption, Masker, RandomMask
from ..nn import Embedding, Transformer
from ..nn.transformer import init_weights
from ..sampling.categorical import categorical
from .base import ObjectiveOutput
from .masked_token import hidden_ce_mean


class Discriminator(nn.Module):
    """tokens Long[B, N] -> replaced-token logits Float[B, N]; `features` for probes."""

    def __init__(self, vocab_size: int, layout: Layout, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.embed = Embedding(vocab_size, dim, layout)
        self.encoder = Transformer(dim, depth, heads, mlp_ratio)
        self.rtd = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embed(tokens))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.rtd(self.features(tokens)).squeeze(-1)


class ElectraGenerator(nn.Module):
    """A narrow masked LM that borrows the discriminator's embeddings (passed in, not owned, so the
    shared table is stored once)."""

    def __init__(self, dim: int, width: int, depth: int, heads: int, vocab_size: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.down = nn.Linear(dim, width)
        self.encoder = Transformer(width, depth, heads, mlp_ratio)
        self.up = nn.Sequential(nn.Linear(width, dim), nn.GELU(), nn.LayerNorm(dim))
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, tokens: torch.Tensor, embed: Embedding, where: torch.Tensor) -> torch.Tensor:
        """tokens: Long[B, N] (mask id V allowed) -> logits [M, V] at the M places where `where`."""
        h = self.encoder(self.down(embed(tokens)))[where]
        return F.linear(self.up(h), embed.tokens.weight[: self.vocab_size], self.bias)


class Electra(nn.Module):
    """batch: {"tokens": Long[B, N], ...context} -> ObjectiveOutput."""

    def __init__(
        self,
        vocab_size: int,
        layout: Layout,
        *,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        generator_share: float = 0.25,
        masker: Masker | None = None,
        ratio: float = 0.15,
        disc_weight: float = 50.0,
        temperature: float = 1.0,
    ):
        super().__init__()
        width = int(round(dim * generator_share))
        head_dim = dim // heads
        if width < 1 or width % max(1, width // head_dim):
            raise ValueError(f"generator width {width} (share {generator_share} of {dim}) must split into heads "
                             f"of {head_dim}")
        if not 0 < ratio <= 1 or disc_weight < 0 or temperature <= 0:
            raise ValueError(f"need 0 < ratio <= 1, disc_weight >= 0, temperature > 0; got {ratio}, "
                             f"{disc_weight}, {temperature}")
        self.layout, self.mask_id = layout, vocab_size
        self.discriminator = Discriminator(vocab_size, layout, dim, depth, heads)
        self.generator = ElectraGenerator(dim, width, depth, max(1, width // head_dim), vocab_size)
        self.masker = masker or RandomMask()
        self.corruption = BertCorruption(p_mask=0.85, p_random=0.0)
        self.ratio, self.disc_weight, self.temperature = ratio, disc_weight, temperature
        init_weights(self)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.discriminator.features(tokens)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch["tokens"]
        b = tokens.shape[0]
        context = {k: v for k, v in batch.items() if k != "tokens"}
        hidden = self.masker(self.layout, b, ratio=self.ratio, generator=generator, **context)
        mask = hidden.to(tokens.device, non_blocking=True)  # the masker draws on the host
        gen_inputs = self.corruption(tokens, mask, self.mask_id, generator)
        gen_logits = self.generator(gen_inputs, self.discriminator.embed, mask)  # [M, V]
        targets = tokens[mask]
        gen_loss = hidden_ce_mean(F.cross_entropy(gen_logits.float(), targets, reduction="none"), mask)
        with torch.no_grad():  # drawn on the CPU, where the step's generator lives
            drawn = categorical(gen_logits.detach().cpu(), self.temperature, generator).to(tokens.device)
        fake = tokens.clone()
        fake[mask] = drawn
        replaced = fake != tokens  # [B, N]; a draw equal to the original counts as real
        disc_logits = self.discriminator(fake)  # [B, N]
        disc_loss = F.binary_cross_entropy_with_logits(disc_logits.float(), replaced.float())
        loss = gen_loss + self.disc_weight * disc_loss
        with torch.no_grad():
            gen_acc = (gen_logits.argmax(-1) == targets).float().mean()  # nan when nothing is hidden
            disc_acc = ((disc_logits > 0) == replaced).float().mean()
        metrics = {"loss": loss.detach(), "gen_loss": gen_loss.detach(), "disc_loss": disc_loss.detach(),
                   "gen_acc": gen_acc, "disc_acc": disc_acc, "replaced_share": replaced.float().mean()}
        return ObjectiveOutput(loss, metrics)
