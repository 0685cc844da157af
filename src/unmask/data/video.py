"""Moving digits: short videos made at run time from scikit-learn's 8x8 digits (in the manner of
Moving MNIST, Srivastava et al. 2015), labelled by the digit shown and by its direction of motion.

Each clip is `frames` grey frames of `size x size` (default 8 x 32 x 32). A digit, enlarged
`scale` times (nearest neighbour: 16 x 16 by default), starts at a random place and moves by
`speed * DIRECTIONS[d]` pixels per frame, with one of 8 directions and a speed in `speeds`; it
bounces off the borders (the position is reflected and the velocity turns), so it never leaves the
frame. The start is drawn so that the first step does not bounce: the label `direction` is the
motion from frame 0 to frame 1 exactly. With two digits per clip, each moves on its own and the
frame shows their pixel-wise maximum.

The train clips use the training digits and the test clips the held-out digits of `digits.load`
(the same fixed split), so a probe never sees a test digit's image during training. Everything is
deterministic under `seed`. `moving_images` makes the same clips from any 8x8 grey images (a user's,
`data/user_images.py`), `moving_digits` from a split of the embedded digits.

    videos: Float[M, 1, T, H, W] in [0, 1] (grey level / 16)  -- the layout [B, C, T, H, W] of patchify_video
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import digits

# (dx, dy) per direction, image axes (x to the right, y downwards): E, NE, N, NW, W, SW, S, SE
DIRECTIONS = ((1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1))
DIRECTION_NAMES = ("E", "NE", "N", "NW", "W", "SW", "S", "SE")


@dataclass(frozen=True)
class MovingDigits:
    videos: torch.Tensor  # Float[M, 1, T, H, W] in [0, 1]
    digit: torch.Tensor  # Long[M, K]: class of each of the K digits of a clip (0..9; a user's label, -1 for none)
    source: torch.Tensor  # Long[M, K]: index of each digit's image in the images it was made from
    direction: torch.Tensor  # Long[M, K]: index into DIRECTIONS of each digit's first step
    speed: torch.Tensor  # Long[M, K]: pixels per frame along each moving axis
    positions: torch.Tensor  # Long[M, K, T, 2]: top-left (x, y) of each digit in each frame


def bounce(start: torch.Tensor, velocity: torch.Tensor, frames: int, room: int) -> torch.Tensor:
    """Positions on [0, room] of points moving at `velocity` per frame, reflected at both ends.
    start, velocity: Long[...] with |velocity| <= room -> Long[..., frames]."""
    p, v = start.clone(), velocity.clone()
    out = [p.clone()]
    for _ in range(frames - 1):
        p = p + v
        low, high = p < 0, p > room
        p = torch.where(low, -p, torch.where(high, 2 * room - p, p))
        v = torch.where(low | high, -v, v)
        out.append(p.clone())
    return torch.stack(out, dim=-1)


def moving_digits(split: str = "train", **how) -> MovingDigits:
    """Clips of the digits of `split` ('train': 1,437 digits, 'test': 360); `how` as `moving_images`."""
    data = digits.load(split)
    return moving_images(data.images.view(-1, 8, 8), data.labels, **how)


def moving_images(images: torch.Tensor, labels: torch.Tensor, *, clips_per_digit: int = 1, digits_per_clip: int = 1,
                  frames: int = 8, size: int = 32, scale: int = 2, speeds: tuple[int, ...] = (1, 2, 3),
                  seed: int = 0) -> MovingDigits:
    """Clips of n images: images [n, 8, 8] grey levels 0..16 (any number dtype), labels Long[n].
    Clip i shows image i % n first (each image opens `clips_per_digit` clips); a second image, if
    any, is drawn at random from the same n."""
    side = 8 * scale
    room = size - side
    if clips_per_digit < 1 or digits_per_clip not in (1, 2) or frames < 2 or scale < 1:
        raise ValueError(f"need clips_per_digit >= 1, digits_per_clip 1 or 2, frames >= 2, scale >= 1; got "
                         f"{clips_per_digit}, {digits_per_clip}, {frames}, {scale}")
    if room < 1 or not speeds or min(speeds) < 1 or max(speeds) > room:
        raise ValueError(f"a {side}x{side} digit in a {size}x{size} frame can move by 1..{room} pixels per frame; "
                         f"got speeds {speeds}")
    n = len(labels)
    if images.shape != (n, 8, 8) or n < 1:
        raise ValueError(f"need images [n, 8, 8] and labels [n], n >= 1; got {list(images.shape)} and {n} labels")
    m, k = n * clips_per_digit, digits_per_clip
    g = torch.Generator().manual_seed(seed)
    which = torch.stack([torch.arange(m) % n] + [torch.randint(n, (m,), generator=g) for _ in range(k - 1)], 1)
    direction = torch.randint(len(DIRECTIONS), (m, k), generator=g)
    speed = torch.as_tensor(speeds)[torch.randint(len(speeds), (m, k), generator=g)]
    velocity = torch.as_tensor(DIRECTIONS)[direction] * speed.unsqueeze(-1)  # [M, K, 2]
    # start where the first step stays inside: [max(0, -v), room - max(0, v)] on each axis
    low, high = (-velocity).clamp_min(0), room - velocity.clamp_min(0)
    start = low + (torch.rand(m, k, 2, generator=g) * (high - low + 1)).long()
    positions = bounce(start, velocity, frames, room).transpose(-1, -2)  # [M, K, T, 2]

    images = images.float().div(digits.LEVELS - 1)
    images = images.repeat_interleave(scale, 1).repeat_interleave(scale, 2)  # [n, side, side]
    videos = torch.zeros(m, frames, size, size)
    rows = torch.arange(m).view(m, 1, 1)
    offsets = torch.arange(side)
    for j in range(k):
        for t in range(frames):
            ys = positions[:, j, t, 1].view(m, 1, 1) + offsets.view(1, side, 1)
            xs = positions[:, j, t, 0].view(m, 1, 1) + offsets.view(1, 1, side)
            frame = videos[:, t]
            frame[rows, ys, xs] = torch.maximum(frame[rows, ys, xs], images[which[:, j]])
    return MovingDigits(videos.unsqueeze(1), labels[which], which, direction, speed, positions)
