"""The shared image judge (eval/image_judge.py): a CNN trained on real glyphs must tell held-out
fonts' characters apart far above chance, be the same network for the same seed, place held-out real
glyphs near the training ones and noise far away in its feature space (Fréchet distance, Heusel et
al. 2017, arXiv:1706.08500), and refuse what it cannot judge."""

from __future__ import annotations

import pytest
import torch

from unmask.data import image_sets
from unmask.eval.image_judge import FEATURES, clear_judges, shift, train_judge
from unmask.eval.quality import frechet_distance

STEPS = 300  # the test's budget (the default, 600 steps, reaches about 0.71 on the held-out fonts)
FLOOR = 0.40  # 111 classes: chance is 0.009; several Greek capitals are drawn exactly like Latin ones


@pytest.fixture(scope="module")
def judge():
    return train_judge("glyphs", 0, STEPS)


def test_glyph_judge_reads_held_out_fonts(judge):
    test = image_sets.load("glyphs", "test")
    assert judge.accuracy > FLOOR
    # accuracy is what predict says on the held-out renders, not another number
    assert judge.accuracy == pytest.approx(float((judge.predict(test.images) == test.labels).double().mean()))
    assert judge.predict(test.images).dtype == torch.long


def test_features_are_pooled_and_chunked_alike(judge):
    test = image_sets.load("glyphs", "test")
    feats = judge.features(test.images)
    assert feats.shape == (len(test.images), FEATURES) and feats.dtype == torch.float32
    assert (feats >= 0).all()  # pooled after a ReLU
    assert torch.allclose(judge.features(test.images, chunk=7), feats, atol=1e-5)
    # the head reads exactly these features
    logits = judge.net[-1](feats)
    assert torch.equal(logits.argmax(-1), judge.predict(test.images))


def test_frechet_distance_tells_real_from_noise(judge):
    train, test = image_sets.load("glyphs", "train"), image_sets.load("glyphs", "test")
    real, held = judge.features(train.images), judge.features(test.images)
    noise = torch.randint(0, 256, test.images.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    collapsed = test.images[:1].repeat(len(test.images), 1, 1, 1)  # one glyph, over and over
    fd_real = frechet_distance(real, held)
    assert fd_real * 20 < frechet_distance(real, judge.features(noise))
    assert fd_real * 5 < frechet_distance(real, judge.features(collapsed))


def test_same_seed_same_features_other_seed_other_features():
    images = image_sets.load("glyphs", "test").images[:32]
    first = train_judge("glyphs", 3, 10)
    assert train_judge("glyphs", seed=3, steps=10) is first  # memoised per (name, seed, steps)
    clear_judges()
    again = train_judge("glyphs", 3, 10)
    assert again is not first
    assert torch.equal(again.features(images), first.features(images))
    assert not torch.allclose(train_judge("glyphs", 4, 10).features(images), first.features(images))


def test_bad_name_and_steps_raise():
    with pytest.raises(ValueError, match="unknown image set"):
        train_judge("mnist")
    with pytest.raises(ValueError, match="steps"):
        train_judge("glyphs", 0, 0)


def test_shift_moves_a_pixel_and_repeats_edges():
    x = torch.zeros(3, 1, 6, 6)
    x[:, 0, 2, 3] = 1.0
    most = 2
    out = shift(x, torch.Generator().manual_seed(5), most)
    dy, dx = torch.randint(0, 2 * most + 1, (2, 3), generator=torch.Generator().manual_seed(5))
    for i in range(3):
        where = torch.zeros(6, 6)
        where[2 - dy[i] + most, 3 - dx[i] + most] = 1.0  # out[r] = x[r + dy - most]
        assert torch.equal(out[i, 0], where)
    white = torch.ones(2, 3, 5, 5)
    assert torch.equal(shift(white, torch.Generator().manual_seed(0), most), white)  # a white ground stays white
    assert torch.equal(shift(x, torch.Generator().manual_seed(0), 0), x)
