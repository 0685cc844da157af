"""Recipe `openbeats`: BEATs' iterative audio pre-training (Chen et al. 2023, arXiv:2212.09058;
OpenBEATs, Bharadwaj et al. 2025, arXiv:2507.14129; `objectives/beats.py`) on synthetic spoken words
(`data/speech.py`: eSpeak NG, 35 words in 12 voices; not recorded speech). Three models, all with the
one Trainer:

    round1       masked patch prediction of a frozen random-projection tokenizer's labels (RUN/round1)
    tokenizer2   a tokenizer distilled from round1's last-layer features, cosine loss (RUN/tokenizer2)
    main         round 2: the same network, fresh weights, predicting tokenizer2's labels (RUN/)

round1 and round 2 train the same steps. Frozen features, mean-pooled over an utterance's valid
patches, are probed with logistic regression (`eval/probe.py`) for the word (35 classes) and the
voice (12), trained on the train split and scored on the held-out one (its word-voice pairs never
heard in training); the network at random initialisation ("scratch") and the mean log-mel frame are
the floors. The report also gives each tokenizer's code usage and perplexity on the training split.
The defaults (800 + 400 + 800 steps) took 1.7 to 3.2 minutes on one thread of a busy 2-core machine.

    unmask train openbeats --out runs/openbeats
    unmask train openbeats train.seed=1 --out runs/openbeats-1
    unmask sample runs/openbeats --n 10         # held-out words and their nearest training word
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..config import option, section
from ..data import speech
from ..nn.acoustic_labels import DistilledTokenizer, RandomProjectionTokenizer
from ..nn.quantizers import usage
from ..objectives.beats import BEATs, Distillation
from ..train import TrainConfig
from .base import Recipe, TransformerSettings
from .report import Metric, Report, Table
from .run import Run
from .w2v_bert import SPEECH_TRAIN, Eval, mean_frame, pooled, probe_tables, probes, write_nearest

MELS = 40


@dataclass(frozen=True)
class Model(TransformerSettings):
    codes: int = option(64, lo=2, help="codes of each tokenizer (the prediction vocabulary)")
    code_dim: int = option(16, lo=1, help="width of the tokenizers' codes")
    tokenizer_dim: int = option(64, lo=8, help="width of the distilled tokenizer's encoder")
    tokenizer_depth: int = option(2, lo=1, help="blocks of the distilled tokenizer's encoder")


@dataclass(frozen=True)
class Objective:
    ratio: float = option(0.75, lo=0.0, hi=1.0, lo_open=True, hi_open=True,
                          help="share of patches hidden (BEATs: 0.75)")


@dataclass(frozen=True)
class Data:
    frames: int = option(48, lo=8, hi=128, help="log-mel frames per utterance (2 frames a patch)")


@dataclass(frozen=True)
class Distill:
    steps: int = option(400, lo=1, help="steps of tokenizer2's distillation (otherwise as train)")


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(SPEECH_TRAIN,
                                 help="round 1's and round 2's training (the same)")
    model: Model = section(Model(dim=64, depth=4, heads=4))
    objective: Objective = section(Objective())
    data: Data = section(Data())
    eval: Eval = section(Eval())
    distill: Distill = section(Distill(), help="tokenizer2's training")


def code_usage(labels: torch.Tensor, codes: int) -> tuple[float, float]:
    """(perplexity, share of codes used) of labels Long[...] over `codes` codes."""
    _, perplexity, used = usage(labels.flatten(), codes)
    return float(perplexity), float(used)


class OpenBEATs(Recipe):
    name = "openbeats"
    papers = ("P28",)
    summary = ("BEATs/OpenBEATs on eSpeak words: masked patch prediction of random-projection labels, a tokenizer "
               "distilled from it, a second round on its labels; linear probes of word and voice")
    Settings = Settings
    sample_suffix = ".txt"
    roles = ("main", "round1", "tokenizer2")

    def frames(self, split: str) -> speech.SpeechFrames:
        return speech.frames(split, self.settings.data.frames)

    def model_config(self) -> Model:
        return self.settings.model

    def beats(self, tokenizer) -> BEATs:
        m = self.settings.model
        return BEATs(tokenizer, m.codes, MELS, m.dim, m.depth, m.heads, ratio=self.settings.objective.ratio,
                     max_patches=(self.settings.data.frames + 1) // 2)

    def distilled(self) -> DistilledTokenizer:
        m = self.settings.model
        return DistilledTokenizer(MELS, m.tokenizer_dim, m.tokenizer_depth, m.heads, m.codes, m.code_dim, m.dim,
                                  max_patches=(self.settings.data.frames + 1) // 2, seed=self.settings.train.seed)

    def build_role(self, role: str):
        m, seed = self.settings.model, self.settings.train.seed
        if role == "round1":
            return self.beats(RandomProjectionTokenizer(MELS, m.codes, m.code_dim, seed=seed))
        if role == "tokenizer2":
            return Distillation(self.distilled(), self.build_role("round1"))
        return super().build_role(role)

    def build(self) -> BEATs:
        return self.beats(self.distilled())

    def training_data(self, run: Run) -> dict:
        f = self.frames("train")
        return {"mel": f.mel, "lengths": f.lengths}

    def train(self, run: Run) -> dict:
        data = self.training_data(run)
        round1 = self.fit(run.sub("round1"), self.objective("round1"), data, role="round1")
        distill = self.objective("tokenizer2")
        distill.teacher.load_state_dict(round1.state_dict())
        distill = self.fit(run.sub("tokenizer2"), distill, data, role="tokenizer2",
                           train=replace(self.settings.train, steps=self.settings.distill.steps))
        round2 = self.objective()
        round2.tokenizer.load_state_dict(distill.tokenizer.state_dict())
        return self.evaluate(run, self.fit(run, round2, data))

    @torch.no_grad()
    def measure(self, run: Run, objective: BEATs) -> dict:
        train, test = self.frames("train"), self.frames("test")
        round1 = self.load(run.sub("round1"), "round1").eval()
        encoders = {"round2": objective.eval().features, "round1": round1.features,
                    "scratch": self.objective().eval().features}
        features = {name: tuple(pooled(f, s.mel, s.lengths) for s in (train, test)) for name, f in encoders.items()}
        features["mean_mel"] = tuple(mean_frame(s.mel, s.lengths) for s in (train, test))
        metrics = probes(features, train, test, self.settings.eval, self.settings.train.seed)
        codes = self.settings.model.codes
        for name, model in (("tokenizer1", round1), ("tokenizer2", objective)):
            valid = torch.arange((train.mel.shape[1] + 1) // 2) < ((train.lengths + 1) // 2).unsqueeze(1)
            labels = torch.cat([model.targets(m) for m in train.mel.split(256)])[valid]
            metrics[f"{name}_perplexity"], metrics[f"{name}_used"] = code_usage(labels, codes)
        metrics.update(train_utterances=len(train.words), test_utterances=len(test.words))
        return metrics

    def report(self, metrics: dict) -> Report:
        shots = self.settings.eval.shots
        names = (("round2", "round 2 (distilled tokenizer's labels)", "round1"),
                 ("round1", "round 1 (random-projection labels)", "scratch"),
                 ("scratch", "the same network at random init", None),
                 ("mean_mel", "mean log-mel frame (no network)", None))
        tables = [Table(rows, f"Linear probes of the {target} ({classes} classes)",
                        f"Accuracy on {metrics.get('test_utterances')} held-out utterances of mean-pooled "
                        "frozen features. Synthetic speech (eSpeak NG).")
                  for target, classes, rows in probe_tables(names, shots)]
        usage_rows = tuple(Metric(f"{t}_{k}", f"{t}: {what}", None, "")
                           for t in ("tokenizer1", "tokenizer2")
                           for k, what in (("perplexity", "label perplexity"), ("used", "share of codes used")))
        tables.append(Table(usage_rows, "Tokenizers' labels on the training split (valid patches)",
                            f"Out of {self.settings.model.codes} codes."))
        setup = (f"{self.setup()} Patches of 2 frames x 40 mels, {self.settings.objective.ratio:.0%} hidden, "
                 f"encoder on visible patches; tokenizer2 distilled for {self.settings.distill.steps} steps.")
        return Report("openbeats: two rounds of BEATs' acoustic tokenizers", setup, tuple(tables))

    def sample(self, run: Run, objective: BEATs, n: int, out: Path, prompt: str | None = None) -> Path:
        """`key<TAB>word<TAB>nearest training utterance's word<TAB>its voice` for n held-out utterances,
        nearest by cosine of the pooled round-2 features (BEATs is an encoder: nothing is generated)."""
        return write_nearest(objective.eval().features, self.frames("train"), self.frames("test"), n,
                             self.sample_path(out))
