"""How good an image tokenizer is (VQ-VAE, van den Oord et al. 2017, arXiv:1711.00937; FSQ, Mentzer
et al. 2023, arXiv:2309.15505): how close decode(encode(x)) comes to x on held-out images, how much
of its codebook it uses, and what an image costs in bits.

- mse: the mean squared error over every pixel and channel of the set ([0, 1] scale);
- psnr: 10 log10(1 / mse) of that set-level mse, in dB (not the mean of per-image PSNRs);
- used_share: the share of the codebook that at least one token of the set uses;
- perplexity: exp(entropy) of the set's token histogram (1 = one code; codebook_size = all equally);
- bits_per_image: h * w * log2(codebook_size), what a token grid can hold.

Both functions run in eval mode (so a VQ quantizer restarts nothing) under inference mode, and put
the tokenizer back in the mode it was in.
"""

from __future__ import annotations

import contextlib

import torch

from ..nn.image_tokenizer import ImageTokenizer
from ..nn.quantizers import usage_stats
from ..objectives.image_tokenizer import psnr


@contextlib.contextmanager
def _evaluating(tokenizer: ImageTokenizer):
    was_training = tokenizer.training
    tokenizer.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        tokenizer.train(was_training)


def tokenize(tokenizer: ImageTokenizer, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """images Uint8[M, C, H, W] (0..255) or Float[M, C, H, W] ([0, 1]) -> tokens Long[M, h, w], on the
    host, `batch` images at a time on the tokenizer's device."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    with _evaluating(tokenizer):
        return torch.cat([tokenizer.encode(chunk).cpu() for chunk in images.split(batch)])


def measure_tokenizer(tokenizer: ImageTokenizer, images: torch.Tensor, batch: int = 256) -> dict:
    """Reconstruction and codebook usage on `images` (held out from training; uint8 or float in
    [0, 1], [M, C, H, W]). Returns floats: mse, psnr, used_share, perplexity, codes_used,
    codebook_size, tokens_per_image, bits_per_image."""
    if len(images) == 0:
        raise ValueError("measure_tokenizer needs at least one image")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    squared, values = 0.0, 0
    counts = torch.zeros(tokenizer.codebook_size, dtype=torch.float64)
    with _evaluating(tokenizer):
        for chunk in images.split(batch):
            tokens = tokenizer.encode(chunk)
            error = tokenizer.decode(tokens).double() - tokenizer.pixels(chunk).double()
            squared = squared + error.pow(2).sum()  # summed on the device, read once at the end
            values += error.numel()
            counts += torch.bincount(tokens.reshape(-1).cpu(), minlength=tokenizer.codebook_size).double()
    mse = float(squared) / values
    perplexity, used = usage_stats(counts)
    h, w = tokenizer.grid
    return {"mse": mse, "psnr": float(psnr(torch.tensor(mse, dtype=torch.float64))),
            "used_share": float(used), "perplexity": float(perplexity), "codes_used": int((counts > 0).sum()),
            "codebook_size": tokenizer.codebook_size, "tokens_per_image": h * w,
            "bits_per_image": tokenizer.bits_per_image}
