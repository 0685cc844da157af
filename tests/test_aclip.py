"""A-CLIP: the attentive mask keeps whole 2x2 cells, exactly the most attended ones in A-CLIP's
count; the EMA encoder moves by the hand formula and gets no gradient; the CLIP loss matches a hand
computation; the online encoder never reads a hidden patch."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from unmask.layout import Layout
from unmask.masking.attentive import AttentiveMask, attentive_cell_mask, cell_means, hidden_count, kept_cells
from unmask.nn.image_text import ImageTextConfig
from unmask.objectives.aclip import AttentiveMaskCLIP, clip_loss, cls_attention_all_layers, momentum_at

CFG = ImageTextConfig(image_size=16, channels=1, patch=2, vocab_size=9, text_length=4, dim=16, depth=2, heads=2)
GRID = Layout.grid(8, 8, name="patches")


def _batch(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, CFG.text_length + 1, (b,), generator=g)
    tokens = torch.randint(2, CFG.vocab_size, (b, CFG.text_length), generator=g)
    tokens = tokens.masked_fill(torch.arange(CFG.text_length) >= lengths.unsqueeze(1), 0)
    return {"images": torch.rand(b, 1, 16, 16, generator=g), "tokens": tokens, "lengths": lengths}


def _model(masking="attentive", seed=0, **kw):
    torch.manual_seed(seed)
    return AttentiveMaskCLIP(CFG, masking=masking, text_depth=1, embed_dim=8, **kw)


def _cells(mask, h=8, w=8):
    """Bool[B, h*w] -> Bool[B, h/2, w/2, 4]: each 2x2 cell's four tokens."""
    return mask.view(-1, h // 2, 2, w // 2, 2).permute(0, 1, 3, 2, 4).reshape(mask.shape[0], h // 2, w // 2, 4)


# ---- the masker ---------------------------------------------------------------------------------

def test_kept_cell_count_is_a_clips_rule():
    # int(cells * keep) + 1, at most all cells: the release keeps 25 of 49 at keep 0.5
    assert int(kept_cells(49, 0.5)) == 25
    assert int(kept_cells(16, 0.5)) == 9
    assert int(kept_cells(10, 0.7)) == 8  # 0.7 * 10 must count as 7, not 6.999...
    assert int(kept_cells(16, 1.0)) == 16 and int(kept_cells(16, 0.0)) == 1
    assert hidden_count((8, 8), 0.5) == 64 - 4 * 9 == 28
    assert hidden_count((14, 14), 0.5) == 196 - 100


@pytest.mark.parametrize("keep", [0.0, 0.25, 0.5, 0.8, 1.0])
def test_exact_counts_and_whole_cells(keep):
    scores = torch.rand(5, 64, generator=torch.Generator().manual_seed(1))
    mask = attentive_cell_mask(scores, (8, 8), keep)
    assert mask.dtype == torch.bool and mask.shape == (5, 64)
    assert (mask.sum(1) == hidden_count((8, 8), keep)).all()
    cells = _cells(mask)
    assert (cells.all(-1) | ~cells.any(-1)).all()  # every cell hidden or kept whole


def test_kept_cells_are_the_top_attention_cells_brute_force():
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(4, 64, generator=g)
    mask = attentive_cell_mask(scores, (8, 8), 0.5)
    for b in range(4):
        grid = scores[b].view(8, 8)
        means = {(i, j): grid[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean().item()
                 for i, j in itertools.product(range(4), range(4))}
        top = sorted(means, key=lambda c: -means[c])[:9]  # int(16 * 0.5) + 1
        kept = ~mask[b].view(8, 8)
        expected = torch.zeros(8, 8, dtype=torch.bool)
        for i, j in top:
            expected[2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = True
        assert torch.equal(kept, expected)


def test_hand_made_grid_keeps_the_hot_cells():
    scores = torch.zeros(1, 4, 4)  # a 4x4 grid: 4 cells, keep 0.25 -> int(1) + 1 = 2 cells kept
    scores[0, 2:, 2:] = 1.0  # bottom-right cell hottest
    scores[0, 0, 1] = 0.5  # top-left cell second (mean 0.125)
    scores[0, 3, 0] = 0.3  # bottom-left third (mean 0.075)
    mask = attentive_cell_mask(scores.view(1, 16), (4, 4), keep=0.25)
    kept = ~mask.view(4, 4)
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(kept, expected)


def test_ties_keep_the_earlier_cell_and_ignore_the_generator():
    scores = torch.ones(2, 16)
    a = attentive_cell_mask(scores, (4, 4), keep=0.25)  # 2 of 4 equal cells kept: the first two
    assert torch.equal(~a[0].view(4, 4), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]],
                                                       dtype=torch.bool))
    layout = Layout.grid(4, 4)
    m1 = AttentiveMask()(layout, 2, ratio=0.75, generator=torch.Generator().manual_seed(0), scores=scores)
    m2 = AttentiveMask()(layout, 2, ratio=0.75, generator=torch.Generator().manual_seed(9), scores=scores)
    assert torch.equal(m1, m2) and torch.equal(m1, a)


def test_cell_means_equal_the_release_bilinear_downsampling():
    scores = torch.rand(3, 64, generator=torch.Generator().manual_seed(4))
    release = F.interpolate(scores.view(3, 1, 8, 8), (4, 4), mode="bilinear").flatten(1)
    assert torch.allclose(cell_means(scores, (8, 8)), release.double(), atol=1e-7)


def test_masker_form_touches_only_its_grid_segment():
    layout = GRID + Layout.seq(5, name="text")
    scores = torch.rand(3, 64, generator=torch.Generator().manual_seed(5))
    mask = AttentiveMask(segments=("patches",))(layout, 3, ratio=0.5, scores=scores)
    assert not mask[:, 64:].any()
    assert torch.equal(mask[:, :64], attentive_cell_mask(scores, (8, 8), 0.5))


def test_masker_errors_are_clear():
    with pytest.raises(ValueError, match="needs `scores`"):
        AttentiveMask()(GRID, 2, ratio=0.5)
    with pytest.raises(ValueError, match=r"must be \[2, 64\]"):
        AttentiveMask()(GRID, 2, ratio=0.5, scores=torch.rand(2, 63))
    with pytest.raises(ValueError, match="grid segment"):
        AttentiveMask()(Layout.seq(64), 2, ratio=0.5, scores=torch.rand(2, 64))
    with pytest.raises(ValueError, match="3x3 cells"):
        AttentiveMask(cell=3)(GRID, 2, ratio=0.5, scores=torch.rand(2, 64))
    with pytest.raises(ValueError, match="keep must lie"):
        attentive_cell_mask(torch.rand(1, 64), (8, 8), keep=1.5)


# ---- the objective ------------------------------------------------------------------------------

def test_clip_loss_equals_hand_computation():
    img = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # normalised: (0.6, 0.8), (1, 0)
    txt = torch.tensor([[0.0, 2.0], [1.0, 1.0]])  # normalised: (0, 1), (s, s), s = 1/sqrt(2)
    scale = torch.tensor(2.0)
    s = 1 / math.sqrt(2)
    sim = [[0.8, 0.6 * s + 0.8 * s], [0.0, s]]  # sim[i][j] = cos(image i, text j)
    logits = [[scale.item() * v for v in row] for row in sim]

    def ce(row, right):
        return -row[right] + math.log(sum(math.exp(v) for v in row))

    i2t = (ce(logits[0], 0) + ce(logits[1], 1)) / 2
    cols = [[logits[0][j], logits[1][j]] for j in range(2)]
    t2i = (ce(cols[0], 0) + ce(cols[1], 1)) / 2
    assert clip_loss(img, txt, scale).item() == pytest.approx((i2t + t2i) / 2, rel=1e-6)


def test_ema_update_equals_hand_formula_and_begin_step_uses_the_schedule():
    model = _model()
    ema0 = [p.detach().clone() for p in model.ema_encoder.parameters()]
    with torch.no_grad():
        for p in model.image_encoder.parameters():
            p.add_(1.0)
    online = [p.detach().clone() for p in model.image_encoder.parameters()]
    model.update_ema(0.9)
    for e, e0, o in zip(model.ema_encoder.parameters(), ema0, online, strict=True):
        assert torch.allclose(e, 0.9 * e0 + 0.1 * o, atol=1e-6)
    # cosine from the base to 1: m(0) = base, m(steps / 2) = (1 + base) / 2, m(steps) = 1
    assert momentum_at(0, 100, 0.99) == pytest.approx(0.99)
    assert momentum_at(50, 100, 0.99) == pytest.approx(0.995)
    assert momentum_at(100, 100, 0.99) == pytest.approx(1.0)
    assert momentum_at(7, None, 0.9) == 0.9
    model = _model(momentum=0.99, momentum_steps=100)
    before = [p.detach().clone() for p in model.ema_encoder.parameters()]
    with torch.no_grad():
        for p in model.image_encoder.parameters():
            p.add_(1.0)
    model.begin_step(50)  # m = 0.995
    for e, e0, o in zip(model.ema_encoder.parameters(), before, model.image_encoder.parameters(), strict=True):
        assert torch.allclose(e, 0.995 * e0 + 0.005 * o, atol=1e-6)


def test_ema_starts_equal_and_gets_no_gradient():
    model = _model()
    for e, o in zip(model.ema_encoder.parameters(), model.image_encoder.parameters(), strict=True):
        assert torch.equal(e, o) and not e.requires_grad
    out = model(_batch(), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert all(p.grad is None for p in model.ema_encoder.parameters())
    assert model.image_encoder.cls.grad is not None and model.logit_scale.grad is not None


def test_attentive_mask_follows_the_ema_attention_not_the_online_encoder():
    model = _model()
    batch = _batch()
    with torch.no_grad():
        model.ema_encoder.cls.normal_(generator=torch.Generator().manual_seed(7))  # EMA differs from online
    scores = cls_attention_all_layers(model.ema_encoder, batch["images"])
    mask = model.draw_mask(batch["images"])
    assert torch.equal(mask, attentive_cell_mask(scores, (8, 8), 0.5))
    online = cls_attention_all_layers(model.image_encoder, batch["images"])
    assert not torch.equal(mask, attentive_cell_mask(online, (8, 8), 0.5))


def test_cls_attention_averages_every_layer_and_head():
    model = _model()
    images = _batch(3)["images"]
    enc = model.image_encoder
    x = torch.cat([enc.cls.expand(3, -1, -1), enc.embed(enc.cfg.patchify(images)) + enc.pos], 1)
    rows = []
    with torch.no_grad():
        for blk in enc.transformer.blocks:
            h = blk.norm1(x)
            q, k, _ = blk.attn.qkv(h).view(3, 65, 3, 2, 8).permute(2, 0, 3, 1, 4)
            probs = (q @ k.transpose(-1, -2) / math.sqrt(8)).softmax(-1)  # [B, H, N, N]
            rows.append(probs[:, :, 0, 1:])  # [B, H, L]
            x = blk(x)
    expected = torch.stack(rows).mean(dim=(0, 2))
    assert torch.allclose(cls_attention_all_layers(enc, images), expected, atol=1e-6)


def test_random_masking_hides_the_same_count():
    att, rnd = _model("attentive"), _model("random")
    images = _batch()["images"]
    a = att.draw_mask(images)
    r = rnd.draw_mask(images, generator=torch.Generator().manual_seed(0))
    assert (a.sum(1) == 28).all() and (r.sum(1) == 28).all()
    r2 = rnd.draw_mask(images, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(r, r2)  # drawn, not fixed
    assert not _model("none").draw_mask(images).any()


def test_online_encoder_ignores_hidden_pixels():
    model = _model()
    batch = _batch()
    mask = model.draw_mask(batch["images"])
    image = model.encode_image(batch["images"], mask)
    patches = batch["images"].view(6, 1, 8, 2, 8, 2)
    hidden = mask.view(6, 1, 8, 1, 8, 1).expand_as(patches).reshape_as(batch["images"])
    changed = torch.where(hidden, torch.rand_like(batch["images"]) + 5.0, batch["images"])
    assert torch.allclose(model.encode_image(changed, mask), image, atol=1e-6)
    kept = ~hidden
    changed_kept = torch.where(kept, batch["images"] + 1.0, batch["images"])
    assert not torch.allclose(model.encode_image(changed_kept, mask), image, atol=1e-4)


def test_text_pads_do_not_change_the_caption_embedding():
    model = _model()
    batch = _batch()
    other = batch["tokens"].clone()
    pads = torch.arange(CFG.text_length) >= batch["lengths"].unsqueeze(1)
    other[pads] = 3
    a = model.encode_text(batch["tokens"], batch["lengths"])
    assert torch.allclose(model.encode_text(other, batch["lengths"]), a, atol=1e-6)


def test_a_few_training_steps_lower_the_loss():
    model = _model()
    batch = _batch(8)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = None
    for step in range(15):
        model.begin_step(step)
        out = model(batch, generator=g)
        first = out.loss.item() if first is None else first
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.loss.item() < first
    assert out.metrics["kept_tokens"].item() == 36


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="masking must be one of"):
        _model("attention")
    with pytest.raises(ValueError, match="keep must lie"):
        _model(keep=1.2)
    with pytest.raises(ValueError, match="momentum must lie"):
        _model(momentum=1.5)
    with pytest.raises(ValueError, match="momentum_steps"):
        _model(momentum_steps=0)


def test_logit_scale_is_clamped_at_100():
    model = _model()
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.scale().item() == pytest.approx(100.0, rel=1e-5)


def test_trainer_moves_the_ema_through_begin_step(tmp_path):
    from unmask.train.trainer import TrainConfig, fit

    model = _model(momentum=0.5)
    start = [p.detach().clone() for p in model.ema_encoder.parameters()]
    fit(model, _batch(8), TrainConfig(steps=3, batch_size=4, warmup=0, log_every=1), tmp_path, {"t": 1},
        progress=False)
    # step 0 moves nothing (EMA = online); steps 1 and 2 move it halfway towards the trained weights
    moved = [not torch.equal(e, s) for e, s in zip(model.ema_encoder.parameters(), start, strict=True)]
    apart = [not torch.equal(e, o) for e, o in zip(model.ema_encoder.parameters(),
                                                    model.image_encoder.parameters(), strict=True)]
    assert any(moved) and any(apart)
    assert "ema_encoder.cls" in model.state_dict()  # checkpointed with the weights, so a resume keeps it
