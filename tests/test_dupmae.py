"""DupMAE / RetroMAE v2 (P27): the decoder's attention rule, the bag-of-words target and loss, the
exact mask counts, the retrieval metrics and the docstring pairs."""

from __future__ import annotations

import math

import pytest
import torch

from host_syncs import count_host_syncs
from unmask.data.code import train_tokenizer
from unmask.data.docstrings import encode_texts, file_pairs, special_ids
from unmask.eval.retrieval import cosine_ranks, mrr_at, recall_at, relevant_ranks
from unmask.layout import Layout
from unmask.nn.masked_model import MaskedTokenModel, ModelConfig
from unmask.objectives.dupmae import DupMAE, bow_loss, bow_target, decoder_attention, ordinary_mask

V, FIRST, CLS, PAD = 40, 10, 0, 1


def rows(lengths: list[int], n: int, seed: int = 0) -> torch.Tensor:
    """[CLS], `length` ordinary ids, then padding, in each row."""
    g = torch.Generator().manual_seed(seed)
    out = torch.full((len(lengths), n), PAD)
    out[:, 0] = CLS
    for b, m in enumerate(lengths):
        out[b, 1 : 1 + m] = torch.randint(FIRST, V, (m,), generator=g)
    return out


def objective(**options) -> DupMAE:
    torch.manual_seed(0)
    model = MaskedTokenModel(ModelConfig(V, Layout.seq(12), dim=16, depth=1, heads=2))
    return DupMAE(model, pad_id=PAD, first_ordinary=FIRST, **options)


def test_decoder_attention_rule_and_counts():
    tokens = rows([11, 7, 3, 1], 12)
    ordinary = tokens >= FIRST
    allowed = decoder_attention(ordinary, 0.5, torch.Generator().manual_seed(1))  # [B, N-1, N]
    assert allowed.shape == (4, 11, 12)
    pos = torch.arange(1, 12)
    assert not allowed[:, pos - 1, pos].any()  # row i never sees position i
    assert allowed[:, :, 0].all()  # every row sees the sentence embedding
    assert not (allowed[:, :, 1:] & ~ordinary[:, None, 1:]).any()  # never padding
    for b in range(4):
        n = int(ordinary[b].sum())
        for i in range(1, 12):
            others = int(ordinary[b].sum()) - int(ordinary[b, i])
            hidden = others - int(allowed[b, i - 1, 1:].sum())
            assert hidden == min(round(0.5 * n), others)
    # drawn afresh for each row: the full rows of the 11-token text do not all hide the same tokens
    full = allowed[0, :, 1:].clone()
    full[torch.arange(11), torch.arange(11)] = True
    assert len({tuple(r.tolist()) for r in full}) > 1


def test_decoder_output_at_i_ignores_token_i():
    """The rule is what `decode` applies: changing token i changes no decoder output at position i."""
    obj = objective().eval()
    tokens = rows([11], 12)
    allowed = decoder_attention(tokens >= FIRST, 0.5, torch.Generator().manual_seed(2))
    cls = torch.randn(1, 16)
    with torch.no_grad():
        y = obj.decode(cls, tokens, allowed)
        for i in (1, 5, 11):
            changed = tokens.clone()
            changed[0, i] = FIRST + (int(tokens[0, i]) - FIRST + 1) % (V - FIRST)
            y2 = obj.decode(cls, changed, allowed)
            assert torch.allclose(y2[0, i - 1], y[0, i - 1], atol=1e-6)
            assert not torch.allclose(y2, y)  # other rows do see it (or the test is void)


def test_bow_target_is_the_set_of_ordinary_ids():
    tokens = torch.tensor([[CLS, 12, 15, 12, PAD, PAD], [CLS, 3, 30, 31, 32, 30]])  # 3 is special
    ordinary = tokens >= FIRST
    w = bow_target(tokens, ordinary, V)
    expected = torch.zeros(2, V)
    expected[0, [12, 15]] = 1 / 3
    expected[1, [30, 31, 32]] = 1 / 4
    assert torch.equal(w, expected)


def test_bow_loss_matches_its_formula_by_hand():
    tokens = torch.tensor([[CLS, 11, 12, 11, PAD]])
    ordinary = tokens >= FIRST
    vocab = 14
    logits = torch.randn(1, 5, vocab, generator=torch.Generator().manual_seed(3))
    logits[0, 0, 11] = 50.0  # [CLS] and padding must not enter the max
    logits[0, 4, 12] = 50.0
    pooled = [max(float(logits[0, p, t]) for p in (1, 2, 3)) for t in range(vocab)]
    log_z = math.log(sum(math.exp(x) for x in pooled))
    by_hand = -(1 / 3) * ((pooled[11] - log_z) + (pooled[12] - log_z))
    assert float(bow_loss(logits, tokens, ordinary)) == pytest.approx(by_hand, rel=1e-5)


def test_encoder_mask_counts_are_exact_and_ordinary_only():
    tokens = rows([11, 10, 7, 2, 1], 12)
    ordinary = tokens >= FIRST
    hidden = ordinary_mask(ordinary, 0.3, torch.Generator().manual_seed(4))
    assert not (hidden & ~ordinary).any()
    assert hidden.sum(1).tolist() == [round(0.3 * n) for n in ordinary.sum(1).tolist()]  # 3, 3, 2, 1, 0
    again = ordinary_mask(ordinary, 0.3, torch.Generator().manual_seed(4))
    assert torch.equal(hidden, again)


def test_padding_is_never_attended():
    obj = objective().eval()
    tokens = rows([6], 12)
    with torch.no_grad():
        padded = obj.encode(tokens)[0, :7]
        short = obj.encode(tokens[:, :7])[0]
    assert torch.allclose(padded, short, atol=1e-5)


def test_loss_is_the_sum_of_its_terms_and_plain_mlm_is_the_mlm_term():
    tokens = rows([11, 8, 5, 9], 12)
    full = objective(bow_weight=0.5)
    out = full({"tokens": tokens}, torch.Generator().manual_seed(5))
    m = out.metrics
    total = m["mlm_loss"] + m["decoder_loss"] + 0.5 * m["bow_loss"]
    assert float(out.loss.detach()) == pytest.approx(float(total), rel=1e-6)
    plain = objective(plain_mlm=True)
    assert not hasattr(plain, "decoder")
    out_plain = plain({"tokens": tokens}, torch.Generator().manual_seed(5))
    # same weights, same masks from the same generator: the same MLM term
    assert float(out_plain.loss.detach()) == pytest.approx(float(m["mlm_loss"]), rel=1e-6)
    assert set(out_plain.metrics) == {"loss", "mlm_loss", "hidden_acc"}
    # the decoder is in the graph, and the sentence embedding ([CLS]'s output) gets a gradient from it
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in full.decoder.parameters())


def test_retromae_is_the_decoder_without_bow_and_no_step_reads_the_device():
    tokens = rows([11, 8, 5, 9], 12)
    retromae = objective(bow_weight=0.0)
    with count_host_syncs() as seen:
        out = retromae({"tokens": tokens}, torch.Generator().manual_seed(5))
    assert seen.count == 0, seen.report()
    assert "bow_loss" not in out.metrics
    total = out.metrics["mlm_loss"] + out.metrics["decoder_loss"]
    assert float(out.loss.detach()) == pytest.approx(float(total), rel=1e-6)
    for value in out.metrics.values():
        assert value.ndim == 0 and not value.requires_grad


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="encoder_ratio"):
        objective(encoder_ratio=1.0)
    with pytest.raises(ValueError, match="first_ordinary"):
        DupMAE(MaskedTokenModel(ModelConfig(V, Layout.seq(4), dim=8, depth=1, heads=2)), pad_id=PAD,
               first_ordinary=V)


def test_mrr_at_10_and_recall_against_a_hand_ranking():
    # 12 queries and documents; the first four queries' relevant documents land at ranks 1, 3, 12, 2
    q = 12
    scores = torch.arange(q, 0, -1).float().repeat(q, 1)  # document j scores q - j for every query
    for i, rank in enumerate([1, 3, 12, 2]):
        j = rank - 1  # swap the relevant document (column i) into place j
        scores[i, i], scores[i, j] = scores[i, j].clone(), scores[i, i].clone()
    ranks = relevant_ranks(scores)[:4]
    assert ranks.tolist() == [1, 3, 12, 2]
    assert mrr_at(ranks, 10) == pytest.approx((1 + 1 / 3 + 0 + 1 / 2) / 4)
    assert mrr_at(ranks, 2) == pytest.approx((1 + 0 + 0 + 1 / 2) / 4)
    assert recall_at(ranks, 1) == 0.25
    assert recall_at(ranks, 3) == 0.75
    # ties count against the relevant document: one vector for every text ranks last
    same = torch.ones(5, 3)
    assert cosine_ranks(same, same).tolist() == [5] * 5
    assert cosine_ranks(torch.eye(5), 3 * torch.eye(5)).tolist() == [1] * 5  # cosine: the scale is ignored


SOURCE = '''
def plain(x):
    """Add one."""
    y = x + 1
    return y * 2

def undocumented(x):
    return x * 2 + 1000000

class Box:
    """A box."""

    @property
    def size(self):
        """Its size, a long way to say it."""
        return self._size * 2 + 1

def short():
    """Nothing."""
    pass
'''


def test_file_pairs_by_hand():
    pairs = file_pairs(SOURCE, "m.py", min_body_chars=20)
    got = {p.name: (p.docstring, p.body) for p in pairs}
    assert set(got) == {"plain", "Box", "Box.size"}
    assert got["plain"] == ("Add one.", "y = x + 1\nreturn y * 2")
    assert got["Box"][1].startswith("@property\ndef size(self):")  # the decorator belongs to the body
    assert '"""' not in got["plain"][1] and "Its size" not in got["Box.size"][1]
    assert file_pairs(SOURCE, "m.py") == pairs  # deterministic
    assert file_pairs("def broken(:\n", "b.py") == []


def test_encode_texts_layout():
    tok = train_tokenizer(["def f(x):\n    return x + 1\n"] * 20, vocab_size=300)
    cls, pad = special_ids(tok)
    assert (cls, pad) == (CLS, PAD)
    ids = encode_texts(tok, ["return x", "x" * 200], 8)
    assert ids.shape == (2, 8) and (ids[:, 0] == cls).all()
    n = len(tok.encode("return x"))
    assert ids[0, 1 : 1 + n].tolist() == tok.encode("return x") and (ids[0, 1 + n :] == pad).all()
    assert (ids[1, 1:] >= FIRST).all()  # truncated, no padding
