"""The shared speech judge (eval/speech_judge.py): a 1-D CNN trained on real (synthetic eSpeak NG) train
log-mels must name the word and the voice of held-out utterances far above chance, be the same network
for the same seed, give pooled features whose Fréchet distance (Heusel et al. 2017, arXiv:1706.08500)
puts held-out speech near the train speech and noise far away, and refuse what it cannot read."""

from __future__ import annotations

import math

import pytest
import torch

from unmask.data import speech
from unmask.eval.quality import frechet_distance
from unmask.eval.speech_judge import FEATURES, FLOOR, clear_speech_judges, shift, speech_judge, train_speech_judge

WORD_FLOOR = 0.8  # chance 1/35; measured 0.90 to 0.96 over seeds 0-2 (eval/speech_judge.py)
VOICE_FLOOR = 0.6  # chance 1/12; measured 0.74 to 0.83


@pytest.fixture(scope="module")
def judge():
    return speech_judge()


def test_judge_names_held_out_words_and_voices(judge):
    test = speech.frames("test")
    assert 1 / len(speech.WORDS) < 0.2 and 1 / len(speech.VOICES) < 0.35  # the floors are far above chance
    assert judge.word_accuracy > WORD_FLOOR
    assert judge.voice_accuracy > VOICE_FLOOR
    word_logits, voice_logits = judge.predict(test.mel)
    assert word_logits.shape == (len(test.mel), len(speech.WORDS))
    assert voice_logits.shape == (len(test.mel), len(speech.VOICES))
    # the accuracies are what predict says on the test split, not another number
    assert judge.word_accuracy == pytest.approx(float((word_logits.argmax(-1) == test.words).double().mean()))
    assert judge.voice_accuracy == pytest.approx(float((voice_logits.argmax(-1) == test.voices).double().mean()))


def test_features_are_the_heads_input(judge):
    test = speech.frames("test")
    feats = judge.features(test.mel)
    assert feats.shape == (len(test.mel), FEATURES) and feats.dtype == torch.float32
    assert (feats >= 0).all()  # pooled after a ReLU
    assert torch.allclose(judge.features(test.mel, chunk=7), feats, atol=1e-5)
    assert torch.allclose(judge.net.word(feats), judge.predict(test.mel)[0], atol=1e-5)


def test_held_out_speech_is_nearer_than_noise(judge):
    train, test = speech.frames("train"), speech.frames("test")
    real = judge.features(train.mel)
    g = torch.Generator().manual_seed(0)
    noise = test.mel + 3 * torch.randn(test.mel.shape, generator=g)
    assert frechet_distance(judge.features(test.mel), real) < 0.5 * frechet_distance(judge.features(noise), real)


def test_same_seed_same_judge_and_other_seed_other():
    x = speech.frames("test").mel[:8]
    a = train_speech_judge(seed=5, steps=3).features(x)
    clear_speech_judges()
    b = train_speech_judge(seed=5, steps=3).features(x)
    c = train_speech_judge(seed=6, steps=3).features(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_shift_moves_time_and_fills_with_silence():
    mel = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    g = torch.Generator().manual_seed(0)
    out = shift(mel, g, most=2)
    d = torch.randint(0, 5, (2,), generator=torch.Generator().manual_seed(0)) - 2  # the same draws
    for row in range(2):
        for t in range(5):
            src = t + int(d[row])
            want = mel[row, src] if 0 <= src < 5 else torch.full((3,), FLOOR)
            assert torch.equal(out[row, t], want)
    assert FLOOR == pytest.approx(math.log(1e-5))


def test_judge_refuses_wrong_input(judge):
    with pytest.raises(ValueError, match="Float"):
        judge.features(torch.zeros(2, 48, 12))
    with pytest.raises(ValueError, match="Float"):
        judge.predict(torch.zeros(2, 48, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="steps"):
        train_speech_judge(steps=0)
