"""w2v-BERT (objectives/w2v_bert.py) and wav2vec 2.0's span masking (masking/wav2vec_span.py): the
contrastive loss against a hand-computed case, where its distractors come from, MLM only at masked
frames, the three modes, exact span counts, and no global RNG."""

import copy
import math

import pytest
import torch

from unmask.layout import Layout
from unmask.masking import Wav2VecSpanMask
from unmask.objectives.w2v_bert import MODES, W2VBert, draw_distractors, info_nce, latent_lengths


class FixedMask:
    """A masker that hides the given Bool[B, T'] whatever it is asked."""

    def __init__(self, mask):
        self.mask = mask

    def __call__(self, layout, batch_size, *, ratio=0.5, generator=None, **context):
        assert layout.n == self.mask.shape[1]
        return self.mask[:batch_size].clone()


class FixedIds(torch.nn.Module):
    def __init__(self, ids):
        super().__init__()
        self.ids = ids

    def forward(self, mel):
        return self.ids


def tiny(mode="w2v-bert", **kw):
    torch.manual_seed(0)
    return W2VBert(8, 16, 2, 2, contrast_depth=1, codes=8, code_dim=4, mode=mode, **kw)


def test_info_nce_matches_a_hand_computed_case():
    q = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]])  # cosine ignores the lengths
    c = torch.tensor([[[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    ids = torch.tensor([[0, 1, 2]])
    mask = torch.tensor([[True, True, False]])
    distractors = torch.tensor([[[1, 1], [0, 0], [2, 2]]])
    loss, hit = info_nce(c, q, ids, mask, distractors, temperature=0.5)
    # frame 0: cos(c0, q0) = 1, its distractor q1 twice: cos 0
    want0 = -math.log(math.exp(2.0) / (math.exp(2.0) + 2 * math.exp(0.0)))
    # frame 1: cos(c1, q1) = 1/sqrt(2); distractor q0 twice: 1/sqrt(2) as well
    s = (1 / math.sqrt(2)) / 0.5
    want1 = -math.log(math.exp(s) / (3 * math.exp(s)))
    assert loss[0, 0].item() == pytest.approx(want0, rel=1e-6)
    assert loss[0, 1].item() == pytest.approx(want1, rel=1e-6)
    assert loss[0, 2].item() == 0.0  # not masked
    assert hit.tolist() == [[True, False, False]]  # a tie is not a hit


def test_a_distractor_with_the_positive_id_is_left_out():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    c = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    distractors = torch.tensor([[[1, 2], [0, 2], [0, 1]]])
    apart, _ = info_nce(c, q, torch.tensor([[0, 1, 2]]), mask, distractors, temperature=1.0)
    same, _ = info_nce(c, q, torch.tensor([[0, 0, 2]]), mask, distractors, temperature=1.0)
    # frame 0 with ids 0, 0, 2: distractor 1 shares the positive's id, only q2 (cos -1) is left
    assert same[0, 0].item() == pytest.approx(-math.log(math.e / (math.e + math.exp(-1))), rel=1e-6)
    assert apart[0, 0].item() == pytest.approx(-math.log(math.e / (math.e + 1 + math.exp(-1))), rel=1e-6)
    # frame 2's distractors keep their own ids (0 and 0): both stay
    assert same[0, 2].item() == pytest.approx(apart[0, 2].item())


def test_distractors_are_other_masked_frames_of_the_same_row():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(64, 20, generator=g) < 0.4
    mask[0] = False
    mask[0, 5] = True  # one masked frame: no distractor is possible
    d = draw_distractors(mask, 30, g)
    rows = torch.arange(64).view(64, 1, 1).expand_as(d)
    own = torch.arange(20).view(1, 20, 1).expand_as(d)
    many = ((mask.sum(1) >= 2).view(64, 1, 1) & mask.unsqueeze(-1)).expand_as(d)
    assert mask[rows, d][many].all()  # always a masked frame (of the same row: the index is per row)
    assert (d != own)[many].all()  # never the frame itself
    assert (d == own)[~many].all()  # unmasked frames and lone masked frames point to themselves
    # uniform over the other masked frames: with 30 x 8 draws per row every other masked frame shows up
    for b in range(1, 8):
        masked = mask[b].nonzero().squeeze(1)
        for t in masked.tolist():
            assert set(d[b, t].tolist()) <= set(masked.tolist()) - {t}
        seen = set(d[b, masked].flatten().tolist())
        assert seen == set(masked.tolist())


def test_mlm_loss_reads_targets_only_at_masked_frames():
    torch.manual_seed(1)
    mel = torch.randn(2, 12, 8)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 1:3] = mask[1, 4] = True
    model = tiny("mlm", masker=FixedMask(mask))
    ids = torch.randint(8, (2, 6))
    losses = []
    for change in (None, (0, 0), (1, 5), (0, 2)):
        changed = ids.clone()
        if change:
            changed[change] = (changed[change] + 1) % 8
        model.random_quantizer = FixedIds(changed)
        losses.append(model({"mel": mel}).loss.item())
    assert losses[1] == losses[0] and losses[2] == losses[0]  # unmasked frames' ids changed
    assert losses[3] != losses[0]  # a masked frame's id changed


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_sums_exactly_its_terms(mode):
    mel = torch.randn(4, 16, 8, generator=torch.Generator().manual_seed(2))
    model = tiny(mode, contrastive_weight=0.7, mlm_weight=1.3)
    out = model({"mel": mel, "lengths": torch.tensor([16, 12, 9, 16])}, generator=torch.Generator().manual_seed(3))
    m = out.metrics
    assert ("contrastive" in m) == (mode != "mlm") and ("mlm" in m) == (mode != "contrastive")
    want = 0.0
    if mode != "mlm":
        want = want + 0.7 * m["contrastive"] + m["vq"]
    if mode != "contrastive":
        want = want + 1.3 * m["mlm"]
    assert out.loss.item() == pytest.approx(float(want), rel=1e-6)
    assert hasattr(model, "head") == (mode != "contrastive")
    assert hasattr(model, "quantizer") == (mode != "mlm") and hasattr(model, "random_quantizer") == (mode == "mlm")
    out.loss.backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []  # every parameter of each mode is trained (DDP would stall on one that is not)


def test_a_zero_weight_switches_a_term_off():
    mel = torch.randn(3, 16, 8, generator=torch.Generator().manual_seed(4))
    model = tiny(mlm_weight=0.0)
    out = model({"mel": mel}, generator=torch.Generator().manual_seed(5))
    out.loss.backward()
    assert model.head.weight.grad.abs().max().item() == 0.0
    assert out.loss.item() == pytest.approx((out.metrics["contrastive"] + out.metrics["vq"]).item(), rel=1e-6)


def test_the_random_projection_quantizer_is_frozen_and_seeded():
    a, b = tiny("mlm"), tiny("mlm", seed=1)
    assert not any(p is a.random_quantizer.projection for p in a.parameters())
    mel = torch.randn(2, 10, 8)
    ids = a.random_quantizer(mel)
    assert ids.shape == (2, 5) and ids.dtype == torch.long
    assert torch.equal(ids, tiny("mlm").random_quantizer(mel))
    assert not torch.equal(a.random_quantizer.codebook, b.random_quantizer.codebook)


def test_features_subsample_by_two_and_give_each_layer():
    model = tiny()
    mel = torch.randn(3, 11, 8)
    assert model.features(mel).shape == (3, 6, 16)  # ceil(11 / 2)
    assert model.features(mel, layer=0).shape == (3, 6, 16)
    assert not torch.allclose(model.features(mel, layer=1), model.features(mel, layer=2))
    assert latent_lengths(torch.tensor([11, 12, 1])).tolist() == [6, 6, 1]
    with pytest.raises(ValueError, match="layer"):
        model.features(mel, layer=3)


def test_span_mask_counts_are_exact_and_inside_each_row():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([24, 17, 9, 3, 24])
    mask = Wav2VecSpanMask(span=4)(Layout.seq(24), 5, ratio=0.5, generator=g, lengths=lengths)
    assert mask.sum(1).tolist() == [12, 8, 4, 2, 12]  # round(0.5 * L), half to even: 8.5 -> 8, 4.5 -> 4
    assert not (mask & (torch.arange(24) >= lengths.unsqueeze(1))).any()


def test_span_mask_hides_spans():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        mask = Wav2VecSpanMask(span=4)(Layout.seq(20), 1, ratio=0.2, generator=g)[0]  # 4 hidden: one span
        where = mask.nonzero().squeeze(1)
        assert len(where) == 4 and (where == where[0] + torch.arange(4)).all()
    lines = Wav2VecSpanMask(span=3)(Layout.streams(4, 12), 8, ratio=0.25, generator=g, lengths=torch.full((8,), 9))
    assert lines.sum(1).eq(9).all() and not lines.view(8, 4, 12)[..., 9:].any()


def test_nothing_reads_global_rng():
    mel = torch.randn(4, 16, 8, generator=torch.Generator().manual_seed(6))
    model = tiny()
    losses = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        state = torch.get_rng_state()
        masker = Wav2VecSpanMask(span=4)(Layout.seq(8), 4, generator=torch.Generator().manual_seed(7))
        loss = copy.deepcopy(model)({"mel": mel, "lengths": torch.tensor([16, 10, 8, 14])},
                     generator=torch.Generator().manual_seed(7)).loss
        assert torch.equal(state, torch.get_rng_state())
        losses.append((masker, loss.item()))
    assert torch.equal(losses[0][0], losses[1][0]) and losses[0][1] == losses[1][1]
