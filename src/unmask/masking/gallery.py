"""A gallery of every masker the package exports, drawn on a grid, a video and streams.

Each exported `Masker` subclass is drawn with its default settings (ColorMask once per colour,
FrequencyMask once per band), hiding half of the tokens of one example (dark = hidden). Data-driven
maskers get a synthetic context: `scores`, `energy` and `saliency` peak at the centre of the layout, `word_ids`
and `entity_ids` cut it into short runs, `first` is a random half. A masker that does not apply to a
layout (a tube mask on a grid) shows why in its cell. A masker added to `masking/__init__.py` appears
here with no change to this file.

    from unmask.masking.gallery import draw_gallery
    draw_gallery("masks.png")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..layout import Layout
from .base import Masker
from .block import BlockMask
from .color import COLOURS, ColorMask
from .frequency import FrequencyMask
from .mixture import MixtureMask
from .random import RandomMask
from .twin import TwinMask

LAYOUTS = {"grid 16x16": Layout.grid(16, 16), "video 4x8x8": Layout.video(4, 8, 8),
           "streams 4x32": Layout.streams(4, 32)}
VARIANTS = {ColorMask: [(f"ColorMask {c}", ColorMask(colour=c)) for c in COLOURS],
            FrequencyMask: [(f"FrequencyMask {b}\n(fft2 order)", FrequencyMask(band=b)) for b in ("low", "high")],
            TwinMask: [("TwinMask independent\n(2nd mask of `first`)", TwinMask()),
                       ("TwinMask overlap 0.5\n(2nd mask of `first`)", TwinMask(overlap=0.5))],
            MixtureMask: [("MixtureMask\n(random or block per row)", MixtureMask(maskers=(RandomMask(), BlockMask())))]}


def exported_maskers() -> list[tuple[str, Masker]]:
    """(label, masker) for every Masker subclass that `unmask.masking` exports, in export order."""
    from .. import masking

    out = []
    for name in masking.__all__:
        obj = getattr(masking, name)
        if isinstance(obj, type) and issubclass(obj, Masker) and obj is not Masker:
            out += VARIANTS[obj] if obj in VARIANTS else [(name, obj())]
    return out


def synthetic_context(layout: Layout, generator: torch.Generator) -> dict:
    """One example's context for data-driven maskers (shapes [1, N])."""
    seg = layout.segments[0]
    coords = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in seg.shape], indexing="ij")
    centre = 1 - torch.stack([c.flatten() ** 2 for c in coords]).sum(0).sqrt() / len(seg.shape) ** 0.5
    breaks = torch.rand(layout.n, generator=generator) < 0.4
    words = breaks.long().cumsum(0)
    return {
        "scores": centre.unsqueeze(0),
        "energy": 4 * centre.unsqueeze(0),
        "saliency": 4 * centre.unsqueeze(0),
        "word_ids": words.unsqueeze(0),
        "entity_ids": torch.where(words % 2 == 0, words, torch.full_like(words, -1)).unsqueeze(0),
        "first": RandomMask()(layout, 1, ratio=0.5, generator=generator),
    }


def mask_image(mask: torch.Tensor, layout: Layout) -> np.ndarray:
    """Bool[N] of a one-segment layout -> a 2-D float image (1 = hidden); video frames side by side,
    NaN between them."""
    seg = layout.segments[0]
    m = mask.float().view(*seg.shape).numpy()
    if seg.kind != "video":
        return m.reshape(seg.shape[0], -1)
    gap = np.full((seg.shape[1], 2), np.nan)
    return np.concatenate([p for frame in m for p in (frame, gap)][:-1], axis=1)


def draw_gallery(path, *, ratio: float = 0.5, seed: int = 0) -> dict[tuple[str, str], torch.Tensor | None]:
    """Draw every exported masker on every layout of `LAYOUTS` into the PNG `path`. Returns each
    cell's mask (Bool[N]) or None where the masker does not apply."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = exported_maskers()
    cells: dict[tuple[str, str], torch.Tensor | None] = {}
    fig, axes = plt.subplots(len(rows), len(LAYOUTS), figsize=(10, 0.75 * len(rows) + 0.8),
                             gridspec_kw={"width_ratios": [1, 2.3, 2]}, squeeze=False)
    cmap = matplotlib.colormaps["Greys"].with_extremes(bad="white")
    for i, (label, masker) in enumerate(rows):
        for j, (lname, layout) in enumerate(LAYOUTS.items()):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            g = torch.Generator().manual_seed(seed)
            try:
                mask = masker(layout, 1, ratio=ratio, generator=g, **synthetic_context(layout, g))[0]
            except ValueError:
                cells[label, lname] = None
                ax.text(0.5, 0.5, f"does not apply to {layout.segments[0].kind}", ha="center", va="center",
                        fontsize=6, color="0.4")
                ax.set_frame_on(False)
            else:
                cells[label, lname] = mask
                ax.imshow(mask_image(mask, layout), cmap=cmap, vmin=0, vmax=1.3, interpolation="nearest")
                ax.set_title(f"{int(mask.sum())}/{layout.n} hidden", fontsize=5, pad=1)
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
            if i == 0:
                ax.annotate(lname, (0.5, 1.6), xycoords="axes fraction", ha="center", fontsize=8)
    fig.suptitle(f"every masker of unmask.masking, ratio {ratio} (dark = hidden)", fontsize=9)
    fig.subplots_adjust(left=0.16, right=0.98, top=1 - 0.9 / fig.get_figheight(), bottom=0.01, hspace=0.5,
                        wspace=0.08)
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)
    return cells
