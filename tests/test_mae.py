"""MAE networks and objective: patches, the visible index, the drop-hidden encoder, the loss."""

import pytest
import torch

from unmask.masking import BlockMask, RandomMask
from unmask.nn.mae import MAEConfig, MaskedAutoencoder
from unmask.nn.patch import patch_layout, patchify, unpatchify
from unmask.nn.visible import restore, split_visible
from unmask.objectives.mae import MaskedAutoencoding, normalize_patches

CFG = MAEConfig(image_size=(8, 8), channels=2, patch=2, dim=16, depth=2, heads=2, decoder_dim=8,
                decoder_depth=1, decoder_heads=2)


def model(**kw):
    torch.manual_seed(0)
    return MaskedAutoencoder(MAEConfig(**{**CFG.to_dict(), "image_size": (8, 8), **kw}))


def images(b=4, seed=0):
    return torch.rand(b, 2, 8, 8, generator=torch.Generator().manual_seed(seed))


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


# patches ----------------------------------------------------------------------------------------
def test_patch_inner_order_is_row_column_channel():
    x = torch.arange(2 * 4 * 4).float().view(1, 2, 4, 4)  # channel-major values
    p = patchify(x, 2)
    assert p.shape == (1, 4, 8)
    # first patch: rows 0-1, cols 0-1; values interleave channels fastest
    assert p[0, 0].tolist() == [0, 16, 1, 17, 4, 20, 5, 21]
    assert p[0, 1].tolist() == [2, 18, 3, 19, 6, 22, 7, 23]  # the patch to its right


@pytest.mark.parametrize("c,h,w,p", [(1, 8, 8, 1), (3, 8, 12, 4), (2, 6, 4, 2)])
def test_unpatchify_inverts_patchify(c, h, w, p):
    x = torch.randn(3, c, h, w)
    assert torch.equal(unpatchify(patchify(x, p), p, c, h, w), x)


def test_bad_patch_size_is_an_error():
    with pytest.raises(ValueError, match="divisible"):
        patchify(torch.zeros(1, 1, 8, 8), 3)
    with pytest.raises(ValueError, match="divisible"):
        MAEConfig(image_size=(8, 8), patch=3)
    with pytest.raises(ValueError, match="hide"):
        MAEConfig(hide="zero")


# the visible index ------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.75, 0.9])
def test_visible_index_exact_count_and_inverse_permutation(ratio):
    layout = patch_layout(16, 16, 2)
    mask = RandomMask()(layout, 6, ratio=ratio, generator=gen())
    index = split_visible(mask)
    n = layout.n
    assert index.keep == n - round(ratio * n)
    arange = torch.arange(n).expand(6, n)
    assert torch.equal(index.ids_shuffle.gather(1, index.ids_restore), arange)
    assert torch.equal(index.ids_restore.gather(1, index.ids_shuffle), arange)
    assert not mask.gather(1, index.ids_keep).any() and mask.gather(1, index.ids_hidden).all()
    assert torch.equal(index.mask, mask)


def test_restore_round_trip_puts_tokens_back():
    mask = BlockMask()(patch_layout(8, 8, 1), 3, ratio=0.5, generator=gen())
    index = split_visible(mask)
    x = torch.arange(3 * 64).float().view(3, 64, 1)
    back = restore(x.gather(1, index.ids_keep[..., None]), x.gather(1, index.ids_hidden[..., None]), index)
    assert torch.equal(back, x)


def test_unequal_counts_are_an_error():
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[0, 0] = True
    with pytest.raises(ValueError, match="same hidden count"):
        split_visible(mask)


# the drop-hidden encoder ------------------------------------------------------------------------
def test_encoder_reads_exactly_the_visible_patches():
    m = model()
    mask = RandomMask()(m.layout, 4, ratio=0.75, generator=gen())
    enc = m.encoder(images(), mask)
    assert enc.tokens.shape == (4, 1 + 4, 16)  # class token + 16 - 12 visible
    # hidden pixels do not reach the encoder: its output has zero gradient w.r.t. them
    x = images().requires_grad_(True)
    m.encoder(x, mask).tokens.sum().backward()
    pix_hidden = unpatchify(mask[..., None].float().expand(-1, -1, 8), 2, 2, 8, 8).bool()
    assert (x.grad[pix_hidden] == 0).all() and (x.grad[~pix_hidden] != 0).any()


@pytest.mark.parametrize("hide", ["drop", "replace"])
def test_hidden_pixels_do_not_change_visible_outputs(hide):
    m = model(hide=hide).eval()
    mask = RandomMask()(m.layout, 4, ratio=0.5, generator=gen())
    x = images()
    y = x + unpatchify(mask[..., None].float().expand(-1, -1, 8), 2, 2, 8, 8) * torch.randn_like(x)
    a, b = m(x, mask), m(y, mask)
    assert torch.allclose(a.pred, b.pred, atol=1e-6)
    n_tokens = 1 + (16 if hide == "replace" else 8)
    assert a.encoded.tokens.shape[1] == n_tokens


def test_rows_do_not_see_each_other():
    """Two rows with the same image and the same mask get the same prediction, whatever the batch."""
    m = model().eval()
    x = images(2)
    mask = RandomMask()(m.layout, 1, ratio=0.5, generator=gen()).expand(2, -1)
    x2 = x.clone()
    x2[1] = x[0]
    out = m(x2, mask)
    assert torch.allclose(out.pred[0], out.pred[1], atol=1e-6)


def test_decoder_predicts_only_hidden_places():
    m = model()
    mask = RandomMask()(m.layout, 3, ratio=0.75, generator=gen())
    out = m(images(3), mask)
    assert out.pred.shape == (3, 12, 8)


# the loss ---------------------------------------------------------------------------------------
def test_norm_pix_matches_a_hand_computation():
    patch = torch.tensor([[1.0, 2.0, 4.0, 9.0]])
    mean = (1 + 2 + 4 + 9) / 4
    var = sum((v - mean) ** 2 for v in [1, 2, 4, 9]) / 3  # unbiased
    expect = [(v - mean) / (var + 1e-6) ** 0.5 for v in [1, 2, 4, 9]]
    assert normalize_patches(patch)[0].tolist() == pytest.approx(expect, rel=1e-6)
    flat = normalize_patches(torch.full((1, 4), 0.3))
    assert torch.isfinite(flat).all() and flat.abs().max() < 1e-3  # epsilon keeps a flat patch at 0


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_is_mean_over_all_hidden_patches(norm_pix):
    obj = MaskedAutoencoding(model(), ratio=0.75, norm_pix=norm_pix)
    x = images()
    mask = obj.draw_mask(4, gen())
    loss, errors, out = obj.reconstruction(x, mask)
    target = patchify(x, 2)
    if norm_pix:
        target = normalize_patches(target)
    hidden = mask.float()
    full = torch.zeros(4, 16, 8)
    full.scatter_(1, out.encoded.index.ids_hidden[..., None].expand(-1, -1, 8), out.pred)
    hand = (((full - target) ** 2).mean(-1) * hidden).sum() / hidden.sum()
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)


def test_visible_targets_do_not_change_the_loss():
    obj = MaskedAutoencoding(model(), ratio=0.75)
    x = images()
    mask = obj.draw_mask(4, gen())
    target = obj.targets(x)
    changed = target + (~mask)[..., None] * 100.0  # every visible patch's target moved
    a, _, _ = obj.reconstruction(x, mask, target=target)
    b, _, _ = obj.reconstruction(x, mask, target=changed)
    assert a.item() == b.item()
    hidden_changed = target + mask[..., None] * 1.0
    c, _, _ = obj.reconstruction(x, mask, target=hidden_changed)
    assert c.item() != a.item()


def test_objective_runs_through_the_trainer_contract():
    obj = MaskedAutoencoding(model(), ratio=0.75)
    loss, metrics = obj({"images": images()}, generator=gen())
    loss.backward()
    assert metrics["hidden_share"] == 0.75
    assert all(p.grad is not None for p in obj.parameters())
    with pytest.raises(ValueError, match="ratio"):
        MaskedAutoencoding(model(), ratio=1.0)


def test_same_generator_same_loss():
    obj = MaskedAutoencoding(model(), ratio=0.75)
    a, _ = obj({"images": images()}, generator=gen(5))
    b, _ = obj({"images": images()}, generator=gen(5))
    assert a.item() == b.item()
