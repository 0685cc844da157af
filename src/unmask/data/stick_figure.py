"""Stick figures of a skeleton's joint positions, drawn with Pillow (an extra): side views (x to the
right, y up, a ground line at y = 0 with a tick every half metre), right limbs red, left limbs blue.

    strip(positions [T, J, 3], parents, joints, path, every, size) -> PNG of every `every`-th frame
    gif(positions [T, J, 3] or [K, T, J, 3], parents, joints, path, rate, size) -> animated GIF

Each panel is centred on the root's x (joint 0), so a walking figure stays in view and the ticks show
it travel. `data.motion.render_strip` / `render_gif` call these with the humanoid's skeleton.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import UnmaskError

COLOURS = {"right": (200, 40, 40), "left": (40, 80, 200), "": (20, 20, 20)}
METRES_PER_PANEL = 2.2


def _pillow():
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise UnmaskError("drawing motion needs Pillow; install the motion extra: "
                          "pip install 'unmask[motion]'") from None
    return Image, ImageDraw


def side_view(positions: torch.Tensor, parents, joints, size: int):
    """One frame [J, 3] -> a Pillow image of `size` x `size` pixels."""
    Image, ImageDraw = _pillow()
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    ground, scale, centre_x = size - 8, size / METRES_PER_PANEL, float(positions[0, 0])

    def at(p):
        return (size / 2 + (float(p[0]) - centre_x) * scale, ground - float(p[1]) * scale)

    draw.line([(0, ground), (size, ground)], fill=(150, 150, 150))
    for k in range(math.floor(2 * (centre_x - METRES_PER_PANEL)), math.ceil(2 * (centre_x + METRES_PER_PANEL)) + 1):
        x = at((k * 0.5, 0.0))[0]
        draw.line([(x, ground), (x, ground + 4)], fill=(150, 150, 150))
    for j, parent in enumerate(parents):
        if parent is not None:
            side = joints[j].split("_")[0] if joints[j].startswith(("right", "left")) else ""
            draw.line([at(positions[parent]), at(positions[j])], fill=COLOURS[side], width=3)
    if "head" in joints:
        head, r = at(positions[joints.index("head")]), 0.07 * scale
        draw.ellipse([head[0] - r, head[1] - r, head[0] + r, head[1] + r], outline=COLOURS[""], width=2)
    return img


def strip(positions: torch.Tensor, parents, joints, path: str | Path, every: int = 4, size: int = 128) -> Path:
    Image, _ = _pillow()
    positions = positions.detach().cpu().double()
    panels = [side_view(positions[t], parents, joints, size) for t in range(0, positions.shape[0], every)]
    out = Image.new("RGB", (size * len(panels), size), "white")
    for k, panel in enumerate(panels):
        out.paste(panel, (k * size, 0))
    path = Path(path)
    out.save(path)
    return path


def gif(positions: torch.Tensor, parents, joints, path: str | Path, rate: int, size: int = 160) -> Path:
    Image, _ = _pillow()
    positions = positions.detach().cpu().double()
    motions = positions[None] if positions.ndim == 3 else positions
    frames = []
    for t in range(motions.shape[1]):
        frame = Image.new("RGB", (size * motions.shape[0], size), "white")
        for k, one in enumerate(motions):
            frame.paste(side_view(one[t], parents, joints, size), (k * size, 0))
        frames.append(frame)
    path = Path(path)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / rate), loop=0)
    return path
