"""SparK (arXiv:2301.03580): the encoder never reads a hidden cell, its norms use visible statistics,
the visible count is exact, and the loss is MAE's norm-pix MSE over hidden cells only."""

import pytest
import torch

from unmask.errors import UnmaskError
from unmask.nn.masked_cnn import SPARSE, CNNConfig, MaskedBatchNorm2d, MaskedCNN, cell_keep
from unmask.objectives.spark import SparK, visible_count

CNN = CNNConfig(widths=(8, 16), stem_stride=2)  # cells of 4 pixels: an 8x8 grid on 32x32


@pytest.fixture(autouse=True)
def one_thread():
    """Small convs on a shared CPU run 30x slower on two threads than on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small(seed=0, **kw):
    torch.manual_seed(seed)
    return SparK((32, 32), CNN, decoder_width=8, **kw)


def test_visible_count_exact():
    m = small()
    g = torch.Generator().manual_seed(1)
    for ratio, want in ((0.6, 26), (0.75, 16), (0.5, 32), (0.9, 6)):
        m.ratio = ratio
        mask = m.draw_mask(7, g)
        assert mask.shape == (7, 64) and mask.dtype == torch.bool
        assert ((~mask).sum(1) == want).all() and want == visible_count(64, ratio) == round(64 * (1 - ratio))
    assert not torch.equal(mask[0], mask[1])  # drawn per row


@pytest.mark.parametrize("training", [True, False])
def test_encoder_never_reads_hidden_cells(training):
    enc = MaskedCNN(CNNConfig(widths=(8, 16, 16), stem_stride=1), SPARSE)  # cells of 4 pixels
    enc.train(training)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 32, 32, generator=g)
    mask = torch.rand(3, 64, generator=g) < 0.6
    keep = cell_keep(mask, (8, 8), 4)
    y = torch.where(keep, x, torch.randn(3, 1, 32, 32, generator=g) * 100)  # other pixels where hidden
    y[~keep.expand_as(y)] = y[~keep.expand_as(y)].index_fill(0, torch.tensor([0]), float("nan"))
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    a = enc(x, keep)
    enc.load_state_dict(state)  # the same running statistics before the second pass
    b = enc(y, keep)
    for ma, mb, ka, cell in zip(a.maps, b.maps, a.keeps, (4, 2, 1), strict=True):
        assert torch.equal(ma, mb)  # every scale, bit for bit
        assert torch.equal(ka, cell_keep(mask, (8, 8), cell))  # the same cells at every scale
        assert (ma * ~ka).abs().sum() == 0  # hidden positions are zero at every scale
    # and no gradient reaches a hidden pixel
    x = x.clone().requires_grad_(True)
    enc(x, keep).maps[-1].pow(2).sum().backward()
    assert (x.grad[~keep.expand_as(x)] == 0).all() and (x.grad[keep.expand_as(x)] != 0).any()


def test_masked_batchnorm_uses_visible_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=g) * 3 + 1
    keep = torch.rand(4, 1, 5, 5, generator=g) < 0.4
    bn = MaskedBatchNorm2d(3, momentum=0.25)
    out = bn(x, keep)
    vis = x.permute(0, 2, 3, 1)[keep[:, 0]]  # [K, 3], by hand
    mean, var = vis.mean(0), vis.var(0, unbiased=False)
    want = (vis - mean) / (var + bn.eps).sqrt()
    assert torch.allclose(out.permute(0, 2, 3, 1)[keep[:, 0]], want, atol=1e-5)
    assert (out.permute(0, 2, 3, 1)[~keep[:, 0]] == 0).all()
    assert torch.allclose(bn.running_mean, 0.25 * mean, atol=1e-6)
    assert torch.allclose(bn.running_var, 0.75 + 0.25 * vis.var(0, unbiased=True), atol=1e-5)
    # statistics over every position would differ: the test can tell
    assert not torch.allclose(mean, x.mean(dim=(0, 2, 3)), atol=1e-3)
    bn.eval()  # at evaluation, the running statistics
    out = bn(x, keep)
    want = (x - bn.running_mean.view(1, 3, 1, 1)) / (bn.running_var.view(1, 3, 1, 1) + bn.eps).sqrt()
    assert torch.allclose(out, want * keep, atol=1e-5)


def test_reconstruction_ignores_hidden_pixels():
    m = small().eval()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 32, 32, generator=g)
    mask = m.draw_mask(2, g)
    keep = cell_keep(mask, (8, 8), 4)
    y = torch.where(keep, x, torch.rand(2, 1, 32, 32, generator=g))
    assert torch.equal(m.reconstruct(x, mask), m.reconstruct(y, mask))


def test_loss_is_norm_pix_mse_on_hidden_cells_by_hand():
    m = small()
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    out = m({"images": x}, torch.Generator().manual_seed(9))
    mask = m.draw_mask(2, torch.Generator().manual_seed(9))  # the same draw
    pred = m.reconstruct(x, mask)
    total, n = 0.0, 0
    for b in range(2):
        for cell in mask[b].nonzero().flatten().tolist():
            r, c = divmod(cell, 8)
            t = x[b, 0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].flatten()
            t = (t - t.mean()) / (t.var(unbiased=True) + 1e-6).sqrt()
            p = pred[b, 0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].flatten()
            total, n = total + (p - t).pow(2).mean(), n + 1
    assert n == 2 * (64 - 26)
    assert torch.allclose(out.loss, total / n, atol=1e-5)
    assert out.metrics["hidden_share"] == pytest.approx(38 / 64)


def test_decoder_gets_mask_tokens_at_hidden_places():
    m = small().eval()
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 1, 32, 32, generator=g)
    mask = m.draw_mask(2, g)
    before = m.reconstruct(x, mask)
    with torch.no_grad():
        m.decoder.mask_tokens[0].add_(1.0)  # the deepest scale's token
    assert not torch.allclose(before, m.reconstruct(x, mask))


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    m = SparK((16, 16), CNN, decoder_width=8)
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(6)).pow(4)
    opt = torch.optim.AdamW(m.parameters(), 3e-3)
    losses = []
    for step in range(20):
        loss = m({"images": x}, torch.Generator().manual_seed(step % 2)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_bad_inputs():
    with pytest.raises(ValueError, match="ratio"):
        small(ratio=1.0)
    with pytest.raises(ValueError, match="divisible"):
        SparK((30, 32), CNN)
    enc = MaskedCNN(CNN)
    with pytest.raises(ValueError, match="keep"):
        enc(torch.rand(2, 1, 32, 32), torch.ones(2, 32, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="grid"):
        cell_keep(torch.zeros(2, 60, dtype=torch.bool), (8, 8), 4)


TINY = ["train.steps=2", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.decoder_dim=8",
        "eval.probe_draws=1"]


@pytest.mark.slow  # two probes of 1,125 glyphs: about 10 s on a loaded machine
def test_recipe_trains_evaluates_and_reloads(tmp_path):
    from unmask.recipes.run import Run
    from unmask.recipes.spark_glyphs import SparKGlyphs

    recipe = SparKGlyphs().with_overrides(TINY)
    metrics = recipe.train(Run(tmp_path, progress=False))
    for prefix in ("spark_", "random_init_"):
        assert 0.0 <= metrics[prefix + "linear"] <= 1.0
    assert metrics["few_shot_gain_over_random_init"] == pytest.approx(
        metrics["spark_linear_few"] - metrics["random_init_linear_few"])
    loaded = recipe.load(Run(tmp_path, progress=False))
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(loaded.features(x), loaded.features(x))
    assert loaded.features(x).shape == (2, 64, 16)  # an 8x8 grid of 16-wide features
    drawn = recipe.sample(Run(tmp_path, progress=False), loaded, 3, tmp_path / "drawn" / "x")
    assert drawn.suffix == ".png" and drawn.stat().st_size > 0
    with pytest.raises(UnmaskError, match="ratio"):
        SparKGlyphs().with_overrides(["objective.ratio=0.99"])
