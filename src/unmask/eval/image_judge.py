"""A shared judge for 32 x 32 image generation: a small CNN classifier trained on the real images of an
image set (`data.image_sets`), whose pooled features are the feature space of the Fréchet distance
(Heusel et al. 2017, arXiv:1706.08500) and of improved precision and recall (Kynkäänniemi et al. 2019,
arXiv:1904.06991), and whose predictions say whether a sample shows the class it was asked for (the
role Inception-v3 plays for FID and the Inception score on photographs; `eval/quality.py` does the
same for 8 x 8 digits with an MLP).

The network: four 3 x 3 convolutions (16, 32, 64, 64 channels; the last three with stride 2), each
followed by batch normalisation and a ReLU, global average pooling to 64 features, and a linear head.
Training is deterministic for a seed: seeded initialisation and batches (torch.Generator), Adam for a
fixed number of steps on one thread, light augmentation by random shifts of up to `SHIFT` pixels
(edge pixels repeated, so a black or a white ground stays as it is).

`Judge.accuracy` is measured on held-out real images: the test split's renders for `glyphs`, `faces`
and `digits`. For `emoji` every image is its own class, so no classifier of identity can generalise
to the held-out emoji; there the judge is trained on the train split and `accuracy` is its accuracy
on the train images shifted by a fixed, seeded random shift of up to `SHIFT` pixels each (a check that
the features separate the emoji, not a held-out generalisation score). Measured at the default 600
steps, seed 0, one CPU thread: glyphs 0.715 on the 207 held-out renders (0.551 at 300 steps; several
Greek capitals are drawn exactly like Latin ones, so 1.0 is out of reach), emoji 0.159 on the shifted
train images (3,953 classes: 600 steps of 128 are 23 passes, too few to learn every identity).

    >>> judge = train_judge("glyphs")                    # doctest: +SKIP
    >>> judge.accuracy, judge.features(images).shape     # doctest: +SKIP
    (0.71..., torch.Size([M, 64]))
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ..data import image_sets

JUDGE_STEPS = 600
BATCH = 128
LR = 3e-3
SHIFT = 2  # pixels of random shift, both ways, in training and in the emoji accuracy check
WIDTHS = (16, 32, 64, 64)
FEATURES = WIDTHS[-1]


def _network(channels: int, classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = channels
    for i, c_out in enumerate(WIDTHS):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU()]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes)]
    return nn.Sequential(*layers)


def _as_input(images: torch.Tensor) -> torch.Tensor:
    """Uint8[M, C, H, W] -> Float[M, C, H, W] on [0, 1]."""
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(f"images must be Uint8[M, C, H, W], got {images.dtype} {tuple(images.shape)}")
    return images.float() / 255


def shift(x: torch.Tensor, generator: torch.Generator, most: int = SHIFT) -> torch.Tensor:
    """x: Float[M, C, H, W] -> each image moved by its own random (dy, dx) in [-most, most]^2, the
    edge pixels repeated into the space it leaves."""
    m, _, h, w = x.shape
    padded = F.pad(x, (most, most, most, most), mode="replicate")
    dy, dx = torch.randint(0, 2 * most + 1, (2, m), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # [M, 1, H, 1]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # [M, 1, 1, W]
    idx = torch.arange(m)[:, None, None, None]
    chans = torch.arange(x.shape[1])[None, :, None, None]
    return padded[idx, chans, rows, cols]


class Judge:
    """A trained classifier of one image set. `accuracy`: see the module docstring; `name`, `seed`,
    `steps`: how it was made; `classes`: the set's class names."""

    def __init__(self, net: nn.Sequential, name: str, seed: int, steps: int, classes: tuple[str, ...]):
        self.net, self.name, self.seed, self.steps, self.classes = net.eval(), name, seed, steps, classes
        self.accuracy = float("nan")

    @torch.no_grad()
    def features(self, images: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """images: Uint8[M, C, 32, 32] -> Float[M, 64], the globally pooled features."""
        x = _as_input(images)
        return torch.cat([self.net[:-1](part) for part in x.split(chunk)]) if len(x) else x.new_zeros(0, FEATURES)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """images: Uint8[M, C, 32, 32] -> Long[M], the most likely class of each image."""
        x = _as_input(images)
        return torch.cat([self.net(part).argmax(-1) for part in x.split(chunk)])


def _fit(name: str, seed: int, steps: int) -> tuple[nn.Sequential, image_sets.ImageSet]:
    train = image_sets.load(name, "train")
    g = torch.Generator().manual_seed(seed)
    net = _network(train.images.shape[1], len(train.classes))
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu", generator=g)
                if layer.bias is not None:
                    layer.bias.zero_()
    x, y = _as_input(train.images), train.labels
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.2)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(BATCH, len(x)),), generator=g)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(shift(x[idx], g)), y[idx]).backward()
        opt.step()
        sched.step()
    return net.eval(), train


def train_judge(name: str, seed: int = 0, steps: int = JUDGE_STEPS) -> Judge:
    """The judge of `name` (one of `image_sets.NAMES`), trained from scratch on its real train images
    once per (name, seed, steps) in a process and kept (`clear_judges()` forgets them). Same (name,
    seed, steps), same weights on the same machine (float32, CPU, one thread)."""
    if name not in image_sets.NAMES:
        raise ValueError(f"unknown image set {name!r}; the sets are {', '.join(image_sets.NAMES)}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return _trained(name, int(seed), steps)


@functools.cache
def _trained(name: str, seed: int, steps: int) -> Judge:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a convolution's summation order follows the thread count
    try:
        net, train = _fit(name, seed, steps)
        judge = Judge(net, name, seed, steps, train.classes)
        if name == "emoji":  # one class per image: check on shifted train images (module docstring)
            check = (shift(_as_input(train.images), torch.Generator().manual_seed(seed + 1)) * 255).round()
            with torch.no_grad():
                judge.accuracy = float((judge.predict(check.to(torch.uint8)) == train.labels).double().mean())
        else:
            test = image_sets.load(name, "test")
            judge.accuracy = float((judge.predict(test.images) == test.labels).double().mean())
    finally:
        torch.set_num_threads(threads)
    return judge


def clear_judges() -> None:
    """Forget every judge trained in this process."""
    _trained.cache_clear()
