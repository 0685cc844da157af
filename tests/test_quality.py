"""Distribution metrics of generation quality (eval/quality.py): the Fréchet distance (Heusel et al.
2017, arXiv:1706.08500) against hand-computed Gaussian cases, improved precision and recall
(Kynkäänniemi et al. 2019, arXiv:1904.06991) on a hand-built 2-D example, and both in the fixed digit
feature space on real digits: noise and mode collapse must be seen."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from unmask.data import digits
from unmask.eval.digits import heldout_nelbo_bits
from unmask.eval.quality import digit_features, digit_quality, frechet_distance, precision_recall


def gaussian_cloud(n, d, seed, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return shift + scale * torch.randn(n, d, generator=g, dtype=torch.float64)


# --- Fréchet distance -----------------------------------------------------------------------------


def test_fd_is_zero_for_identical_sets():
    x = gaussian_cloud(300, 16, 0, scale=3.0, shift=2.0)
    scale = float(x.square().sum(1).mean())  # the size of the terms that cancel
    assert 0.0 <= frechet_distance(x, x) <= 1e-8 * scale
    assert 0.0 <= frechet_distance(x.float(), x.float()) <= 1e-8 * scale


def test_fd_never_negative_for_rank_deficient_covariances():
    x = gaussian_cloud(5, 40, 1)  # covariance of rank 4 in 40 dimensions
    fd = frechet_distance(x, x)
    assert 0.0 <= fd <= 1e-8 * float(x.square().sum(1).mean())


def test_fd_one_dimensional_matches_hand_formula():
    a, b = gaussian_cloud(50, 1, 2, 2.0, 1.0), gaussian_cloud(80, 1, 3, 0.5, -1.0)
    ma, mb = a.mean().item(), b.mean().item()
    sa, sb = a.std().item(), b.std().item()  # unbiased, as the covariance fit
    assert frechet_distance(a, b) == pytest.approx((ma - mb) ** 2 + (sa - sb) ** 2, rel=1e-10)


def test_fd_diagonal_gaussians_match_hand_formula():
    # mu +- a_i e_i for each axis i: mean exactly mu, covariance exactly diag(2 a_i^2 / (2d - 1))
    def star(mu, a):
        d = len(a)
        pts = [mu + s * a[i] * np.eye(d)[i] for i in range(d) for s in (1, -1)]
        return torch.tensor(np.array(pts)), np.array(mu), 2 * np.array(a) ** 2 / (2 * d - 1)

    x, mx, vx = star(np.array([0.0, 1.0, 2.0]), [1.0, 2.0, 3.0])
    y, my, vy = star(np.array([1.0, -1.0, 0.5]), [4.0, 0.5, 3.0])
    expected = ((mx - my) ** 2).sum() + ((np.sqrt(vx) - np.sqrt(vy)) ** 2).sum()
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(y, x) == pytest.approx(expected, rel=1e-10)


def test_fd_full_covariances_match_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")  # installed with scikit-learn; a test-only check
    mix = gaussian_cloud(6, 6, 4)
    a = gaussian_cloud(400, 6, 5) @ mix
    b = gaussian_cloud(300, 6, 6, shift=0.3) @ mix.T
    ca, cb = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    root = scipy_linalg.sqrtm(ca @ cb).real
    mean = ((a.mean(0) - b.mean(0)) ** 2).sum().item()
    expected = mean + np.trace(ca) + np.trace(cb) - 2 * np.trace(root)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)


# --- precision and recall -------------------------------------------------------------------------

SQUARE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # each corner: 2 others at 1
FAKE = torch.tensor([[0.05, 0.0], [0.95, 0.0], [5.0, 5.0], [5.0, 6.0]])


@pytest.mark.parametrize("chunk", [1, 3, 512])
def test_precision_recall_hand_built(chunk):
    # k = 1: real radii 1; fake radii 0.9, 0.9, 1, 1. Fakes near (0,0) and (1,0) are inside, the far
    # pair is not: precision 1/2. (0,0) and (1,0) lie 0.05 from a fake; (0,1) and (1,1) lie 1.001 from
    # the nearest fake, outside its 0.9 ball: recall 1/2.
    assert precision_recall(SQUARE, FAKE, k=1, chunk=chunk) == (0.5, 0.5)
    # k = 2: real radii still 1 (the second neighbour is also at 1); the fakes' second neighbours are
    # the far pair (about 7 away), so every corner is covered: recall 1, precision unchanged.
    assert precision_recall(SQUARE, FAKE, k=2, chunk=chunk) == (0.5, 1.0)


def test_precision_recall_of_a_set_with_itself_is_one():
    x = gaussian_cloud(200, 5, 7)
    assert precision_recall(x, x, k=3) == (1.0, 1.0)


def test_precision_recall_rejects_too_few_points():
    with pytest.raises(ValueError):
        precision_recall(SQUARE, FAKE[:2], k=3)


# --- the digit feature space ----------------------------------------------------------------------


def test_digit_features_are_deterministic_and_accurate():
    test = digits.load("test")
    digit_features.cache_clear()
    first = digit_features()
    out1 = first(test.images)
    digit_features.cache_clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)  # the training runs on one thread whatever is set
    try:
        second = digit_features()
    finally:
        torch.set_num_threads(threads)
    assert second is not first  # rebuilt from scratch
    assert out1.shape == (len(test.images), 64) and out1.dtype == torch.float32
    assert torch.equal(out1, second(test.images))
    assert first.accuracy == second.accuracy >= 0.95  # held-out accuracy of the classifier under it
    assert digit_features() is second  # cached


def noisy(images, scale, seed=0):
    z = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (images.double() + scale * z).round().clamp(0, digits.LEVELS - 1).long()


def test_fd_grows_with_noise_on_heldout_digits():
    train, test = digits.load("train"), digits.load("test")
    fds = [digit_quality(noisy(test.images, s), train.images).fd for s in (0.0, 1.0, 2.0, 4.0)]
    # measured 1.05, 1.43, 2.37, 5.75; each step must rise by at least 10%
    assert all(b > 1.1 * a for a, b in zip(fds, fds[1:], strict=False)), fds


def test_mode_collapse_has_larger_fd_and_lower_recall():
    train, test = digits.load("train"), digits.load("test")
    one_per_class = torch.stack([test.images[test.labels == c][0] for c in range(digits.CLASSES)])
    collapsed = one_per_class.repeat(-(-len(test.images) // digits.CLASSES), 1)[: len(test.images)]
    real, bad = digit_quality(test.images, train.images), digit_quality(collapsed, train.images)
    # measured: real FD 1.05, recall 0.93; collapsed FD 35.2, recall 0.00
    assert bad.fd > 5 * real.fd
    assert bad.recall < 0.1 < 0.8 < real.recall
    assert real.precision > 0.8


# --- held-out bound ------------------------------------------------------------------------------


class UniformPixels(nn.Module):
    """Logits over the digits vocabulary that are uniform over the 17 grey levels at pixel places."""

    def __init__(self):
        super().__init__()
        self.mask_id = digits.MASK_ID
        self.config = type("Config", (), {"layout": digits.LAYOUT})()

    def forward(self, tokens, where=None):
        assert bool((tokens[:, 0] != self.mask_id).all()), "the label must stay given"
        logits = torch.full((*tokens.shape, digits.VOCAB_SIZE), -math.inf)
        logits[..., : digits.LEVELS] = 0.0
        return logits[where] if where is not None else logits


def test_heldout_nelbo_of_a_uniform_model_is_log2_17_bits():
    # each hidden pixel costs ln 17 nats; E[#hidden / t] = 64 at every t, so the bound is log2(17)
    # bits per pixel in expectation. One row's estimate has sd log2(17) * sqrt(E[(1 - t) / t] / 64),
    # about 1.24 bits; 360 images x 64 draws: standard error 0.008 bits. Dividing by the 65 tokens
    # instead of the 64 pixels would be 0.063 bits off.
    test = digits.load("test")
    bits = heldout_nelbo_bits(UniformPixels(), test, draws=64, seed=0)
    assert bits == pytest.approx(math.log2(17), abs=0.03)
    assert bits == heldout_nelbo_bits(UniformPixels(), test, draws=64, seed=0)  # fixed generator
