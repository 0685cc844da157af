"""Recipe `ask2mask`: Ask2Mask (Baskar et al. 2022, arXiv:2202.12719; `masking/ask2mask.py`) for
w2v-BERT pretraining (`objectives/w2v_bert.py`) on synthetic spoken words (`data/speech.py`, eSpeak NG;
not recorded speech), against random masking at equal steps.

The paper's setting is a domain mismatch: the scorer, a speech recogniser, knows the target domain,
and pretraining data is broader. Here the domain is a few voices:

    scorer   a frame-level word classifier (a stand-in for the paper's ASR scorer) trained on the
             labelled training utterances of the first `ask2mask.scorer_voices` voices only
             (RUN/scorer); its confidence in a frame is its largest word posterior there. Its
             receptive field is 11 mel frames (0.13 s), so confidence varies along an utterance.
    main     w2v-BERT on the training utterances of ALL voices, Ask2Mask masking (frames drawn with
             probability proportional to the scorer's confidence) and each utterance's loss weighted
             by its mean confidence (normalised over the batch)
    random   the same objective, masker and steps with every valid frame equally likely and no
             weights (uniform confidences): random frame masking (RUN/random)

Both pretrained encoders and the same network at random initialisation are probed (`w2v_bert.probes`:
logistic regression on mean-pooled frozen features; all labels and 3 per class) for the word on the
held-out split, and on its utterances in the scorer's voices and in the other voices, and for the
voice. Both pretraining runs hide single frames at the same count, so only the choice of frames and
the weights differ. The defaults (300 + 2 x 800 steps) took 1.7 to 2.4 minutes on one thread of a busy
2-core machine.

    unmask train ask2mask --out runs/ask2mask
    unmask train ask2mask train.seed=1 --out runs/ask2mask-1
    unmask sample runs/ask2mask --n 8      # held-out words: the scorer's confidence per frame and the mask drawn
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import option, section
from ..data import speech
from ..errors import UnmaskError
from ..layout import Layout
from ..masking.ask2mask import Ask2Mask
from ..nn.transformer import init_weights
from ..objectives.base import ObjectiveOutput
from ..objectives.mae import masked_mean
from ..objectives.w2v_bert import MODES, FeatureEncoder, W2VBert, latent_lengths
from ..train import TrainConfig
from .base import Recipe
from .report import Metric, Report, Table
from .run import Run
from .w2v_bert import SPEECH_TRAIN, Data, Eval, Model, Objective, pooled, probes, speech_encoder

SCORER, RANDOM = "scorer", "random"


class FrameScorer(nn.Module):
    """A frame-level word classifier: mel Float[B, T, mels] -> word logits Float[B, ceil(T / 2), words],
    one per latent frame of the w2v-BERT encoder (the same stride-2 convolutions, then one more of
    kernel 3, so each frame sees 11 mel frames). Trained with every valid frame labelled by its
    utterance's word: batch {"mel", "lengths", "words"} -> ObjectiveOutput."""

    def __init__(self, mels: int, width: int, words: int):
        super().__init__()
        self.encoder = FeatureEncoder(mels, width)
        self.conv = nn.Conv1d(width, width, 3, padding=1)
        self.head = nn.Linear(width, words)
        init_weights(self)

    def logits(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.encoder(mel)
        return self.head(F.gelu(self.conv(x.transpose(1, 2))).transpose(1, 2) + x)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        device = self.head.weight.device
        logits = self.logits(batch["mel"].to(device, non_blocking=True)).float()  # [B, T', words]
        valid = valid_frames(batch["lengths"], logits.shape[1]).to(device, non_blocking=True)
        words = batch["words"].to(device, non_blocking=True).unsqueeze(1).expand(-1, logits.shape[1])
        loss = masked_mean(F.cross_entropy(logits.transpose(1, 2), words, reduction="none"), valid)
        acc = masked_mean((logits.argmax(-1) == words).float(), valid)
        return ObjectiveOutput(loss, {"loss": loss.detach(), "frame_acc": acc.detach()})

    @torch.no_grad()
    def confidence(self, mel: torch.Tensor, lengths: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Float[M, T']: the largest word posterior of each latent frame; 0 after each utterance's end."""
        out = []
        for m, n in zip(mel.split(batch), lengths.split(batch), strict=True):
            probs = self.logits(m.to(self.head.weight.device)).float().softmax(-1).cpu()
            out.append(probs.amax(-1) * valid_frames(n, probs.shape[1]))
        return torch.cat(out)

    @torch.no_grad()
    def predict(self, mel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Long[M]: the word of highest mean log-posterior over each utterance's valid frames."""
        logp = self.logits(mel.to(self.head.weight.device)).float().log_softmax(-1).cpu()
        valid = valid_frames(lengths, logp.shape[1]).unsqueeze(-1)
        return (logp * valid).sum(1).argmax(-1)


def valid_frames(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """Float[B, T']: 1 at the valid latent frames of rows with `lengths` valid mel frames, else 0."""
    return (torch.arange(frames) < latent_lengths(lengths.cpu()).unsqueeze(1)).float()


@dataclass(frozen=True)
class AskObjective(Objective):
    mode: str = option("w2v-bert", choices=MODES, help="the pretraining objective of both runs")


@dataclass(frozen=True)
class Ask:
    scorer_voices: int = option(3, lo=1, hi=len(speech.VOICES) - 1,
                                help="the scorer is trained on the first N voices (its domain)")
    scorer_steps: int = option(300, lo=1, help="optimizer steps of the scorer")
    scorer_width: int = option(32, lo=4, help="channels of the scorer")
    temperature: float = option(1.0, lo=0.0, help="frame choice ~ confidence^(1/t); 0: the most confident frames")
    weighted: bool = option(True, help="weight each utterance's loss by its mean confidence")


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(SPEECH_TRAIN,
                                 help="each pretraining run (Ask2Mask and random); the scorer takes its other settings")
    model: Model = section(Model(dim=64, depth=4, heads=4))
    objective: AskObjective = section(AskObjective())
    ask2mask: Ask = section(Ask(), help="the scorer and how its confidences are used")
    data: Data = section(Data())
    eval: Eval = section(Eval())


class Ask2MaskRecipe(Recipe):
    name = "ask2mask"
    papers = ("P75",)
    summary = ("Ask2Mask on eSpeak words: a scorer trained on a few voices picks which frames w2v-BERT hides and "
               "weights each utterance; against random masking, probes of word on the scorer's and other voices")
    Settings = Settings
    sample_suffix = ".txt"
    roles = ("main", SCORER, RANDOM)

    def check(self) -> None:
        m = self.settings.model
        if self.settings.objective.mode == "w2v-bert" and not m.contrast_depth < m.depth:
            raise UnmaskError(f"model.contrast_depth={m.contrast_depth} must be below model.depth={m.depth}")

    def frames(self, split: str) -> speech.SpeechFrames:
        return speech.frames(split, self.settings.data.frames)

    def model_config(self) -> Model:
        return self.settings.model

    def build_role(self, role: str) -> nn.Module:
        s = self.settings
        if role == SCORER:
            return FrameScorer(40, s.ask2mask.scorer_width, len(speech.WORDS))
        if role not in ("main", RANDOM):
            return super().build_role(role)
        masker = Ask2Mask(temperature=s.ask2mask.temperature)
        return speech_encoder(s.model, s.objective, s.objective.mode, masker=masker,
                              weighted=role == "main" and s.ask2mask.weighted, seed=s.train.seed)

    def build(self) -> W2VBert:
        return self.build_role("main")

    def seen(self, voices: torch.Tensor) -> torch.Tensor:
        """Bool[M]: utterances in the scorer's voices."""
        return voices < self.settings.ask2mask.scorer_voices

    def train_scorer(self, run: Run) -> FrameScorer:
        """The scorer, trained on the labelled training utterances of its voices (or resumed, or loaded)."""
        f = self.frames("train")
        keep = self.seen(f.voices)
        train = dataclasses.replace(self.settings.train, steps=self.settings.ask2mask.scorer_steps)
        data = {"mel": f.mel[keep], "lengths": f.lengths[keep], "words": f.words[keep]}
        return self.fit(run.sub(SCORER), self.objective(SCORER), data, role=SCORER, train=train).eval()

    def training_data(self, run: Run) -> dict:
        """All training utterances with the scorer's frame confidences (the scorer is trained first)."""
        f = self.frames("train")
        return {"mel": f.mel, "lengths": f.lengths, "confidence": self.train_scorer(run).confidence(f.mel, f.lengths)}

    def train(self, run: Run) -> dict:
        data = self.training_data(run)
        main = self.fit(run, self.objective(), data)
        uniform = {**data, "confidence": (data["confidence"] > 0).float()}  # every valid frame alike
        self.fit(run.sub(RANDOM), self.objective(RANDOM), uniform, role=RANDOM)
        return self.evaluate(run, main)

    @torch.no_grad()
    def measure(self, run: Run, objective: W2VBert) -> dict:
        train, test = self.frames("train"), self.frames("test")
        scorer = self.load(run.sub(SCORER), SCORER)
        encoders = {"ask2mask": objective.eval().features}
        if run.sub(RANDOM).trained_step() is not None:
            encoders["random"] = self.load(run.sub(RANDOM), RANDOM).features
        encoders["random_init"] = self.objective().eval().features
        seen = self.seen(test.voices)
        features = {}
        for name, encode in encoders.items():
            tr, te = pooled(encode, train.mel, train.lengths), pooled(encode, test.mel, test.lengths)
            features[name] = (tr, te)
        metrics = probes(features, train, test, self.settings.eval, self.settings.train.seed)
        for part, rows in (("seen", seen), ("unseen", ~seen)):
            subset = speech.SpeechFrames(*(x[rows] for x in test))
            scores = probes({f"{name}_{part}": (tr, te[rows]) for name, (tr, te) in features.items()}, train, subset,
                            self.settings.eval, self.settings.train.seed)
            metrics.update({k: v for k, v in scores.items() if k.startswith("word_")})
            metrics[f"scorer_acc_{part}"] = float((scorer.predict(subset.mel, subset.lengths) == subset.words)
                                                  .double().mean())
        confidence = scorer.confidence(train.mel, train.lengths).sum(1) / latent_lengths(train.lengths)
        for part, rows in (("seen", self.seen(train.voices)), ("unseen", ~self.seen(train.voices))):
            metrics[f"confidence_{part}"] = float(confidence[rows].mean())
        metrics.update(test_seen=int(seen.sum()), test_unseen=int((~seen).sum()), train_utterances=len(train.words))
        return metrics

    def report(self, metrics: dict) -> Report:
        a, e = self.settings.ask2mask, self.settings.eval
        names = (("ask2mask", "Ask2Mask", "random"), ("random", "random masking", None),
                 ("random_init", "random init (no pretraining)", None))
        probe_rows = []
        for part, where in (("", "all held-out"), ("_seen", "held-out, scorer's voices"),
                            ("_unseen", "held-out, other voices")):
            probe_rows += [Metric(f"word_{key}{part}", f"word, {where}: {label}",
                                  f"word_{base}{part}" if base else None, "higher" if base else "")
                           for key, label, base in names]
        probe_rows += [Metric(f"word_{key}_few", f"word, all held-out, {e.shots} labels per class: {label}",
                              f"word_{base}_few" if base else None, "higher" if base else "", f"word_{key}_few_std")
                       for key, label, base in names]
        probe_rows += [Metric(f"voice_{key}", f"voice, all held-out: {label}") for key, label, _ in names]
        scorer_rows = (Metric("scorer_acc_seen", "scorer's word accuracy, held-out, its voices"),
                       Metric("scorer_acc_unseen", "scorer's word accuracy, held-out, other voices"),
                       Metric("confidence_seen", "mean frame confidence, training utterances of its voices"),
                       Metric("confidence_unseen", "mean frame confidence, training utterances of other voices"))
        text = (f"Linear probes (all training labels, or {e.shots} per class over {e.draws} draws) of mean-pooled "
                f"frozen features; held-out split: {metrics.get('test_seen')} utterances in the scorer's "
                f"{a.scorer_voices} voices, {metrics.get('test_unseen')} in the others. Synthetic speech (eSpeak NG).")
        o = self.settings.objective
        setup = (f"{self.setup()} Objective {o.mode}; {o.ratio:.0%} of latent frames hidden, single frames; scorer "
                 f"{a.scorer_steps} steps on the first {a.scorer_voices} voices; frame choice ~ confidence^(1/"
                 f"{a.temperature}); utterance weights {'on' if a.weighted else 'off'}. Both runs train the same "
                 "steps.")
        return Report("ask2mask: scorer-guided masking against random masking", setup,
                      (Table(tuple(probe_rows), "Linear probes", text),
                       Table(scorer_rows, "The scorer", "How well the scorer knows its own voices and the others.")))

    def sample(self, run: Run, objective: W2VBert, n: int, out: Path) -> Path:
        """For n held-out utterances: key, word, the scorer's confidence per latent frame as a digit
        (0..9, tenths) and the frames Ask2Mask hides ('#') in one draw (seeded by train.seed)."""
        test = self.frames("test")
        keys = speech.load("test").keys
        confidence = self.load(run.sub(SCORER), SCORER).confidence(test.mel[:n], test.lengths[:n])
        lengths = latent_lengths(test.lengths[:n])
        mask = objective.masker(Layout.seq(confidence.shape[1]), len(confidence), ratio=objective.ratio,
                                generator=torch.Generator().manual_seed(self.settings.train.seed),
                                scores=confidence, lengths=lengths)
        lines = []
        for i in range(len(confidence)):
            valid = int(lengths[i])
            digits = "".join(str(min(9, int(c * 10))) for c in confidence[i, :valid].tolist())
            hidden = "".join("#" if h else "." for h in mask[i, :valid].tolist())
            lines.append(f"{keys[i]}\t{speech.WORDS[test.words[i]]}\t{digits}\t{hidden}\n")
        out = self.sample_path(out)
        out.write_text("".join(lines))
        return out
