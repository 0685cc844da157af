"""DAMRO (P37): top-k [CLS]-attended patches against a brute force, the [CLS] attention against a
hand-written attention, the contrastive rule on a hand-made case, alpha = 0 gives the plain logits."""

import itertools

import pytest
import torch

from unmask.eval.damro import (
    ClassTokenViT,
    cls_attention,
    contrastive_logits,
    damro_logits,
    find_outliers,
    only_tokens,
    token_norms,
    top_k_tokens,
)
from unmask.nn.mae import MAEConfig


def tiny() -> ClassTokenViT:
    torch.manual_seed(0)
    cfg = MAEConfig(image_size=(8, 8), channels=1, patch=2, dim=16, depth=3, heads=2, cls_token=True)
    return ClassTokenViT(cfg, classes=5).eval()


def test_top_k_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(6, 7, generator=g)
    for k in (1, 3, 7):
        got = top_k_tokens(scores, k)
        for row in range(scores.shape[0]):
            best = max(itertools.combinations(range(7), k), key=lambda s: scores[row, list(s)].sum().item())
            assert got[row].tolist() == list(best)


def test_top_k_ties_go_to_the_earlier_place():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.5]])
    assert top_k_tokens(scores, 2).tolist() == [[0, 1]]


def test_cls_attention_equals_a_hand_written_attention():
    model = tiny()
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    enc = model.encoder
    x = enc.embed(enc.cfg.patchify(images)) + enc.pos
    x = torch.cat([enc.cls.expand(3, -1, -1), x], 1)  # [B, 1 + L, D]
    for block in enc.transformer.blocks[:1]:  # the input of block 1
        x = block(x)
    block = enc.transformer.blocks[1]  # layer -2 of 3 blocks
    h = block.norm1(x)
    q, k, _ = block.attn.qkv(h).chunk(3, -1)
    heads, dh = 2, 8
    q = q.view(3, -1, heads, dh).transpose(1, 2)
    k = k.view(3, -1, heads, dh).transpose(1, 2)
    probs = torch.softmax(q @ k.transpose(-1, -2) / dh ** 0.5, -1)  # [B, H, 1 + L, 1 + L]
    want = probs[:, :, 0, 1:].mean(1)
    torch.testing.assert_close(cls_attention(enc, images, layer=-2), want, atol=1e-5, rtol=1e-5)
    out = block(x)
    torch.testing.assert_close(token_norms(enc, images, layer=1), out[:, 1:].detach().norm(dim=-1))


def test_find_outliers_share_and_ids():
    model = tiny()
    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    out = find_outliers(model.encoder, images, k=3)
    assert out.ids.shape == (4, 3) and out.attention.shape == (4, 16) and out.norms.shape == (4, 16)
    top = out.attention.sort(1, descending=True).values[:, :3].sum(1) / out.attention.sum(1)
    torch.testing.assert_close(out.share, top)
    assert bool((out.share > 3 / 16 - 1e-6).all())  # the top 3 of 16 hold at least their even share


def test_only_tokens_hides_all_but_ids():
    mask = only_tokens(torch.tensor([[0, 3], [1, 2]]), 5)
    assert mask.tolist() == [[False, True, True, False, True], [True, False, False, True, True]]
    with pytest.raises(ValueError):
        only_tokens(torch.tensor([[5]]), 5)


def test_contrastive_rule_on_a_hand_made_case():
    full = torch.tensor([[2.0, 1.0, 0.0]])
    alone = torch.tensor([[3.0, 0.0, 1.0]])
    # (1 + 0.5) * full - 0.5 * alone = [3 - 1.5, 1.5 - 0, 0 - 0.5]
    assert contrastive_logits(full, alone, 0.5).tolist() == [[1.5, 1.5, -0.5]]
    # beta = 0.3: p(full) = softmax([2, 1, 0]) = [.665, .245, .090]; .090 < .3 * .665 is cut, .245 is kept
    out = contrastive_logits(full, alone, 0.5, beta=0.3)
    assert out[0, :2].tolist() == [1.5, 1.5] and out[0, 2].item() == float("-inf")
    with pytest.raises(ValueError):
        contrastive_logits(full, alone, -1.0)


def test_alpha_zero_gives_the_plain_logits_exactly():
    model = tiny()
    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        plain = model.logits(images)
    assert torch.equal(damro_logits(model, images, k=3, alpha=0.0), plain)


def test_damro_logits_contrast_the_outlier_only_pass():
    model = tiny()
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    ids = find_outliers(model.encoder, images, k=2).ids
    with torch.no_grad():
        full = model.logits(images)
        alone = model.logits(images, only_tokens(ids, 16))
        # the outlier-only pass reads those patches alone: changing any other patch leaves it be
        other = images.clone()
        keep = torch.zeros(2, 16, dtype=torch.bool).scatter(1, ids, True).view(2, 1, 4, 4)
        keep = keep.repeat_interleave(2, 2).repeat_interleave(2, 3)
        other[~keep] = 0.0
        torch.testing.assert_close(model.logits(other, only_tokens(ids, 16)), alone)
    torch.testing.assert_close(damro_logits(model, images, k=2, alpha=2.0), 3 * full - 2 * alone)
