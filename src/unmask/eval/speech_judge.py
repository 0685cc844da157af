"""A shared judge for generated speech: a small 1-D CNN over log-mel frames with two heads, one for the
spoken word and one for the voice, trained on the real (eSpeak NG, synthetic) train split of
`data.speech`. Its pooled features are the feature space of the Fréchet distance (Heusel et al. 2017,
arXiv:1706.08500) and of improved precision and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991)
through `eval/quality.py`; its word head says whether a sample speaks the word it was asked for, its
voice head whether it keeps the voice of a prompt (the role a speech recogniser and a speaker-verification
model play in the MaskGCT paper, Wang et al. 2024, arXiv:2409.00750; an off-the-shelf recogniser
reads eSpeak's synthetic speech poorly, and none ships offline, so the judge is trained here).

The network reads the 40 mel channels as the input channels of 1-D convolutions along time: three
convolutions (64, 96, 128 channels; kernel 5, 5, 3; the last two with stride 2), each followed by batch
normalisation and a ReLU, then mean and max pooling over time, concatenated into 256 features, and two
linear heads. Inputs are standardised per mel channel by the train split's mean and standard deviation
(kept in the judge, so generated log-mels are read on the same scale). Training is deterministic for a
seed: seeded initialisation and batches (torch.Generator), Adam with a one-cycle rate for a fixed
number of steps on one thread, light augmentation by a random shift of up to `SHIFT` frames (the
emptied frames set to the silence floor) and a random gain (a constant added to the log-mel).

`word_accuracy` and `voice_accuracy` are measured on the held-out test split of `data.speech` (216
utterances of (word, voice) pairs never heard in training; 35 words, 12 voices, so chance is 0.029 and
0.083). Measured at the default 400 steps, one CPU thread (about 5 s): seed 0 word 0.958, voice 0.741;
seed 1 0.917, 0.759; seed 2 0.903, 0.833. Voices are the harder head: several of eSpeak's male
variants differ only slightly in pitch and formants.

    >>> judge = speech_judge()                             # doctest: +SKIP
    >>> judge.word_accuracy, judge.voice_accuracy          # doctest: +SKIP
    >>> word_logits, voice_logits = judge.predict(mel)     # mel: Float[B, T, 40]
    >>> judge.features(mel).shape                          # torch.Size([B, 256])
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data import audio, speech

JUDGE_SEED = 0
JUDGE_STEPS = 400
BATCH = 64
LR = 3e-3
SHIFT = 3  # frames of random shift, both ways, in training
GAIN = 1.0  # largest random gain in natural-log units (a factor of e in power), both ways
FLOOR = math.log(audio.FLOOR)  # the silence value of a log-mel frame
WIDTHS = (64, 96, 128)
KERNELS = (5, 5, 3)
FEATURES = 2 * WIDTHS[-1]


class _Network(nn.Module):
    """mel: Float[B, T, C] standardised -> (features Float[B, 256], word Float[B, W], voice Float[B, S])."""

    def __init__(self, channels: int, words: int, voices: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for i, (c_out, k) in enumerate(zip(WIDTHS, KERNELS, strict=True)):
            layers += [nn.Conv1d(c_in, c_out, k, stride=1 if i == 0 else 2, padding=k // 2, bias=False),
                       nn.BatchNorm1d(c_out), nn.ReLU()]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.word = nn.Linear(FEATURES, words)
        self.voice = nn.Linear(FEATURES, voices)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x.transpose(1, 2))  # [B, 128, T']
        return torch.cat([h.mean(-1), h.amax(-1)], dim=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.word(f), self.voice(f)


def _check(mel: torch.Tensor, channels: int) -> torch.Tensor:
    if mel.dim() != 3 or mel.shape[-1] != channels or not mel.is_floating_point():
        raise ValueError(f"mel must be Float[B, T, {channels}], got {mel.dtype} {tuple(mel.shape)}")
    return mel.float()


def shift(mel: torch.Tensor, generator: torch.Generator, most: int = SHIFT) -> torch.Tensor:
    """mel: Float[B, T, C] -> each utterance moved in time by its own random d in [-most, most]; the
    frames it leaves hold the silence floor (an utterance is padded with silence, not repeated)."""
    b, t, _ = mel.shape
    padded = F.pad(mel, (0, 0, most, most), value=FLOOR)  # [B, T + 2 most, C]
    d = torch.randint(0, 2 * most + 1, (b,), generator=generator)
    rows = d[:, None] + torch.arange(t)  # [B, T]
    return padded[torch.arange(b)[:, None], rows]


class SpeechJudge:
    """A trained word and voice classifier of log-mel frames (module docstring). `word_accuracy`,
    `voice_accuracy`: on the held-out test split; `seed`, `steps`: how it was made; `words`, `voices`:
    the class names of the two heads."""

    def __init__(self, net: _Network, mean: torch.Tensor, std: torch.Tensor, seed: int, steps: int,
                 words: tuple[str, ...], voices: tuple[str, ...]):
        self.net, self.mean, self.std = net.eval(), mean, std
        self.seed, self.steps, self.words, self.voices = seed, steps, words, voices
        self.word_accuracy = self.voice_accuracy = float("nan")

    def _input(self, mel: torch.Tensor) -> torch.Tensor:
        return (_check(mel, self.mean.shape[-1]) - self.mean) / self.std

    @torch.no_grad()
    def features(self, mel: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """mel: Float[B, T, 40] log-mel -> Float[B, 256], the pooled penultimate features."""
        x = self._input(mel)
        if not len(x):
            return x.new_zeros(0, FEATURES)
        return torch.cat([self.net.features(part) for part in x.split(chunk)])

    @torch.no_grad()
    def predict(self, mel: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """mel: Float[B, T, 40] log-mel -> (word logits Float[B, W], voice logits Float[B, S])."""
        x = self._input(mel)
        outs = [self.net(part)[1:] for part in x.split(chunk)]
        if not outs:
            return x.new_zeros(0, len(self.words)), x.new_zeros(0, len(self.voices))
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def accuracy(self, mel: torch.Tensor, words: torch.Tensor, voices: torch.Tensor) -> tuple[float, float]:
        """Share of rows whose most likely word (voice) is `words` (`voices`), both Long[B]."""
        word_logits, voice_logits = self.predict(mel)
        return (float((word_logits.argmax(-1) == words).double().mean()),
                float((voice_logits.argmax(-1) == voices).double().mean()))


def _fit(seed: int, steps: int, frames: int) -> SpeechJudge:
    train = speech.frames("train", frames)
    g = torch.Generator().manual_seed(seed)
    x = train.mel.float()
    mean = x.mean(dim=(0, 1))
    std = x.std(dim=(0, 1)).clamp(min=1e-3)
    net = _Network(x.shape[-1], len(speech.WORDS), len(speech.VOICES))
    with torch.no_grad():
        for layer in net.modules():
            if isinstance(layer, (nn.Conv1d, nn.Linear)):
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu", generator=g)
                if layer.bias is not None:
                    layer.bias.zero_()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.2)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(BATCH, len(x)),), generator=g)
        gain = (torch.rand(len(idx), 1, 1, generator=g) * 2 - 1) * GAIN
        batch = (shift(x[idx], g) + gain - mean) / std
        _, word, voice = net(batch)
        opt.zero_grad(set_to_none=True)
        (F.cross_entropy(word, train.words[idx]) + F.cross_entropy(voice, train.voices[idx])).backward()
        opt.step()
        sched.step()
    return SpeechJudge(net, mean, std, seed, steps, tuple(speech.WORDS), tuple(speech.VOICES))


def train_speech_judge(seed: int = JUDGE_SEED, steps: int = JUDGE_STEPS, frames: int = 48) -> SpeechJudge:
    """The speech judge, trained from scratch on `data.speech.frames("train", frames)` once per (seed,
    steps, frames) in a process and kept (`clear_speech_judges()` forgets them). Same arguments and the
    same frames, same weights on the same machine (float32, CPU, one thread)."""
    for key, value in (("steps", steps), ("frames", frames)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    return _trained(int(seed), steps, frames)


@functools.cache
def _trained(seed: int, steps: int, frames: int) -> SpeechJudge:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a convolution's summation order follows the thread count
    try:
        judge = _fit(seed, steps, frames)
        test = speech.frames("test", frames)
        judge.word_accuracy, judge.voice_accuracy = judge.accuracy(test.mel, test.words, test.voices)
    finally:
        torch.set_num_threads(threads)
    return judge


def speech_judge() -> SpeechJudge:
    """The judge every recipe shares: seed `JUDGE_SEED`, `JUDGE_STEPS` steps, 48 frames."""
    return train_speech_judge(JUDGE_SEED, JUDGE_STEPS, 48)


def clear_speech_judges() -> None:
    """Forget every speech judge trained in this process."""
    _trained.cache_clear()
