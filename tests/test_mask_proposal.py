"""Prompt-guided Mask Proposal (PMP, arXiv:2412.10292) and its Mask2Former-lite set loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unmask.nn.mask_proposal import MaskProposalConfig, MaskProposalModel, MaskProposals
from unmask.objectives.mask_proposal import (
    MaskProposalLoss,
    bce_cost,
    brute_force_match,
    dice_cost,
    hungarian_match,
    one_name_prompt,
)

V, T = 10, 3


def model(prompt: bool, seed: int = 0, **kw) -> MaskProposalModel:
    torch.manual_seed(seed)
    cfg = MaskProposalConfig(image_size=16, classes=5, vocab_size=V, prompt_length=T, dim=16, queries=4,
                             depth=2, heads=2, prompt=prompt, **kw)
    return MaskProposalModel(cfg).eval()


def images(b: int = 2) -> torch.Tensor:
    return torch.rand(b, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_shapes_and_output_type():
    out = model(True)(images(), torch.ones(2, T, dtype=torch.long), torch.tensor([1, 3]))
    assert isinstance(out, MaskProposals)
    assert out.masks.shape == (2, 4, 8, 8) and out.logits.shape == (2, 4, 6)


def test_prompt_off_is_bit_identical_for_any_prompt():
    m, x = model(False), images()
    assert not any("prompt" in name for name, _ in m.named_parameters())
    ref = m(x)
    for tokens, lengths in ((torch.ones(2, T, dtype=torch.long), torch.tensor([1, 1])),
                            (torch.randint(0, V, (2, T)), torch.tensor([3, 2]))):
        out = m(x, tokens, lengths)
        assert torch.equal(out.masks, ref.masks) and torch.equal(out.logits, ref.logits)


def test_prompt_on_changes_masks_and_classes():
    m, x = model(True), images()
    a = m(x, torch.tensor([[2, 0, 0], [2, 0, 0]]), torch.tensor([1, 1]))
    b = m(x, torch.tensor([[7, 0, 0], [7, 0, 0]]), torch.tensor([1, 1]))
    assert not torch.allclose(a.masks, b.masks) and not torch.allclose(a.logits, b.logits)
    # every decoder layer reads the prompt: a gradient reaches each layer's prompt attention
    loss = a.masks.sum() + a.logits.sum()
    loss.backward()
    for layer in m.decoder.layers:
        assert layer.prompt_attn.qkv.weight.grad.abs().sum() > 0


def test_pad_words_never_change_the_output():
    m, x = model(True), images()
    lengths = torch.tensor([1, 2])
    a = m(x, torch.tensor([[4, 0, 0], [5, 6, 0]]), lengths)
    b = m(x, torch.tensor([[4, 9, 3], [5, 6, 8]]), lengths)
    assert torch.equal(a.masks, b.masks) and torch.equal(a.logits, b.logits)
    # but a longer length reads the word
    c = m(x, torch.tensor([[4, 9, 3], [5, 6, 8]]), torch.tensor([2, 2]))
    assert not torch.allclose(a.logits[0], c.logits[0])


def test_bad_inputs_raise():
    m = model(True)
    with pytest.raises(ValueError, match="prompt=True"):
        m(images())
    with pytest.raises(ValueError, match="lengths"):
        m(images(), torch.ones(2, T, dtype=torch.long), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="tokens"):
        m(images(), torch.ones(2, T + 1, dtype=torch.long), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="images"):
        m(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="vocab_size"):
        MaskProposalConfig(prompt=True, vocab_size=0)
    with pytest.raises(ValueError, match="queries >= targets"):
        hungarian_match(torch.rand(2, 3))


def test_hungarian_equals_brute_force():
    g = torch.Generator().manual_seed(3)
    for q, k in ((4, 3), (5, 2), (3, 3), (6, 4)):
        cost = torch.rand(q, k, generator=g)
        rows, cols = hungarian_match(cost)
        assert cols.tolist() == list(range(k)) and len(set(rows.tolist())) == k
        _, best = brute_force_match(cost)
        assert math.isclose(float(cost[rows, cols].sum()), best, rel_tol=1e-9, abs_tol=1e-9)


def test_costs_by_hand():
    logits = torch.tensor([[0.0, 2.0, -1.0]])  # one prediction over 3 pixels
    target = torch.tensor([[1.0, 0.0, 1.0]])
    p = [0.5, 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))]
    bce = -(math.log(p[0]) + math.log(1 - p[1]) + math.log(p[2])) / 3
    dice = 1 - (2 * (p[0] + p[2]) + 1) / (sum(p) + 2 + 1)
    assert math.isclose(float(bce_cost(logits, target)), bce, rel_tol=1e-6)
    assert math.isclose(float(dice_cost(logits, target)), dice, rel_tol=1e-6)
    # the pairwise costs agree with torch's own per-pair losses
    lg, tg = torch.randn(4, 7), torch.rand(3, 7)
    ref = torch.stack([torch.stack([F.binary_cross_entropy_with_logits(a, b) for b in tg]) for a in lg])
    assert torch.allclose(bce_cost(lg, tg), ref, atol=1e-6)


def test_one_name_prompt_picks_a_present_object():
    labels = torch.tensor([[3, 1, -1], [0, -1, -1], [4, 2, 1]])
    names = labels.clamp_min(0)[..., None].expand(-1, -1, T) + 1
    lengths = torch.full(labels.shape, 2)
    seen = set()
    for s in range(30):
        tokens, _, slot = one_name_prompt(names, lengths, labels, torch.Generator().manual_seed(s))
        assert (labels.gather(1, slot[:, None]) >= 0).all()
        assert torch.equal(tokens[:, 0], labels.gather(1, slot[:, None]).squeeze(1) + 1)
        seen.add(tuple(slot.tolist()))
    assert len(seen) > 3  # it is drawn, not fixed


def test_loss_matches_and_learns_on_a_tiny_batch():
    m = model(True)
    m.train()
    masks = torch.zeros(2, 2, 16, 16, dtype=torch.bool)
    masks[0, 0, :8], masks[0, 1, 8:], masks[1, 0, :, :8] = True, True, True
    batch = {"images": images(), "masks": masks, "labels": torch.tensor([[1, 3], [2, -1]]),
             "names": torch.tensor([[[2, 0, 0], [4, 0, 0]], [[3, 0, 0], [1, 0, 0]]]),
             "name_lengths": torch.ones(2, 2, dtype=torch.long)}
    objective = MaskProposalLoss(m)
    opt = torch.optim.Adam(objective.parameters(), lr=3e-3)
    first = None
    for step in range(40):
        out = objective(batch, torch.Generator().manual_seed(step))
        first = first if first is not None else float(out.loss.detach())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert set(out.metrics) == {"class", "bce", "dice"}
    assert float(out.loss.detach()) < 0.5 * first


class _Fixed(torch.nn.Module):
    """A stand-in model with fixed outputs, to check the loss against a hand computation."""

    def __init__(self, masks, logits):
        super().__init__()
        self.cfg = MaskProposalConfig(classes=logits.shape[-1] - 1, prompt=False)
        self.out = MaskProposals(masks=masks, logits=logits)

    def forward(self, images):
        return self.out


def test_set_loss_by_hand():
    # 3 queries, one image with 2 objects on a 2x2 grid (the targets are given at that grid)
    t = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]])  # [K=2, 2, 2]
    masks = torch.stack([torch.full((2, 2), -3.0), 6 * t[1] - 3, 6 * t[0] - 3])[None]  # query 2 ~ obj 0, 1 ~ obj 1
    logits = torch.tensor([[[0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]]])  # C = 3
    batch = {"images": torch.zeros(1, 3, 64, 64), "masks": t[None].bool(), "labels": torch.tensor([[1, 2]])}
    out = MaskProposalLoss(_Fixed(masks, logits), no_object=0.1)(batch)
    target = torch.tensor([3, 2, 1])  # query 0 unmatched: "no object"
    weight = torch.tensor([1.0, 1.0, 1.0, 0.1])
    ce = F.cross_entropy(logits[0], target, weight=weight)
    pred = torch.stack([masks[0, 2], masks[0, 1]]).flatten(1)
    truth = t.flatten(1)
    bce = F.binary_cross_entropy_with_logits(pred, truth)
    p = pred.sigmoid()
    dice = (1 - (2 * (p * truth).sum(1) + 1) / (p.sum(1) + truth.sum(1) + 1)).mean()
    assert torch.allclose(out.metrics["class"], ce) and torch.allclose(out.metrics["bce"], bce)
    assert torch.allclose(out.metrics["dice"], dice)
    assert torch.allclose(out.loss, 2 * ce + 5 * bce + 5 * dice)
