"""Recipe `ilm-code`: an insertion language model on standard-library code (ILM, Patel et al. 2025,
"Insertion Language Models: Sequence Generation with Arbitrary-Position Insertions", arXiv:2505.05755,
P21) and its claim: a function body of unknown length can be infilled, because the model inserts
tokens one at a time into the body's gap and decides itself when the body is done, while a masked
diffusion model (MDLM, Sahoo et al. 2024, arXiv:2406.07524) must be told how many tokens to write.

Two models on the same rows, with the same Transformer size and steps: `InsertionLM` (main) and the
MDLM baseline (`MaskedDiffusion`, trained in `RUN/mdlm`). In a share of the training rows
(`objective.span_share`) only one contiguous span may be deleted or hidden and the rest of the
row is given, as a body is at evaluation; the other rows may lose any token. The ILM reads a random
window of each chunk (`objective.min_length` up to `data.length` tokens) and a share of its rows is
left whole (`objective.clean_share`): with fixed-length rows and few whole ones, its stop head learns
"the row is full" instead of "nothing is missing". Evaluation: function
bodies of held-out files hidden (signature and the rest of the file given), filled, spliced back,
and the whole file checked with `ast.parse`:
- ILM: the window's context around the body with one open gap there; it inserts until its stop
  head says the body is done (at most `eval.room` tokens);
- MDLM with first-hitting decoding (one token per call, as the ILM), given the true body length,
  and given a wrong one (`eval.short` and `eval.long` times the true length).
Beside each parse rate, `infill_real_*` counts only bodies that hold a letter or digit: a run of `_`
and `.` parses (an attribute chain), and small models fall into writing one.

    unmask train ilm-code --out runs/ilm-code
    unmask eval runs/ilm-code sampler.temperature=0.5
    unmask sample runs/ilm-code --n 8
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import option, section
from ..errors import UnmaskError
from ..eval import code as code_eval
from ..nn import MaskedTokenModel
from ..objectives import MaskedDiffusion
from ..objectives.insertion import InsertionLM, InsertionModel
from ..sampling import FirstHittingSampler
from ..sampling.insertion import insert_generate
from .code_base import CodeData, CodeRecipe, InfillEval, InfillSettings, infill_examples
from .report import Metric, Report, Table


@dataclass(frozen=True)
class Objective:
    stop_weight: float = option(1.0, lo=0.0, help="weight of the stop head's loss beside the insertion loss")
    clean_share: float = option(0.25, lo=0.0, hi=1.0, hi_open=True, help="share of ILM training rows left whole "
                                                                         "(stop positives; t ~ U(0, 1) alone "
                                                                         "gives 1 / (2d))")
    span_share: float = option(0.5, lo=0.0, hi=1.0, help="share of training rows where only one contiguous span "
                                                         "may be deleted (ILM) or hidden (MDLM), the rest given")
    span_min: int = option(6, lo=1, help="shortest such span, tokens")
    span_max: int = option(40, lo=1, help="longest such span, tokens (at most data.length)")
    min_length: int = option(32, lo=1, help="the ILM reads a random window of min_length..data.length tokens of "
                                            "each chunk, so a row's length does not tell whether it is whole")


@dataclass(frozen=True)
class Sampler:
    temperature: float = option(0.0, lo=0.0, help="sampling temperature of the ILM and the MDLM baseline (0: the "
                                                  "most likely token; at a few minutes of training sampled bodies "
                                                  "almost never parse)")
    stop_threshold: float = option(0.5, lo=0.0, hi=1.0, lo_open=True, help="the ILM stops a row when P(stop) "
                                                                          "reaches this")


@dataclass(frozen=True)
class Eval(InfillEval):
    room: int = option(48, lo=1, help="most tokens the ILM may write into a body; its window holds "
                                      "data.length - room tokens of context")
    short: float = option(0.5, lo=0.0, lo_open=True, help="MDLM given round(short * k) places for a body of k")
    long: float = option(1.5, lo=0.0, lo_open=True, help="MDLM given round(long * k) places for a body of k")


@dataclass(frozen=True)
class Settings(InfillSettings):
    # 2,048 BPE tokens, not the code recipes' 8,192: the ILM scores every slot x V, so its head and loss
    # cost grow with V at every position, not at the hidden ones only
    data: CodeData = section(CodeData(vocab_size=2048))
    eval: Eval = section(Eval())
    objective: Objective = section(Objective())
    sampler: Sampler = section(Sampler())


class IlmCode(CodeRecipe):
    """Two models share one `ModelConfig`: "main" (the ILM) and "mdlm" (the baseline, in `RUN/mdlm`)."""

    name = "ilm-code"
    papers = ("P21",)
    summary = "insertion LM on Python stdlib code: function bodies of unknown length vs MDLM given the length"
    Settings = Settings
    roles = ("main", "mdlm")

    def check(self) -> None:
        s = self.settings
        if s.eval.room >= s.data.length:
            raise UnmaskError(f"eval.room={s.eval.room} leaves no context in windows of data.length={s.data.length}")
        if s.objective.span_min > s.objective.span_max:
            raise UnmaskError(f"objective.span_min={s.objective.span_min} exceeds objective.span_max="
                              f"{s.objective.span_max}")

    def build(self) -> InsertionLM:
        o = self.settings.objective
        return InsertionLM(InsertionModel(self.model_config()), stop_weight=o.stop_weight, clean_share=o.clean_share)

    def build_role(self, role: str) -> nn.Module:
        if role == "mdlm":
            return MaskedDiffusion(MaskedTokenModel(self.model_config()))
        return super().build_role(role)

    def training_data(self, run) -> dict:
        """The corpus's chunks with, per chunk, its given places and the ILM's padding (`training_rows`)."""
        tokens = super().training_data(run)["tokens"]
        if not torch.is_tensor(tokens):
            raise UnmaskError("ilm-code draws its body spans over chunks in memory; a shard set is not supported")
        prompt, padding = training_rows(tokens.shape[0], tokens.shape[1], self.settings.objective,
                                        self.settings.train.seed)
        return {"tokens": tokens, "prompt": prompt, "padding": padding}

    def train(self, run) -> dict:
        """The ILM, then the MDLM baseline in `RUN/mdlm` (same rows, settings and steps), then the evaluation."""
        data = self.training_data(run)
        objective = self.fit(run, self.objective(), data)
        self.fit(run.sub("mdlm"), self.objective("mdlm"), data, role="mdlm")
        return self.evaluate(run, objective)

    def measure(self, run, objective: InsertionLM) -> dict:
        s, corpus = self.settings, self.corpus(run)
        seed, length, t = s.train.seed, s.data.length, s.sampler.temperature
        model = objective.model.eval()
        baseline = self.load(run.sub("mdlm"), role="mdlm").model
        metrics = heldout(objective, self.held_out(corpus).tokens[:256], seed)
        scales = {"true": 1.0, "short": s.eval.short, "long": s.eval.long}
        cases = [c for c in code_eval.infill_cases(corpus, length, s.eval.infill_cases) if fits(c, length, s.eval.room,
                                                                                               scales.values())]
        metrics["infill_cases"] = len(cases)
        if not cases:  # user data without held-out Python functions
            return metrics
        true = [c.hidden[1] - c.hidden[0] for c in cases]
        metrics["infill_true_tokens"] = sum(true) / len(true)
        metrics["infill_parse_unigram"] = code_eval.unigram_infill(cases, corpus, length, seed)
        results = {"ilm": code_eval.insertion_infill(model, cases, corpus, length, s.eval.room, seed, t,
                                                     s.sampler.stop_threshold)}
        for name, scale in scales.items():
            results[f"mdlm_{name}"] = code_eval.infill(baseline, cases, FirstHittingSampler(t), corpus, length,
                                                       s.data.vocab_size, seed, scale=scale)
        for name, res in results.items():
            metrics[f"infill_parse_{name}"] = res.share
            metrics[f"infill_real_{name}"] = res.real_share
            metrics[f"infill_nfe_{name}"] = res.nfe
            metrics[f"infill_length_ratio_{name}"] = sum(m / k for m, k in zip(res.body_lengths, true, strict=True)) \
                / len(true)
        metrics["infill_token_acc_mdlm_true"] = results["mdlm_true"].token_accuracy
        metrics["infill_length_exact_ilm"] = sum(m == k for m, k in zip(results["ilm"].body_lengths, true,
                                                                        strict=True)) / len(true)
        metrics["infill_full_ilm"] = sum(m == s.eval.room for m in results["ilm"].body_lengths) / len(true)
        metrics["infill_length_corr_ilm"] = correlation(true, results["ilm"].body_lengths)
        run.write_json("infill.json", infill_examples(cases, corpus, {k: r.bodies for k, r in results.items()},
                                                      {k: r.parsed for k, r in results.items()}))
        return metrics

    def report(self, metrics: dict) -> Report:
        e = self.settings.eval
        fill = (
            Metric("infill_cases", "function bodies hidden"),
            Metric("infill_true_tokens", "mean true body length, tokens"),
            Metric("infill_parse_unigram", "whole file parses, body of unigram tokens of the true length"),
            Metric("infill_parse_ilm", "whole file parses, ILM (length not given)", "infill_parse_mdlm_short",
                   "higher"),
            Metric("infill_parse_ilm", "the same, against MDLM given the longer wrong length",
                   "infill_parse_mdlm_long", "higher"),
            Metric("infill_parse_ilm", "the same, against MDLM given the true length", "infill_parse_mdlm_true",
                   "higher"),
            Metric("infill_parse_mdlm_true", "whole file parses, MDLM given the true length"),
            Metric("infill_parse_mdlm_short", f"whole file parses, MDLM given {e.short}x the length"),
            Metric("infill_parse_mdlm_long", f"whole file parses, MDLM given {e.long}x the length"),
            *(Metric(f"infill_real_{n}", f"whole file parses and the body holds a letter or digit, {n}")
              for n in ("ilm", "mdlm_true", "mdlm_short", "mdlm_long")),
            Metric("infill_length_ratio_ilm", "ILM body length / true length, mean"),
            Metric("infill_length_exact_ilm", "share of ILM bodies of exactly the true length"),
            Metric("infill_length_corr_ilm", "correlation of the ILM's body lengths with the true ones", 0.0,
                   "higher"),
            Metric("infill_full_ilm", f"share of ILM bodies cut at eval.room={e.room} tokens (no stop)"),
            Metric("infill_token_acc_mdlm_true", "MDLM (true length): body tokens equal to the original"),
            *(Metric(f"infill_nfe_{n}", f"model calls per batch, {n}") for n in ("ilm", "mdlm_true", "mdlm_short",
                                                                                 "mdlm_long")),
        )
        loss = (Metric("heldout_insert_nats", "held-out insertion loss, nats per deleted token", better="lower"),
                Metric("heldout_stop_accuracy", "held-out stop head accuracy"))
        setup = (f"{self.setup()} Both models on the same rows; {self.settings.objective.span_share:g} of them "
                 f"may lose only one span of {self.settings.objective.span_min}..{self.settings.objective.span_max} "
                 f"tokens. Sampling temperature {self.settings.sampler.temperature:g}; the ILM's window holds "
                 f"{self.settings.data.length - e.room} context tokens (room for a body of {e.room}), the MDLM's "
                 f"{self.settings.data.length} tokens including the body places.")
        return Report("ilm-code: infilling of unknown length", setup, (
            Table(fill, "Infilling a function body", "A body hidden in a window of the file, generated, spliced "
                  "back; the whole file must pass `ast.parse`. The ILM is not told the body's length."),
            Table(loss, "Held-out loss")))

    @torch.no_grad()
    def sample(self, run, objective: InsertionLM, n: int, out: Path) -> Path:
        """n chunks grown from nothing by insertions (up to `data.length` tokens), written as text."""
        g = torch.Generator().manual_seed(self.settings.train.seed)
        s = self.settings.sampler
        drawn = insert_generate(objective.model.eval(), torch.zeros(n, 0, dtype=torch.long),
                                max_length=self.settings.data.length, generator=g, stop_threshold=s.stop_threshold,
                                temperature=s.temperature)
        return self.write_chunks(run, drawn.rows(), out)


def training_rows(n: int, length: int, o: Objective, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt, padding), each Bool[n, length], drawn once from `seed`.

    padding: each row keeps a random window of o.min_length..length tokens (the ILM reads only
    that; the MDLM, told its length anyway, reads the whole chunk). Fixed-length rows would let the
    stop head read "nothing is missing" off the row's length alone.
    prompt: in about `o.span_share` of the rows everything but one span of o.span_min..o.span_max
    tokens inside the kept window (True = given); the other rows give nothing."""
    g = torch.Generator().manual_seed(seed)
    place = torch.arange(length)

    def pick(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:  # uniform integers in [lo, hi] per row
        return lo + (torch.rand(n, generator=g) * (hi - lo + 1)).long().clamp(max=hi - lo)

    size = pick(torch.full((n,), min(o.min_length, length)), torch.full((n,), length))
    first = pick(torch.zeros(n, dtype=torch.long), length - size)
    padding = (place < first[:, None]) | (place >= (first + size)[:, None])
    longest = size.clamp(max=o.span_max)
    span = pick(longest.clamp(max=o.span_min), longest)
    start = pick(first, first + size - span)
    inside = (place >= start[:, None]) & (place < (start + span)[:, None])
    chosen = torch.rand(n, generator=g) < o.span_share
    return chosen[:, None] & ~inside, padding


def fits(case: code_eval.InfillCase, length: int, room: int, scales) -> bool:
    """Whether the case's file fills every window the evaluation builds (ILM and each MDLM length)."""
    try:
        code_eval.window_of(case, length, room)
        for scale in scales:
            code_eval.window_of(case, length, code_eval.body_tokens(case, scale))
    except ValueError:
        return False
    return True


def correlation(a, b) -> float:
    """Pearson correlation of two equally long lists of numbers; NaN when either is constant."""
    x = torch.tensor([list(a), list(b)], dtype=torch.float64)
    return float(torch.corrcoef(x)[0, 1]) if len(a) > 1 else math.nan


@torch.no_grad()
def heldout(objective: InsertionLM, tokens: torch.Tensor, seed: int, batch: int = 32) -> dict:
    """The ILM's insertion loss (nats per deleted token) and stop accuracy on held-out chunks, one
    random deletion per chunk."""
    g = torch.Generator().manual_seed(seed)
    sums = {"insert_nats": 0.0, "stop_accuracy": 0.0}
    for x in tokens.split(batch):
        metrics = objective({"tokens": x}, g).metrics
        for k in sums:
            sums[k] += metrics[k].item() * len(x)
    return {f"heldout_{k}": v / max(len(tokens), 1) if len(tokens) else math.nan for k, v in sums.items()}
