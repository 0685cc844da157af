"""Recipe `ar-code`: the autoregressive baseline on standard-library code, on the same Transformer
with a causal attention mask (same parameters as `mdlm-code`), scored by its exact held-out NLL in
bits per token. Two options from the catalogue: `objective.meap=true` hides 15% of the inputs (MEAP,
Zhuang et al. 2025, arXiv:2502.07490, P12; scored also by in-context identifier recall) and
`objective.cm3=true` trains on CM3's causally masked rewrites (Aghajanyan et al. 2022,
arXiv:2201.07520, P17), which lets the left-to-right model infill function bodies. Samples are drawn
left to right from the start token.

    unmask train ar-code --out runs/ar-code
    unmask train ar-code objective.cm3=true --out runs/ar-cm3
    unmask sample runs/ar-code --n 8                          # runs/ar-code/samples.txt
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option, section
from ..data.code import SPECIAL
from ..eval import code as code_eval
from ..masking import CausalMasking, MeapMask
from ..nn import CausalTokenModel
from ..objectives import NextTokenPrediction
from .code_base import CodeRecipe, InfillSettings, infill_examples
from .report import Metric, Report, Table


@dataclass(frozen=True)
class Objective:
    meap: bool = option(False, help="MEAP: hide a share of the inputs, targets stay clean")
    meap_ratio: float = option(0.15, lo=0.0, hi=1.0, help="MEAP's share of hidden inputs")
    cm3: bool = option(False, help="CM3: train on causally masked rewrites (spans moved to the end)")
    cm3_lambda: float = option(1.0, lo=0.0, help="Poisson mean of the CM3 span count")


@dataclass(frozen=True)
class Sampler:
    temperature: float = option(1.0, lo=0.0, help="sampling temperature (samples and CM3 infilling)")


@dataclass(frozen=True)
class Settings(InfillSettings):
    objective: Objective = section(Objective())
    sampler: Sampler = section(Sampler())


class ArCode(CodeRecipe):
    name = "ar-code"
    papers = ("P12", "P17")
    summary = "next-token prediction on Python stdlib code (same Transformer, causal); MEAP and CM3 options"
    Settings = Settings
    # the special tokens it reads: every row starts after <|endoftext|>; CM3 moves spans behind
    # sentinels <mask:i> and ends each with <eos>
    bos_id = SPECIAL.index("<|endoftext|>")
    eos_id = SPECIAL.index("<eos>")
    sentinel_ids = tuple(SPECIAL.index(f"<mask:{i}>") for i in range(8))

    def build(self) -> NextTokenPrediction:
        o = self.settings.objective
        transform = CausalMasking(self.sentinel_ids, self.eos_id, lam=o.cm3_lambda) if o.cm3 else None
        return NextTokenPrediction(CausalTokenModel(self.model_config()), bos_id=self.bos_id,
                                   input_masker=MeapMask() if o.meap else None, ratio=o.meap_ratio,
                                   transform=transform)

    def measure(self, run, objective: NextTokenPrediction) -> dict:
        s, corpus = self.settings, self.corpus(run)
        metrics = {"heldout_nll_bits": code_eval.ar_bits(objective, self.held_out(corpus).tokens)}
        metrics |= code_eval.repeat_accuracy(objective, corpus.test, s.eval.chunks)
        if s.objective.cm3:
            cases = code_eval.infill_cases(corpus, s.data.length, s.eval.infill_cases)
            if not cases:  # user data without held-out Python functions
                return metrics | {"infill_cases": 0}
            res = code_eval.cm3_infill(objective.model, cases, corpus, s.data.length, self.bos_id, seed=s.train.seed,
                                       temperature=s.sampler.temperature)
            metrics |= {"infill_cases": len(cases), "infill_parse_cm3": res.share}
            run.write_json("infill.json", infill_examples(cases, corpus, {"cm3": res.bodies}, {"cm3": res.parsed}))
        return metrics

    def report(self, metrics: dict) -> Report:
        rows = (Metric("heldout_nll_bits", "held-out NLL, bits per token (exact)", better="lower"),
                Metric("repeat_accuracy", "next-token accuracy where the target recalls an identifier piece "
                       "seen earlier in the window", better="higher"),
                Metric("other_accuracy", "next-token accuracy elsewhere"),
                Metric("repeat_targets", "recall targets scored"),
                Metric("infill_cases", "function bodies hidden (CM3)"),
                Metric("infill_parse_cm3", "whole file parses, body written left to right after the sentinel",
                       better="higher"))
        o = self.settings.objective
        setup = f"{self.setup()} MEAP inputs: {o.meap}; CM3 training: {o.cm3}."
        return Report("ar-code: next-token prediction on Python code", setup, (Table(rows),))

    @torch.no_grad()
    def sample(self, run, objective: NextTokenPrediction, n: int, out: Path) -> Path:
        """n chunks drawn left to right from the start token, written as text."""
        g = torch.Generator().manual_seed(self.settings.train.seed)
        prefix = torch.full((n, 1), self.bos_id)  # [n, 1]
        rows = code_eval.left_to_right(objective.model.eval(), prefix, self.settings.data.length, g,
                                       self.settings.sampler.temperature)
        return self.write_chunks(run, rows, out)
