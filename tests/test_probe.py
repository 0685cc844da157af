"""Linear and kNN probes of frozen features, with all labels and few-shot."""

import pytest
import torch

from unmask.eval.probe import few_shot_indices, knn_probe, linear_probe, pooled_features, probe


def blobs(n_per=30, classes=3, dim=5, spread=0.3, noise_seed=0):
    """Gaussian blobs around fixed centres; `noise_seed` draws another sample of the same classes."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.arange(classes).repeat_interleave(n_per)
    x = centres[y] + spread * torch.randn(len(y), dim, generator=torch.Generator().manual_seed(noise_seed))
    return x, y


def test_few_shot_indices_take_exactly_shots_per_class():
    y = torch.tensor([0] * 20 + [1] * 15 + [2] * 30)
    idx = few_shot_indices(y, 10, torch.Generator().manual_seed(0))
    assert idx.unique().numel() == 30
    assert torch.bincount(y[idx]).tolist() == [10, 10, 10]
    again = few_shot_indices(y, 10, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)
    with pytest.raises(ValueError, match="shots"):
        few_shot_indices(y, 0, torch.Generator())


def test_linear_probe_separates_blobs_and_is_scale_free():
    x, y = blobs()
    xt, yt = blobs(noise_seed=1)
    assert linear_probe(x, y, xt, yt) == 1.0
    scaled = x.clone()
    scaled[:, 0] *= 1e4  # standardisation makes one huge feature harmless
    t_scaled = xt.clone()
    t_scaled[:, 0] *= 1e4
    assert linear_probe(scaled, y, t_scaled, yt) == 1.0


def test_linear_probe_on_noise_is_near_chance():
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
    y, yt = torch.randint(0, 4, (300,), generator=g), torch.randint(0, 4, (300,), generator=g)
    assert linear_probe(x, y, xt, yt) < 0.4


def test_knn_weighted_vote_by_hand():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    test = torch.tensor([[0.2, 1.0], [1.0, 0.05]])
    assert knn_probe(train, labels, test, torch.tensor([1, 0]), k=1) == 1.0
    # k = 3: two far class-0 points against one close class-1 point; exp(sim / 0.07) lets the close one win
    assert knn_probe(train, labels, test[:1], torch.tensor([1]), k=3) == 1.0
    # with a huge temperature the vote is a plain count: class 0 wins 2 to 1
    assert knn_probe(train, labels, test[:1], torch.tensor([0]), k=3, temperature=1e6) == 1.0


def test_probe_reports_all_and_few_shot_with_spread():
    x, y = blobs(n_per=40, spread=2.5)
    xt, yt = blobs(n_per=40, spread=2.5, noise_seed=1)
    scores = probe(x, y, xt, yt, shots=3, draws=4, seed=0)
    assert 0 <= scores.linear_few <= 1 and scores.linear_few_std > 0
    assert scores.knn_few_std >= 0 and 0 <= scores.knn <= 1
    one = probe(x, y, xt, yt, shots=3, draws=1)
    assert one.linear_few_std == 0.0
    assert set(scores.as_dict("m_")) == {"m_linear", "m_knn", "m_linear_few", "m_linear_few_std", "m_knn_few",
                                          "m_knn_few_std"}


def test_pooled_features_average_tokens():
    x = torch.arange(24.0).view(2, 3, 4)
    assert torch.equal(pooled_features(lambda t: t, x, batch=1), x.mean(1))
