"""Generation quality as a distance between distributions of features, not a per-sample score.

- Fréchet distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a
  Local Nash Equilibrium", arXiv:1706.08500): fit a Gaussian (mean, covariance) to the features of
  each set and take the Fréchet (2-Wasserstein) distance between the two Gaussians,
  ||mu_a - mu_b||^2 + Tr(Ca + Cb - 2 (Ca^{1/2} Cb Ca^{1/2})^{1/2}). It rises both when samples are
  off the data (quality) and when they cover too little of it (diversity).
- Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for
  Assessing Generative Models", arXiv:1904.06991): each set's manifold is the union of balls around
  its points, each ball's radius the distance to the point's k-th nearest neighbour in its own set.
  Precision is the share of generated points inside the real manifold (are samples realistic?);
  recall the share of real points inside the generated manifold (is the data covered?). The two
  separate what the Fréchet distance mixes.

Both need a feature space. For 8x8 digits, `digit_features` is the penultimate layer of a small MLP
classifier trained here once, deterministically, on the training digits (the role Inception-v3
plays for FID on photographs).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import digits

FEATURE_SEED = 0
FEATURE_STEPS = 200
FEATURE_LR = 1e-2


def _gaussian(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x: Float[n, d] -> (mean Float64[d], unbiased covariance Float64[d, d])."""
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be [n >= 2, d], got {tuple(x.shape)}")
    x = x.double()
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def _psd_sqrt(c: torch.Tensor) -> torch.Tensor:
    """Float64[d, d] symmetric positive semi-definite -> its symmetric square root."""
    vals, vecs = torch.linalg.eigh((c + c.T) / 2)
    # round-off makes the zero eigenvalues of a rank-deficient covariance slightly negative
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets a: Float[n, d], b: Float[m, d].

    Float64 throughout, with symmetric eigendecompositions only: Tr((Ca^{1/2} Cb Ca^{1/2})^{1/2}) is the
    sum of the square roots of the eigenvalues of the symmetric PSD matrix Ca^{1/2} Cb Ca^{1/2}, so no
    general (non-symmetric) matrix square root is needed. 0 for identical sets; never negative.
    """
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    mu_a, ca = _gaussian(a)
    mu_b, cb = _gaussian(b)
    root_a = _psd_sqrt(ca)
    middle = root_a @ cb @ root_a
    eig = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0)
    fd = (mu_a - mu_b).square().sum() + ca.trace() + cb.trace() - 2 * eig.sqrt().sum()
    return max(float(fd), 0.0)


def _kth_neighbour_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """x: Float64[n, d] -> Float64[n]: distance of each point to its k-th nearest other point."""
    if x.shape[0] <= k:
        raise ValueError(f"need more than k={k} points, got {x.shape[0]}")
    radii = []
    for rows in x.split(chunk):
        d = torch.cdist(rows, x, compute_mode="donot_use_mm_for_euclid_dist")  # [c, n]
        # the k+1 smallest include the point itself at distance 0; a duplicate also sits at 0, and
        # rightly counts as a neighbour
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """Bool[n]: points[i] lies in some ball (centres[j], radii[j]), boundary included."""
    out = []
    for rows in points.split(chunk):
        d = torch.cdist(rows, centres, compute_mode="donot_use_mm_for_euclid_dist")  # [c, m]
        out.append((d <= radii[None]).any(1))
    return torch.cat(out)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 512) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991).

    real: Float[n, d], fake: Float[m, d] -> (precision, recall), each in [0, 1]. Distances in float64,
    computed `chunk` rows at a time, so memory stays at chunk x max(n, m) doubles.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    real, fake = real.double(), fake.double()
    precision = _inside(fake, real, _kth_neighbour_radius(real, k, chunk), chunk).double().mean()
    recall = _inside(real, fake, _kth_neighbour_radius(fake, k, chunk), chunk).double().mean()
    return float(precision), float(recall)


class DigitFeatures:
    """images Long[M, 64] (grey levels 0..16) -> Float[M, 64]: the penultimate (ReLU) layer of an MLP
    classifier 64 -> 128 -> 64 -> 10 trained on the training digits. `accuracy`: its accuracy on the
    held-out digits."""

    def __init__(self, net: nn.Sequential, accuracy: float):
        self.net, self.accuracy = net.eval(), accuracy

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.net[:-1](images.float() / (digits.LEVELS - 1))


def train_digit_features(seed: int = FEATURE_SEED, steps: int = FEATURE_STEPS) -> DigitFeatures:
    """The feature network, trained from scratch: seeded initialisation (torch.Generator), full-batch
    Adam for a fixed number of steps, float32 on CPU, on one thread. Same seed, same weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a matmul's summation order follows the thread count; 200 steps amplify it
    try:
        net = _fit_classifier(seed, steps)
    finally:
        torch.set_num_threads(threads)
    test = digits.load("test")
    with torch.no_grad():
        accuracy = (net(test.images.float() / (digits.LEVELS - 1)).argmax(-1) == test.labels).double().mean()
    return DigitFeatures(net, float(accuracy))


def _fit_classifier(seed: int, steps: int) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu", generator=g)
                layer.bias.zero_()
    train = digits.load("train")
    x, y = train.images.float() / (digits.LEVELS - 1), train.labels
    opt = torch.optim.Adam(net.parameters(), lr=FEATURE_LR, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net


@functools.cache
def digit_features() -> DigitFeatures:
    """The fixed digit feature space, trained once per process (`digit_features.cache_clear()` rebuilds)."""
    return train_digit_features()


@dataclass(frozen=True)
class Quality:
    fd: float  # Fréchet distance in the feature space; lower is better, 0 for identical sets
    precision: float  # share of samples on the real manifold
    recall: float  # share of real points on the samples' manifold


def digit_quality(images: torch.Tensor, reference: torch.Tensor, k: int = 3) -> Quality:
    """images, reference: Long[M, 64] and Long[R, 64] grey levels -> their `Quality` in the digit
    feature space, `reference` as the real set."""
    phi = digit_features()
    fake, real = phi(images), phi(reference)
    precision, recall = precision_recall(real, fake, k)
    return Quality(frechet_distance(fake, real), precision, recall)
