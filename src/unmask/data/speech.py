"""Synthetic spoken words: eSpeak NG says each of `WORDS` in each of `VOICES`, so word and voice are
both labels. The speech is synthetic (a formant synthesiser, not recorded people); say so wherever it
is used.

Words: the 35 words of the Speech Commands v2 vocabulary (Warden, 2018, "Speech Commands: A Dataset
for Limited-Vocabulary Speech Recognition", arXiv:1804.03209): twenty core words (the ten digits and
ten commands), ten auxiliary words and the five added in v2. Voices: 12 eSpeak NG voice variants (six
male and four female variants of British English `en`, one male and one female of American English
`en-us`). Each (word, voice) pair is said in `len(RENDITIONS)` = 3 renditions, at three speaking
rates and pitches, so M = 35 x 12 x 3 = 1,260 utterances in all.

Synthesis: eSpeak NG's library and voice data ship in the `espeakng-loader` wheel (the `audio` extra);
the library is called through ctypes, synchronously, at its own rate of `RATE` = 22,050 Hz, and each
utterance is trimmed of the silence eSpeak puts around it (samples with |x| <= `SILENCE` at either
end). eSpeak keeps state between utterances in static variables (such as its pitch-flutter phase) that
`espeak_Initialize` does not reset, so the library is loaded afresh for every utterance: the same
(text, voice, rate, pitch) then always gives the same samples, whatever was said before (unless
another package in the process holds the same library open, which keeps it loaded). Building the
whole set takes about 4.5 s at one thread.

Split: a (word, voice) pair is held out, with all of its renditions, when the SHA-1 of "word/voice"
falls in the lowest `TEST_SHARE` (15%) of the hash range (`user_images.hash_split`, within each word's
12 pairs, so that every word has at least one held-out voice and at least one training voice). A
pair's side depends only on its key, except for that move, and a held-out word is never heard in the
same voice in training. The test split holds 72 pairs (216 utterances), the training split 348
pairs (1,044 utterances); every word and every voice is on both sides.

    >>> s = load("train")                                   # doctest: +SKIP
    >>> WORDS[s.words[0]], VOICES[s.voices[0]], s.keys[0]   # doctest: +SKIP
    ('zero', 'en+m1', 'zero/en+m1/0')
    >>> frames("test").mel.shape                            # doctest: +SKIP
    torch.Size([216, 48, 40])
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from ..errors import UnmaskError
from .audio import FLOOR, PCM_SCALE, RATE, MelSpectrogram
from .user_images import hash_split

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
         "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
         "backward", "forward", "follow", "learn", "visual")
VOICES = ("en+m1", "en+m2", "en+m3", "en+m4", "en+m5", "en+m7",
          "en+f1", "en+f2", "en+f3", "en+f4", "en-us+m3", "en-us+f3")
RENDITIONS = ((175, 50), (145, 38), (205, 62))  # (words per minute, base pitch on eSpeak's 0..100)
SPLITS = ("train", "test")
TEST_SHARE = 0.15
SILENCE = 64 / PCM_SCALE  # -54 dB: quieter end samples are trimmed
FRAMES = 48  # default frames per utterance: 48 x 256 / 22,050 = 0.56 s

# eSpeak NG's C API constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_LOCK = threading.Lock()  # the library is one process-wide state machine


class Speech(NamedTuple):
    waves: torch.Tensor  # Float32[M, L] in [-1, 1), zero-padded after each utterance
    lengths: torch.Tensor  # Long[M] samples of each utterance
    words: torch.Tensor  # Long[M] index into WORDS
    voices: torch.Tensor  # Long[M] index into VOICES
    keys: tuple[str, ...]  # "word/voice/rendition"
    rate: int  # samples per second


class SpeechFrames(NamedTuple):
    mel: torch.Tensor  # Float32[M, frames, 40] natural-log mel power; after `lengths`, log(FLOOR)
    lengths: torch.Tensor  # Long[M] valid frames, at most `frames`
    words: torch.Tensor  # Long[M]
    voices: torch.Tensor  # Long[M]


def _espeak():
    """(espeakng_loader module, ctypes library) or an UnmaskError naming the extra."""
    try:
        import espeakng_loader
    except ImportError:
        raise UnmaskError("speech data needs eSpeak NG: pip install 'unmask[audio]' "
                          "(the espeakng-loader package)") from None
    return espeakng_loader


def _check_voice(voice: str, data_path: str) -> None:
    # espeak_SetVoiceByName accepts an unknown variant silently (an unknown language it reports)
    variant = voice.partition("+")[2]
    if variant and not os.path.isfile(os.path.join(data_path, "voices", "!v", variant)):
        raise UnmaskError(f"unknown eSpeak NG voice variant {variant!r} in {voice!r}")


def synthesize(text: str, voice: str, rate: int = 175, pitch: int = 50) -> np.ndarray:
    """eSpeak NG says `text` -> Int16[L] samples at `RATE` Hz, untrimmed. `rate` in words per minute
    (80..450), `pitch` on 0..100. Deterministic: the library is loaded afresh for each call, and its
    noise generator (the breath of the female variants) is seeded with 0, the same in every process."""
    import _ctypes

    loader = _espeak()
    data_path = loader.get_data_path()
    _check_voice(voice, data_path)
    chunks: list[np.ndarray] = []

    def collect(samples, count, events):
        if count > 0:
            chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0 = go on synthesising

    callback = _SYNTH_CALLBACK(collect)
    with _LOCK:
        lib = ctypes.CDLL(loader.get_library_path())
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                         ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            # the path is the folder that holds `espeak-ng-data`
            got = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                        os.path.dirname(data_path).encode(), 0)
            if got != RATE:
                raise UnmaskError(f"eSpeak NG failed to start from {data_path} (returned {got})")
            lib.espeak_SetSynthCallback(callback)
            lib.espeak_ng_SetRandSeed(ctypes.c_long(0))  # else breath noise differs between processes
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise UnmaskError(f"eSpeak NG has no voice {voice!r}")
            lib.espeak_SetParameter(_RATE, int(rate), 0)
            lib.espeak_SetParameter(_PITCH, int(pitch), 0)
            encoded = text.encode()
            if lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None):
                raise UnmaskError(f"eSpeak NG could not say {text!r} in {voice!r}")
            lib.espeak_Synchronize()
            lib.espeak_Terminate()
        finally:
            # unloading resets the static state eSpeak keeps between utterances
            _ctypes.dlclose(lib._handle)
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def trim(samples: np.ndarray) -> np.ndarray:
    """Int16[L] -> the part from the first to the last sample louder than `SILENCE`."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SILENCE * PCM_SCALE)
    return samples[loud[0]:loud[-1] + 1] if loud.size else samples[:0]


@lru_cache(maxsize=1)
def _all() -> Speech:
    """Every utterance, in the order word, voice, rendition."""
    clips, words, voices, keys = [], [], [], []
    for w, word in enumerate(WORDS):
        for v, voice in enumerate(VOICES):
            for r, (rate, pitch) in enumerate(RENDITIONS):
                clips.append(trim(synthesize(word, voice, rate, pitch)))
                words.append(w)
                voices.append(v)
                keys.append(f"{word}/{voice}/{r}")
    lengths = torch.tensor([len(c) for c in clips], dtype=torch.long)
    waves = torch.zeros(len(clips), int(lengths.max()), dtype=torch.float32)
    for i, c in enumerate(clips):
        waves[i, :len(c)] = torch.from_numpy(c.astype(np.float32) / PCM_SCALE)
    return Speech(waves, lengths, torch.tensor(words), torch.tensor(voices), tuple(keys), RATE)


def held_out(keys: tuple[str, ...]) -> torch.Tensor:
    """Bool[M], True = test: the hash rule of the module docstring on each key's "word/voice", applied
    within each word's pairs."""
    pairs = sorted({k.rsplit("/", 1)[0] for k in keys})
    by_word: dict[str, list[str]] = {}
    for p in pairs:
        by_word.setdefault(p.split("/", 1)[0], []).append(p)
    test = {p for group in by_word.values()
            for p, out in zip(group, hash_split(group, TEST_SHARE).tolist(), strict=True) if out}
    return torch.tensor([k.rsplit("/", 1)[0] in test for k in keys], dtype=torch.bool)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UnmaskError(f"speech split must be one of {', '.join(SPLITS)}, got {split!r}")


@lru_cache(maxsize=2)
def load(split: str) -> Speech:
    """The utterances of one split (see the module docstring); waves trimmed to the split's longest."""
    _check_split(split)
    every = _all()
    idx = (held_out(every.keys) == (split == "test")).nonzero().squeeze(1)
    lengths = every.lengths[idx]
    return Speech(every.waves[idx, :int(lengths.max())].contiguous(), lengths, every.words[idx],
                  every.voices[idx], tuple(every.keys[i] for i in idx.tolist()), every.rate)


@lru_cache(maxsize=8)
def frames(split: str, frames: int = FRAMES) -> SpeechFrames:
    """Log-mel frames of one split from `audio.MelSpectrogram()` (1024-sample window, hop 256, 40 mels):
    an utterance of L samples has 1 + L // 256 frames; longer ones are cut at `frames`, shorter ones
    padded with log(FLOOR), the value of silence."""
    if frames < 1:
        raise UnmaskError(f"speech frames must be at least 1, got {frames}")
    speech = load(split)
    mel = MelSpectrogram()
    counts = 1 + speech.lengths // mel.hop
    out = torch.full((len(counts), frames, mel.n_mels), math.log(FLOOR), dtype=torch.float32)
    need = min(frames, int(counts.max()))
    for start in range(0, len(counts), 128):  # chunks keep the complex STFT small
        rows = slice(start, start + 128)
        # frame t reads samples up to t * hop + n_fft / 2
        cut = (need - 1) * mel.hop + mel.n_fft // 2
        out[rows, :need] = mel(speech.waves[rows, :cut])[:, :need]
    valid = counts.clamp(max=frames)
    out[torch.arange(frames)[None, :] >= valid[:, None]] = math.log(FLOOR)
    return SpeechFrames(out, valid, speech.words, speech.voices)
