"""The audio front end: the mel filterbank, log-mel levels, Griffin-Lim round trips and WAV files."""

from __future__ import annotations

import math

import pytest
import torch

from unmask.data.audio import (
    FLOOR,
    RATE,
    MelSpectrogram,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    read_wav,
    write_wav,
)


def centres_hz(n_mels: int = 40, rate: int = RATE) -> torch.Tensor:
    return mel_to_hz(torch.linspace(0.0, float(hz_to_mel(rate / 2)), n_mels + 2, dtype=torch.float64))[1:-1]


def tone(freq: float, seconds: float = 0.5, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * RATE), dtype=torch.float64) / RATE
    return (amplitude * torch.sin(2 * math.pi * freq * t)).float()[None]


def test_htk_mel_scale():
    assert float(hz_to_mel(700.0)) == pytest.approx(2595 * math.log10(2))
    f = torch.tensor([0.0, 440.0, 8000.0], dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(f)), f)


def test_filterbank_triangles_add_to_one_between_first_and_last_centre():
    fb = mel_filterbank(1024, 40, RATE)  # [40, 513]
    assert fb.shape == (40, 513) and fb.min() >= 0 and fb.max() <= 1
    freqs = torch.linspace(0, RATE / 2, 513, dtype=torch.float64)
    c = centres_hz()
    inside = (freqs >= c[0]) & (freqs <= c[-1])
    assert torch.allclose(fb.sum(0)[inside], torch.ones(int(inside.sum()), dtype=torch.float64), atol=1e-12)
    # filter m is 0 outside the centres of its two neighbours
    m = 20
    outside = (freqs <= c[m - 1]) | (freqs >= c[m + 1])
    assert fb[m][outside].abs().max() == 0


@pytest.mark.parametrize("m", [5, 15, 30])
def test_pure_tone_peaks_in_its_mel_bin(m):
    mel = MelSpectrogram()
    logmel = mel(tone(float(centres_hz()[m])))  # [1, T, 40]
    assert logmel.shape == (1, 1 + int(0.5 * RATE) // 256, 40)
    assert int(logmel[0, 5:-5].mean(0).argmax()) == m


def test_level_of_a_sine_at_a_bin_centre():
    """Divided by the window's sum, a sine of amplitude A at FFT bin k has magnitude A / 2 there."""
    mel = MelSpectrogram()
    k = 40
    spec = mel.stft(tone(k * RATE / 1024, amplitude=0.8).double())  # [1, 513, T]
    assert torch.allclose(spec[0, k, 4:-4].abs(), torch.full_like(spec[0, k, 4:-4].abs(), 0.4), atol=1e-6)


def test_frames_do_not_depend_on_padding_and_silence_is_the_floor():
    mel = MelSpectrogram()
    wave = tone(500.0, 0.2)
    padded = torch.cat([wave, torch.zeros(1, 3000)], dim=1)
    a, b = mel(wave), mel(padded)
    assert torch.equal(a, b[:, :a.shape[1]])
    assert torch.all(mel(torch.zeros(1, 2048)) == math.log(FLOOR))


def speech_sample() -> torch.Tensor:
    pytest.importorskip("espeakng_loader")
    from unmask.data import speech

    return speech.load("test").waves[:8]


def test_griffin_lim_round_trip_error_bound():
    """wave -> log-mel -> wave -> log-mel on 8 held-out eSpeak words: mean |difference| of the log-mel
    measured 0.104 after 1 iteration and 0.087 after 32; the bound is 0.12 and must fall."""
    mel = MelSpectrogram()
    logmel = mel(speech_sample())

    def error(iters: int) -> float:
        wave = mel.to_wave(logmel, iters, generator=torch.Generator().manual_seed(0))
        assert wave.shape == (8, (logmel.shape[1] - 1) * 256)
        return float((mel(wave) - logmel).abs().mean())

    one, many = error(1), error(32)
    assert many < 0.12
    assert many < one - 0.01


def test_griffin_lim_is_seeded():
    mel = MelSpectrogram()
    logmel = mel(tone(300.0, 0.1))
    a, b, c = (mel.to_wave(logmel, 4, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_wav_round_trip(tmp_path):
    wave = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    wave[:3] = torch.tensor([1.0, -1.0, 0.0])
    path = write_wav(tmp_path / "sub" / "a.wav", wave, rate=16000)
    back, rate = read_wav(path)
    assert rate == 16000 and back.shape == (1000,)
    assert (back.double() - wave.double()).abs().max() <= 1 / 32768
    # int16 samples (what eSpeak gives) come back exactly, and out-of-range values are clipped
    pcm = torch.randint(-32768, 32768, (500,), generator=torch.Generator().manual_seed(1)).float() / 32768
    assert torch.equal(read_wav(write_wav(tmp_path / "b.wav", pcm))[0], pcm)
    assert read_wav(write_wav(tmp_path / "c.wav", torch.tensor([3.0, -3.0])))[0].tolist() == [32767 / 32768, -1.0]
