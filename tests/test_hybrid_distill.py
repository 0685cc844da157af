"""Hybrid Distillation (P23): exact kept counts, least-attended tokens dropped (brute force), the
relation loss's formula, frozen teachers, ablation switches, FLOP counts, and the mae-digits variant."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import TINY
from unmask.errors import UnmaskError
from unmask.nn.mae import MAEConfig, MaskedEncoder
from unmask.nn.token_drop import (
    attention_logits,
    block_flops,
    encoder_flops,
    keep_counts,
    keep_most_attended,
    received_attention,
)
from unmask.nn.transformer import Block
from unmask.objectives.hybrid_distill import HybridDistillation, default_keep_ratios, relation_loss, teacher_attention
from unmask.recipes.mae_digits import MAEDigits
from unmask.recipes.run import Run

CFG = MAEConfig(image_size=(8, 8), channels=1, patch=2, dim=16, depth=4, heads=2, decoder_dim=8, decoder_depth=1,
                decoder_heads=2, cls_token=False)


def encoder(seed, cfg=CFG):
    torch.manual_seed(seed)
    return MaskedEncoder(cfg)


def objective(**kw):
    torch.manual_seed(0)
    return HybridDistillation(CFG, encoder(1), encoder(2), **kw)


def images(b=5, seed=0):
    return torch.rand(b, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# counts and the dropping rule -------------------------------------------------------------------
def test_keep_counts_are_exact_and_never_grow():
    assert default_keep_ratios(4) == (1.0, 1.0, 0.75, 0.5)
    assert default_keep_ratios(1) == (1.0,)
    assert keep_counts(16, default_keep_ratios(4)) == (16, 16, 12, 8)
    assert keep_counts(16, (1.0, 0.5, 0.5, 0.25)) == (16, 8, 8, 4)
    assert keep_counts(10, (0.34, 0.01)) == (3, 1)  # round(3.4); never fewer than one token
    for bad in [(0.5, 0.75), (0.0,), (1.5,)]:
        with pytest.raises(ValueError):
            keep_counts(16, bad)


@pytest.mark.parametrize("ratios", [None, (1.0, 0.5, 0.5, 0.25), (0.75, 0.75, 0.5, 0.5)])
def test_each_student_block_reads_exactly_its_count(ratios):
    obj = objective(keep_ratios=ratios)
    seen = []
    blocks = obj.encoder.transformer.blocks
    hooks = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1])) for b in blocks]
    out = obj({"images": images()})
    for h in hooks:
        h.remove()
    expected = keep_counts(16, ratios or default_keep_ratios(4))
    assert tuple(seen) == expected
    assert out.metrics["kept_share"].item() == expected[-1] / 16


def test_keep_most_attended_hand_made_with_ties():
    scores = torch.tensor([[0.1, 0.5, 0.5, 0.2], [0.3, 0.3, 0.3, 0.3]])
    assert keep_most_attended(scores, 2).tolist() == [[1, 2], [0, 1]]
    assert keep_most_attended(scores, 1).tolist() == [[1], [0]]  # a tie goes to the earlier place
    assert keep_most_attended(scores, 3).tolist() == [[1, 2, 3], [0, 1, 2]]  # ascending places
    with pytest.raises(ValueError):
        keep_most_attended(scores, 5)


def test_attention_logits_are_the_scores_sdpa_softmaxes():
    torch.manual_seed(0)
    block = Block(16, 2)
    x = torch.randn(3, 7, 16)
    h = block.norm1(x)
    probs = attention_logits(block.attn, h).softmax(-1)  # [B, H, N, N]
    v = block.attn.qkv(h)[..., 32:].view(3, 7, 2, 8).transpose(1, 2)  # [B, H, N, D/H]
    by_hand = block.attn.proj((probs @ v).transpose(1, 2).reshape(3, 7, 16))
    assert torch.allclose(by_hand, block.attn(h), atol=1e-5)


def test_teacher_attention_reads_each_block_input():
    teacher, x = encoder(1), images()
    maps = teacher_attention(teacher, x)
    layers = teacher(x, return_layers=True).layers  # each block's output
    first = teacher.embed(CFG.patchify(x)) + teacher.pos
    for i, block in enumerate(teacher.transformer.blocks):
        given = first if i == 0 else layers[i - 1]
        assert torch.allclose(maps[i], attention_logits(block.attn, block.norm1(given)), atol=1e-6)


def test_dropped_tokens_are_the_least_attended_ones_brute_force():
    obj = objective(keep_ratios=(1.0, 0.75, 0.5, 0.25))
    x = images(4)
    maps = teacher_attention(obj.teacher, x)
    places = obj.student(x, maps).places
    held = [list(range(16))] * 4
    for i, now in enumerate(places):
        assert now.shape[1] == keep_counts(16, (1.0, 0.75, 0.5, 0.25))[i]
        for b in range(4):
            kept = now[b].tolist()
            assert kept == sorted(kept) and set(kept) <= set(held[b])
            # brute force: the teacher's block-i scores among the tokens held before this block, softmaxed
            # over those keys; a token's score is the attention it receives, mean over heads and queries
            score = {}
            for j in held[b]:
                total = 0.0
                for head in range(CFG.heads):
                    for q in held[b]:
                        row = torch.tensor([maps[i][b, head, q, k].item() for k in held[b]]).softmax(0)
                        total += row[held[b].index(j)].item()
                score[j] = total / (CFG.heads * len(held[b]))
            dropped = [j for j in held[b] if j not in kept]
            if dropped:
                assert max(score[j] for j in dropped) <= min(score[j] for j in kept) + 1e-7
        held = [now[b].tolist() for b in range(4)]


def test_received_attention_averages_heads_and_queries():
    probs = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]])  # [1, 2 heads, 2, 2]
    assert received_attention(probs).tolist() == [[0.375, 0.625]]


# the two terms ----------------------------------------------------------------------------------
def test_relation_loss_hand_made():
    s = torch.tensor([[[[0.9, 0.1], [0.5, 0.5]]]])
    t = torch.tensor([[[[0.1, 0.9], [0.5, 0.5]]]])
    # maps times n = 2 keys: d = +-1.6 at two of four entries; smooth L1 (beta 1) is |d| - 0.5 there
    assert relation_loss(s, t).item() == pytest.approx(2 * (1.6 - 0.5) / 4)
    near = torch.tensor([[[[0.6, 0.4], [0.5, 0.5]]]])  # d = +-0.2 after scaling: 0.5 d^2
    assert relation_loss(near, torch.full_like(near, 0.5)).item() == pytest.approx(2 * 0.5 * 0.04 / 4)
    assert relation_loss(t, t).item() == 0.0


def test_relation_term_is_zero_when_the_student_attends_as_the_teacher():
    obj = objective(keep_ratios=(1.0,) * 4, relation_layers=(0, 1, 2, 3), feature=False)
    obj.encoder.load_state_dict(obj.teacher.state_dict())
    assert obj({"images": images()}).loss.item() < 1e-12
    with torch.no_grad():  # another block 2: its maps differ, and only its layer is off
        obj.encoder.transformer.blocks[2].attn.qkv.weight.mul_(3.0)
    assert obj({"images": images()}).loss.item() > 1e-6


def test_teachers_get_no_gradient():
    obj = objective()
    before = [p.clone() for p in obj.supervised_teacher.parameters()]
    obj({"images": images()}).loss.backward()
    for teacher in (obj.teacher, obj.supervised_teacher):
        assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert obj.head.weight.grad.abs().sum() > 0
    assert obj.encoder.transformer.blocks[3].attn.qkv.weight.grad.abs().sum() > 0
    assert all(torch.equal(a, b) for a, b in zip(before, obj.supervised_teacher.parameters(), strict=True))


def test_each_switch_removes_exactly_its_term():
    x = {"images": images()}
    full = objective(relation_weight=2.0, feature_weight=3.0)
    out = full(x)
    rel, feat = out.metrics["relation"], out.metrics["feature"]
    assert rel > 0 and feat > 0
    assert out.loss.item() == pytest.approx(2.0 * rel.item() + 3.0 * feat.item(), rel=1e-6)
    only_feature = objective(relation=False, feature_weight=3.0)
    only_relation = objective(feature=False, relation_weight=2.0)
    only_feature.load_state_dict(full.state_dict())
    only_relation.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("head.")})
    a, b = only_feature(x), only_relation(x)
    assert "relation" not in a.metrics and "feature" not in b.metrics
    assert a.loss.item() == pytest.approx(3.0 * feat.item(), rel=1e-6)
    assert b.loss.item() == pytest.approx(2.0 * rel.item(), rel=1e-6)
    assert only_relation.head is None  # no feature term: no head
    with pytest.raises(ValueError):
        objective(relation=False, feature=False)


def test_features_read_every_token_and_bad_teachers_are_refused():
    obj = objective()
    x = images()
    assert torch.equal(obj.features(x), obj.encoder(x).tokens) and obj.features(x).shape == (5, 16, 16)
    shallow = MAEConfig(**{**CFG.to_dict(), "image_size": (8, 8), "depth": 2})
    with pytest.raises(ValueError, match="depth and heads"):
        HybridDistillation(CFG, MaskedEncoder(shallow), encoder(2))
    with_cls = MAEConfig(**{**CFG.to_dict(), "image_size": (8, 8), "cls_token": True})
    with pytest.raises(ValueError, match="class token"):
        HybridDistillation(with_cls, MaskedEncoder(with_cls), MaskedEncoder(with_cls))


# compute ----------------------------------------------------------------------------------------
def test_block_flops_match_a_counted_forward():
    torch.manual_seed(0)
    block, n, d = Block(16, 2), 6, 16
    with FlopCounterMode(display=False) as linear:  # the matrix products (SDPA is not counted on a CPU)
        block(torch.randn(1, n, d))
    q, k = torch.randn(1, 2, n, 8), torch.randn(1, 2, n, 8)
    with FlopCounterMode(display=False) as attn:  # the two attention products, written out
        (q @ k.transpose(-1, -2)).softmax(-1) @ k
    assert block_flops(n, d) == linear.get_total_flops() + attn.get_total_flops()
    assert block_flops(2, 4) == 2 * 2 * 4 * (16 + 32) + 4 * 4 * 4  # by hand
    assert encoder_flops((16, 16, 12, 8), 64) / encoder_flops((16,) * 4, 64) == pytest.approx(
        (2 * block_flops(16, 64) + block_flops(12, 64) + block_flops(8, 64)) / (4 * block_flops(16, 64)))
    assert math.isclose(encoder_flops((16, 16, 12, 8), 64) / encoder_flops((16,) * 4, 64), 0.809, abs_tol=1e-3)


# the mae-digits variant -------------------------------------------------------------------------
def tiny(*more):
    base = [o for o in TINY["mae-digits"] if not o.startswith("model.depth")]
    return MAEDigits().with_overrides([*base, "model.depth=2", "objective.variant=hybrid", *more])


@pytest.mark.slow  # three tiny trainings: about 5 s of CPU, far more on a busy machine
def test_recipe_trains_both_teachers_first_and_reloads(tmp_path):
    recipe = tiny()
    run = Run(tmp_path / "a", progress=False)
    metrics = recipe.train(run)
    assert "mae_linear_few" in metrics
    classifier = recipe.load(run.sub("classifier"), role="classifier")
    loaded = recipe.load(run)
    assert isinstance(loaded, HybridDistillation) and loaded.counts == (16, 8)
    assert all(torch.equal(a, b) for a, b in zip(loaded.supervised_teacher.state_dict().values(),
                                                  classifier.backbone.encoder.state_dict().values(), strict=True))
    assert not any(p.requires_grad for p in loaded.supervised_teacher.parameters())
    # a classifier_run is read, not trained again
    again = tiny(f"objective.classifier_run={tmp_path / 'a' / 'classifier'}", "objective.hybrid_relation=false")
    other = Run(tmp_path / "b", progress=False)
    obj = again.objective()
    again.prepare(other, obj, again.training_data(other))
    assert not (tmp_path / "b" / "classifier").exists() and (tmp_path / "b" / "teacher").exists()
    assert all(torch.equal(a, b) for a, b in zip(obj.supervised_teacher.state_dict().values(),
                                                  classifier.backbone.encoder.state_dict().values(), strict=True))
    assert not obj.relation and obj.feature


def test_recipe_refuses_what_hybrid_cannot_do():
    for bad in (["model.cls_token=true"], ["objective.hybrid_relation=false", "objective.hybrid_feature=false"],
                ["objective.masker=block"]):
        with pytest.raises(UnmaskError):
            tiny(*bad)
    assert tiny("objective.hybrid_drop=false").objective().counts == (16, 16)
