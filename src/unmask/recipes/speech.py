"""Recipe `speech`: MaskGCT (Wang et al. 2024, "MaskGCT: Zero-Shot Text-to-Speech with Masked Generative Codec
Transformer", arXiv:2409.00750, P40): speech in two masked generative stages, text to semantic tokens, then
semantic tokens to acoustic tokens, each told the voice by a prompt utterance given as a prefix.

Data: the synthetic eSpeak NG words of `data/speech.py` (35 words x 12 voices x 3 renditions, 48 log-mel
frames). Three tokenizers come first, each trained with the one Trainer in its own folder:
- semantic tokens (`recipes/semantic_tokens.py`): k-means (`semantic.codes` clusters) of a w2v-BERT
  encoder's features, trained `semantic.steps` steps in `RUN/w2v`; T' = 24 tokens per utterance;
- acoustic tokens (`recipes/audio_tokens.py`): `acoustic.stages` residual-VQ streams x 24, in `RUN/acoustic`.

Every utterance is paired with a prompt: another utterance of the same voice and rendition saying another
word (drawn once from the seed). The two generators (both `MaskedTokenModel`s with layout segments):
- T2S (the main role, `RUN`): [text: the word's letters, padded to 8 | prompt: the prompt's semantic
  tokens | target: semantic tokens]; only the target is hidden (MaskGIT's random mask at a cosine ratio,
  as MaskGCT trains T2S), decoded by MaskGIT's confidence order (Chang et al. 2022, arXiv:2202.04200);
- S2A (`RUN/s2a`): [semantic: the target's semantic tokens (aligned in time by position) | prompt: the
  prompt's acoustic streams | streams: the target's acoustic streams]; trained stream-wise as MaskGCT
  (after SoundStorm): one stream k per row, earlier streams given, later hidden, stream k hidden at an
  exact count max(1, round(m T')) at the cosine rate m (`masking.StreamWiseMask`), the loss on stream
  k; decoded coarse to fine, stream by stream (`sampling.MagnetSampler`, `sampler.s2a_steps` calls per
  stream, annealed temperature and top-p).
MaskGCT's prompt is a prefix of the same utterance in training; ours is a separate utterance, so the
prefix is never hidden and the target never copies it. A share `prompt.drop` of extra training rows
carry a "no prompt" token in the prompt segment, so the same models also generate without a prompt.
No classifier-free guidance (MaskGCT's released T2S sampler guides at w = 2.5, dropping text and prompt for
the unconditional pass; left out here, so each stage costs only its own calls).

Measured by the speech judge (`eval/speech_judge.py`, trained on real training audio): on every held-out
utterance (word w, voice v), generate the word w with the prompt of another held-out utterance of voice v,
and without a prompt; word accuracy (the judge hears w) and voice accuracy (the judge hears v). Ceilings:
held-out real audio; the held-out audio through the acoustic tokenizer (what generation can reach); S2A
alone from the true semantic tokens with the prompt.

    unmask train speech --out runs/speech
    unmask sample runs/speech --prompt seven --n 4 --out seven     # -> seven.wav
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import int_list, option, section
from ..data import audio, speech
from ..errors import UnmaskError
from ..eval.speech_judge import JUDGE_STEPS, train_speech_judge
from ..layout import Layout
from ..masking import RandomMask, StreamWiseMask
from ..nn import MaskedTokenModel, ModelConfig
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
from .semantic_tokens import SemanticSettings, semantic_tokens, train_semantic_encoder

LETTERS = "abcdefghijklmnopqrstuvwxyz"
TEXT = 8  # letters of the longest word ("backward", "forward")
GAP = 0.2  # seconds of silence between utterances in a sample
SHOWN = "seven"  # the word of the samples a report shows


@dataclass(frozen=True)
class Prompt:
    drop: float = option(0.25, lo=0.0, hi=1.0, help="extra training rows (a share of M) with no prompt")


@dataclass(frozen=True)
class Sampling:
    t2s_steps: int = option(12, lo=1, help="T2S: MaskGIT calls")
    s2a_steps: str = option("6,3,3", help="S2A: calls per acoustic stream, comma-separated, coarse to fine")
    temperature: float = option(1.0, lo=0.0, help="sampling temperature (annealed to 0 within each S2A stream)")
    choice_temperature: float = option(1.0, lo=0.0, help="T2S: MaskGIT choice noise")
    top_p: float = option(0.9, lo=0.0, lo_open=True, hi=1.0, help="S2A: nucleus of each draw")

    def steps_tuple(self) -> tuple[int, ...]:
        return int_list("sampler.s2a_steps", self.s2a_steps, lo=1)


@dataclass(frozen=True)
class Eval:
    judge_steps: int = option(JUDGE_STEPS, lo=1, help="training steps of the judge (eval/speech_judge.py)")
    judge_seed: int = option(0, lo=0, help="seed of the judge, fixed across training seeds")


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=600, batch_size=32, lr=2e-3, warmup=60, log_every=100),
                                 help="T2S and S2A each train this")
    model: TransformerSettings = section(TransformerSettings(dim=64, depth=3, heads=4))
    semantic: SemanticSettings = section(SemanticSettings())
    acoustic: AcousticTokenizerSettings = section(AcousticTokenizerSettings(steps=800))
    prompt: Prompt = section(Prompt())
    sampler: Sampling = section(Sampling())
    eval: Eval = section(Eval())


def spell(word: str, codes: int) -> torch.Tensor:
    """Long[TEXT]: the letters as ids codes + 0..25, padded with codes + 26."""
    ids = [codes + LETTERS.index(c) for c in word] + [codes + len(LETTERS)] * (TEXT - len(word))
    return torch.tensor(ids)


def prompt_pairs(split: str, generator: torch.Generator) -> torch.Tensor:
    """Long[M]: for each utterance of the split, another of the same voice and rendition saying another word
    (of the same voice, any other utterance, where the split has no such one)."""
    keys = speech.load(split).keys  # "word/voice/rendition"
    f = speech.frames(split)
    group = f.voices * len(speech.RENDITIONS) + torch.tensor([int(k.rsplit("/", 1)[1]) for k in keys])
    out = []
    for i in range(len(keys)):
        pool = ((group == group[i]) & (f.words != f.words[i])).nonzero()[:, 0]
        if not len(pool):
            pool = ((f.voices == f.voices[i]) & (torch.arange(len(keys)) != i)).nonzero()[:, 0]
        out.append(pool[torch.randint(len(pool), (1,), generator=generator)[0]])
    return torch.stack(out)


class Speech(Recipe):
    name = "speech"
    papers = ("MaskGCT", "w2v-BERT", "SoundStorm")
    summary = ("two-stage masked speech generation: text + voice prompt -> semantic tokens -> acoustic streams "
               "(coarse to fine), judged by a speech classifier")
    Settings = Settings
    sample_suffix = ".wav"
    takes_prompt = True
    roles = ("main", "s2a")  # main: T2S

    def check(self) -> None:
        s = self.settings
        if len(s.sampler.steps_tuple()) != s.acoustic.stages:
            raise UnmaskError(f"sampler.s2a_steps={s.sampler.s2a_steps!r} gives {len(s.sampler.steps_tuple())} "
                              f"streams, but acoustic.stages={s.acoustic.stages}")
        if s.acoustic.down != 2:
            raise UnmaskError(f"acoustic.down must be 2 (one acoustic token per semantic token), got {s.acoustic.down}")
        if s.semantic.layer > s.semantic.depth:
            raise UnmaskError(f"semantic.layer={s.semantic.layer} exceeds semantic.depth={s.semantic.depth}")
        s.acoustic.config()

    # sizes and layouts --------------------------------------------------------------------------------
    def length(self) -> int:
        return self.settings.acoustic.frames // 2

    def t2s_layout(self) -> Layout:
        t = self.length()
        return Layout.seq(TEXT, "text") + Layout.seq(t, "prompt") + Layout.seq(t, "target")

    def s2a_layout(self) -> Layout:
        s, t = self.settings.acoustic.stages, self.length()
        return Layout.seq(t, "semantic") + Layout.streams(s, t, "prompt") + Layout.streams(s, t, "streams")

    def blank(self, role: str) -> int:
        """The "no prompt" token: the last id of each model's vocabulary."""
        k, a = self.settings.semantic.codes, self.settings.acoustic.codes
        return k + len(LETTERS) + 1 if role == "main" else a + k

    def config_of(self, role: str) -> ModelConfig:
        m, k = self.settings.model, self.settings.semantic.codes
        if role == "main":
            return ModelConfig(self.blank(role) + 1, self.t2s_layout(), dim=m.dim, depth=m.depth, heads=m.heads,
                               segment_vocab={"target": (0, k)})
        return ModelConfig(self.blank(role) + 1, self.s2a_layout(), dim=m.dim, depth=m.depth, heads=m.heads,
                           segment_vocab={"streams": (0, self.settings.acoustic.codes)})

    def model_config(self) -> ModelConfig:
        return self.config_of("main")

    def run_config(self, role: str = "main") -> dict:
        config = super().run_config(role)
        config["model"] = self.config_of(role).to_dict()
        return config

    def model_dict(self) -> dict:
        """The model `restore` checks a checkpoint against: that of the role being restored."""
        return self.config_of(getattr(self, "_restoring", "main")).to_dict()

    # objectives -----------------------------------------------------------------------------------------
    def build(self) -> MaskedTokenModeling:
        return MaskedTokenModeling(MaskedTokenModel(self.config_of("main")), RandomMask(("target",)),
                                   Schedule("cosine"))

    def build_role(self, role: str) -> nn.Module:
        if role == "s2a":
            return MagnetTokenModeling(MaskedTokenModel(self.config_of("s2a")), StreamWiseMask("streams"))
        return super().build_role(role)

    def restore(self, ckpt: Path, tensors: dict, config: dict, role: str = "main") -> nn.Module:
        self._restoring = role  # T2S and S2A are different models: check the role's own
        try:
            return super().restore(ckpt, tensors, config, role)
        finally:
            self._restoring = "main"

    # data -----------------------------------------------------------------------------------------------
    def semantic(self, run: Run, split: str) -> torch.Tensor:
        s = self.settings
        return semantic_tokens(run, s.semantic, s.train.seed, split, s.acoustic.frames)

    def acoustic(self, run: Run, split: str) -> torch.Tensor:
        return stored_acoustic_tokens(run, self.settings.acoustic, split)

    def rows(self, run: Run, split: str, pairs: torch.Tensor, prompted: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"main": Long[M, TEXT + 2 T'], "s2a": Long[M, T' + 2 S T']}: the target of row i is utterance i,
        its prompt utterance pairs[i] where prompted[i] (Bool[M]), else the "no prompt" token."""
        k = self.settings.semantic.codes
        a = self.settings.acoustic.codes
        words = speech.frames(split, self.settings.acoustic.frames).words
        sem, codes = self.semantic(run, split), self.acoustic(run, split).flatten(1)  # [M, T'], [M, S T']
        text = torch.stack([spell(speech.WORDS[w], k) for w in words.tolist()])
        keep = prompted[:, None]
        t2s = torch.cat([text, torch.where(keep, sem[pairs], self.blank("main")), sem], 1)
        s2a = torch.cat([sem + a, torch.where(keep, codes[pairs], self.blank("s2a")), codes], 1)
        return {"main": t2s, "s2a": s2a}

    def training_data(self, run: Run) -> dict:
        """T2S's rows; S2A's are `role_rows(run)["s2a"]`."""
        return {"tokens": self.role_rows(run)["main"]}

    def role_rows(self, run: Run) -> dict:
        """{role: Long[M, N]}: each generator's training rows (prompted, plus the share without a prompt)."""
        s = self.settings
        train_semantic_encoder(run, s.semantic, s.train.seed, s.acoustic.frames)
        train_acoustic_tokenizer(run, s.acoustic, s.train.seed)
        g = torch.Generator().manual_seed(s.train.seed)
        pairs = prompt_pairs("train", g)
        m = len(pairs)
        extra = torch.randperm(m, generator=g)[: round(s.prompt.drop * m)]
        both = self.rows(run, "train", pairs, torch.ones(m, dtype=torch.bool))
        bare = self.rows(run, "train", pairs, torch.zeros(m, dtype=torch.bool))
        return {role: torch.cat([both[role], bare[role][extra]]) for role in both}

    def train(self, run: Run) -> dict:
        """The two tokenizers, then T2S and S2A on the same budget, then the evaluation."""
        data = self.role_rows(run)
        main = self.fit(run, self.objective("main"), {"tokens": data["main"]}, role="main")
        self.fit(run.sub("s2a"), self.objective("s2a"), {"tokens": data["s2a"]}, role="s2a")
        return self.evaluate(run, main)

    # generation -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def t2s(self, model: MaskedTokenModel, text: torch.Tensor, prompt: torch.Tensor,
            g: torch.Generator) -> torch.Tensor:
        """text Long[B, TEXT], prompt Long[B, T'] (semantic ids or the blank) -> semantic Long[B, T']."""
        s = self.settings.sampler
        canvas = torch.cat([text, prompt, torch.full_like(prompt, model.mask_id)], 1)
        sampler = MaskGITSampler(s.t2s_steps, temperature=s.temperature, choice_temperature=s.choice_temperature)
        out = generate(model.eval(), canvas, sampler, mask_id=model.mask_id, generator=g).tokens
        return out[:, TEXT + self.length():]

    @torch.no_grad()
    def s2a(self, model: MaskedTokenModel, semantic: torch.Tensor, prompt: torch.Tensor,
            g: torch.Generator) -> torch.Tensor:
        """semantic Long[B, T'], prompt Long[B, S T'] (acoustic ids or the blank) -> codes Long[B, S, T']."""
        s, a = self.settings.sampler, self.settings.acoustic
        canvas = torch.cat([semantic + a.codes, prompt, torch.full_like(prompt, model.mask_id)], 1)
        sampler = MagnetSampler.for_layout(self.s2a_layout(), "streams", s.steps_tuple(), span_len=1,
                                           temperature=s.temperature, top_p=s.top_p)
        out = generate(model.eval(), canvas, sampler, mask_id=model.mask_id, generator=g).tokens
        return out[:, self.length() + a.stages * self.length():].reshape(len(out), a.stages, self.length())

    @torch.no_grad()
    def speak(self, run: Run, t2s: MaskedTokenModel, s2a: MaskedTokenModel, words: list[str],
              prompts: torch.Tensor | None, split: str, g: torch.Generator) -> torch.Tensor:
        """log-mel Float[B, frames, 40] of `words`, each in the voice of utterance prompts[i] of `split`
        (None: no prompt)."""
        k = self.settings.semantic.codes
        text = torch.stack([spell(w, k) for w in words])
        b = len(words)
        if prompts is None:
            sem_prompt = torch.full((b, self.length()), self.blank("main"))
            ac_prompt = torch.full((b, self.settings.acoustic.stages * self.length()), self.blank("s2a"))
        else:
            sem_prompt, ac_prompt = self.semantic(run, split)[prompts], self.acoustic(run, split).flatten(1)[prompts]
        semantic = self.t2s(t2s, text, sem_prompt, g)
        codes = self.s2a(s2a, semantic, ac_prompt, g)
        return load_acoustic_tokenizer(run, self.settings.acoustic).decode(codes).cpu()

    # measuring ------------------------------------------------------------------------------------------
    def measure(self, run: Run, objective: MaskedTokenModeling) -> dict:
        s = self.settings
        judge = train_speech_judge(s.eval.judge_seed, s.eval.judge_steps, s.acoustic.frames)  # trains: grad on
        metrics = self.judged(run, objective, judge)
        self.sample(run, objective, 4, run.file("samples.wav"), prompt=SHOWN)  # and samples.png beside it
        return metrics

    @torch.no_grad()
    def judged(self, run: Run, objective: MaskedTokenModeling, judge) -> dict:
        """The figures of `measure`, given the trained judge."""
        s = self.settings
        test = speech.frames("test", s.acoustic.frames)
        t2s, s2a = objective.model, self.load(run.sub("s2a"), "s2a").model
        pairs = prompt_pairs("test", torch.Generator().manual_seed(s.train.seed + 1))
        words = [speech.WORDS[w] for w in test.words.tolist()]
        metrics: dict = {"real_word_acc": judge.word_accuracy, "real_voice_acc": judge.voice_accuracy}

        def judged(name: str, mel: torch.Tensor) -> None:
            metrics[f"{name}_word_acc"], metrics[f"{name}_voice_acc"] = judge.accuracy(mel, test.words, test.voices)

        tokenizer = load_acoustic_tokenizer(run, s.acoustic)
        judged("reconstructed", tokenizer.decode(self.acoustic(run, "test")).cpu())
        g = torch.Generator().manual_seed(s.train.seed)
        prompt_codes = self.acoustic(run, "test").flatten(1)[pairs]
        judged("s2a_true_semantic", tokenizer.decode(self.s2a(s2a, self.semantic(run, "test"), prompt_codes, g)).cpu())
        judged("prompted", self.speak(run, t2s, s2a, words, pairs, "test", g))
        judged("unprompted", self.speak(run, t2s, s2a, words, None, "test", g))
        metrics["prompt_same_voice"] = float((test.voices[pairs] == test.voices).double().mean())
        metrics["held_out_utterances"] = len(words)
        metrics["chance_word"], metrics["chance_voice"] = 1 / len(speech.WORDS), 1 / len(speech.VOICES)
        return metrics

    def report(self, metrics: dict) -> Report:
        s = self.settings
        rows = (("prompted", "MaskGCT: text + voice prompt (T2S -> S2A)", "unprompted"),
                ("unprompted", "MaskGCT: text, no prompt", None),
                ("s2a_true_semantic", "S2A alone from the true semantic tokens, with the prompt", None),
                ("reconstructed", "held-out audio through the acoustic tokenizer (ceiling of generation)", None),
                ("real", "held-out real audio (ceiling of the judge)", None))
        tables = [Table(tuple(Metric(f"{key}_{what}_acc", label, f"{base}_{what}_acc" if base else None,
                                     "higher" if base else "") for key, label, base in rows)
                        + (Metric(f"chance_{what}", "chance"),), f"judge {what} accuracy on held-out utterances")
                  for what in ("word", "voice")]
        tables.append(Table((Metric("held_out_utterances", "held-out utterances (one sample each per row)"),
                             Metric("prompt_same_voice", "share of prompts in the target's voice")), "sizes"))
        a, m = s.acoustic, s.semantic
        setup = (f"{self.setup()} Synthetic speech (eSpeak NG words). Semantic tokens: k-means ({m.codes}) of "
                 f"w2v-BERT layer {m.layer} (width {m.dim}, depth {m.depth}, {m.steps} steps). Acoustic tokens: "
                 f"{a.stages} residual-VQ streams x {a.codes} codes, {a.steps} steps. T2S and S2A each train "
                 f"{s.train.steps} steps, {s.prompt.drop:.0%} extra rows without prompt. Sampling: T2S MaskGIT "
                 f"{s.sampler.t2s_steps} calls; S2A {s.sampler.s2a_steps} calls per stream, top-p {s.sampler.top_p}, "
                 f"temperature {s.sampler.temperature}; no guidance. Judge: eval/speech_judge.py, "
                 f"{s.eval.judge_steps} steps, seed {s.eval.judge_seed}.")
        return Report("speech: MaskGCT's two masked stages, with and without a voice prompt", setup, tuple(tables),
                      ((f"log-mel of four generated '{SHOWN}', voice prompts of 4 voices", "samples.png"),),
                      ("Listen: [samples.wav](samples.wav) (the same four, through Griffin-Lim).",))

    # sampling -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, run: Run, objective: MaskedTokenModeling, n: int, out: Path, prompt: str | None = None) -> Path:
        """n utterances of the word `prompt` (without one, the words in turn), the i-th in the voice of a
        held-out utterance of voice i mod 12 (another word where there is one), through Griffin-Lim into one
        WAV, 0.2 s of silence between them, and their log-mel spectrograms as a PNG beside it."""
        if prompt is not None and prompt not in speech.WORDS:
            raise UnmaskError(f"--prompt must be one of the words: {', '.join(speech.WORDS)}; got {prompt!r}")
        words = [prompt] * n if prompt is not None else [speech.WORDS[i % len(speech.WORDS)] for i in range(n)]
        test = speech.frames("test", self.settings.acoustic.frames)
        picks = []
        for i, word in enumerate(words):
            voice = (test.voices == i % len(speech.VOICES))
            other = (voice & (test.words != speech.WORDS.index(word))).nonzero()[:, 0]
            picks.append((other if len(other) else voice.nonzero()[:, 0])[0])
        g = torch.Generator().manual_seed(self.settings.train.seed)
        s2a = self.load(run.sub("s2a"), "s2a").model
        mel = self.speak(run, objective.model, s2a, words, torch.stack(picks), "test", g).detach()
        waves = audio.MelSpectrogram().to_wave(mel, generator=g)  # [n, L]
        gap = waves.new_zeros(round(audio.RATE * GAP))
        wave = torch.cat([torch.cat([w / w.abs().max().clamp(min=1e-6) * 0.9, gap]) for w in waves])
        path = audio.write_wav(self.sample_path(out), wave)
        audio.save_mel_png(mel, path.with_suffix(".png"))
        return path
