"""Acoustic tokens for recipes: an `AcousticTokenizer` (a conv autoencoder over log-mel frames with a
residual VQ, SoundStream: Zeghidour et al. 2021, arXiv:2107.03312; `nn/audio_tokenizer.py`) trained
on the synthetic eSpeak NG words of `data/speech.py` with the one Trainer in its own run folder
(`RUN/acoustic`), and each speech split stored as its codes.

A recipe that generates or reads acoustic tokens declares an `acoustic: AcousticTokenizerSettings`
section, calls `train_acoustic_tokenizer(run, settings, seed)` before its own training, and then
`stored_acoustic_tokens(run, settings, split)` gives Long[M, stages, frames / down], computed once
per run. `measure_acoustic(tokenizer, split)` gives the figures of its report. On its own:

    python -m unmask.recipes.audio_tokens runs/acoustic                 # ~1 min at one thread
    python -m unmask.recipes.audio_tokens runs/acoustic steps=2000 codes=128 seed=1
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import option, to_dict
from ..data import speech
from ..errors import UnmaskError
from ..nn.audio_tokenizer import AcousticTokenizer, AcousticTokenizerConfig
from ..nn.quantizers import usage_stats
from ..objectives.audio_tokenizer import AcousticTokenizerTraining
from ..seeding import seeded
from ..train import TrainConfig, fit
from .base import memo
from .run import Run

ROLE = "acoustic"
NAME = "acoustic-tokenizer"  # what its checkpoints' config.json records as the recipe


@dataclass(frozen=True)
class AcousticTokenizerSettings:
    frames: int = option(48, lo=2, help="log-mel frames per utterance (hop 256 at 22,050 Hz: 48 = 0.56 s)")
    down: int = option(2, choices=(1, 2), help="frames per token")
    stages: int = option(3, lo=1, help="residual VQ stages (token streams)")
    codes: int = option(64, lo=2, help="codes per stage")
    code_dim: int = option(32, lo=1, help="width of a code vector")
    width: int = option(64, lo=8, help="convolution channels (a multiple of 8)")
    steps: int = option(2000, lo=1, help="training steps of the tokenizer")
    batch_size: int = option(32, lo=1, help="utterances per step")
    lr: float = option(2e-3, lo=0, lo_open=True, help="peak learning rate")

    def config(self) -> AcousticTokenizerConfig:
        if self.frames % self.down:
            raise UnmaskError(f"acoustic.frames={self.frames} must be a multiple of acoustic.down={self.down}")
        try:
            return AcousticTokenizerConfig(n_mels=40, width=self.width, down=self.down, stages=self.stages,
                                           codes=self.codes, code_dim=self.code_dim)
        except ValueError as e:
            raise UnmaskError(f"acoustic settings: {e}") from None

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=min(50, self.steps // 10),
                           weight_decay=0.0, seed=seed, log_every=max(1, self.steps // 10))

    def run_config(self) -> dict:
        return {"recipe": NAME, "role": ROLE, "settings": to_dict(self), "model": self.config().to_dict()}


def acoustic_objective(settings: AcousticTokenizerSettings, seed: int) -> AcousticTokenizerTraining:
    """The tokenizer's training objective, weights drawn from `seed`, normalised by the train frames."""
    with seeded(seed):
        objective = AcousticTokenizerTraining(AcousticTokenizer(settings.config()))
    objective.tokenizer.set_normalisation(speech.frames("train", settings.frames).mel)
    return objective


def train_acoustic_tokenizer(run: Run, settings: AcousticTokenizerSettings, seed: int) -> AcousticTokenizer:
    """Train (or resume, or load) the tokenizer on the speech train split in `RUN/acoustic`; returns it
    in eval mode."""
    data = speech.frames("train", settings.frames)
    objective = acoustic_objective(settings, seed)
    sub = run.sub(ROLE)
    trained = fit(objective, {"mel": data.mel, "lengths": data.lengths}, settings.train_config(seed), sub.folder,
                  settings.run_config(), sub.progress, sub.changes)
    return trained.tokenizer.eval()


def load_acoustic_tokenizer(run: Run, settings: AcousticTokenizerSettings) -> AcousticTokenizer:
    """The trained tokenizer of `RUN/acoustic`, checked against `settings`' model."""
    from ..train.checkpoint import find_checkpoint, load_checkpoint

    ckpt = find_checkpoint(run.sub(ROLE).folder)
    tensors, config, _ = load_checkpoint(ckpt)
    if config.get("recipe") != NAME or config.get("model") != settings.config().to_dict():
        raise UnmaskError(f"{ckpt} holds no acoustic tokenizer built from these acoustic settings")
    tokenizer = AcousticTokenizer(settings.config())
    objective = AcousticTokenizerTraining(tokenizer)
    try:
        objective.load_state_dict(tensors.get("ema", tensors["model"]))
    except RuntimeError as e:
        raise UnmaskError(f"weights in {ckpt} do not fit the acoustic tokenizer: {str(e).splitlines()[0]}") from None
    return tokenizer.eval()


@torch.no_grad()
def encode_all(tokenizer: AcousticTokenizer, mel: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """mel Float[M, T, 40] -> Long[M, stages, T / down] on the host, in eval mode, `batch` at a time."""
    was = tokenizer.training
    tokenizer.eval()
    try:
        return torch.cat([tokenizer.encode(chunk).cpu() for chunk in mel.split(batch)])
    finally:
        tokenizer.train(was)


def stored_acoustic_tokens(run: Run, settings: AcousticTokenizerSettings, split: str) -> torch.Tensor:
    """Long[M, stages, frames / down]: a speech split (rows in `speech.frames(split)` order) as the
    trained tokenizer's codes, computed once per run, checkpoint and split."""
    key = ("acoustic-tokens", str(run.folder.resolve()), run.sub(ROLE).trained_step(),
           tuple(sorted(to_dict(settings).items())), split)
    return memo(key, lambda: encode_all(load_acoustic_tokenizer(run, settings),
                                        speech.frames(split, settings.frames).mel))


@torch.no_grad()
def measure_acoustic(tokenizer: AcousticTokenizer, split: str = "test", frames: int = 48) -> dict:
    """Figures on a speech split: `mse` (log-mel, valid frames) with all stages, `mse_stages_k` with the
    first k, `codes_used_k` and `perplexity_k` of stage k's codes, and `constant_mse` of the best
    constant (the split's mean log-mel) for scale; floats."""
    data = speech.frames(split, frames)
    codes = encode_all(tokenizer, data.mel)  # [M, S, T']
    valid = (torch.arange(frames)[None, :] < data.lengths[:, None])[..., None]  # [M, T, 1]
    values = valid.sum() * data.mel.shape[-1]
    out: dict = {}
    for k in range(1, tokenizer.stages + 1):
        rebuilt = torch.cat([tokenizer.decode(c).cpu() for c in codes[:, :k].split(256)])
        error = ((rebuilt.double() - data.mel.double()).pow(2) * valid).sum() / values
        out[f"mse_stages_{k}"] = float(error)
        counts = torch.bincount(codes[:, k - 1].reshape(-1), minlength=tokenizer.codebook_size).float()
        perplexity, _ = usage_stats(counts)
        out[f"codes_used_{k}"] = int((counts > 0).sum())
        out[f"perplexity_{k}"] = float(perplexity)
    out["mse"] = out[f"mse_stages_{tokenizer.stages}"]
    mean = (data.mel.double() * valid).sum() / values
    out["constant_mse"] = float(((data.mel.double() - mean) ** 2 * valid).sum() / values)
    return out


def table(figures: dict, stages: int) -> str:
    """A Markdown table of `measure_acoustic`'s figures."""
    rows = ["| stages used | log-mel MSE (test) | codes used in that stage | perplexity |", "|---|---|---|---|"]
    for k in range(1, stages + 1):
        rows.append(f"| {k} | {figures[f'mse_stages_{k}']:.4f} | {figures[f'codes_used_{k}']} | "
                    f"{figures[f'perplexity_{k}']:.1f} |")
    rows.append(f"| none (the mean log-mel everywhere) | {figures['constant_mse']:.4f} | | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    import sys
    import time

    from ..config import apply_overrides

    args = sys.argv[1:] if argv is None else argv
    if not args:
        raise SystemExit("usage: python -m unmask.recipes.audio_tokens RUN_FOLDER [key=value ...]")
    seeds = [int(a.split("=", 1)[1]) for a in args[1:] if a.startswith("seed=")]
    settings = apply_overrides(AcousticTokenizerSettings(), [a for a in args[1:] if not a.startswith("seed=")])
    seed = seeds[-1] if seeds else 0
    start = time.time()
    tokenizer = train_acoustic_tokenizer(Run(args[0]), settings, seed)
    figures = measure_acoustic(tokenizer, "test", settings.frames)
    print(f"trained in {time.time() - start:.0f} s (seed {seed})")
    print(table(figures, settings.stages))


if __name__ == "__main__":
    main()
