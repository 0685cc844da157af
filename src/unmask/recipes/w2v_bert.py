"""Recipe `w2v-bert`: w2v-BERT (Chung et al. 2021, arXiv:2108.06209; `objectives/w2v_bert.py`) on
synthetic spoken words (`data/speech.py`: eSpeak NG says 35 words in 12 voices; not recorded
speech), against its two halves at equal steps and size:

    main          w2v-BERT: contrastive loss over VQ targets in the lower blocks + MLM of the VQ ids
                  in the upper blocks
    contrastive   the contrastive loss alone, on the final blocks (wav2vec 2.0, arXiv:2006.11477; RUN/contrastive)
    mlm           masked prediction alone, of BEST-RQ's frozen random-projection codes
                  (arXiv:2202.01855), since nothing else would train its quantizer (RUN/mlm)

Each model's frozen final features, mean-pooled over an utterance's valid frames, are probed with
logistic regression (`eval/probe.py`) for the word (35 classes) and for the voice (12 classes),
trained on the train split and scored on the held-out split, whose (word, voice) pairs were never
heard in training. The same network at random initialisation and the mean log-mel frame are the
floors. The defaults (3 x 800 steps) took 1.5 to 3.5 minutes on one thread of a busy 2-core machine.

    unmask train w2v-bert --out runs/w2v-bert
    unmask train w2v-bert train.seed=1 --out runs/w2v-bert-1
    unmask sample runs/w2v-bert --n 10          # held-out words and their nearest training word
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option, section
from ..data import speech
from ..errors import UnmaskError
from ..eval.probe import probe
from ..objectives.w2v_bert import W2VBert, latent_lengths
from ..train import TrainConfig
from .base import Recipe, TransformerSettings
from .report import Metric, Report, Table
from .run import Run

BASELINES = ("contrastive", "mlm")  # roles, each the objective in that mode


@dataclass(frozen=True)
class Model(TransformerSettings):
    contrast_depth: int = option(2, lo=1, help="blocks of w2v-BERT's contrastive module (the rest: MLM module)")
    codes: int = option(64, lo=2, help="quantizer codes (the MLM vocabulary)")
    code_dim: int = option(16, lo=1, help="width of the quantizer's codes")


@dataclass(frozen=True)
class Objective:
    ratio: float = option(0.5, lo=0.0, hi=1.0, lo_open=True, help="share of each utterance's latent frames hidden")
    span: int = option(4, lo=1, help="frames per masked span (wav2vec 2.0: 10 at 50 Hz)")
    distractors: int = option(10, lo=1, help="contrastive distractors per masked frame")
    temperature: float = option(0.1, lo=0.0, lo_open=True, help="contrastive temperature")
    contrastive_weight: float = option(1.0, lo=0.0, help="weight of the contrastive loss")
    mlm_weight: float = option(1.0, lo=0.0, help="weight of the MLM loss")


@dataclass(frozen=True)
class Data:
    frames: int = option(48, lo=8, help="log-mel frames per utterance (hop 256 at 22,050 Hz: 48 = 0.56 s)")


@dataclass(frozen=True)
class Eval:
    # with every label the word probe of even the mean log-mel frame is near its ceiling: few labels separate more
    shots: int = option(3, lo=1, help="labelled utterances per class of the few-shot probes")
    draws: int = option(5, lo=1, help="draws of the few-shot probes (mean and std)")


# the pretraining budget of the word-speech recipes (w2v-bert, ask2mask, openbeats): one budget, comparable figures
SPEECH_TRAIN = TrainConfig(steps=800, batch_size=32, lr=2e-3, warmup=40, log_every=100)


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(SPEECH_TRAIN,
                                 help="each model's training (all three take the same)")
    model: Model = section(Model(dim=64, depth=4, heads=4))
    objective: Objective = section(Objective())
    data: Data = section(Data())
    eval: Eval = section(Eval())


def speech_encoder(model: Model, objective: Objective, mode: str, **extra) -> W2VBert:
    """The w2v-BERT objective of these settings in `mode` (also used by the `ask2mask` recipe)."""
    o = objective
    return W2VBert(40, model.dim, model.depth, model.heads, contrast_depth=model.contrast_depth, codes=model.codes,
                   code_dim=model.code_dim, mode=mode, ratio=o.ratio, span=o.span, distractors=o.distractors,
                   temperature=o.temperature, contrastive_weight=o.contrastive_weight, mlm_weight=o.mlm_weight,
                   **extra)


@torch.no_grad()
def pooled(encode, mel: torch.Tensor, lengths: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Float[M, D]: encode(mel chunk) -> Float[b, T', D], averaged over each utterance's valid latent
    frames (padding is silence, and utterances differ in length)."""
    out = []
    for m, n in zip(mel.split(batch), lengths.split(batch), strict=True):
        x = encode(m).float()
        valid = (torch.arange(x.shape[1]) < latent_lengths(n).unsqueeze(1)).to(x.device, x.dtype).unsqueeze(-1)
        out.append(((x * valid).sum(1) / valid.sum(1).clamp_min(1)).cpu())
    return torch.cat(out)


def mean_frame(mel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Float[M, mels]: the mean log-mel frame of each utterance's valid frames (the floor that reads no network)."""
    valid = (torch.arange(mel.shape[1]) < lengths.unsqueeze(1)).to(mel.dtype).unsqueeze(-1)
    return (mel * valid).sum(1) / valid.sum(1).clamp_min(1)


def probes(features: dict[str, torch.Tensor], train: speech.SpeechFrames, test: speech.SpeechFrames,
           settings: Eval, seed: int = 0) -> dict:
    """For each name's (train, test) features and each target (word, voice): the linear probe with all
    training labels (`{target}_{name}`), with `settings.shots` labelled utterances per class (`..._few`,
    mean and `..._few_std` over `settings.draws` draws), and DINO's kNN vote (`..._knn`): `eval/probe.py`."""
    out = {}
    for name, (tr, te) in features.items():
        for target in ("word", "voice"):
            scores = probe(tr, getattr(train, f"{target}s"), te, getattr(test, f"{target}s"), shots=settings.shots,
                           draws=settings.draws, seed=seed)
            out[f"{target}_{name}"] = scores.linear
            out[f"{target}_{name}_few"], out[f"{target}_{name}_few_std"] = scores.linear_few, scores.linear_few_std
            out[f"{target}_{name}_knn"] = scores.knn
    return out


def probe_tables(names, shots: int) -> list[tuple[str, int, tuple[Metric, ...]]]:
    """The rows of `probes`' tables: for the word and the voice, (target, classes, rows), a row per
    (key, label, baseline key or None) of `names` with all labels, then again with `shots` per class."""
    tables = []
    for target, classes in (("word", len(speech.WORDS)), ("voice", len(speech.VOICES))):
        rows = []
        for suffix, how in (("", "all labels"), ("_few", f"{shots} labels per class")):
            rows += [Metric(f"{target}_{key}{suffix}", f"{label}, {how}",
                            None if base is None else f"{target}_{base}{suffix}", "higher" if base else "",
                            f"{target}_{key}_few_std" if suffix else None)
                     for key, label, base in names]
        tables.append((target, classes, tuple(rows)))
    return tables


@torch.no_grad()
def write_nearest(features, train: speech.SpeechFrames, test: speech.SpeechFrames, n: int, out: Path) -> Path:
    """`key<TAB>word<TAB>nearest training utterance's word<TAB>its voice` for the first n held-out
    utterances, nearest by cosine of `pooled(features, ...)`."""
    keys = speech.load("test").keys
    tr = torch.nn.functional.normalize(pooled(features, train.mel, train.lengths), dim=1)
    te = torch.nn.functional.normalize(pooled(features, test.mel[:n], test.lengths[:n]), dim=1)
    nearest = (te @ tr.T).argmax(1).tolist()
    out.write_text("".join(f"{keys[i]}\t{speech.WORDS[test.words[i]]}\t{speech.WORDS[train.words[j]]}\t"
                           f"{speech.VOICES[train.voices[j]]}\n" for i, j in enumerate(nearest)))
    return out


class W2VBertRecipe(Recipe):
    name = "w2v-bert"
    papers = ("P71",)
    summary = ("w2v-BERT on eSpeak words: contrastive + MLM in one model against contrastive-only and "
               "MLM-only (BEST-RQ targets); linear probes of word and voice")
    Settings = Settings
    sample_suffix = ".txt"
    roles = ("main", *BASELINES)

    def check(self) -> None:
        m = self.settings.model
        if not m.contrast_depth < m.depth:
            raise UnmaskError(f"model.contrast_depth={m.contrast_depth} must be below model.depth={m.depth}")

    def frames(self, split: str) -> speech.SpeechFrames:
        return speech.frames(split, self.settings.data.frames)

    def model_config(self) -> Model:
        return self.settings.model

    def build_role(self, role: str) -> W2VBert:
        if role not in BASELINES:
            return super().build_role(role)
        return speech_encoder(self.settings.model, self.settings.objective, role, seed=self.settings.train.seed)

    def build(self) -> W2VBert:
        return speech_encoder(self.settings.model, self.settings.objective, "w2v-bert", seed=self.settings.train.seed)

    def training_data(self, run: Run) -> dict:
        f = self.frames("train")
        return {"mel": f.mel, "lengths": f.lengths}

    def train(self, run: Run) -> dict:
        data = self.training_data(run)
        main = self.fit(run, self.objective(), data)
        for role in BASELINES:
            self.fit(run.sub(role), self.objective(role), data, role=role)
        return self.evaluate(run, main)

    def encoders(self, run: Run, main: W2VBert) -> dict:
        """{name: features callable} of every trained model and the floors."""
        out = {"w2v_bert": main.eval().features}
        for role in BASELINES:
            if run.sub(role).trained_step() is not None:
                out[role] = self.load(run.sub(role), role).features
        out["random_init"] = self.objective().eval().features
        return out

    @torch.no_grad()
    def measure(self, run: Run, objective: W2VBert) -> dict:
        train, test = self.frames("train"), self.frames("test")
        features = {name: tuple(pooled(f, s.mel, s.lengths) for s in (train, test))
                    for name, f in self.encoders(run, objective).items()}
        features["mean_mel"] = tuple(mean_frame(s.mel, s.lengths) for s in (train, test))
        metrics = probes(features, train, test, self.settings.eval, self.settings.train.seed)
        metrics.update(train_utterances=len(train.words), test_utterances=len(test.words),
                       words=len(speech.WORDS), voices=len(speech.VOICES))
        return metrics

    def report(self, metrics: dict) -> Report:
        shots, draws = self.settings.eval.shots, self.settings.eval.draws
        names = (("w2v_bert", "w2v-BERT", "contrastive"), ("contrastive", "contrastive only (wav2vec 2.0)", None),
                 ("mlm", "MLM only (BEST-RQ targets)", "random_init"),
                 ("random_init", "the same network at random init", None),
                 ("mean_mel", "mean log-mel frame (no network)", None))
        tables = probe_tables(names, shots)
        o, m = self.settings.objective, self.settings.model
        text = (f"Linear-probe accuracy of mean-pooled frozen features on {metrics.get('test_utterances')} held-out "
                f"utterances (word, voice pairs never heard in training), probes fit on all "
                f"{metrics.get('train_utterances')} training utterances or on {shots} per class (mean +- std over "
                f"{draws} draws). Synthetic speech (eSpeak NG).")
        setup = (f"{self.setup()} Contrastive module {m.contrast_depth} of {m.depth} blocks; {m.codes} codes; "
                 f"{o.ratio:.0%} of latent frames hidden in spans of {o.span}; {o.distractors} distractors at "
                 f"temperature {o.temperature}. Each model trains the same steps.")
        return Report("w2v-bert: contrastive + MLM against each alone", setup,
                      tuple(Table(rows, f"Linear probes of the {target} ({classes} classes)", text)
                            for target, classes, rows in tables))

    def sample(self, run: Run, objective: W2VBert, n: int, out: Path) -> Path:
        """`key<TAB>word<TAB>nearest training utterance's word<TAB>its voice` for n held-out utterances,
        nearest by cosine of the pooled w2v-BERT features."""
        return write_nearest(objective.eval().features, self.frames("train"), self.frames("test"), n,
                             self.sample_path(out))
