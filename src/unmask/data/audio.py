"""Audio front end: log-mel features, their inverse to a waveform (Griffin-Lim), and WAV files.

Features: `MelSpectrogram` turns waves into natural-log mel power, frames `[B, T, n_mels]`. The short-time
Fourier transform uses a periodic Hann window of `n_fft` samples every `hop` samples, centred frames
with zero padding (`T = 1 + L // hop`, and a wave's frames do not depend on zeros padded after it), and
is divided by the window's sum, so a full-scale sine at a bin centre has power 0.25. Power goes through
a triangular mel filterbank on the HTK mel scale (`mel = 2595 log10(1 + f / 700)`), `n_mels` filters
between 0 Hz and `rate / 2`, each with peak 1: the filters add up to 1 at every frequency between the
first and the last centre. The log is floored at `FLOOR` = 1e-5 (-50 dB below a full-scale sine)
so silence has a finite value.

Inverse: `MelSpectrogram.to_wave` maps mel power back to linear power by the filterbank's
pseudo-inverse (clamped at 0, since power cannot be negative), then recovers a phase by Griffin-Lim
(Griffin & Lim, 1984, "Signal estimation from modified short-time Fourier transform", IEEE TASSP
32(2)): starting from a random phase, alternate an inverse STFT and an STFT, keeping the target
magnitude and the new phase, which never increases the distance between the magnitudes.

WAV: `write_wav` / `read_wav` store mono 16-bit PCM with the standard library's `wave` module; a
sample `x` in [-1, 1] is stored as `round(x * 32768)` clamped to the int16 range, so a round trip is
exact to 1/32768.

    >>> mel = MelSpectrogram()
    >>> wave = torch.sin(2 * math.pi * 440 * torch.arange(RATE) / RATE)[None]   # Float[1, 22050]
    >>> mel(wave).shape
    torch.Size([1, 87, 40])
    >>> write_wav("a.wav", mel.to_wave(mel(wave))[0])        # doctest: +SKIP
"""

from __future__ import annotations

import math
import wave as wave_module
from pathlib import Path

import numpy as np
import torch

RATE = 22050  # eSpeak NG's sample rate
FLOOR = 1e-5  # smallest mel power kept before the log
PCM_SCALE = 32768  # int16 full scale


def hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: torch.Tensor | float) -> torch.Tensor:
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, rate: int) -> torch.Tensor:
    """Float64[n_mels, n_fft // 2 + 1]: triangles with peak 1 at `n_mels` centres equally spaced in
    mel between 0 Hz and rate / 2; filter m rises from centre m - 1 to m and falls to centre m + 1."""
    freqs = torch.linspace(0.0, rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # Hz of each FFT bin
    edges = mel_to_hz(torch.linspace(0.0, float(hz_to_mel(rate / 2)), n_mels + 2, dtype=torch.float64))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.minimum(rising, falling).clamp(min=0.0)


class MelSpectrogram:
    """Waves -> natural-log mel power, and back (see the module docstring).

    Args:
        n_fft: window and FFT length in samples.
        hop: samples between frames.
        n_mels: mel filters.
        rate: sample rate in Hz.
    """

    def __init__(self, n_fft: int = 1024, hop: int = 256, n_mels: int = 40, rate: int = RATE):
        self.n_fft, self.hop, self.n_mels, self.rate = n_fft, hop, n_mels, rate
        self.window = torch.hann_window(n_fft, dtype=torch.float64)
        self.filterbank = mel_filterbank(n_fft, n_mels, rate)  # Float64[n_mels, F]
        self.inverse = torch.linalg.pinv(self.filterbank)  # Float64[F, n_mels]
        self.scale = float(self.window.sum())  # divides the STFT: a unit sine has magnitude 1/2

    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        """Float[B, L] -> Complex[B, F, T], F = n_fft // 2 + 1, T = 1 + L // hop."""
        window = self.window.to(wave.device, wave.dtype)
        return torch.stft(wave, self.n_fft, self.hop, window=window, center=True, pad_mode="constant",
                          return_complex=True) / self.scale

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Complex[B, F, T] -> Float[B, length], the least-squares inverse of `stft`."""
        window = self.window.to(spec.device, spec.real.dtype)
        return torch.istft(spec * self.scale, self.n_fft, self.hop, window=window, center=True, length=length)

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        """wave: Float[B, L] in [-1, 1] -> Float[B, T, n_mels] natural-log mel power, T = 1 + L // hop."""
        power = self.stft(wave).abs().square()  # [B, F, T]
        mel = torch.einsum("mf,bft->btm", self.filterbank.to(power.device, power.dtype), power)
        return mel.clamp(min=FLOOR).log()

    def to_wave(self, logmel: torch.Tensor, iters: int = 32,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """logmel: Float[B, T, n_mels] -> Float[B, (T - 1) * hop] by pseudo-inverse and `iters`
        rounds of Griffin-Lim from a uniform random phase drawn from `generator`."""
        if iters < 1:
            raise ValueError(f"iters must be at least 1, got {iters}")
        dtype, device = logmel.dtype, logmel.device
        mel = logmel.double().exp()
        power = torch.einsum("fm,btm->bft", self.inverse.to(device), mel).clamp(min=0.0)
        magnitude = power.sqrt()  # [B, F, T]
        length = (logmel.shape[1] - 1) * self.hop
        phase = torch.rand(magnitude.shape, generator=generator, dtype=torch.float64,
                           device=generator.device if generator is not None else "cpu").to(device)
        spec = torch.polar(magnitude, 2 * math.pi * phase)
        for _ in range(iters):
            wave = self.istft(spec, length)
            rebuilt = self.stft(wave)
            # keep the target magnitude, take the phase of the consistent spectrogram; 1e-12 keeps a
            # silent bin's phase defined
            spec = magnitude * rebuilt / rebuilt.abs().clamp(min=1e-12)
        return self.istft(spec, length).to(dtype)


def write_wav(path: str | Path, wave: torch.Tensor | np.ndarray, rate: int = RATE) -> Path:
    """Write Float[L] samples in [-1, 1] (clipped) as mono 16-bit PCM; returns the path."""
    samples = torch.as_tensor(wave).detach().to("cpu", torch.float64).reshape(-1)
    pcm = (samples * PCM_SCALE).round().clamp(-PCM_SCALE, PCM_SCALE - 1).to(torch.int16).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave_module.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.astype("<i2").tobytes())
    return path


def read_wav(path: str | Path) -> tuple[torch.Tensor, int]:
    """Mono 16-bit PCM file -> (Float32[L] in [-1, 1), sample rate)."""
    with wave_module.open(str(path), "rb") as f:
        if f.getnchannels() != 1 or f.getsampwidth() != 2:
            raise ValueError(f"{path}: expected mono 16-bit PCM, got {f.getnchannels()} channels of "
                             f"{8 * f.getsampwidth()} bits")
        rate = f.getframerate()
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    return torch.from_numpy(pcm.astype(np.float32) / PCM_SCALE), rate


def save_mel_png(mel: torch.Tensor, path: str | Path, scale: int = 3) -> Path:
    """mel: Float[n, T, n_mels] log-mel -> a grey PNG of the n spectrograms side by side (time to the right,
    low frequencies at the bottom, black = quiet), each pixel `scale` x `scale`. Needs Pillow."""
    from PIL import Image

    low, high = float(mel.min()), float(mel.max())
    grey = ((mel - low) / max(high - low, 1e-6) * 255).round().to(torch.uint8)  # [n, T, M]
    gap = torch.full((grey.shape[2], 2), 255, dtype=torch.uint8)
    picture = torch.cat([torch.cat([g.T.flip(0), gap], 1) for g in grey], 1)  # [M, n (T + 2)]
    image = Image.fromarray(picture.numpy()).resize((picture.shape[1] * scale, picture.shape[0] * scale),
                                                    Image.NEAREST)
    path = Path(path)
    image.save(path)
    return path
