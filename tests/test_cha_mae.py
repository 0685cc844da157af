"""ChA-MAEViT (P63): dynamic channel-patch masking, the multi-channel autoencoder and its loss."""

import pytest
import torch

from unmask.layout import Layout
from unmask.masking.channel_patch import BOTH, CHANNEL_ONLY, PATCH_ONLY, ChannelPatchMask, patch_only_mask
from unmask.nn.channel_vit import ChannelAutoencoder, ChannelViTConfig, channel_positions
from unmask.nn.patch import patchify
from unmask.objectives.cha_mae import ChannelMaskedAutoencoding
from unmask.objectives.mae import normalize_patches


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def per_channel(mask, c):  # Bool[B, C * P] -> Bool[B, C, P]
    return mask.view(mask.shape[0], c, -1)


LAYOUTS = [Layout.streams(3, 7), Layout.video(5, 2, 3), Layout.streams(2, 16)]


# the masker (property 11 of the ChA-MAEViT notes) --------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS, ids=["3x7", "5x2x3", "2x16"])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.75, 1.0])
def test_patch_only_hides_the_exact_count_in_every_channel(layout, ratio):
    c = layout.segments[0].shape[0]
    p = layout.n // c
    d = ChannelPatchMask().draw(layout, 16, ratio=ratio, generator=gen(1), strategy=PATCH_ONLY)
    assert d.mask.shape == (16, layout.n) and d.mask.dtype == torch.bool
    assert (per_channel(d.mask, c).sum(-1) == round(ratio * p)).all()
    assert not d.hidden_channels.any()


def test_patch_only_draws_each_channel_on_its_own():
    # a tube-like bug (one pattern copied to every channel) fails here
    m = per_channel(ChannelPatchMask().draw(Layout.streams(4, 16), 32, ratio=0.5, generator=gen(2),
                                            strategy=PATCH_ONLY).mask, 4)
    assert (m[:, 0] != m[:, 1]).any(-1).float().mean() > 0.9
    assert (m[0] != m[1]).any()  # and each row on its own


@pytest.mark.parametrize("at_least_one", [True, False])
def test_channel_only_hides_whole_channels_never_all(at_least_one):
    layout, c = Layout.streams(4, 6), 4
    masker = ChannelPatchMask(at_least_one=at_least_one)
    seen = []
    g = gen(3)
    for _ in range(600):
        d = masker.draw(layout, 5, ratio=0.75, generator=g, strategy=CHANNEL_ONLY)
        m = per_channel(d.mask, c)
        assert (m.all(-1) | ~m.any(-1)).all()  # every channel is hidden whole or not at all
        assert torch.equal(m.all(-1), d.hidden_channels)
        k = d.hidden_channels.sum(1)
        assert (k == k[0]).all() and (d.hidden_channels == d.hidden_channels[0]).all()  # one set per batch
        seen.append(int(k[0]))
    counts = torch.bincount(torch.tensor(seen), minlength=c + 1)
    low = 1 if at_least_one else 0
    assert counts[c] == 0 and (counts[:low] == 0).all()  # never all channels; >= 1 when asked
    share = counts[low:c].double() / len(seen)  # k uniform on {low, ..., C - 1}
    assert (share - 1 / (c - low)).abs().max() < 0.06


def test_both_is_the_union_of_whole_channels_and_per_channel_patches():
    layout, c, p, ratio = Layout.streams(5, 8), 5, 8, 0.25
    g = gen(4)
    for _ in range(50):
        d = ChannelPatchMask().draw(layout, 6, ratio=ratio, generator=g, strategy=BOTH)
        m = per_channel(d.mask, c)
        hidden = d.hidden_channels
        assert hidden.any(1).all() and not hidden.all(1).any()
        assert m[hidden].all()  # channels hidden whole
        assert (m[~hidden].sum(-1) == round(ratio * p)).all()  # the rest: exactly the patch count
        assert (d.mask.sum(1) == d.mask.sum(1)[0]).all()  # the same count in every row


def test_per_row_channel_sets_keep_one_count():
    d = ChannelPatchMask(shared_channels=False).draw(Layout.streams(6, 4), 64, generator=gen(5),
                                                     strategy=CHANNEL_ONLY)
    k = d.hidden_channels.sum(1)
    assert (k == k[0]).all()
    assert (d.hidden_channels != d.hidden_channels[0]).any(1).any()


def test_strategy_frequencies_follow_the_probabilities():
    # 6,000 draws from a fixed seed: standard error <= 0.0065, so 0.02 is three of them
    masker, g = ChannelPatchMask(p_patch=0.2, p_channel=0.5), gen(6)
    draws = [masker.strategy(g) for _ in range(6000)]
    for name, want in ((PATCH_ONLY, 0.2), (CHANNEL_ONLY, 0.5), (BOTH, 0.3)):
        assert abs(draws.count(name) / len(draws) - want) < 0.02
    assert {patch_only_mask().strategy(g) for _ in range(200)} == {PATCH_ONLY}


def test_seeded_and_free_of_global_state():
    layout, masker = Layout.streams(4, 9), ChannelPatchMask(p_patch=0.3, p_channel=0.3)
    torch.manual_seed(0)
    a = [masker.draw(layout, 3, generator=gen(7)) for _ in range(5)]
    state = torch.random.get_rng_state()
    torch.manual_seed(123)
    b = [masker.draw(layout, 3, generator=gen(7)) for _ in range(5)]
    assert all(torch.equal(x.mask, y.mask) and x.strategy == y.strategy for x, y in zip(a, b, strict=True))
    torch.manual_seed(0)
    assert torch.equal(torch.random.get_rng_state(), state)  # drawing read no global RNG


@pytest.mark.parametrize("bad", [
    dict(p_patch=0.7, p_channel=0.5), dict(p_patch=-0.1), dict(p_channel=1.5)])
def test_rejects_bad_probabilities(bad):
    with pytest.raises(ValueError):
        ChannelPatchMask(**bad)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 channels"):
        ChannelPatchMask().draw(Layout.streams(1, 8), 2, strategy=CHANNEL_ONLY)
    with pytest.raises(ValueError, match="streams"):
        ChannelPatchMask()(Layout.grid(4, 4), 2)
    with pytest.raises(ValueError, match="one ratio"):
        ChannelPatchMask()(Layout.streams(2, 4), 2, ratio=torch.rand(2))
    with pytest.raises(ValueError, match="segment"):
        ChannelPatchMask()(Layout.seq(1, "cls") + Layout.streams(2, 4), 2)
    mixed = Layout.seq(2, "label") + Layout.streams(2, 4, name="img")
    m = ChannelPatchMask(segment="img")(mixed, 3, generator=gen(0))
    assert not m[:, :2].any() and m[:, 2:].any()


# the network ----------------------------------------------------------------------------------------
CFG = ChannelViTConfig(image_size=(8, 8), channels=3, patch=2, dim=32, depth=2, heads=2, decoder_dim=16,
                       decoder_depth=1, decoder_heads=2, memory_tokens=3)


def model(**kw):
    torch.manual_seed(0)
    return ChannelAutoencoder(ChannelViTConfig(**{**CFG.__dict__, **kw})).eval()


def test_patchify_is_each_channel_on_its_own_channel_major():
    x = torch.randn(2, 3, 8, 8)
    tokens = CFG.patchify(x)  # [2, 3 * 16, 4]
    for c in range(3):
        assert torch.equal(tokens[:, c * 16 : (c + 1) * 16], patchify(x[:, c : c + 1], 2))


def test_same_spatial_position_in_every_channel():
    channel, spatial = torch.randn(3, 8), torch.randn(5, 8)
    pos = channel_positions(channel, spatial)[0].view(3, 5, 8)
    assert torch.allclose(pos[1] - pos[0], (channel[1] - channel[0]).expand(5, 8))
    assert torch.allclose(pos[2] - channel[2], spatial)


def test_encoder_reads_visible_tokens_only_and_keeps_memory_in_front():
    net = model()
    mask = ChannelPatchMask().draw(CFG.layout, 2, generator=gen(1), strategy=BOTH).mask
    x = torch.rand(2, 3, 8, 8)
    enc = net.encoder(x, mask)
    keep = int((~mask[0]).sum())
    assert enc.tokens.shape == (2, 3 + keep, 32)
    hidden_pixels = mask.view(2, 3, 4, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)
    changed = torch.where(hidden_pixels, torch.rand(2, 3, 8, 8), x)
    assert torch.equal(net.encoder(changed, mask).tokens, enc.tokens)


@pytest.mark.parametrize("channel_aware", [True, False])
def test_memory_tokens_get_no_prediction_and_no_feature(channel_aware):
    net = model(channel_aware_decoder=channel_aware)
    mask = ChannelPatchMask().draw(CFG.layout, 2, generator=gen(2), strategy=PATCH_ONLY).mask
    x = torch.rand(2, 3, 8, 8)
    out = net(x, mask)
    every = net(x, mask, every=True).pred
    assert every.shape == (2, 48, 4)  # one prediction per (channel, patch), none for the memory tokens
    hidden = out.encoded.index.ids_hidden
    assert out.pred.shape == (2, hidden.shape[1], 4)
    # a decoder that read the prefix wrongly (memory rows as patches) would disagree here
    assert torch.allclose(out.pred, every.gather(1, hidden.unsqueeze(-1).expand(-1, -1, 4)), atol=1e-5)
    assert net.features(x).shape == (2, 48, 32)
    net(x, mask).pred.pow(2).sum().backward()
    assert net.encoder.memory.grad.abs().sum() > 0  # they do take part in the encoding


@pytest.mark.parametrize("channel_aware", [True, False])
def test_decoder_tokens_carry_the_channel_embeddings(channel_aware):
    # channel 1 hidden whole: its embedding reaches the loss only through a channel-aware decoder
    net = model(channel_aware_decoder=channel_aware, memory_tokens=0)
    obj = ChannelMaskedAutoencoding(net)
    mask = torch.zeros(2, 3, 16, dtype=torch.bool)
    mask[:, 1] = True  # what CHANNEL_ONLY draws with k = 1
    loss, _, _ = obj.reconstruction(torch.rand(2, 3, 8, 8), mask.view(2, 48))
    loss.backward()
    grad = net.encoder.channel_embed.grad[1]
    assert (grad.abs().sum() > 0) == channel_aware
    if not channel_aware:
        assert torch.equal(grad, torch.zeros_like(grad))


# the loss -------------------------------------------------------------------------------------------
def test_loss_reads_hidden_tokens_only_and_is_their_mean_error():
    net = model()
    obj = ChannelMaskedAutoencoding(net, ratio=0.5)
    x = torch.rand(3, 3, 8, 8)
    mask = ChannelPatchMask().draw(CFG.layout, 3, ratio=0.5, generator=gen(4), strategy=BOTH).mask
    target = obj.targets(x).requires_grad_(True)
    loss, errors, _ = obj.reconstruction(x, mask, target)
    (grad,) = torch.autograd.grad(loss, target)
    assert torch.equal(grad[~mask], torch.zeros_like(grad[~mask]))  # visible tokens: exactly 0
    assert (grad[mask].abs().sum(-1) > 0).all()
    # brute force: every prediction in place, squared error per token, mean over the hidden ones
    every = net(x, mask, every=True).pred
    per_token = (every - target.detach()).pow(2).mean(-1)
    assert torch.allclose(loss, per_token[mask].mean(), atol=1e-5)


def test_norm_pix_targets_are_per_channel_tokens():
    obj = ChannelMaskedAutoencoding(model())
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(obj.targets(x), normalize_patches(CFG.patchify(x)))
    assert obj.targets(x).mean(-1).abs().max() < 1e-5


def test_objective_output_and_baseline_masker():
    obj = ChannelMaskedAutoencoding(model(), patch_only_mask())
    out = obj({"images": torch.rand(4, 3, 8, 8)}, gen(5))
    assert out.loss.ndim == 0 and out.loss.requires_grad
    assert all(v.ndim == 0 and not v.requires_grad for v in out.metrics.values())
    assert float(out.metrics["hidden_share"]) == 12 / 16  # round(0.75 * 16) per channel
    with pytest.raises(ValueError):
        ChannelViTConfig(image_size=(8, 6), patch=4)
    with pytest.raises(ValueError, match="expected images"):
        obj({"images": torch.rand(4, 2, 8, 8)}, gen(5))


# the recipe (built by class: its registry line is added with the recipes table) -------------------------
RECIPE_TINY = ["train.steps=2", "train.warmup=1", "model.dim=16", "model.depth=1", "model.heads=2",
               "model.decoder_dim=8", "model.decoder_depth=1", "eval.probe_draws=1", "train.batch_size=8",
               "data.clips_per_digit=1"]


def test_recipe_variants_build_their_parts():
    from unmask.recipes.channels_mae import ChannelMAE

    cha = ChannelMAE().with_overrides(RECIPE_TINY)
    obj = cha.objective()
    assert obj.model.config.memory_tokens == 4 and obj.model.channel_proj is not None
    assert (obj.masker.p_patch, obj.masker.p_channel) == (0.5, 0.5)
    patch = ChannelMAE().with_overrides([*RECIPE_TINY, "objective.variant=patch"]).objective()
    assert patch.model.config.memory_tokens == 0 and patch.model.channel_proj is None
    assert patch.masker.p_patch == 1.0
    from unmask.errors import UnmaskError

    with pytest.raises(UnmaskError):
        ChannelMAE().with_overrides(["objective.p_patch=0.7", "objective.p_channel=0.6"])


@pytest.mark.slow
def test_recipe_trains_evaluates_and_reloads(tmp_path):
    from unmask.recipes.channels_mae import ChannelMAE
    from unmask.recipes.run import Run

    recipe = ChannelMAE().with_overrides(RECIPE_TINY)
    run = Run(tmp_path, progress=False)
    metrics = recipe.train(run)
    for task in ("digit", "direction"):
        assert 0.0 <= metrics[f"pretrained_{task}_linear_few"] <= 1.0
        assert f"random_init_{task}_linear" in metrics and f"pixels_{task}_knn" in metrics
        assert metrics[f"{task}_few_shot_gain_over_random_init"] == pytest.approx(
            metrics[f"pretrained_{task}_linear_few"] - metrics[f"random_init_{task}_linear_few"])
    loaded = recipe.load(run)
    x = recipe.probe_set("test").inputs[:4]
    assert loaded.features(x).shape == (4, 64, 16)
    drawn = recipe.sample(run, loaded, 2, tmp_path / "drawn" / "x")
    assert drawn.suffix == ".png" and drawn.stat().st_size > 0


def test_recipe_training_reads_the_host_once_per_logged_step(tmp_path):
    from host_syncs import assert_sync_budget
    from unmask.recipes.channels_mae import ChannelMAE
    from unmask.recipes.run import Run

    recipe = ChannelMAE().with_overrides(RECIPE_TINY)
    data = recipe.training_data(Run(tmp_path, progress=False))
    assert assert_sync_budget(recipe.objective(), data, steps=6, log_every=3, batch_size=4).count >= 1
