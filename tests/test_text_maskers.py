"""Maskers for text and code: BERT 80/10/10, whole-word, n-gram, entity, MEAP and CM3."""

import math

import pytest
import torch

from unmask.layout import Layout
from unmask.masking import (
    BertCorruption,
    CausalMasking,
    EntityMask,
    MeapMask,
    NGramMask,
    RandomMask,
    WholeWordMask,
    cm3_spans,
    cm3_transform,
)
from unmask.masking.words import fill_spans, runs

LAYOUT = Layout.seq(3, name="prompt") + Layout.seq(60, name="code")
V = 50


def gen(seed):
    return torch.Generator().manual_seed(seed)


def word_ids(b, n, seed=0, max_len=4):
    """Rows of words of 1..max_len tokens; ids increase along the row."""
    g = gen(seed)
    out = torch.empty(b, n, dtype=torch.long)
    for r in range(b):
        sizes = torch.randint(1, max_len + 1, (n,), generator=g)
        out[r] = torch.repeat_interleave(torch.arange(n), sizes)[:n]
    return out


def split_words(mask_row, ids_row):
    """Words of a row that are partly, not wholly, hidden."""
    return sum(0 < int(mask_row[s : s + n].sum()) < n for s, n in runs(ids_row))


# BERT 80/10/10 ---------------------------------------------------------------------------------
def test_bert_corruption_exact_split_per_row():
    tokens = torch.randint(0, V, (64, 63), generator=gen(0))
    mask = RandomMask()(LAYOUT, 64, ratio=0.3, generator=gen(1))
    corrupt = BertCorruption()
    to_mask, to_random = corrupt.branches(mask, gen(2))
    k = mask.sum(1)
    assert (to_mask & to_random).sum() == 0 and not (to_mask | to_random)[~mask].any()
    assert to_mask.sum(1).tolist() == [round(0.8 * x) for x in k.tolist()]
    assert to_random.sum(1).tolist() == [round(0.9 * x) - round(0.8 * x) for x in k.tolist()]
    inputs = corrupt(tokens, mask, V, gen(2))
    assert torch.equal(inputs[~mask], tokens[~mask])  # visible tokens untouched
    assert (inputs[to_mask] == V).all()
    keep = mask & ~to_mask & ~to_random
    assert torch.equal(inputs[keep], tokens[keep])
    assert (inputs[to_random] < V).all()  # a random token is never the mask id


def test_bert_corruption_random_tokens_come_from_the_range_and_are_uniform():
    mask = torch.ones(2000, 40, dtype=torch.bool)
    tokens = torch.zeros(2000, 40, dtype=torch.long)
    corrupt = BertCorruption(p_mask=0.0, p_random=1.0, random_range=(10, 20))
    inputs = corrupt(tokens, mask, V, gen(3))
    assert inputs.min() >= 10 and inputs.max() < 20
    freq = torch.bincount(inputs.flatten() - 10, minlength=10).double() / inputs.numel()
    se = math.sqrt(0.1 * 0.9 / inputs.numel())
    assert (freq - 0.1).abs().max() < 5 * se


def test_bert_corruption_bernoulli_matches_collator_rates():
    """exact=False draws per token as the transformers collator does: 80/10/10 in expectation."""
    mask = torch.ones(1000, 100, dtype=torch.bool)
    to_mask, to_random = BertCorruption(exact=False).branches(mask, gen(4))
    n = mask.sum().item()
    for observed, p in [(to_mask.sum().item() / n, 0.8), (to_random.sum().item() / n, 0.1)]:
        assert abs(observed - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert len(set(to_mask.sum(1).tolist())) > 1  # counts vary by row


def test_bert_corruption_bad_settings():
    with pytest.raises(ValueError, match="p_mask"):
        BertCorruption(p_mask=0.9, p_random=0.2)
    with pytest.raises(ValueError, match="mask id"):
        x, hide = torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.bool)
        BertCorruption(random_range=(0, V + 1))(x, hide, V)


# whole words and n-grams ------------------------------------------------------------------------
@pytest.mark.parametrize("masker", [WholeWordMask(("code",)), NGramMask(("code",))], ids=["whole-word", "ngram"])
class TestWordMaskers:
    @pytest.mark.parametrize("ratio", [0.0, 0.15, 0.5, 1.0])
    def test_exact_count_and_untouched_segment(self, masker, ratio):
        ids = word_ids(32, LAYOUT.n)
        mask = masker(LAYOUT, 32, ratio=ratio, generator=gen(5), word_ids=ids)
        assert mask.dtype == torch.bool and mask.shape == (32, LAYOUT.n)
        assert (mask.sum(1) == round(ratio * 60)).all()
        assert not mask[:, :3].any()

    def test_words_are_whole(self, masker):
        """Words are hidden whole; the exact count may split at most one word of a row."""
        ids = word_ids(64, LAYOUT.n, seed=1)
        mask = masker(LAYOUT, 64, ratio=0.15, generator=gen(6), word_ids=ids)
        splits = [split_words(mask[r, 3:], ids[r, 3:]) for r in range(64)]
        assert max(splits) <= 1
        assert sum(splits) <= 6  # one-token words almost always close the budget

    def test_same_generator_same_mask(self, masker):
        ids = word_ids(8, LAYOUT.n)
        a = masker(LAYOUT, 8, ratio=0.3, generator=gen(7), word_ids=ids)
        assert torch.equal(a, masker(LAYOUT, 8, ratio=0.3, generator=gen(7), word_ids=ids))
        assert not torch.equal(a, masker(LAYOUT, 8, ratio=0.3, generator=gen(8), word_ids=ids))

    def test_missing_context_is_an_error(self, masker):
        with pytest.raises(ValueError, match="word_ids"):
            masker(LAYOUT, 2, ratio=0.2)


def test_fill_spans_skips_overflow_and_tops_up_exactly():
    # words of 3 tokens only and a budget of 4: one whole word, then one token of the next in order
    hidden = fill_spans([(3, 3), (0, 3), (6, 3)], 9, 4)
    assert hidden.tolist() == [True, False, False, True, True, True, False, False, False]


def test_ngram_lengths_follow_probs():
    """n-gram sizes in words, drawn away from the row's end, follow `probs`."""
    masker = NGramMask(probs=(0.5, 0.3, 0.2))
    ids = torch.arange(4000)  # one-token words
    spans = masker.spans(ids, gen(9))
    sizes = torch.tensor([n for s, n in spans if s < 3990])
    freq = torch.bincount(sizes, minlength=4)[1:].double() / len(sizes)
    for f, p in zip(freq.tolist(), (0.5, 0.3, 0.2), strict=True):
        assert abs(f - p) < 5 * math.sqrt(p * (1 - p) / len(sizes))


# entities ---------------------------------------------------------------------------------------
def entity_row():
    # entities of 3, 1, 4, 2 tokens, separated by non-entity tokens (-1)
    return torch.tensor([-1, 7, 7, 7, -1, 9, -1, -1, 12, 12, 12, 12, 15, 15, -1, -1])


def test_entity_mask_hides_one_token_per_entity():
    ids = entity_row().expand(200, -1)
    layout = Layout.seq(16)
    mask = EntityMask()(layout, 200, ratio=0.2, generator=gen(10), entity_ids=ids)  # round(3.2) = 3
    assert (mask.sum(1) == 3).all()
    assert not mask[ids < 0].any()
    for s, n in runs(entity_row()):
        assert mask[:, s : s + n].sum(1).max() <= 1
    full = EntityMask()(layout, 200, ratio=1.0, generator=gen(11), entity_ids=ids)
    assert (full.sum(1) == 4).all()  # only four entities: min(16, 4)


def test_entity_mask_picks_uniformly_inside_an_entity():
    ids = entity_row().expand(4000, -1)
    mask = EntityMask()(Layout.seq(16), 4000, ratio=1.0, generator=gen(12), entity_ids=ids)
    share = mask[:, 8:12].double().mean(0)  # the 4-token entity: each token 1/4 of the time
    assert (share - 0.25).abs().max() < 5 * math.sqrt(0.25 * 0.75 / 4000)


# MEAP -------------------------------------------------------------------------------------------
def test_meap_mask_shared_across_batch_with_meap_count():
    layout = Layout.seq(128)
    mask = MeapMask()(layout, 16, ratio=0.15, generator=gen(13))
    assert (mask.sum(1) == 19).all()  # max(1, floor(0.15 * 128))
    assert (mask == mask[:1]).all()  # one draw for the whole batch
    assert MeapMask()(Layout.seq(5), 2, ratio=0.15, generator=gen(14)).sum(1).tolist() == [1, 1]
    assert MeapMask()(Layout.seq(100), 1, ratio=0.29, generator=gen(15)).sum().item() == int(100 * 0.29)
    other = MeapMask()(layout, 16, ratio=0.15, generator=gen(16))
    assert not torch.equal(mask, other)


# CM3 --------------------------------------------------------------------------------------------
SENT, EOS = (100, 101, 102, 103), 99


def reconstruct(example):
    """Put each span back in place of its sentinel."""
    out = example.tolist()
    # the target starts at the first sentinel seen for the second time
    seen, cut = set(), None
    for i, t in enumerate(out):
        if t in SENT:
            if t in seen:
                cut = i
                break
            seen.add(t)
    source, target = out[:cut], out[cut:]
    pieces, i = {}, 0
    while i < len(target):
        sentinel = target[i]
        j = target.index(EOS, i)
        pieces[sentinel] = target[i + 1 : j]
        i = j + 1
    flat = []
    for t in source:
        flat += pieces[t] if t in SENT else [t]
    return flat


@pytest.mark.parametrize("n", [1, 2, 3])
def test_cm3_transform_lengths_and_round_trip(n):
    x = torch.arange(40)
    for seed in range(20):
        spans = cm3_spans(40, n, gen(seed))
        assert spans == sorted(spans)
        assert all(e > s for s, e in spans) and all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
        k = len(spans)
        ex = cm3_transform(x, spans, SENT, EOS)
        covered = sum(e - s for s, e in spans)
        assert len(ex) == 40 + 3 * k
        assert (ex[: 40 - covered + k] != EOS).all()  # the source part: L - sum|span| + k tokens
        if k:
            assert reconstruct(ex) == x.tolist()


def test_cm3_batch_truncates_to_the_window_and_counts_are_poisson():
    x = torch.arange(30).expand(2000, -1)
    out = CausalMasking(SENT, EOS, lam=1.0, max_spans=4)(x, gen(17))
    assert out.shape == x.shape
    n = torch.isin(out[:, :30], torch.tensor(SENT)).sum(1)  # sentinels seen (source + kept target)
    assert (out[:, 0] == 0).float().mean() > 0.5  # most rows keep their first token in place
    assert n.float().mean() > 0.5  # spans are drawn (Poisson(1): P(n = 0) = e^-1)
    plain = (out == x).all(1).float().mean().item()
    assert abs(plain - math.exp(-1)) < 0.05  # rows with no span stay a plain causal example
