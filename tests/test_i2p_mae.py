"""I2P-MAE: the 2D-guided mask (exact counts, the without-replacement distribution of its visible
tokens), depth views and back-projection on hand-made clouds, the class-token saliency, the
objective's two terms (the 2D term reads visible groups only, the 3D term is Point-MAE's), and the
`i2pmae` variant of the `pointmae-shapes` recipe."""

import json
from itertools import permutations
from pathlib import Path

import pytest
import torch

from unmask.data import points as shapes
from unmask.errors import UnmaskError
from unmask.layout import Layout
from unmask.masking.guided import GuidedMask
from unmask.nn.mae import MAEConfig, MaskedEncoder
from unmask.nn.point_mae import PointEncoder
from unmask.nn.projection import FAR, NEAR, back_project, depth_views
from unmask.nn.view_features import cls_attention, view_targets
from unmask.objectives.i2p_mae import I2PMAE
from unmask.recipes import load_run
from unmask.recipes.pointmae_shapes import PointMAEShapes
from unmask.recipes.run import Run


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# the guided mask ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.25, 0.6, 0.9])
def test_guided_mask_hides_the_exact_count(ratio):
    saliency = torch.randn(6, 32, generator=gen(1))
    mask = GuidedMask()(Layout.seq(32), 6, ratio=ratio, generator=gen(2), saliency=saliency)
    assert mask.dtype == torch.bool and mask.shape == (6, 32)
    assert (mask.sum(1) == round(ratio * 32)).all()


def inclusion_by_enumeration(p: list[float], k: int) -> torch.Tensor:
    """P(token i is among the first k of a draw without replacement from p), by summing over every
    ordered k-tuple (I2P-MAE's multinomial permutation, first k kept)."""
    out = torch.zeros(len(p), dtype=torch.float64)
    for seq in permutations(range(len(p)), k):
        prob, left = 1.0, 1.0
        for i in seq:
            prob *= p[i] / left
            left -= p[i]
        out[list(seq)] += prob
    return out


@pytest.mark.parametrize(("ratio", "temperature"), [(0.75, 1.0), (0.5, 1.0), (0.5, 2.0), (0.25, 0.5)])
def test_guided_mask_visible_frequencies_match_sampling_without_replacement(ratio, temperature):
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    n, g = 40_000, 4
    mask = GuidedMask(temperature=temperature)(Layout.seq(g), n, ratio=ratio, generator=gen(3),
                                               saliency=p.log().expand(n, g))
    q = torch.softmax(p.log() / temperature, 0).tolist()
    expected = inclusion_by_enumeration(q, g - round(ratio * g))
    seen = (~mask).double().mean(0)
    # 4 standard errors of a frequency of 40 000 draws is at most 0.01
    assert torch.allclose(seen, expected, atol=0.01), (seen, expected)
    assert seen[3] > seen[0] + 0.05  # the salient token stays visible more often than the dull one


def test_guided_mask_is_seeded_and_rejects_bad_input():
    layout, sal = Layout.seq(8), torch.randn(3, 8, generator=gen(4))
    a = GuidedMask()(layout, 3, ratio=0.5, generator=gen(5), saliency=sal)
    assert torch.equal(a, GuidedMask()(layout, 3, ratio=0.5, generator=gen(5), saliency=sal))
    with pytest.raises(ValueError, match="needs `saliency`"):
        GuidedMask()(layout, 3, ratio=0.5, generator=gen(5))
    with pytest.raises(ValueError, match=r"must be \[3, 8\]"):
        GuidedMask()(layout, 3, ratio=0.5, generator=gen(5), saliency=sal[:, :4])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        GuidedMask(temperature=0.0)


# projection --------------------------------------------------------------------------------------
BOX = [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]  # fixes every view's frame: scale 2 / (10 - 2) = 0.25 per pixel
POINT = [0.6, -0.3, 0.1]  # u / 0.25 + 5: x -> 7.4, y -> 3.8, z -> 5.4


def test_a_point_lands_on_its_known_pixel_in_each_view():
    views = depth_views(torch.tensor([BOX + [POINT]]), size=10)
    assert views.images.shape == (1, 3, 10, 10)
    # view 0 (x, y) seen along z: pixel (7, 3); depth z = 0.1 of [-1, 1]
    value = NEAR - (NEAR - FAR) * (0.1 + 1) / 2
    assert views.images[0, 0, 7, 3].item() == pytest.approx(value)
    assert (views.images[0, 0, 6:9, 2:5] == views.images[0, 0, 7, 3]).all()  # its 3 x 3 splat
    assert views.images[0, 0, 5, 6].item() == 0.0  # no point there
    assert views.images[0, 0, 1, 1].item() == pytest.approx(NEAR)  # the corner nearest along z
    assert views.images[0, 0, 9, 9].item() == pytest.approx(FAR)
    # view 1 (z, x) seen along y: pixel (5, 7); view 2 (y, z) seen along x: pixel (3, 5)
    assert views.images[0, 1, 5, 7].item() == pytest.approx(NEAR - (NEAR - FAR) * (-0.3 + 1) / 2)
    assert views.images[0, 2, 3, 5].item() == pytest.approx(NEAR - (NEAR - FAR) * (0.6 + 1) / 2)


def test_the_nearest_point_on_a_pixel_wins():
    behind, before = [0.6, -0.3, 0.9], [0.6, -0.3, -0.5]  # same (x, y), different z
    views = depth_views(torch.tensor([BOX + [behind, before]]), size=10)
    assert views.images[0, 0, 7, 3].item() == pytest.approx(NEAR - (NEAR - FAR) * (-0.5 + 1) / 2)


def test_back_projection_reads_the_pixel_of_each_view():
    views = depth_views(torch.tensor([BOX + [POINT]]), size=10)
    rows, cols = torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij")
    maps = torch.stack([100 * v + 10 * rows + cols for v in range(3)]).view(1, 3, 1, 10, 10)  # value = v r c
    read = back_project(maps, views, torch.tensor([[POINT, BOX[0]]]))
    assert read.shape == (1, 3, 2, 1)
    assert read[0, :, 0, 0].tolist() == [73.0, 157.0, 235.0]
    assert read[0, :, 1, 0].tolist() == [11.0, 111.0, 211.0]  # the corner: pixel (1, 1) in every view
    coarse = torch.full((1, 3, 2, 5, 5), 7.0)  # another resolution is resized first: a constant stays constant
    assert torch.allclose(back_project(coarse, views, torch.tensor([[POINT]])), torch.tensor(7.0))
    with pytest.raises(ValueError, match="maps must be"):
        back_project(maps[:, :2], views, torch.tensor([[POINT]]))


# the 2D network's saliency -----------------------------------------------------------------------
def tiny_image_encoder(depth=2):
    torch.manual_seed(0)
    cfg = MAEConfig(image_size=(8, 8), channels=1, patch=2, dim=16, depth=depth, heads=2, cls_token=True)
    return MaskedEncoder(cfg).eval()


def test_saliency_is_the_class_tokens_last_block_attention():
    enc = tiny_image_encoder()
    images = torch.rand(2, 1, 8, 8, generator=gen(6))
    features, saliency = cls_attention(enc, images)
    assert features.shape == (2, 16, 16) and saliency.shape == (2, 16)
    # by hand: the input of the last block, its q and k, a softmax per head, the class token's row
    x = enc.embed(enc.cfg.patchify(images)) + enc.pos
    x = torch.cat([enc.cls.expand(2, -1, -1), x], 1)
    x = enc.transformer.blocks[0](x)
    last = enc.transformer.blocks[1]
    q, k, _ = last.attn.qkv(last.norm1(x)).chunk(3, dim=-1)  # [2, 17, 16] each
    heads = []
    for h in range(2):
        qh, kh = q[..., 8 * h : 8 * h + 8], k[..., 8 * h : 8 * h + 8]
        heads.append(torch.softmax((qh[:, :1] @ kh.transpose(1, 2)).squeeze(1) / 8**0.5, -1))  # [2, 17]
    by_hand = torch.stack(heads).mean(0)[:, 1:]
    assert torch.allclose(saliency, by_hand, atol=1e-6)
    assert (saliency.sum(1) < 1).all()  # the class token's own share is left out
    assert torch.allclose(features, enc(images).tokens[:, 1:])
    with pytest.raises(ValueError, match="cls_token=True"):
        cls_attention(MaskedEncoder(MAEConfig(image_size=(8, 8), patch=2, dim=16, heads=2, cls_token=False)), images)


def test_view_targets_concatenate_views_and_average_saliency():
    enc = tiny_image_encoder(depth=1)
    clouds = shapes.load("test", per_class=1, points=64).points[:2]  # [2, 64, 3]
    centres = clouds[:, :5]
    views = depth_views(clouds, size=8)
    out = view_targets(enc, views, centres)
    assert out.features.shape == (2, 5, 3 * 16) and out.saliency.shape == (2, 5)
    features, saliency = cls_attention(enc, views.images.reshape(6, 1, 8, 8))
    maps = features.transpose(1, 2).reshape(2, 3, 16, 4, 4)
    per_view = back_project(maps, views, centres)  # [2, 3, 5, 16]
    assert torch.allclose(out.features[:, :, 16:32], per_view[:, 1])  # view 1's features in the second slot
    sal = back_project(saliency.reshape(2, 3, 1, 4, 4), views, centres)[..., 0]  # [2, 3, 5]
    assert torch.allclose(out.saliency, sal.mean(1))


# the objective -----------------------------------------------------------------------------------
def tiny_objective(**kw):
    torch.manual_seed(0)
    cfg = MAEConfig(image_size=(8,), patch=1, channels=3, dim=16, depth=1, heads=2, decoder_dim=8,
                    decoder_depth=1, decoder_heads=2, cls_token=False)
    return I2PMAE(PointEncoder(cfg, 8, width=4), image_dim=6, **kw).eval()


def tiny_batch(seed=7):
    obj = tiny_objective()
    groups = obj.encoder.group(torch.randn(3, 64, 3, generator=gen(seed)))
    return {"groups": groups.points, "centres": groups.centres, "saliency": torch.randn(3, 8, generator=gen(seed + 1)),
            "image_features": torch.randn(3, 8, 6, generator=gen(seed + 2))}


def test_the_2d_term_reads_visible_groups_only():
    obj, batch = tiny_objective(), tiny_batch()
    mask = obj.draw_mask(3, gen(9), saliency=batch["saliency"])
    assert (mask.sum(1) == round(0.6 * 8)).all()
    target = batch["image_features"].clone().requires_grad_(True)
    out = obj({**batch, "image_features": target}, gen(9))
    out.loss.backward()
    moved = target.grad.abs().sum(-1) > 0  # [B, G]
    assert torch.equal(moved, ~mask)  # every visible group's target counts, no hidden one does
    hidden_changed = torch.where(mask[..., None], batch["image_features"] + 9.0, batch["image_features"])
    assert torch.equal(obj({**batch, "image_features": hidden_changed}, gen(9)).loss, out.loss)
    visible_changed = torch.where(mask[..., None], batch["image_features"], batch["image_features"] + 9.0)
    assert obj({**batch, "image_features": visible_changed}, gen(9)).loss > out.loss + 1.0


def test_the_3d_term_is_point_maes_and_the_loss_their_weighted_sum():
    obj, batch = tiny_objective(image_weight=0.5), tiny_batch()
    out = obj(batch, gen(10))
    mask = obj.draw_mask(3, gen(10), saliency=batch["saliency"])
    groups = obj.encoder.batch_groups(batch)
    assert out.metrics["chamfer"].item() == pytest.approx(obj.reconstruction(groups, mask).loss.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(out.metrics["chamfer"].item() + 0.5 * out.metrics["semantic_2d"].item(),
                                            rel=1e-6)
    assert 0.0 < out.metrics["visible_p_mass"].item() < 1.0


def test_guided_objective_keeps_a_dominant_group_visible_and_random_one_does_not():
    batch = tiny_batch()
    batch["saliency"] = torch.zeros(3, 8).index_fill(1, torch.tensor([2]), 60.0)  # p[2] is 1 - 7e-26
    guided, plain = tiny_objective(), tiny_objective(guided=False)
    hidden_guided = torch.stack([guided.draw_mask(3, gen(s), saliency=batch["saliency"]) for s in range(40)])
    hidden_plain = torch.stack([plain.draw_mask(3, gen(s), saliency=batch["saliency"]) for s in range(40)])
    assert not hidden_guided[:, :, 2].any()
    assert hidden_plain[:, :, 2].any()
    with pytest.raises(ValueError, match=r"image_features must be \[B, G, 6\]"):
        guided({**batch, "image_features": batch["image_features"][..., :4]}, gen(0))
    with pytest.raises(ValueError, match="weight must be >= 0"):
        tiny_objective(image_weight=-1.0)


@pytest.mark.slow  # counting syncs traces every op: about 7 s of CPU for six tiny steps
def test_i2pmae_trains_with_one_host_sync_per_logged_step():
    from host_syncs import assert_sync_budget

    seen = assert_sync_budget(tiny_objective().train(), tiny_batch(), steps=6, log_every=3)
    assert seen.count == 2, seen.report()  # the trainer's own read at steps 3 and 6


# the recipe --------------------------------------------------------------------------------------
TINY = ["train.steps=2", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=1", "model.heads=2",
        "model.decoder_dim=8", "model.decoder_depth=1", "model.pointnet_width=4", "eval.probe_draws=1",
        "data.train_per_class=10", "data.test_per_class=2", "data.points=96", "data.groups=8", "data.group_size=8",
        "objective.variant=i2pmae", "image_model.steps=2", "image_model.batch_size=8", "image_model.dim=8",
        "image_model.depth=1", "eval.baselines=false"]


def test_recipe_i2pmae_trains_evaluates_and_reloads(tmp_path):
    recipe = PointMAEShapes().with_overrides(TINY)
    run = Run(tmp_path, progress=False)
    data = recipe.training_data(run)
    assert data["saliency"].shape == (80, 8) and data["image_features"].shape == (80, 8, 3 * 8)
    assert (tmp_path / "image").is_dir()  # the 2D network's own run
    metrics = recipe.train(run)
    assert 0.0 <= metrics["pretrained_linear_few"] <= 1.0
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert "semantic_2d" in header and "chamfer" in header
    loaded = load_run(Path(tmp_path))
    assert isinstance(loaded.objective, I2PMAE) and loaded.recipe.settings == recipe.settings
    assert recipe.sample(loaded.run, loaded.objective, 2, tmp_path / "recon.png") == tmp_path / "recon.png"
    with pytest.raises(UnmaskError, match="not divisible"):
        PointMAEShapes().with_overrides([*TINY, "image_model.patch=3"])
