"""Masked next-token prediction over octree sequences and its sampler (Uni-3DAR, arXiv:2503.16278):
the attention masks on hand-made sequences, what each prediction may and may not see, the loss
against a hand computation, training = sampling logits, and samplers that only emit valid trees."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unmask.data.octree import TREE, decode
from unmask.data.structures import ELEMENTS, OctreeGeometry, Structure, g2_split, shape_structures
from unmask.objectives.octree_ar import OctreeAR, OctreeARConfig, causal_mask, masked_next_token_mask
from unmask.sampling.octree import level_unigram, model_logits, sample_sequences, sample_shapes, sample_structures
from unmask.train.trainer import TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")

MOL = OctreeGeometry(depth=5, low=-4.0, side=8.0, n_types=len(ELEMENTS), bins=5)
SHAPE = OctreeGeometry(depth=3, low=-1.1, side=2.2)
SMALL = OctreeARConfig(dim=32, layers=2, heads=2)


def mol_batch(n: int = 4) -> dict:
    train, _ = g2_split(holdout=22, seed=0)
    return MOL.batch([MOL.tokenize(s) for s in train[20 : 20 + n]])


def test_attention_masks_by_hand():
    # rows: queries, columns: keys; order mask0, real0, mask1, real1, mask2, real2
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0],  # mask 0: itself only
        [0, 1, 0, 0, 0, 0],  # real 0: itself
        [0, 1, 1, 0, 0, 0],  # mask 1: real 0, itself
        [0, 1, 0, 1, 0, 0],  # real 1: reals 0, 1 (never a mask)
        [0, 1, 0, 1, 1, 0],  # mask 2: reals 0, 1, itself
        [0, 1, 0, 1, 0, 1],  # real 2: reals 0..2
    ], dtype=torch.bool)
    assert torch.equal(masked_next_token_mask(3), expected)
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))


def test_prediction_sees_the_past_and_the_next_place_only():
    """Token i's logits must not change when tokens >= i change (both objectives); they must change
    with token i's known place (level, cell) under masked next-token prediction, and must not under
    plain next-token prediction, whose input at i holds token i - 1's place."""
    torch.manual_seed(0)
    batch = mol_batch(2)
    i = 7
    for masked in (True, False):
        obj = OctreeAR(MOL, OctreeARConfig(dim=32, layers=2, heads=2, masked=masked)).eval()
        base = obj.logits(batch)
        later = dict(batch, tokens=batch["tokens"].clone())
        later["tokens"][:, i:] = torch.where(later["kind"][:, i:] == TREE, 77, later["tokens"][:, i:])
        assert torch.equal(obj.logits(later)[:, : i + 1], base[:, : i + 1])
        moved = dict(batch, centre=batch["centre"].clone())
        moved["centre"][:, i] = torch.tensor([0.9, 0.1, 0.3])
        changed = not torch.allclose(obj.logits(moved)[:, i], base[:, i])
        assert changed == masked
        assert torch.equal(obj.logits(moved)[:, :i], base[:, :i])


def test_loss_by_hand_and_padding_is_free():
    torch.manual_seed(1)
    obj = OctreeAR(MOL, SMALL)
    batch = mol_batch(3)
    logits = obj.logits(batch)  # [B, T, V]
    allowed = MOL.allowed()[batch["kind"]]  # [B, T, V]
    manual = []
    for b in range(3):
        for t in range(int(batch["valid"][b].sum())):
            lg = logits[b, t][allowed[b, t]]
            target = int(batch["tokens"][b, t]) - int(allowed[b, t].nonzero()[0])
            manual.append(F.cross_entropy(lg[None], torch.tensor([target])))
    out = obj(batch)
    assert torch.allclose(out.loss, torch.stack(manual).mean(), atol=1e-5)
    assert out.metrics["loss"].ndim == 0 and not out.metrics["loss"].requires_grad
    padded = MOL.batch([{k: v[0, : int(batch["valid"][0].sum())] for k, v in batch.items() if k != "valid"}],
                       length=batch["tokens"].shape[1] + 9)
    alone = MOL.batch([{k: v[0, : int(batch["valid"][0].sum())] for k, v in batch.items() if k != "valid"}])
    assert torch.allclose(obj(padded).loss, obj(alone).loss, atol=1e-6)


def test_sampler_reads_the_logits_training_scores():
    torch.manual_seed(2)
    batch = mol_batch(2)
    for masked in (True, False):
        obj = OctreeAR(MOL, OctreeARConfig(dim=32, layers=2, heads=2, masked=masked)).eval()
        full = obj.logits(batch)
        step = model_logits(obj)
        for t in (0, 5, 20):
            got = step(batch["tokens"][:, :t], batch["kind"][:, :t], batch["level"][:, :t], batch["centre"][:, :t],
                       batch["kind"][:, t], batch["level"][:, t], batch["centre"][:, t])
            finite = torch.isfinite(full[:, t])
            assert torch.equal(finite, torch.isfinite(got))
            assert torch.allclose(got[finite], full[:, t][finite], atol=1e-5)


def test_sampler_never_emits_an_empty_node_and_decodes_what_the_bytes_say():
    torch.manual_seed(3)
    obj = OctreeAR(SHAPE, SMALL)
    with torch.no_grad():
        obj.net.head.bias[0] = 100.0  # the model wants byte 0 (no children) everywhere
    cursors = sample_sequences(SHAPE, model_logits(obj.eval()), 3, torch.Generator().manual_seed(0))
    for c in cursors:
        assert c.done and 0 not in c.tokens
        tree = decode(torch.tensor(c.tokens), SHAPE.depth)
        last = tree.bytes[tree.level == SHAPE.depth - 1]
        assert len(c.leaves) == sum(bin(b).count("1") for b in last.tolist()) == len(tree.leaves)
    shapes = sample_shapes(obj, 3, torch.Generator().manual_seed(1))
    assert all(s.ndim == 2 and s.shape[1] == 3 and len(s) > 0 for s in shapes)
    assert all(bool((s.abs() <= 1.1).all()) for s in shapes)


def test_molecule_samples_have_one_type_and_three_bins_per_leaf():
    torch.manual_seed(4)
    obj = OctreeAR(MOL, SMALL)
    with torch.no_grad():
        obj.net.head.bias[1:] = -50.0  # tree bytes: 1 (one child) only, so the trees stay small
        obj.net.head.bias[1] = 50.0
        obj.net.head.bias[256:] = 0.0
    mols = sample_structures(obj, 4, torch.Generator().manual_seed(0))
    for m in mols:
        assert m is not None and len(m.positions) == 1  # byte 1 at every level: one leaf
        assert 0 <= int(m.types[0]) < len(ELEMENTS)
        assert bool((m.positions.abs() < 4.0).all())


def test_same_generator_same_samples():
    torch.manual_seed(5)
    obj = OctreeAR(SHAPE, SMALL)
    a = sample_shapes(obj, 2, torch.Generator().manual_seed(7))
    b = sample_shapes(obj, 2, torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_level_unigram_draws_only_bytes_seen_at_that_level():
    data = SHAPE.batch([SHAPE.tokenize(s) for s in shape_structures("train", per_class=1, points=256)])
    seen = {(int(lv), int(t)) for lv, t, v in zip(data["level"].flatten(), data["tokens"].flatten(),
                                                   data["valid"].flatten(), strict=True) if v}
    cursors = sample_sequences(SHAPE, level_unigram(data, SHAPE, smoothing=0.0), 4, torch.Generator().manual_seed(0))
    for c in cursors:
        tree = decode(torch.tensor(c.tokens), SHAPE.depth)
        assert all((int(lv), int(t)) in seen for lv, t in zip(tree.level, tree.bytes, strict=True))


@pytest.mark.slow
def test_masked_model_learns_one_structure(tmp_path):
    """Trained with the one Trainer on a single structure, the greedy sample is that structure's sequence."""
    geo = OctreeGeometry(depth=2, low=0.0, side=4.0)
    cells = torch.tensor([[0, 0, 0], [3, 2, 1], [1, 1, 1], [2, 3, 3]], dtype=torch.float64) + 0.5
    seq = geo.tokenize(Structure(cells))
    data = geo.batch([seq] * 4)
    torch.manual_seed(6)
    obj = OctreeAR(geo, SMALL)
    fit(obj, data, TrainConfig(steps=40, batch_size=4, lr=1e-2, warmup=5, log_every=40), tmp_path, {}, progress=False)
    cursor = sample_sequences(geo, model_logits(obj.eval()), 1, temperature=0.0, max_tokens=20)[0]
    assert cursor.done and cursor.tokens == seq["tokens"].tolist()
