"""Recipe `mae-digits`: registered, every variant trains and reloads; the slow test checks the claim
that MAE features beat the same encoder at random init by >= 5 points of 10-shot linear probe."""

import json

import pytest
import torch

from unmask.config import apply_overrides
from unmask.errors import UnmaskError
from unmask.recipes import get, load_run, mae_digits

TINY = ["steps=2", "warmup=1", "dim=16", "depth=1", "heads=2", "decoder_dim=8", "decoder_depth=1",
        "probe_draws=1", "batch_size=16"]


def test_registered_with_typed_settings():
    recipe = get("mae-digits")
    assert recipe is mae_digits
    with pytest.raises(UnmaskError, match="variant"):
        apply_overrides(recipe.Config(), ["variant=bert"])
    with pytest.raises(UnmaskError, match="masker"):
        apply_overrides(recipe.Config(), ["masker=pink"])
    with pytest.raises(UnmaskError, match="own masks"):
        recipe.build(recipe.Config(variant="hpm", masker="green"))


@pytest.mark.parametrize("variant", ["mae", pytest.param("mr-mae", marks=pytest.mark.slow)])
def test_train_evaluate_and_reload(variant, tmp_path):
    cfg = apply_overrides(mae_digits.Config(), TINY + [f"variant={variant}"])
    metrics = mae_digits.train(cfg, tmp_path, progress=False)
    for prefix in ("mae_", "random_init_", "pixels_"):
        assert 0.0 <= metrics[prefix + "linear_few"] <= 1.0
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)
    recipe, cfg2, objective = load_run(tmp_path)
    assert cfg2 == cfg
    x = mae_digits.images("test")[:3]
    assert objective.features(x).shape == (3, 16, 16)
    if variant == "mr-mae":  # the teacher trained first and rides along, frozen, in the checkpoint
        assert (tmp_path / "teacher").is_dir()
        assert not any(p.requires_grad for p in objective.teacher.parameters())
    if variant == "mae":
        mae_digits.sample(cfg, objective, 4, tmp_path / "recon.png")
        assert (tmp_path / "recon.png").exists()


@pytest.mark.slow
def test_mae_features_beat_random_init_by_five_points(tmp_path):
    torch.set_num_threads(1)
    metrics = mae_digits.train(mae_digits.Config(), tmp_path, progress=False)
    assert metrics["mae_linear_few"] - metrics["random_init_linear_few"] >= 0.05
