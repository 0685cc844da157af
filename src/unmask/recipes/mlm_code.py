"""Recipe `mlm-code`: BERT's masked language model on standard-library code (Devlin et al. 2019,
arXiv:1810.04805): 15% of each chunk hidden (an exact count), 80/10/10 input corruption, logits only at
the hidden places (Long-VITA's masked head, Shen et al. 2025, arXiv:2502.05177, P55). The masker is a
setting, so one line swaps BERT's random tokens for whole identifiers, SpanBERT's geometric spans
(Joshi et al. 2020, arXiv:1907.10529), ERNIE-Gram's n-grams (Xiao et al. 2021, arXiv:2010.12148, P73)
or entity masking (Fernando & Ranathunga 2025, arXiv:2501.05700, P19); `model.emd=true` adds DeBERTa's
enhanced mask decoder (He et al. 2021, arXiv:2006.03654, P10). Samples are drawn with MaskGIT.

    unmask train mlm-code --out runs/mlm-code                  # train, then evaluate
    unmask train mlm-code objective.masker=entity --out runs/mlm-entity
    unmask eval runs/mlm-code
    unmask sample runs/mlm-code --n 8                           # runs/mlm-code/samples.txt

`model.arch=bert` trains BERT's own layout (post-norm, embedding LayerNorm, head transform, tied
decoder: `nn/bert.py`) in place of the pre-norm default; it leaves exactly as a Hugging Face
`BertForMaskedLM` and starts from one (docs/export.md):

    unmask train mlm-code model.arch=bert --out runs/mlm-bert
    unmask export runs/mlm-bert --to hf out/mlm-bert
    unmask train mlm-code model.arch=bert model.init=out/mlm-bert data.tokenizer=out/mlm-bert --out runs/more
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import option, section
from ..data.code import SPECIAL
from ..errors import UnmaskError
from ..eval import code as code_eval
from ..masking import BertCorruption, EntityMask, NGramMask, RandomMask, SpanMask, WholeWordMask
from ..nn import BertConfig, BertMaskedModel, EMDConfig, EMDMaskedTokenModel, MaskedTokenModel
from ..nn.hf_bert import load_bert_folder
from ..objectives import MaskedTokenModeling
from .base import SamplerSettings, TransformerSettings
from .code_base import PROBE_ROWS, CodeRecipe, CodeSettings
from .report import Metric, Report, Table

MASKERS = {"random": RandomMask, "whole-word": WholeWordMask, "span": SpanMask, "ngram": NGramMask,
           "entity": EntityMask}


@dataclass(frozen=True)
class Model(TransformerSettings):
    emd: bool = option(False, help="DeBERTa's enhanced mask decoder")
    emd_layers: int = option(2, lo=1, help="EMD passes of the shared last block")
    arch: str = option("prenorm", choices=("prenorm", "bert"),
                       help="prenorm: our Transformer; bert: BERT's layout, exported exactly as BertForMaskedLM")
    init: str = option("", help="a BertForMaskedLM folder (safetensors) to start from; needs model.arch=bert")


@dataclass(frozen=True)
class Objective:
    masker: str = option("random", choices=tuple(MASKERS), help="which tokens to hide")
    ratio: float = option(0.15, lo=0.0, hi=1.0, lo_open=True, help="share of tokens hidden")
    corruption: str = option("bert", choices=("bert", "mask"), help="80/10/10 or all mask tokens")


@dataclass(frozen=True)
class Settings(CodeSettings):
    model: Model = section(Model())
    objective: Objective = section(Objective())
    sampler: SamplerSettings = section(SamplerSettings("maskgit", 16, 1.0, 1.0))


class MlmCode(CodeRecipe):
    name = "mlm-code"
    papers = ("P10", "P19", "P55", "P73")
    summary = "BERT-style MLM on Python stdlib code; maskers: random, whole-word, span, n-gram, entity"
    Settings = Settings

    def check(self) -> None:
        m = self.settings.model
        if m.arch == "bert" and m.emd:
            raise UnmaskError("model.emd=true builds on the prenorm network; leave model.arch=prenorm")
        if m.init and m.arch != "bert":
            raise UnmaskError("model.init loads a BertForMaskedLM folder; set model.arch=bert")

    def model_config(self):
        base, m = super().model_config(), self.settings.model
        if m.arch == "bert":
            return BertConfig(base.vocab_size, base.layout, dim=m.dim, depth=m.depth, heads=m.heads)
        return EMDConfig(**base.__dict__, emd_layers=m.emd_layers) if m.emd else base

    def build(self) -> MaskedTokenModeling:
        o, mc, m = self.settings.objective, self.model_config(), self.settings.model
        model = BertMaskedModel(mc) if m.arch == "bert" else EMDMaskedTokenModel(mc) if m.emd else MaskedTokenModel(mc)
        corruption = (BertCorruption(random_range=(len(SPECIAL), self.settings.data.vocab_size))
                      if o.corruption == "bert" else None)
        return MaskedTokenModeling(model, MASKERS[o.masker](), ratio=o.ratio, corruption=corruption)

    def prepare(self, run, objective: MaskedTokenModeling, data: dict) -> None:
        """`model.init`: BERT's weights before the first step, unless the run resumes a checkpoint."""
        super().prepare(run, objective, data)
        init = self.settings.model.init
        if init and run.trained_step() is None:
            self.check_tokenizer(run, Path(init))
            load_bert_folder(objective.model, init)

    def check_tokenizer(self, run, folder: Path) -> None:
        """A folder's tokenizer.json, if it has one, must give its data ids 0..V-1 the run's tokens."""
        if not (folder / "tokenizer.json").is_file():
            return
        from tokenizers import Tokenizer

        ours = self.tokenizer(run).tokenizer.get_vocab()
        theirs = {t: i for t, i in Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab().items()
                  if i < len(ours)}
        if theirs != ours:
            raise UnmaskError(f"model.init={folder}: its tokenizer gives other tokens the ids 0..{len(ours) - 1} "
                              f"than this run's; pass data.tokenizer={folder}")

    def measure(self, run, objective: MaskedTokenModeling) -> dict:
        corpus, seed = self.corpus(run), self.settings.train.seed
        model, held = objective.model, self.held_out(corpus)
        metrics = {"heldout_accuracy": code_eval.hidden_accuracy(model, held, RandomMask(), 0.15, seed)}
        if self.settings.objective.masker != "random":
            metrics["heldout_accuracy_own_masker"] = code_eval.hidden_accuracy(model, held, objective.masker,
                                                                               self.settings.objective.ratio, seed)
        return metrics | self.probe(model.features, corpus)

    def report(self, metrics: dict) -> Report:
        o = self.settings.objective
        rows = (Metric("heldout_accuracy", "held-out accuracy at hidden tokens (15% random, argmax)", better="higher"),
                Metric("heldout_accuracy_own_masker", f"held-out accuracy at the `{o.masker}` masker's tokens",
                       better="higher"),
                *PROBE_ROWS)
        setup = (f"{self.setup()} Masker `{o.masker}`, ratio {o.ratio}, corruption `{o.corruption}`, "
                 f"EMD {self.settings.model.emd}, network `{self.settings.model.arch}`.")
        return Report("mlm-code: masked language model on Python code", setup, (Table(rows),))
