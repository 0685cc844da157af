"""Recipe `audio-magnet`: MAGNeT (Ziv et al. 2024, "Masked Audio Generation using a Single
Non-Autoregressive Transformer", arXiv:2401.04577, P2) against MaskGIT (Chang et al. 2022,
arXiv:2202.04200) on acoustic token streams, at equal denoiser calls, judged in the features of a
speech classifier.

Data: the synthetic eSpeak NG words of `data/speech.py` (35 words x 12 voices), 48 log-mel frames each,
become `acoustic.stages` streams of residual-VQ codes of an `AcousticTokenizer` trained first in
`RUN/acoustic` (`recipes/audio_tokens.py`; 3 streams x 24 tokens by default). Each generator reads the
word as a one-token prefix segment "label" (always given, as `recipes/glyph_generators.py` does with
classes), and both are trained for the same steps, batch and width:

- `magnet` (the main role): `masking.MagnetMask` (a stage per row, the streams before it given, after it
  hidden, the stage stream hidden in spans of `magnet.span_len` at a cosine rate) with
  `objectives.MagnetTokenModeling` (loss on the stage stream only), decoded stream by stream by
  `sampling.MagnetSampler` with `sampler.magnet_steps` calls per stream (MAGNeT's annealed temperature
  and top-p 0.9; no classifier-free guidance);
- `maskgit` (in `RUN/maskgit`): random masks over all streams with a cosine ratio, decoded by
  `MaskGITSampler` in `sampler.nfe` calls.

Measured per generator: Fréchet distance (Heusel et al. 2017, arXiv:1706.08500) and improved precision
and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991, k = 3) of the generated log-mels (tokens ->
tokenizer decode) against the held-out real test utterances, in the features of `eval/speech_judge.py`;
the judge's word accuracy on the samples (does a sample say the word it was asked for); NFE. References:
the real train utterances and the held-out utterances through the tokenizer (the floor a generator of
these tokens can reach).

    unmask train audio-magnet --out runs/audio-magnet
    unmask train audio-magnet train.seed=1 --out runs/audio-magnet-1
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import int_list, option, section
from ..data import audio, image_sets, speech
from ..errors import UnmaskError
from ..eval.quality import frechet_distance, precision_recall
from ..eval.speech_judge import JUDGE_STEPS, train_speech_judge
from ..layout import Layout
from ..masking import MagnetMask, RandomMask
from ..nn import MaskedTokenModel, ModelConfig
from ..nn.audio_tokenizer import AcousticTokenizer
from ..objectives import MagnetTokenModeling, MaskedTokenModeling
from ..sampling import MaskGITSampler, generate
from ..sampling.magnet import MagnetSampler
from ..schedules import Schedule
from ..train import TrainConfig
from .audio_tokens import (
    AcousticTokenizerSettings,
    load_acoustic_tokenizer,
    stored_acoustic_tokens,
    train_acoustic_tokenizer,
)
from .base import Recipe, TransformerSettings
from .report import Metric, Report, Table
from .run import Run

GENERATORS = ("magnet", "maskgit")
ROLE_OF = {"magnet": "main", "maskgit": "maskgit"}
TITLES = {"magnet": "MAGNeT (spans, stream by stream)", "maskgit": "MaskGIT (random, all streams)"}
QUALITY_K = 3


@dataclass(frozen=True)
class Sampling:
    nfe: int = option(12, lo=2, help="denoiser calls per sample, the same for both generators")
    magnet_steps: str = option("6,3,3", help="MAGNeT: calls per stream, comma-separated (they must add up to nfe)")
    span_len: int = option(3, lo=1, help="MAGNeT: tokens per span in decoding")
    temperature: float = option(1.0, lo=0.0, help="sampling temperature (MAGNeT anneals it to 0 in each stream)")
    top_p: float = option(0.9, lo=0.0, lo_open=True, hi=1.0, help="MAGNeT: nucleus of each draw")
    choice_temperature: float = option(1.0, lo=0.0, help="MaskGIT choice noise")

    def steps_tuple(self) -> tuple[int, ...]:
        return int_list("sampler.magnet_steps", self.magnet_steps, lo=1)


@dataclass(frozen=True)
class Magnet:
    span_len: int = option(3, lo=1, help="MAGNeT training: tokens per span (the paper: 3, 60 ms)")


@dataclass(frozen=True)
class Eval:
    samples_per_word: int = option(6, lo=1, help="word-conditioned samples per word and generator")
    judge_steps: int = option(JUDGE_STEPS, lo=1, help="training steps of the judge (eval/speech_judge.py)")
    judge_seed: int = option(0, lo=0, help="seed of the judge, fixed across training seeds")


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=1200, batch_size=32, lr=2e-3, warmup=100, log_every=100))
    model: TransformerSettings = section(TransformerSettings(dim=64, depth=3, heads=4))
    acoustic: AcousticTokenizerSettings = section(AcousticTokenizerSettings(steps=1500))
    magnet: Magnet = section(Magnet())
    sampler: Sampling = section(Sampling())
    eval: Eval = section(Eval())


class AudioMagnet(Recipe):
    name = "audio-magnet"
    papers = ("MAGNeT", "MaskGIT")
    summary = ("word-conditioned acoustic token streams: MAGNeT's span masks and stream-by-stream decoding "
               "against MaskGIT at equal NFE, judged by a speech CNN's features")
    Settings = Settings
    sample_suffix = ".wav"
    roles = ("main", "maskgit")

    def check(self) -> None:
        s = self.settings
        steps = s.sampler.steps_tuple()
        if len(steps) != s.acoustic.stages:
            raise UnmaskError(f"sampler.magnet_steps={s.sampler.magnet_steps!r} gives {len(steps)} streams, "
                              f"but acoustic.stages={s.acoustic.stages}")
        if sum(steps) != s.sampler.nfe:
            raise UnmaskError(f"sampler.magnet_steps={s.sampler.magnet_steps!r} adds up to {sum(steps)}, "
                              f"not sampler.nfe={s.sampler.nfe}")
        s.acoustic.config()  # frames a multiple of down
        length = s.acoustic.frames // s.acoustic.down
        for key, value in (("magnet.span_len", s.magnet.span_len), ("sampler.span_len", s.sampler.span_len)):
            if value > length:
                raise UnmaskError(f"{key}={value} is longer than a stream ({length} tokens)")

    # sizes ------------------------------------------------------------------------------------------
    def codes(self) -> int:
        return self.settings.acoustic.codes

    def length(self) -> int:
        return self.settings.acoustic.frames // self.settings.acoustic.down

    def layout(self) -> Layout:
        return Layout.seq(1, "label") + Layout.streams(self.settings.acoustic.stages, self.length())

    def model_config(self) -> ModelConfig:
        m, codes = self.settings.model, self.codes()
        return ModelConfig(codes + len(speech.WORDS), self.layout(), dim=m.dim, depth=m.depth, heads=m.heads,
                           segment_vocab={"label": (codes, codes + len(speech.WORDS)), "streams": (0, codes)})

    # objectives -------------------------------------------------------------------------------------
    def build(self) -> MagnetTokenModeling:
        return MagnetTokenModeling(MaskedTokenModel(self.model_config()), MagnetMask("streams",
                                                                                   self.settings.magnet.span_len))

    def build_role(self, role: str) -> nn.Module:
        if role == "maskgit":
            return MaskedTokenModeling(MaskedTokenModel(self.model_config()), RandomMask(("streams",)),
                                       Schedule("cosine"))
        return super().build_role(role)

    # data -------------------------------------------------------------------------------------------
    def tokens(self, run: Run, split: str) -> torch.Tensor:
        """Long[M, 1 + stages * T']: the word token, then the streams stream-major."""
        codes = stored_acoustic_tokens(run, self.settings.acoustic, split)  # [M, S, T']
        words = speech.frames(split, self.settings.acoustic.frames).words
        return torch.cat([words[:, None] + self.codes(), codes.flatten(1)], 1)

    def tokenizer(self, run: Run) -> AcousticTokenizer:
        return train_acoustic_tokenizer(run, self.settings.acoustic, self.settings.train.seed)

    def training_data(self, run: Run) -> dict:
        self.tokenizer(run)
        return {"tokens": self.tokens(run, "train")}

    def train(self, run: Run) -> dict:
        """The tokenizer, then both generators on the same budget, then the evaluation."""
        data = self.training_data(run)
        main = self.fit(run, self.objective("main"), data, role="main")
        self.fit(run.sub("maskgit"), self.objective("maskgit"), data, role="maskgit")
        return self.evaluate(run, main)

    # sampling and measuring -------------------------------------------------------------------------
    def sampler(self, generator: str):
        s = self.settings.sampler
        if generator == "magnet":
            return MagnetSampler.for_layout(self.layout(), "streams", s.steps_tuple(), span_len=s.span_len,
                                            temperature=s.temperature, top_p=s.top_p)
        return MaskGITSampler(s.nfe, temperature=s.temperature, choice_temperature=s.choice_temperature)

    @torch.no_grad()
    def draw(self, model: MaskedTokenModel, tokenizer: AcousticTokenizer, generator: str, words: torch.Tensor,
             g: torch.Generator) -> tuple[torch.Tensor, int]:
        """Word-conditioned samples: (log-mel Float[M, frames, 40] decoded from the streams, NFE)."""
        n, mask_id = model.config.layout.n, model.mask_id
        canvas = torch.full((len(words), n), mask_id, dtype=torch.long)
        canvas[:, 0] = words + self.codes()
        out = generate(model.eval(), canvas, self.sampler(generator), mask_id=mask_id, generator=g)
        codes = out.tokens[:, 1:].reshape(len(words), self.settings.acoustic.stages, self.length())
        return tokenizer.decode(codes).cpu(), out.nfe

    def measure(self, run: Run, objective: MagnetTokenModeling) -> dict:
        s = self.settings
        tokenizer = load_acoustic_tokenizer(run, s.acoustic)
        judge = train_speech_judge(s.eval.judge_seed, s.eval.judge_steps, s.acoustic.frames)
        train, test = speech.frames("train", s.acoustic.frames), speech.frames("test", s.acoustic.frames)
        real = judge.features(test.mel)
        metrics: dict = {"judge_word_accuracy": judge.word_accuracy, "judge_voice_accuracy": judge.voice_accuracy}

        def quality(prefix: str, mel: torch.Tensor, words: torch.Tensor) -> None:
            feats = judge.features(mel)
            metrics[f"fd_{prefix}"] = frechet_distance(feats, real)
            metrics[f"precision_{prefix}"], metrics[f"recall_{prefix}"] = precision_recall(real, feats, QUALITY_K)
            metrics[f"word_acc_{prefix}"] = float((judge.predict(mel)[0].argmax(-1) == words).double().mean())

        quality("real_train", train.mel, train.words)
        codes = stored_acoustic_tokens(run, s.acoustic, "test")
        with torch.no_grad():
            quality("reconstructed", tokenizer.decode(codes).cpu(), test.words)
        words = torch.arange(len(speech.WORDS)).repeat(s.eval.samples_per_word)
        shown = [torch.stack([test.mel[test.words == w][0] for w in range(8)])]  # words 0..7, as the samples
        for generator in GENERATORS:
            obj = objective if generator == "magnet" else self.load(run.sub("maskgit"), "maskgit")
            mel, nfe = self.draw(obj.model, tokenizer, generator, words, torch.Generator().manual_seed(s.train.seed))
            quality(generator, mel, words)
            metrics[f"nfe_{generator}"] = nfe
            shown.append(mel[:8])
        metrics["samples_per_generator"], metrics["held_out_utterances"] = len(words), len(test.words)
        save_mels(torch.cat(shown), run.file("samples.png"), 8)
        return metrics

    def report(self, metrics: dict) -> Report:
        s = self.settings
        tables = []
        for key, label, better in (("fd", "Fréchet distance to held-out speech (judge features)", "lower"),
                                   ("precision", "precision (k-NN manifold, k=3)", "higher"),
                                   ("recall", "recall (k-NN manifold, k=3)", "higher"),
                                   ("word_acc", "judge word accuracy on samples (says the asked word)", "higher")):
            rows = (Metric(f"{key}_maskgit", TITLES["maskgit"]),
                    Metric(f"{key}_magnet", TITLES["magnet"], f"{key}_maskgit", better),
                    Metric(f"{key}_real_train", "real training utterances (reference)"),
                    Metric(f"{key}_reconstructed", "held-out utterances through the tokenizer (floor)"))
            tables.append(Table(rows, label))
        tables.append(Table(tuple(Metric(f"nfe_{g}", TITLES[g]) for g in GENERATORS) + (
            Metric("judge_word_accuracy", "judge word accuracy on held-out real speech"),
            Metric("judge_voice_accuracy", "judge voice accuracy on held-out real speech"),
            Metric("samples_per_generator", "samples per generator"),
            Metric("held_out_utterances", "held-out real utterances")), "calls and sizes"))
        a = s.acoustic
        setup = (f"{self.setup()} Synthetic speech (eSpeak NG words). Both generators train {s.train.steps} steps; "
                 f"samples at {s.sampler.nfe} denoiser calls (MAGNeT {s.sampler.magnet_steps} per stream, spans of "
                 f"{s.sampler.span_len}; trained with spans of {s.magnet.span_len}), {s.eval.samples_per_word} per "
                 f"word, temperature {s.sampler.temperature}, no guidance. Tokenizer: {a.stages} residual-VQ "
                 f"streams x {a.codes} codes, {a.frames // a.down} tokens per stream, {a.steps} steps. Judge: "
                 f"eval/speech_judge.py, {s.eval.judge_steps} steps, seed {s.eval.judge_seed}.")
        return Report("audio-magnet: MAGNeT against MaskGIT on acoustic token streams at equal NFE", setup,
                      tuple(tables), (("log-mel rows: held-out real, MAGNeT, MaskGIT (first 8 words)",
                                       "samples.png"),))

    @torch.no_grad()
    def sample(self, run: Run, objective: MagnetTokenModeling, n: int, out) -> Path:
        """n word-conditioned MAGNeT samples (words in turn), through Griffin-Lim into one WAV, with a
        quarter second of silence between them."""
        words = torch.arange(n) % len(speech.WORDS)
        g = torch.Generator().manual_seed(self.settings.train.seed)
        mel, _ = self.draw(objective.model, load_acoustic_tokenizer(run, self.settings.acoustic), "magnet", words, g)
        waves = audio.MelSpectrogram().to_wave(mel, generator=g)  # [n, L]
        gap = waves.new_zeros(audio.RATE // 4)
        wave = torch.cat([torch.cat([w / w.abs().max().clamp(min=1e-6) * 0.9, gap]) for w in waves])
        return audio.write_wav(self.sample_path(out), wave)


def save_mels(mel: torch.Tensor, path: Path, columns: int) -> None:
    """Float[M, T, 40] log-mel -> a PNG grid of spectrograms (low frequencies at the bottom), each
    scaled from the silence floor to the grid's loudest value."""
    lo, hi = float(torch.log(torch.tensor(audio.FLOOR))), float(mel.max())
    grey = ((mel - lo) / max(hi - lo, 1e-6)).clamp(0, 1).transpose(1, 2).flip(1)  # [M, 40, T]
    image_sets.save_grid((grey[:, None] * 255).round().to(torch.uint8), path, columns)
