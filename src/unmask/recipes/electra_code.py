"""Recipe `electra-code`: ELECTRA's replaced-token detection (Clark et al. 2020, arXiv:2003.10555, P36)
on standard-library code: a generator a quarter of the width proposes tokens for 15% of each chunk, the
discriminator labels every token real or replaced, loss = MLM + 50 * BCE. Evaluation probes the
discriminator's frozen features (a chunk's top-level package) and scores detection on held-out code.
`benchmarks/code_report.py` sets it against `mlm-code` at equal training FLOPs. Samples come from the
generator, the small masked LM, with MaskGIT (Chang et al. 2022, arXiv:2202.04200): it was trained to
fill 15% of a chunk, not all of it, so expect poor text.

    unmask train electra-code --out runs/electra-code
    unmask sample runs/electra-code --n 8                     # runs/electra-code/samples.txt
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import option, section
from ..objectives import Electra
from .base import SamplerSettings, TransformerSettings
from .code_base import PROBE_ROWS, CodeRecipe, CodeSettings
from .report import Metric, Report, Table


@dataclass(frozen=True)
class Model(TransformerSettings):
    generator_share: float = option(0.25, lo=0.0, hi=1.0, lo_open=True, help="generator width / width")


@dataclass(frozen=True)
class Objective:
    disc_weight: float = option(50.0, lo=0.0, help="weight of the discriminator's loss")
    ratio: float = option(0.15, lo=0.0, hi=1.0, lo_open=True, help="share of tokens the generator fills")


@dataclass(frozen=True)
class Settings(CodeSettings):
    model: Model = section(Model())
    objective: Objective = section(Objective())
    sampler: SamplerSettings = section(SamplerSettings("maskgit", 16, 1.0, 1.0))


def generator_denoiser(objective: Electra):
    """ELECTRA's generator as a denoiser: tokens Long[B, N] (mask id V allowed) -> logits Float[B, N, V]
    at every place (the generator itself scores only the places it is asked for)."""
    def generator_logits(tokens: torch.Tensor) -> torch.Tensor:
        everywhere = torch.ones_like(tokens, dtype=torch.bool)
        logits = objective.generator(tokens, objective.discriminator.embed, everywhere)  # [B * N, V]
        return logits.view(*tokens.shape, -1)

    return generator_logits


class ElectraCode(CodeRecipe):
    name = "electra-code"
    papers = ("P36",)
    summary = "ELECTRA replaced-token detection on Python stdlib code; linear probe of frozen features"
    Settings = Settings

    def build(self) -> Electra:
        m, o, d = self.settings.model, self.settings.objective, self.settings.data
        return Electra(d.vocab_size, self.model_config().layout, dim=m.dim, depth=m.depth, heads=m.heads,
                       generator_share=m.generator_share, ratio=o.ratio, disc_weight=o.disc_weight)

    @torch.no_grad()
    def measure(self, run, objective: Electra) -> dict:
        corpus = self.corpus(run)
        g = torch.Generator().manual_seed(self.settings.train.seed)
        parts = [objective({"tokens": x}, g).metrics for x in self.held_out(corpus).tokens.split(128)]
        metrics = {f"heldout_{k}": float(sum(p[k] for p in parts)) / len(parts)  # objectives keep tensors
                   for k in ("gen_acc", "disc_acc", "replaced_share", "disc_loss")}
        return metrics | self.probe(objective.features, corpus)

    def report(self, metrics: dict) -> Report:
        rows = (Metric("heldout_gen_acc", "held-out generator accuracy at its hidden tokens", better="higher"),
                Metric("heldout_disc_acc", "held-out discriminator accuracy, every token", better="higher"),
                Metric("heldout_replaced_share", "share of tokens replaced by the generator's draws"),
                Metric("heldout_disc_loss", "held-out discriminator loss (BCE)", better="lower"),
                *PROBE_ROWS)
        m, o = self.settings.model, self.settings.objective
        setup = (f"{self.setup()} Generator {m.generator_share} of the width, {o.ratio} of each chunk hidden, "
                 f"discriminator weight {o.disc_weight}.")
        return Report("electra-code: replaced-token detection on Python code", setup, (Table(rows),))

    def denoiser(self, objective: Electra):
        return generator_denoiser(objective)
