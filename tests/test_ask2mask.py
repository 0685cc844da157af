"""Ask2Mask (masking/ask2mask.py): exact counts inside each row, the most confident frames with no
noise, draws proportional to confidence, the utterance weights by hand, their effect on the loss,
and no global RNG; the scorer of recipes/ask2mask.py gives no confidence after an utterance ends."""

import pytest
import torch

from test_w2v_bert import FixedIds, FixedMask
from unmask.layout import Layout
from unmask.masking import Ask2Mask
from unmask.masking.ask2mask import utterance_weights
from unmask.objectives.w2v_bert import W2VBert


def confidences(b, n, seed=0):
    return torch.rand(b, n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("temperature", [0.0, 0.5, 1.0])
def test_exact_counts_inside_each_row(temperature):
    lengths = torch.tensor([20, 13, 7, 1, 0])
    scores = confidences(5, 20)
    mask = Ask2Mask(temperature=temperature)(Layout.seq(20), 5, ratio=0.4, generator=torch.Generator().manual_seed(1),
                                             scores=scores, lengths=lengths)
    assert mask.sum(1).tolist() == [8, 5, 3, 0, 0]  # round(0.4 L): 5.2 -> 5, 2.8 -> 3, 0.4 -> 0
    assert not (mask & (torch.arange(20) >= lengths.unsqueeze(1))).any()


def test_without_noise_the_most_confident_frames_are_hidden():
    scores = confidences(6, 16, seed=2)
    lengths = torch.tensor([16, 16, 10, 12, 5, 16])
    mask = Ask2Mask(temperature=0.0)(Layout.seq(16), 6, ratio=0.5, generator=torch.Generator().manual_seed(0),
                                     scores=scores, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        top = scores[b, :n].topk(round(0.5 * n)).indices
        assert set(mask[b].nonzero().squeeze(1).tolist()) == set(top.tolist())


def test_ties_are_broken_at_random_and_by_the_generator():
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.5, 0.5, 0.1]])
    seen = set()
    for seed in range(40):
        mask = Ask2Mask(temperature=0.0)(Layout.seq(6), 1, ratio=2 / 6, generator=torch.Generator().manual_seed(seed),
                                         scores=scores)
        assert mask[0, 0] and not mask[0, 5] and mask.sum() == 2
        seen.add(int(mask[0, 1:5].nonzero()) + 1)
    assert seen == {1, 2, 3, 4}


def test_one_frame_is_drawn_with_probability_proportional_to_confidence():
    scores = torch.tensor([[0.1, 0.3, 0.6, 0.0]])
    g = torch.Generator().manual_seed(3)
    counts = torch.zeros(4)
    n = 6000
    for _ in range(n):
        counts += Ask2Mask()(Layout.seq(4), 1, ratio=0.25, generator=g, scores=scores)[0].float()
    assert counts[3] == 0
    assert (counts[:3] / n).tolist() == pytest.approx([0.1, 0.3, 0.6], abs=0.02)


def test_utterance_weights_by_hand():
    confidence = torch.tensor([[0.2, 0.4, 0.0], [0.9, 0.9, 0.9]])
    # means over the valid frames: 0.3 and 0.9; their mean 0.6
    assert utterance_weights(confidence, torch.tensor([2, 3])).tolist() == pytest.approx([0.5, 1.5])
    # without lengths every frame counts: 0.2 and 0.9, mean 0.55
    assert utterance_weights(confidence).tolist() == pytest.approx([0.2 / 0.55, 0.9 / 0.55])
    assert utterance_weights(torch.zeros(2, 3)).tolist() == [1.0, 1.0]


def test_the_weights_scale_each_rows_loss():
    mel = torch.randn(2, 12, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, :2] = mask[1, 2:5] = True
    ids = torch.randint(8, (2, 6), generator=torch.Generator().manual_seed(1))

    def loss(rows, confidence, weighted=True):
        torch.manual_seed(0)
        model = W2VBert(8, 16, 2, 2, codes=8, code_dim=4, mode="mlm", masker=FixedMask(mask[rows]), weighted=weighted)
        model.random_quantizer = FixedIds(ids[rows])
        batch = {"mel": mel[rows]}
        if confidence is not None:
            batch["confidence"] = confidence
        return model(batch).loss.item()

    row0 = loss([0], None)  # mean CE over row 0's 2 masked frames
    both = loss([0, 1], None)
    # row 1 has confidence 0: weights 2 and 0, so the loss is 2 * (row 0's CE sum) / 5 masked frames
    weighted = loss([0, 1], torch.tensor([[0.5] * 6, [0.0] * 6]))
    assert weighted == pytest.approx(2 * row0 * 2 / 5, rel=1e-5)
    # equal confidences weigh every row 1, and weighted=False ignores them
    assert loss([0, 1], torch.full((2, 6), 0.3)) == pytest.approx(both, rel=1e-6)
    assert loss([0, 1], torch.tensor([[0.5] * 6, [0.0] * 6]), weighted=False) == pytest.approx(both, rel=1e-6)


def test_nothing_reads_global_rng():
    scores = confidences(3, 10)
    masks = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        state = torch.get_rng_state()
        g = torch.Generator().manual_seed(5)
        masks.append(Ask2Mask()(Layout.seq(10), 3, ratio=0.5, generator=g, scores=scores))
        assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(*masks)


def test_refuses_missing_or_negative_scores():
    with pytest.raises(ValueError, match="scores"):
        Ask2Mask()(Layout.seq(4), 1)
    with pytest.raises(ValueError, match=">= 0"):
        Ask2Mask()(Layout.seq(4), 1, scores=torch.tensor([[0.1, -0.2, 0.3, 0.4]]))


def test_the_scorer_gives_no_confidence_after_an_utterance_ends():
    from unmask.recipes.ask2mask import FrameScorer

    torch.manual_seed(0)
    scorer = FrameScorer(8, 8, 5)
    conf = scorer.confidence(torch.randn(3, 10, 8), torch.tensor([10, 7, 2]))
    assert conf.shape == (3, 5)
    assert (conf[0] > 0).all() and (conf[1, :4] > 0).all() and (conf[1, 4:] == 0).all()
    assert (conf[2, :1] > 0).all() and (conf[2, 1:] == 0).all()
    assert (conf <= 1).all()
