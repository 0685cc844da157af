"""SparK's hierarchical decoder (Tian et al. 2023, "Designing BERT for Convolutional Networks:
Sparse and Hierarchical Masked Modeling", arXiv:2301.03580): the sparse feature maps of every
encoder scale are "densified" (each hidden position takes a per-scale learnable mask token, after a
batch norm over the visible positions and before a projection to the decoder's width at that scale),
and a light UNet-style decoder upsamples from the deepest scale, adding each densified map on the
way, to a full-resolution image.

    SparKDecoder  maps [Float[B, C_s, H_s, W_s]] and keeps [Bool[B, 1, H_s, W_s]] (shallow to deep,
                  each scale half the previous one) -> Float[B, out_channels, H, W]
Decoder widths: `width` at the deepest scale, halved at each shallower one (SparK's LightDecoder);
after a stride-2 stem the last upsampling is a pixel shuffle of the head's output (SparK has UNet blocks
with no skip there; at 32x32 on a CPU, convs of 8 channels cost more than the rest of the step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .masked_cnn import MaskedBatchNorm2d


def conv_norm_act(cin: int, cout: int, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class UpBlock(nn.Module):
    """SparK's UNetBlock: a stride-2 transposed conv, then conv-BN-ReLU6 and conv-BN."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin, kernel_size=4, stride=2, padding=1)
        self.conv = nn.Sequential(conv_norm_act(cin, cin), conv_norm_act(cin, cout, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


class SparKDecoder(nn.Module):
    def __init__(self, encoder_widths: tuple[int, ...], out_channels: int, width: int = 64, stem_stride: int = 1):
        super().__init__()
        deep_first = tuple(reversed(encoder_widths))
        n = len(deep_first)
        if stem_stride not in (1, 2) or width < 2 ** (n - 1):
            raise ValueError(f"stem_stride must be 1 or 2 and decoder width {width} must halve {n - 1} times")
        self.stem_stride = stem_stride
        dec = [width // 2**i for i in range(n)]  # deepest first
        self.mask_tokens = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1)) for c in deep_first)
        self.norms = nn.ModuleList(MaskedBatchNorm2d(c) for c in deep_first)
        # SparK: a 1x1 projection at the deepest scale, 3x3 at the others
        self.projs = nn.ModuleList(nn.Conv2d(c, d, 1 if i == 0 else 3, padding=0 if i == 0 else 1)
                                   for i, (c, d) in enumerate(zip(deep_first, dec, strict=True)))
        self.ups = nn.ModuleList(UpBlock(dec[i], dec[i + 1]) for i in range(n - 1))
        self.last = conv_norm_act(dec[-1], dec[-1])
        self.head = nn.Conv2d(dec[-1], out_channels * stem_stride**2, 1)
        for t in self.mask_tokens:
            nn.init.trunc_normal_(t, std=0.02, a=-0.02, b=0.02)  # SparK's mask-token initialisation

    def densify(self, i: int, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Scale i (0 = deepest): norm over the visible positions, mask token at the hidden ones, project."""
        x = self.norms[i](x, keep)
        if keep is not None:
            x = torch.where(keep, x, self.mask_tokens[i].to(x.dtype))
        return self.projs[i](x)

    def forward(self, maps: list[torch.Tensor], keeps: list[torch.Tensor | None]) -> torch.Tensor:
        if len(maps) != len(self.projs) or len(keeps) != len(maps):
            raise ValueError(f"the decoder reads {len(self.projs)} scales, got {len(maps)} maps and {len(keeps)} keeps")
        maps, keeps = maps[::-1], keeps[::-1]
        x = self.densify(0, maps[0], keeps[0])  # [B, width, H_deep, W_deep]
        for i, up in enumerate(self.ups, start=1):
            x = up(x) + self.densify(i, maps[i], keeps[i])
        x = self.head(self.last(x))  # [B, out_channels * s * s, H / s, W / s]
        return F.pixel_shuffle(x, self.stem_stride) if self.stem_stride > 1 else x  # [B, out_channels, H, W]
