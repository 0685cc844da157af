"""Probes of frozen features: how much of the labels a representation exposes without fine-tuning.

- linear probe: logistic regression on standardised features (MAE's linear probe is a linear layer
  after a non-affine BatchNorm, i.e. on standardised features; at this scale an exact solver
  replaces LARS). The standardisation statistics come from the unlabelled training features.
- kNN: the weighted vote of DINO (Caron et al. 2021), used by HPM's `main_knn.py`: L2-normalised
  features, cosine similarity, the k nearest labelled points vote with weight exp(sim / T), T = 0.07.
- few-shot: `shots` labelled examples per class drawn from the training split, the mean and spread
  over `draws` draws; always scored on the whole held-out split.

Features are `Float[M, D]` (mean-pooled tokens: `pooled_features`); labels `Long[M]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

KNN_TEMPERATURE = 0.07  # DINO's eval_knn.py


@torch.no_grad()
def pooled_features(encode: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                    batch: int = 256) -> torch.Tensor:
    """encode: inputs[b] -> tokens Float[b, L, D]. Returns the mean over tokens, Float[M, D]."""
    return torch.cat([encode(chunk).float().mean(dim=1) for chunk in inputs.split(batch)])


def few_shot_indices(labels: torch.Tensor, shots: int, generator: torch.Generator) -> torch.Tensor:
    """`shots` distinct random indices of each class (all of a class that has fewer). Long[K]."""
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    picked = []
    for c in labels.unique().tolist():
        where = torch.nonzero(labels == c).squeeze(1)
        picked.append(where[torch.randperm(len(where), generator=generator)[:shots]])
    return torch.cat(picked).sort().values


def _standardise(fit: torch.Tensor, *xs: torch.Tensor) -> list[np.ndarray]:
    mean, std = fit.double().mean(0), fit.double().std(0).clamp_min(1e-8)
    return [((x.double() - mean) / std).numpy() for x in xs]


def linear_probe(train_x, train_y, test_x, test_y, *, scale_from=None, c: float = 1.0) -> float:
    """Accuracy of L2-regularised logistic regression (inverse strength `c`) on standardised
    features; statistics from `scale_from` (default `train_x`)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    tr, te = _standardise(train_x if scale_from is None else scale_from, train_x, test_x)
    # one BLAS thread: at this size, threads of numpy's and scipy's BLAS fight and run 30x slower
    with threadpool_limits(1):
        clf = LogisticRegression(C=c, max_iter=3000).fit(tr, train_y.numpy())
        return float((clf.predict(te) == test_y.numpy()).mean())


def knn_probe(train_x, train_y, test_x, test_y, *, k: int = 20, temperature: float = KNN_TEMPERATURE) -> float:
    """Accuracy of DINO's weighted kNN vote with cosine similarity."""
    if k < 1 or temperature <= 0:
        raise ValueError(f"kNN needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    tr = torch.nn.functional.normalize(train_x.double(), dim=1)
    te = torch.nn.functional.normalize(test_x.double(), dim=1)
    sim, idx = (te @ tr.T).topk(min(k, len(tr)), dim=1)  # [T, k]
    n_cls = int(max(train_y.max(), test_y.max())) + 1
    votes = torch.zeros(len(te), n_cls, dtype=torch.float64)
    votes.scatter_add_(1, train_y[idx], (sim / temperature).exp())
    return (votes.argmax(1) == test_y).double().mean().item()


@dataclass(frozen=True)
class ProbeScores:
    linear: float  # all training labels
    knn: float
    linear_few: float  # mean over draws
    linear_few_std: float
    knn_few: float
    knn_few_std: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in self.__dict__.items()}


def probe(train_x, train_y, test_x, test_y, *, shots: int = 10, draws: int = 5, seed: int = 0,
          k: int = 20) -> ProbeScores:
    """Linear and kNN probes with all labels and `shots` per class (mean and std over `draws`)."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    g = torch.Generator().manual_seed(seed)
    lin, knn = [], []
    for _ in range(draws):
        idx = few_shot_indices(train_y, shots, g)
        lin.append(linear_probe(train_x[idx], train_y[idx], test_x, test_y, scale_from=train_x))
        knn.append(knn_probe(train_x[idx], train_y[idx], test_x, test_y, k=k))
    return ProbeScores(
        linear=linear_probe(train_x, train_y, test_x, test_y),
        knn=knn_probe(train_x, train_y, test_x, test_y, k=k),
        linear_few=float(np.mean(lin)), linear_few_std=float(np.std(lin)),
        knn_few=float(np.mean(knn)), knn_few_std=float(np.std(knn)),
    )
