"""Synthetic speech from eSpeak NG: offline, deterministic, labelled by word and voice, split by hash."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("espeakng_loader")

from unmask.data import speech  # noqa: E402
from unmask.data.audio import FLOOR, RATE, MelSpectrogram  # noqa: E402
from unmask.data.music import is_held_out  # noqa: E402
from unmask.errors import UnmaskError  # noqa: E402


def test_synthesis_is_deterministic_whatever_came_before():
    a = speech.synthesize("seven", "en+m3")
    speech.synthesize("a much longer sentence in another voice", "en+f2", 200, 70)
    b = speech.synthesize("seven", "en+m3")
    assert a.dtype == np.int16 and len(a) > RATE // 10
    assert np.array_equal(a, b)


def test_synthesis_is_the_same_in_another_process():
    """Breathy voices draw noise; unseeded, it differed between processes (not within one)."""
    import subprocess
    import sys

    code = ("import hashlib; from unmask.data import speech; "
            "print(hashlib.md5(speech.synthesize('seven', 'en+f2').tobytes()).hexdigest())")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    import hashlib

    here = hashlib.md5(speech.synthesize("seven", "en+f2").tobytes()).hexdigest()
    assert runs[0].strip() == runs[1].strip() == here


def test_voices_and_words_change_the_audio():
    """Every two voices differ on the same word (mean |log-mel difference| measured 0.18 at least for
    "seven"), and two words differ in the same voice."""
    mel = MelSpectrogram()

    def feats(word, voice):
        return mel(torch.from_numpy(speech.trim(speech.synthesize(word, voice)).astype(np.float32)[None] / 32768))[0]

    def distance(a, b):
        n = min(len(a), len(b))
        return float((a[:n] - b[:n]).abs().mean())

    voices = [feats("seven", v) for v in speech.VOICES]
    for i in range(len(voices)):
        for j in range(i):
            assert distance(voices[i], voices[j]) > 0.1, (speech.VOICES[i], speech.VOICES[j])
    assert distance(voices[0], feats("three", speech.VOICES[0])) > 0.5


def test_unknown_voice_variant_is_an_error():
    with pytest.raises(UnmaskError, match="variant"):
        speech.synthesize("one", "en+nosuchvoice")


def test_counts_and_split():
    train, test = speech.load("train"), speech.load("test")
    assert len(speech.WORDS) == 35 and len(speech.VOICES) == 12 and len(speech.RENDITIONS) == 3
    assert (len(train.keys), len(test.keys)) == (1044, 216)
    assert train.rate == test.rate == RATE
    assert not set(train.keys) & set(test.keys)
    pairs = {s: {k.rsplit("/", 1)[0] for k in d.keys} for s, d in (("train", train), ("test", test))}
    assert not pairs["train"] & pairs["test"]  # every rendition of a pair is on one side
    assert len(pairs["train"] | pairs["test"]) == 35 * 12
    for d in (train, test):
        assert set(d.words.tolist()) == set(range(35)) and set(d.voices.tolist()) == set(range(12))
        for i in (0, len(d.keys) // 2, len(d.keys) - 1):
            word, voice, _ = d.keys[i].split("/")
            assert (speech.WORDS[d.words[i]], speech.VOICES[d.voices[i]]) == (word, voice)
    # the hash rule: where a word's 12 pairs fall on both sides by their own hashes, nothing moves
    for w in speech.WORDS:
        natural = {f"{w}/{v}" for v in speech.VOICES if is_held_out(f"{w}/{v}", speech.TEST_SHARE)}
        if 0 < len(natural) < 12:
            assert natural == {p for p in pairs["test"] if p.split("/")[0] == w}
    # stable: the same keys in another order get the same sides
    keys = train.keys + test.keys
    flipped = speech.held_out(tuple(reversed(keys)))
    assert flipped.flip(0).tolist() == [False] * len(train.keys) + [True] * len(test.keys)


def test_waves_are_trimmed_and_zero_padded():
    d = speech.load("test")
    assert d.waves.shape == (216, int(d.lengths.max()))
    for i in range(0, 216, 37):
        n = int(d.lengths[i])
        assert d.waves[i, n:].abs().sum() == 0
        assert abs(d.waves[i, 0]) > speech.SILENCE and abs(d.waves[i, n - 1]) > speech.SILENCE
    assert np.array_equal(d.waves[0, :d.lengths[0]].numpy() * 32768,
                          speech.trim(speech.synthesize("zero", d.keys[0].split("/")[1],
                                                        *speech.RENDITIONS[0])).astype(np.float32))


def test_frames_match_single_utterances():
    d, f = speech.load("test"), speech.frames("test")
    assert f.mel.shape == (216, 48, 40) and torch.equal(f.words, d.words) and torch.equal(f.voices, d.voices)
    assert torch.equal(f.lengths, (1 + d.lengths // 256).clamp(max=48))
    mel = MelSpectrogram()
    for i in (0, 50, 200):
        n = int(f.lengths[i])
        alone = mel(d.waves[i:i + 1, :d.lengths[i]])[0]
        assert torch.allclose(f.mel[i, :n], alone[:n], atol=1e-5)
        assert torch.all(f.mel[i, n:] == math.log(FLOOR))
    short = speech.frames("test", 8)
    assert short.mel.shape == (216, 8, 40) and torch.equal(short.mel, f.mel[:, :8])
    with pytest.raises(UnmaskError, match="split"):
        speech.load("valid")
