"""Recipe `mae-digits`' `data.size` and `data.levels`: the image side and grey levels every image is
read at (the digits' 8 and 17 by default, unchanged), the encoder's grid following the size, and a
size that the patch does not divide refused naming the key."""

import numpy as np
import pytest
import torch

from conftest import merged
from unmask.errors import UnmaskError
from unmask.layout import Layout
from unmask.recipes.mae_digits import MAEDigits, images
from unmask.recipes.run import Run

TINY = ["train.steps=2", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=1", "model.heads=2",
        "model.decoder_dim=8", "model.decoder_depth=1", "eval.probe_draws=1", "train.checkpoint_every=0"]


def tiny(*more: str) -> MAEDigits:
    return MAEDigits().with_overrides(merged(TINY, *more))


def test_default_size_leaves_the_digits_as_they_are():
    recipe = tiny()
    assert (recipe.settings.data.size, recipe.settings.data.levels) == (8, 17)
    x, _ = recipe.split("train")
    assert torch.equal(x, images("train"))
    assert recipe.model_config().image_size == (8, 8)


def test_size_16_digits_are_upsampled_and_the_encoder_has_64_tokens(tmp_path):
    recipe = tiny("data.size=16")
    x, labels = recipe.split("test")
    assert x.shape == (360, 1, 16, 16)
    # a box filter at twice the side repeats each pixel in a 2x2 block; the 17 levels are kept exactly
    assert torch.equal(x, images("test").repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    objective = recipe.objective()
    assert objective.layout == Layout.grid(8, 8, name="patches")  # 16 / patch 2 = 8 patches a side
    mask = objective.draw_mask(5, torch.Generator().manual_seed(0))
    assert mask.shape == (5, 64) and mask.sum(1).tolist() == [48] * 5  # round(0.75 * 64) hidden per row
    recipe.fit(Run(tmp_path, progress=False), objective, recipe.training_data(Run(tmp_path, progress=False)))
    assert objective.features(x[:3]).shape == (3, 64, 16)
    png = recipe.sample(Run(tmp_path, progress=False), objective, 2, tmp_path / "recon.png")
    assert png.exists() and png.stat().st_size > 0  # 16x16 reconstructions drawn at their own size


def test_user_images_are_box_filtered_to_size_and_quantised_to_levels(tmp_path):
    # 4x4 images of uint8 values, read at 2x2: each output pixel is the mean of a 2x2 block
    block = np.array([[0, 255], [255, 255]], dtype=np.uint8)  # mean 191.25 / 255 = 0.75
    array = np.stack([np.tile(block, (2, 2)), np.full((4, 4), 255, np.uint8), np.zeros((4, 4), np.uint8)] * 4)
    source = tmp_path / "x.npy"
    np.save(source, array)
    for levels, expected in ((17, 12 / 16), (256, 191 / 255), (5, 3 / 4)):
        recipe = tiny(f"data.source={source}", "data.size=2", f"data.levels={levels}", "model.patch=1",
                      "objective.norm_pix=false")
        x = torch.cat([recipe.split("train")[0], recipe.split("test")[0]])
        assert x.shape == (12, 1, 2, 2)
        values = sorted(set(x.flatten().tolist()))
        assert values == pytest.approx([0.0, expected, 1.0]), levels
        assert recipe.model_config().image_size == (2, 2)


def test_uint8_array_at_its_own_size_and_256_levels_reads_back_exactly(tmp_path):
    array = torch.randint(0, 256, (10, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    np.save(tmp_path / "x.npy", array.numpy())
    recipe = tiny(f"data.source={tmp_path / 'x.npy'}", "data.size=8", "data.levels=256")
    x = torch.cat([recipe.split("train")[0], recipe.split("test")[0]]).view(-1, 64)
    assert sorted(map(tuple, (x * 255).round().long().tolist())) == sorted(map(tuple, array.view(-1, 64).tolist()))


@pytest.mark.parametrize("overrides, message", [
    (["data.size=7"], "data.size=7 must be a multiple of model.patch=2"),
    (["data.size=2", "model.patch=4"], "data.size=2 must be a multiple of model.patch=4"),
    (["data.size=12", "model.patch=8"], "model.patch"),  # 8 is no patch choice: the patch key is named
    (["data.size=0"], "data.size"),
    (["data.levels=1"], "data.levels"),
])
def test_bad_size_or_levels_is_a_one_line_error_naming_the_key(overrides, message):
    with pytest.raises(UnmaskError, match=message) as e:
        tiny(*overrides)
    assert "\n" not in str(e.value)
