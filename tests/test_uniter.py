"""UNITER: conditional masking hides one modality per row in exact counts, ITM negatives are real
mismatches, and each loss term reads only what its task allows."""

import pytest
import torch

from unmask.nn.image_text import ImageTextConfig
from unmask.objectives.uniter import (
    UNITER,
    UNITERModel,
    assign_tasks,
    conditional_masks,
    mismatched_partners,
    one_word_recovery,
    swap_captions,
    task_counts,
)

CFG = ImageTextConfig(image_size=8, channels=1, patch=2, vocab_size=10, text_length=6, dim=16, depth=1, heads=2)


def _batch(b=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, CFG.text_length + 1, (b,), generator=g)
    tokens = torch.randint(2, CFG.vocab_size, (b, CFG.text_length), generator=g)
    tokens = tokens.masked_fill(torch.arange(CFG.text_length) >= lengths.unsqueeze(1), 0)
    return {"images": torch.rand(b, 1, 8, 8, generator=g), "tokens": tokens, "lengths": lengths}


def test_task_counts_are_exact():
    assert task_counts(12, (0.5, 0.25, 0.25)) == [6, 3, 3]
    assert task_counts(10, (1, 1, 1)) == [4, 3, 3]
    tasks = assign_tasks(10, (1, 1, 1), torch.Generator().manual_seed(0))
    assert torch.bincount(tasks, minlength=3).tolist() == [4, 3, 3]


def test_conditional_masks_hide_one_modality_in_exact_counts():
    tasks = torch.tensor([0, 0, 0, 1, 1, 2])
    lengths = torch.tensor([4, 2, 5, 3, 6, 6])
    text, image = conditional_masks(tasks, lengths, 6, 16, word_ratio=0.5, region_ratio=0.25,
                                    generator=torch.Generator().manual_seed(0))
    assert not (text.any(1) & image.any(1)).any()  # never both in one row
    # round(0.5 * 4) = 2, max(1, round(0.5 * 2)) = 1, round(0.5 * 5) = 2 (half to even)
    assert text.sum(1).tolist() == [2, 1, 2, 0, 0, 0]
    assert image.sum(1).tolist() == [0, 0, 0, 4, 4, 0]
    pads = torch.arange(6) >= lengths.unsqueeze(1)
    assert not (text & pads).any()  # pads never hidden


def test_mismatched_partners_differ_and_identical_batch_has_none():
    tokens = torch.tensor([[2, 3, 0], [2, 3, 0], [4, 3, 0], [5, 0, 0]])
    partner, differs = mismatched_partners(tokens, torch.Generator().manual_seed(0))
    assert differs.all()
    assert ((tokens[partner] != tokens).any(1)).all()
    same = torch.tensor([[2, 3]] * 3)
    _, differs = mismatched_partners(same, torch.Generator().manual_seed(0))
    assert not differs.any()


def test_itm_negatives_are_real_mismatches():
    b = _batch(12)
    itm = torch.tensor([True, False] * 6)
    shown, lengths, matched = swap_captions(b["tokens"], b["lengths"], itm, torch.Generator().manual_seed(1))
    changed = (shown != b["tokens"]).any(1)
    assert torch.equal(changed, ~matched)  # label "mismatch" exactly where another caption went in
    assert (~matched).sum() == 3  # ceil(6 / 2) of the 6 ITM rows (all captions here differ)
    assert not changed[~itm].any()  # other rows keep their captions
    assert torch.equal(lengths[matched], b["lengths"][matched])


class _Recorder(torch.nn.Module):
    """Wraps the model and keeps what it was given."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.cfg, self.seen = model, model.cfg, []
        for name in ("word_head", "region_head", "match_head"):
            setattr(self, name, getattr(model, name))

    def forward(self, patches, tokens, lengths, hidden_regions=None):
        self.seen.append((tokens.clone(), hidden_regions))
        return self.inner(patches, tokens, lengths, hidden_regions)


def test_forward_hides_words_or_regions_never_both():
    torch.manual_seed(0)
    obj = UNITER(UNITERModel(CFG), shares=(1, 1, 0))
    rec = _Recorder(obj.model)
    obj.model = rec
    b = _batch(12)
    obj(b, torch.Generator().manual_seed(0))
    tokens, regions = rec.seen[0]
    words_hidden = (tokens == CFG.vocab_size).any(1)
    assert words_hidden.sum() == 6 and regions.any(1).sum() == 6
    assert not (words_hidden & regions.any(1)).any()


def test_mlm_only_leaves_region_and_match_heads_without_gradient():
    torch.manual_seed(0)
    obj = UNITER(UNITERModel(CFG), shares=(1, 0, 0))
    out = obj(_batch(), torch.Generator().manual_seed(0))
    out.loss.backward()
    assert obj.model.word_head.weight.grad.abs().sum() > 0
    for head in (obj.model.region_head, obj.model.match_head):
        assert head.weight.grad is None or head.weight.grad.abs().sum() == 0
    assert out.metrics["mrm"] == 0 and out.metrics["itm"] == 0


def test_text_only_ignores_the_image_and_rejects_image_tasks():
    torch.manual_seed(0)
    obj = UNITER(UNITERModel(CFG), shares=(1, 0, 0), use_image=False)
    b = _batch()
    a = obj(b, torch.Generator().manual_seed(3)).loss
    b["images"] = torch.rand_like(b["images"])
    assert torch.equal(a, obj(b, torch.Generator().manual_seed(3)).loss)
    with pytest.raises(ValueError, match="only MLM"):
        UNITER(UNITERModel(CFG), use_image=False)


def test_one_word_recovery_scores_real_words_only():
    torch.manual_seed(0)
    obj = UNITER(UNITERModel(CFG))
    b = _batch()
    with torch.no_grad():  # a word head that always says token 2: right exactly where the word is 2
        obj.model.word_head.weight.zero_()
        obj.model.word_head.bias.copy_(torch.arange(CFG.vocab_size) == 2)
    right = one_word_recovery(obj, b["images"], b["tokens"], b["lengths"])
    real = torch.arange(CFG.text_length) < b["lengths"].unsqueeze(1)
    assert torch.equal(right, (b["tokens"] == 2) & real)
