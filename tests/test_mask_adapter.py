"""Mask-Adapter (`nn/mask_adapter.py`, `objectives/mask_adapter.py`): mask pooling by hand, activation
maps normalised over space by softmax(logsigmoid), embeddings pooled by those maps and averaged, the
output moved by the mask, gradient only into the adapter, the consistency loss by hand, perturbed
masks inside their IoU range, clear shape errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unmask.nn.mask_adapter import MaskAdapter, mask_consistency_loss, mask_pool, text_logits
from unmask.objectives.mask_adapter import MaskClassification, PooledProjection, jitter_masks, mask_iou


def small_adapter(dim=8, maps=4, seed=0):
    torch.manual_seed(seed)
    return MaskAdapter(dim, maps=maps, channels=8, mask_channels=8, blocks=1, kernel=3)


def test_mask_pool_is_the_mean_over_the_masks_pixels_of_their_cells_feature():
    # 2x2 grid of cells, each 2x2 pixels; features: channel 0 = 1, 2, 3, 4 by cell, channel 1 = 10 x that
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    features = torch.stack([f, 10 * f]).unsqueeze(0)  # [1, 2, 2, 2]
    masks = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
    masks[0, 0, 0, 0:3] = True  # 2 pixels in cell (0,0), 1 pixel in cell (0,1)
    masks[0, 0, 3, 3] = True  # 1 pixel in cell (1,1)
    masks[0, 1, 2:4, 0:2] = True  # exactly cell (1,0)
    out = mask_pool(features, masks)
    expected = (2 * 1 + 1 * 2 + 1 * 4) / 4
    assert torch.allclose(out[0, 0], torch.tensor([expected, 10 * expected]))
    assert torch.allclose(out[0, 1], torch.tensor([3.0, 30.0]))
    assert torch.equal(out[0, 2], torch.zeros(2))  # an empty mask pools to zeros, as documented


def test_mask_pool_and_adapter_reject_bad_shapes():
    features = torch.randn(2, 8, 4, 4)
    with pytest.raises(ValueError, match="multiple"):
        mask_pool(features, torch.ones(2, 1, 10, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch size"):
        mask_pool(features, torch.ones(3, 1, 16, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[B, Q, H, W\]"):
        mask_pool(features, torch.ones(2, 16, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[B, D, h, w\]"):
        small_adapter()(torch.randn(8, 4, 4), torch.ones(2, 1, 16, 16))
    with pytest.raises(ValueError, match="dim=8"):
        small_adapter()(torch.randn(2, 6, 4, 4), torch.ones(2, 1, 16, 16))
    with pytest.raises(ValueError, match="mask_channels"):
        MaskAdapter(8, mask_channels=4)
    with pytest.raises(ValueError, match="channels"):
        text_logits(torch.randn(2, 3, 8), torch.randn(5, 7), 1.0)


def test_maps_are_softmax_of_logsigmoid_over_space_and_pool_the_features():
    adapter = small_adapter().eval()
    seen = {}
    adapter.final.register_forward_hook(lambda mod, inp, out: seen.setdefault("logits", out))
    features = torch.randn(2, 8, 4, 4)
    masks = torch.rand(2, 3, 16, 16) > 0.5
    out = adapter(features, masks)
    assert out.maps.shape == (2, 3, 4, 4, 4) and out.embeddings.shape == (2, 3, 8)
    assert torch.allclose(out.maps.sum((-2, -1)), torch.ones(2, 3, 4), atol=1e-6)
    expected = F.softmax(F.logsigmoid(seen["logits"]).flatten(2), -1).view(2, 3, 4, 4, 4)
    assert torch.allclose(out.maps, expected, atol=1e-6)
    # each map pools the features of its own image; the embedding is the mean over maps
    pooled = torch.einsum("bqmn,bdn->bqmd", out.maps.flatten(3), features.flatten(2)).mean(2)
    assert torch.allclose(out.embeddings, pooled, atol=1e-5)


def test_embeddings_are_convex_combinations_of_the_cells():
    adapter = small_adapter()
    features = torch.randn(1, 8, 1, 1).expand(1, 8, 4, 4).contiguous()  # the same vector in every cell
    out = adapter(features, torch.rand(1, 2, 16, 16) > 0.5)
    assert torch.allclose(out.embeddings, features[:, :, 0, 0].unsqueeze(1).expand(1, 2, 8), atol=1e-5)


def test_the_mask_changes_the_embedding():
    adapter = small_adapter()
    features = torch.randn(1, 8, 4, 4)
    left = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    left[..., :, :8] = True
    right = left.flip(-1)
    a, b = adapter(features, left), adapter(features, right)
    assert (a.maps - b.maps).abs().max() > 1e-2
    assert (a.embeddings - b.embeddings).abs().max() > 1e-2
    # and the two masks of one call are handled apart: each equals its own single-mask call
    both = adapter(features, torch.cat([left, right], 1)).embeddings
    assert torch.allclose(both[:, 0], a.embeddings[:, 0], atol=1e-5)
    assert torch.allclose(both[:, 1], b.embeddings[:, 0], atol=1e-5)


def test_gradient_reaches_only_the_adapter():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Dropout(0.5))
    adapter = small_adapter()
    text = torch.randn(5, 8)
    obj = MaskClassification(adapter, text, 10.0, backbone=backbone)
    obj.train()
    assert not backbone.training  # frozen: stays in eval mode under the trainer's .train()
    masks = torch.zeros(2, 2, 16, 16, dtype=torch.bool)
    masks[:, 0, 2:10, 2:10] = True
    masks[0, 1, 8:15, 6:14] = True
    batch = {"images": torch.rand(2, 3, 16, 16), "masks": masks, "labels": torch.tensor([[1, 3], [4, -1]])}
    out = obj(batch, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())
    assert "text" not in dict(obj.named_parameters()) and "text" in dict(obj.named_buffers())
    assert adapter.final.weight.grad.abs().sum() > 0 and adapter.mask_downscaling[0].weight.grad.abs().sum() > 0
    assert set(out.metrics) == {"ce", "consistency", "acc_gt", "acc_jitter"}
    with pytest.raises(ValueError, match="no 'features'"):
        MaskClassification(adapter, text, 10.0)({"masks": masks, "labels": batch["labels"]})


def test_consistency_loss_by_hand_and_the_reference_is_a_fixed_target():
    a = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]]], requires_grad=True)
    ref = torch.tensor([[[0.0, 2.0], [2.0, 2.0], [5.0, 5.0]]], requires_grad=True)
    cos = [0.0, 1.0, 7 / (5 * math.sqrt(2))]
    loss = mask_consistency_loss(a, ref)
    assert torch.allclose(loss, torch.tensor(1 - sum(cos) / 3))
    valid = torch.tensor([[True, False, True]])
    assert torch.allclose(mask_consistency_loss(a, ref, valid), torch.tensor(1 - (cos[0] + cos[2]) / 2))
    loss.backward()
    assert ref.grad is None and a.grad.abs().sum() > 0  # the ground-truth side is detached
    with pytest.raises(ValueError, match="differ"):
        mask_consistency_loss(a, ref[:, :2])


def test_text_logits_are_scaled_cosines():
    e = torch.tensor([[3.0, 4.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(text_logits(e, t, 10.0), torch.tensor([[6.0, 8.0]]))


def test_jittered_masks_land_in_the_iou_range_and_empty_stays_empty():
    masks = torch.zeros(2, 3, 48, 48, dtype=torch.bool)
    masks[0, 0, 10:30, 12:34] = True
    masks[1, 1, 20:44, 5:25] = True
    masks[1, 0, 0:16, 30:48] = True  # touches the border
    for lo, hi in ((0.5, 0.8), (0.7, 0.95)):
        out = jitter_masks(masks, (lo, hi), generator=torch.Generator().manual_seed(1), tries=32)
        assert out.dtype == torch.bool and out.shape == masks.shape
        iou = mask_iou(out, masks)
        real = masks.flatten(2).any(-1)
        assert ((iou >= lo) & (iou <= hi))[real].all()
        assert not out[~real].any()
    again = jitter_masks(masks, (0.5, 0.8), generator=torch.Generator().manual_seed(1), tries=32)
    assert torch.equal(again, jitter_masks(masks, (0.5, 0.8), generator=torch.Generator().manual_seed(1), tries=32))
    with pytest.raises(ValueError, match="iou"):
        jitter_masks(masks, (0.9, 0.5))
    with pytest.raises(ValueError, match="Bool"):
        jitter_masks(masks.float(), (0.5, 0.8))


def test_mask_iou_by_hand():
    a = torch.zeros(1, 4, 4, dtype=torch.bool)
    b = torch.zeros(1, 4, 4, dtype=torch.bool)
    a[0, :2] = True  # 8 pixels
    b[0, 1:3] = True  # 8 pixels, 4 shared
    assert torch.allclose(mask_iou(a, b), torch.tensor([4 / 12]))


def test_pooled_projection_starts_as_mask_pooling():
    features = torch.randn(2, 8, 4, 4)
    masks = torch.rand(2, 3, 16, 16) > 0.3
    assert torch.allclose(PooledProjection(8)(features, masks), mask_pool(features, masks), atol=1e-6)
