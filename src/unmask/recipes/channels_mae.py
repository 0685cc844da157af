"""Recipe `channel-mae`: ChA-MAEViT (P63, Pham, Caicedo and Plummer, NeurIPS 2025, arXiv:2503.19331) on
multi-channel images made from moving digits, judged by probes of the frozen encoder against the same
encoder at random initialisation and raw pixels (`probed.py`).

Each image is a clip of 4 frames of 16 x 16 (`data/video.py`: an 8 x 8 digit moving 1 or 2 pixels per
frame and bouncing) with its frames as channels: channels that differ by a shift, so a hidden channel
is rebuilt only by reading the others. Every (channel, 4 x 4 patch) pair is a token (4 x 16 = 64),
`nn/channel_vit.py`; the masker hides patches, whole channels or both (`masking/channel_patch.py`),
the loss is the MSE of the hidden tokens' norm-pix pixels (`objectives/cha_mae.py`). Evaluation
probes mean-pooled encoder features of held-out clips (made from the 360 held-out digits) on two
tasks: which digit (10 classes) and which direction it moves (8; readable only across channels).

| objective.variant | what | masker, network |
|---|---|---|
| cha-mae | ChA-MAEViT | DCP (`p_patch`, `p_channel`), `memory_tokens`, channel-aware decoder |
| dcp | DCP alone | DCP, no memory tokens, MAE's decoder |
| patch | the baseline | patch-only masking within each channel, no memory tokens, MAE's decoder |

    unmask train channel-mae --out runs/channel-mae
    unmask train channel-mae objective.variant=patch --out runs/channel-patch
    unmask eval runs/channel-mae
    unmask sample runs/channel-mae --n 4                 # visible / filled in / truth, channel by channel
`benchmarks/cha_mae.py` compares the three over 3 seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option, section
from ..data.video import MovingDigits, moving_digits
from ..masking.channel_patch import ChannelPatchMask, patch_only_mask
from ..nn.channel_vit import ChannelAutoencoder, ChannelViTConfig
from ..objectives.cha_mae import ChannelMaskedAutoencoding
from ..train import TrainConfig
from .base import memo
from .probed import ProbedRecipe, ProbedSettings, ProbeSet
from .run import Run

VARIANTS = ("cha-mae", "dcp", "patch")
FRAMES, SIZE, SCALE, SPEEDS, PATCH = 4, 16, 1, (1, 2), 4
PROBE_SEED = 1  # the probe clips are the same for every run
TASKS = {"digit": "which digit (10 classes)", "direction": "where it moves (8 directions)"}


@dataclass(frozen=True)
class Data:
    clips_per_digit: int = option(2, lo=1, hi=8, help="training clips made from each training digit, drawn "
                                                      "with train.seed")


@dataclass(frozen=True)
class Objective:
    variant: str = option("cha-mae", choices=VARIANTS, help="objective")
    ratio: float = option(0.75, lo=0.0, hi=0.95, help="share of patches hidden in each channel (patch and both)")
    p_patch: float = option(0.5, lo=0.0, hi=1.0, help="DCP: probability of patch-only masking at a step")
    p_channel: float = option(0.5, lo=0.0, hi=1.0, help="DCP: probability of channel-only masking (the rest: both)")
    memory_tokens: int = option(4, lo=0, hi=64, help="cha-mae: memory tokens in the encoder")
    norm_pix: bool = option(True, help="per-token normalised pixel targets")


@dataclass(frozen=True)
class Settings(ProbedSettings):
    train: TrainConfig = section(TrainConfig(steps=400, batch_size=128, lr=1.5e-3, warmup=50))
    data: Data = section(Data())
    objective: Objective = section(Objective())


def clips(split: str, clips_per_digit: int, seed: int) -> MovingDigits:
    return memo(("channel-clips", split, clips_per_digit, seed),
                lambda: moving_digits(split, clips_per_digit=clips_per_digit, frames=FRAMES, size=SIZE,
                                      scale=SCALE, speeds=SPEEDS, seed=seed))


class ChannelMAE(ProbedRecipe):
    name = "channel-mae"
    papers = ("P63",)
    summary = "ChA-MAEViT (channel-patch masking, memory tokens) on frames-as-channels digits; probes vs random init"
    Settings = Settings
    tasks = TASKS
    raw_inputs = "raw pixels"

    def check(self) -> None:
        from ..errors import UnmaskError

        o = self.settings.objective
        if o.p_patch + o.p_channel > 1.0:
            raise UnmaskError(f"objective.p_patch + objective.p_channel must be <= 1, got {o.p_patch} + {o.p_channel}")

    def model_config(self) -> ChannelViTConfig:
        m, o = self.settings.model, self.settings.objective
        cha = o.variant == "cha-mae"
        return ChannelViTConfig(image_size=(SIZE, SIZE), channels=FRAMES, patch=PATCH, dim=m.dim, depth=m.depth,
                                heads=m.heads, decoder_dim=m.decoder_dim, decoder_depth=m.decoder_depth,
                                decoder_heads=4, memory_tokens=o.memory_tokens if cha else 0,
                                channel_aware_decoder=cha)

    def build(self) -> ChannelMaskedAutoencoding:
        o = self.settings.objective
        masker = patch_only_mask() if o.variant == "patch" else ChannelPatchMask(o.p_patch, o.p_channel)
        return ChannelMaskedAutoencoding(ChannelAutoencoder(self.model_config()), masker, ratio=o.ratio,
                                         norm_pix=o.norm_pix)

    def training_data(self, run: Run) -> dict:
        """Float[M, 4, 16, 16]: `data.clips_per_digit` clips of each training digit, frames as channels."""
        return {"images": clips("train", self.settings.data.clips_per_digit, self.settings.train.seed).videos[:, 0]}

    def heldout_batch(self) -> dict:
        return {"images": clips("test", 1, PROBE_SEED).videos[:, 0]}

    def probe_set(self, split: str) -> ProbeSet:
        c = clips(split, 1, PROBE_SEED)
        return ProbeSet(c.videos[:, 0], {task: getattr(c, task)[:, 0] for task in self.tasks})

    def details(self) -> str:
        o = self.settings.objective
        rule = ("patch-only" if o.variant == "patch" else
                f"DCP (p_patch {o.p_patch}, p_channel {o.p_channel})")
        memory = f", {o.memory_tokens} memory tokens, channel-aware decoder" if o.variant == "cha-mae" else ""
        return (f"Variant {o.variant}: {rule} masking at ratio {o.ratio}{memory}; {FRAMES} channels x "
                f"{(SIZE // PATCH) ** 2} patches. Held-out clips of the 360 held-out digits.")

    @torch.no_grad()
    def sample(self, run: Run, objective: ChannelMaskedAutoencoding, n: int, out: Path, prompt=None) -> Path:
        """Reconstructions of n held-out clips under one mask of the objective's masker (seeded by
        train.seed): for each clip, rows of visible tokens / filled in / truth, channels left to right."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ..nn.patch import unpatchify
        from ..nn.visible import gather_tokens, restore

        x = clips("test", 1, PROBE_SEED).videos[:n, 0]  # [n, C, H, W]
        n = len(x)
        mask = objective.draw_mask(n, torch.Generator().manual_seed(self.settings.train.seed))
        pred, encoded = objective.model(x, mask)
        tokens = objective.model.config.patchify(x)  # [n, C * P, p * p]
        index = encoded.index
        hidden = gather_tokens(tokens, index.ids_hidden)
        if objective.norm_pix:  # undo the per-token normalisation with the true statistics
            pred = pred * (hidden.var(-1, keepdim=True) + 1e-6).sqrt() + hidden.mean(-1, keepdim=True)
        visible = gather_tokens(tokens, index.ids_keep)

        def image(t: torch.Tensor) -> torch.Tensor:  # [n, C * P, p * p] -> [n, C, H, W]
            flat = unpatchify(t.reshape(n * FRAMES, -1, PATCH * PATCH), PATCH, 1, SIZE, SIZE)  # [n C, 1, H, W]
            return flat.view(n, FRAMES, SIZE, SIZE)

        rows = [image(restore(visible, torch.full_like(pred, 0.5), index)),
                image(restore(visible, pred, index)).clamp(0, 1), x]
        fig, axes = plt.subplots(3 * n, FRAMES, figsize=(FRAMES * 0.7, 3 * n * 0.7 + 0.4), squeeze=False)
        for i in range(n):
            for r, (name, images) in enumerate(zip(("visible", "filled", "truth"), rows, strict=True)):
                for c in range(FRAMES):
                    ax = axes[3 * i + r, c]
                    ax.imshow(images[i, c].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                    ax.set_xticks([])
                    ax.set_yticks([])
                axes[3 * i + r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
        fig.suptitle(f"{self.settings.objective.variant}: channels left to right (grey = hidden)", fontsize=8)
        fig.tight_layout()
        out = self.sample_path(out)
        fig.savefig(out, dpi=90)
        plt.close(fig)
        return out
