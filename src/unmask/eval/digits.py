"""Evaluation of a model over label + pixel tokens of digits: one masked model that both
understands (predicts the hidden label) and generates (class-conditional samples, inpainting).

Metrics (all on the held-out split or on fresh samples, fixed seeds):
- `label_accuracy`: the label token hidden, predicted from the 64 pixels;
- `conditional_accuracy`: an independent classifier (logistic regression fitted here on the real
  training digits) gives class-conditional samples the class they were conditioned on;
- `novelty`: share of samples that are not an exact copy of a training image;
- `inpaint_mse`: label and top half given, bottom half filled by `posterior_fill` (the expected grey
  level under the model's per-pixel distributions, the fill that minimises squared error, averaged
  over `fill_views` mask patterns that all hide the bottom half), against the truth, in grey levels
  squared, over all 360 held-out digits; beside it `inpaint_mse_one_view`, the same fill from the
  one pattern that hides only the bottom half (one call, the rule before `fill_views`), and
  `inpaint_mse_class_mean`, the error of filling the bottom half with the mean training image of
  the class (the baseline, which knows the class as the model does). Generated completions are
  measured too, on the first `n_inpaint` held-out digits: `inpaint_mse_mean_of_k`, the mean of k
  sampled completions (a Monte Carlo estimate of the same posterior mean), and `inpaint_mse_single`,
  one completion (a single sample carries about twice the posterior variance, so it is not the one
  to compare with a mean).
- `frechet_distance`, `precision`, `recall`: the class-conditional samples against the held-out real
  digits in the fixed digit feature space (`eval/quality.py`: Heusel et al. 2017, arXiv:1706.08500;
  Kynkäänniemi et al. 2019, arXiv:1904.06991, k = 3). Accuracy alone rewards prototypical,
  low-diversity samples; these see coverage too;
- `heldout_nelbo_bits`: the masked diffusion bound (Sahoo et al. 2024, MDLM, arXiv:2406.07524; Shi et
  al. 2024, arXiv:2406.04329) on the held-out digits, label given, in bits per pixel token: t ~ U(eps, 1)
  per row, each pixel hidden with probability t, sum of hidden cross-entropies / t, divided by the 64
  pixels, averaged over images and `elbo_draws` draws of a fixed generator. An upper bound on the
  model's negative log-likelihood of the pixels given the label; lower is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..data import digits
from ..layout import Layout
from ..masking.random import random_mask
from ..objectives.masked_diffusion import MaskedDiffusion
from ..sampling import generate
from .quality import digit_quality

TOP_HALF = Layout.seq(32)  # the top four rows of pixels, flattened row-major


def digit_classifier(train: digits.DigitsSplit):
    """Logistic regression on grey levels / 16, fitted on the real training digits."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000, C=1.0)
    clf.fit(train.images.numpy() / 16.0, train.labels.numpy())
    return clf


@torch.no_grad()
def label_accuracy(model, split: digits.DigitsSplit) -> float:
    tokens = split.tokens.clone()
    tokens[:, 0] = digits.MASK_ID
    logits = model(tokens)[:, 0]  # [M, V]; only label ids are allowed there
    predicted = logits.argmax(-1) - digits.LABEL_OFFSET
    return (predicted == split.labels).float().mean().item()


def conditional_canvas(labels: torch.Tensor) -> torch.Tensor:
    """Label given, every pixel hidden. labels: Long[M] -> Long[M, 65]."""
    canvas = torch.full((len(labels), digits.LAYOUT.n), digits.MASK_ID, dtype=torch.long)
    canvas[:, 0] = labels + digits.LABEL_OFFSET
    return canvas


def inpaint_canvas(split: digits.DigitsSplit, label: bool = True) -> torch.Tensor:
    """Top four rows (and the label, if `label`) given, bottom four rows hidden. -> Long[M, 65]."""
    canvas = split.tokens.clone()
    if not label:
        canvas[:, 0] = digits.MASK_ID
    canvas[:, 1 + 32 :] = digits.MASK_ID
    return canvas


def expected_level(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The expected grey level under softmax(logits / temperature), in float64. logits: [..., LEVELS]
    float -> Double[...]. Temperature 1 is the model's posterior mean; towards 0 it tends to the most
    probable level; above 1 it leans towards the middle grey."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    probs = torch.softmax(logits.double() / temperature, -1)
    return probs @ torch.arange(logits.shape[-1], dtype=torch.float64)


def fill_views(split: digits.DigitsSplit, views: int, top_hidden: float, generator=None) -> torch.Tensor:
    """`views` inpainting canvases per digit, view-major: Long[views * M, 65]. Every one hides the
    bottom half (label and top half given, as `inpaint_canvas`); view 0 hides nothing else, each
    further view also hides exactly round(top_hidden * 32) top-half pixels, chosen at random."""
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if not 0 <= top_hidden <= 1:
        raise ValueError(f"top_hidden must be in [0, 1], got {top_hidden}")
    base = inpaint_canvas(split)
    canvases = [base]
    for _ in range(views - 1):
        canvas = base.clone()
        hide = random_mask(TOP_HALF, len(base), ratio=top_hidden, generator=generator)  # Bool[M, 32]
        canvas[:, 1 : 1 + 32] = canvas[:, 1 : 1 + 32].masked_fill(hide, digits.MASK_ID)
        canvases.append(canvas)
    return torch.cat(canvases)


@torch.no_grad()
def view_fills(model, split: digits.DigitsSplit, *, temperature: float = 1.0, views: int = 1,
               top_hidden: float = 0.5, generator=None, batch: int = 1024) -> torch.Tensor:
    """Per view of `fill_views`, the expected grey level (`expected_level` at `temperature`) of each
    bottom-half pixel, one model call per view: Double[views, M, 32]; view 0 hides the bottom half only."""
    canvases = fill_views(split, views, top_hidden, generator)
    levels = torch.cat([expected_level(model(c)[:, 1 + 32 :, : digits.LEVELS], temperature)
                        for c in canvases.split(batch)])  # Double[views * M, 32]
    return levels.view(views, len(split.labels), 32)


def posterior_fill(model, split: digits.DigitsSplit, *, temperature: float = 1.0, views: int = 1,
                   top_hidden: float = 0.5, generator=None, batch: int = 1024) -> torch.Tensor:
    """The fill of the bottom half, label and top half given: `view_fills` averaged over the views,
    test-time ensembling over what the model was trained on (masks that hide more than the asked-for
    half). -> Double[M, 32]."""
    return view_fills(model, split, temperature=temperature, views=views, top_hidden=top_hidden,
                      generator=generator, batch=batch).mean(0)


@torch.no_grad()
def sample_batched(model, canvas, sampler, generator, batch: int = 250, progress: str = ""):
    """Fill `canvas` (Long[M, 65]) `batch` rows at a time; a progress bar titled `progress` if given.
    Returns (tokens Long[M, 65], denoiser calls summed over the batches)."""
    from tqdm.auto import tqdm

    outs, nfe = [], 0
    for chunk in tqdm(canvas.split(batch), desc=progress, disable=not progress, leave=False):
        out = generate(model, chunk, sampler, mask_id=digits.MASK_ID, generator=generator)
        outs.append(out.tokens)
        nfe += out.nfe
    return torch.cat(outs), nfe


@dataclass(frozen=True)
class FillRule:
    """How `inpaint_mse` fills the bottom half (see `posterior_fill`); the defaults are the one-call
    posterior mean (the digits recipe sets its own in `eval.fill_*`)."""
    temperature: float = 1.0
    views: int = 1
    top_hidden: float = 0.5

    def score(self, model, split: digits.DigitsSplit, seed: int = 0) -> dict:
        """`inpaint_mse` by this rule and `inpaint_mse_one_view` (one call, temperature 1) on `split`; the
        views' random patterns come from a generator of their own, so they do not shift other draws."""
        g = torch.Generator().manual_seed(seed)
        truth = split.images[:, 32:].double()
        levels = view_fills(model, split, temperature=self.temperature, views=self.views,
                            top_hidden=self.top_hidden, generator=g)
        ruled = levels.mean(0)
        # view 0 is the one-call fill; at another temperature it is read again at temperature 1
        one = levels[0] if self.temperature == 1 else posterior_fill(model, split)
        return {"inpaint_mse": ((ruled - truth) ** 2).mean().item(),
                "inpaint_mse_one_view": ((one - truth) ** 2).mean().item()}


@torch.no_grad()
def heldout_nelbo_bits(model, split: digits.DigitsSplit, *, draws: int = 4, seed: int = 0, batch: int = 512) -> float:
    """The masked diffusion bound in bits per pixel token, label given (the label is the prompt of
    `MaskedDiffusion`, so the draws and the 1/t weighting are the objective's own), averaged over the
    images of `split` and `draws` independent draws per image."""
    bound = MaskedDiffusion(model)
    g = torch.Generator().manual_seed(seed)
    tokens = split.tokens.repeat(draws, 1)  # Long[draws * M, 65]
    prompt = torch.zeros_like(tokens, dtype=torch.bool)
    prompt[:, 0] = True
    total = 0.0
    for tok, pro in zip(tokens.split(batch), prompt.split(batch), strict=True):
        est, lengths, _ = bound.row_bounds({"tokens": tok, "prompt": pro}, g)  # nats per row
        total += float((est / lengths.to(est)).sum())
    return total / len(tokens) / math.log(2)


def evaluate(model, sampler, *, n_samples: int = 500, n_inpaint: int = 100, k: int = 16, seed: int = 0,
             elbo_draws: int = 4, fill: FillRule = FillRule(), progress: bool = False):
    """All metrics of the module docstring. The posterior-mean fills (by `fill`, and from one view) and
    the class-mean fill are scored on every held-out digit; the `k` sampled completions on the first
    `n_inpaint`. Returns (metrics, samples, inpainted, truth) with the first `n_inpaint` held-out digits
    as truth."""
    model.eval()
    train, test = digits.load("train"), digits.load("test")
    g = torch.Generator().manual_seed(seed)
    metrics = {"label_accuracy": label_accuracy(model, test)}

    labels = torch.arange(n_samples) % digits.CLASSES
    samples, nfe = sample_batched(model, conditional_canvas(labels), sampler, g,
                                  progress="eval: samples" if progress else "")
    images, _ = digits.decode(samples)
    clf = digit_classifier(train)
    predicted = torch.from_numpy(clf.predict(images.numpy() / 16.0))
    metrics["conditional_accuracy"] = (predicted == labels).float().mean().item()
    metrics["classifier_test_accuracy"] = float(clf.score(test.images.numpy() / 16.0, test.labels.numpy()))
    seen = {tuple(row) for row in train.images.tolist()}
    metrics["novelty"] = float(np.mean([tuple(row) not in seen for row in images.tolist()]))
    metrics["sample_nfe_per_batch"] = nfe / max(1, -(-n_samples // 250))
    quality = digit_quality(images, test.images)
    metrics |= {"frechet_distance": quality.fd, "precision": quality.precision, "recall": quality.recall}

    def mse(fill, truth):
        return ((fill - truth.images[:, 32:].double()) ** 2).mean().item()

    metrics |= fill.score(model, test, seed)
    class_mean = torch.stack([train.images[train.labels == c].double().mean(0) for c in range(10)])
    metrics["inpaint_mse_class_mean"] = mse(class_mean[test.labels][:, 32:], test)

    part = digits.DigitsSplit(test.images[:n_inpaint], test.labels[:n_inpaint])
    filled, _ = sample_batched(model, inpaint_canvas(part).repeat_interleave(k, 0), sampler, g,
                               progress="eval: inpainting" if progress else "")
    bottom_gen = filled[:, 1 + 32 :].double().view(len(part.labels), k, 32)
    metrics["inpaint_mse_mean_of_k"] = mse(bottom_gen.mean(1), part)
    metrics["inpaint_mse_single"] = mse(bottom_gen[:, 0], part)
    filled = filled[::k]
    metrics["heldout_nelbo_bits"] = heldout_nelbo_bits(model, test, draws=elbo_draws, seed=seed)
    return metrics, images, filled, part
