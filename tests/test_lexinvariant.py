"""Lexinvariant LMs (Huang et al. 2023, arXiv:2305.16349): per-sequence random tables, exact
invariance to relabelling the vocabulary, no fixed vector for any data id, the regulariser's exact
counts, and the substitution cipher."""

from __future__ import annotations

import math

import pytest
import torch

from unmask.data.topic_chars import VOCAB_SIZE, decode, encode, load_topic_chars, substitution_cipher
from unmask.layout import Layout
from unmask.nn.causal import CausalTokenModel
from unmask.nn.lexinvariant import LexinvariantLM
from unmask.nn.masked_model import ModelConfig
from unmask.objectives.lexinvariant import LexinvariantNextToken

V, N, D = 6, 8, 16


def config(vocab: int = V, n: int = N) -> ModelConfig:
    return ModelConfig(vocab_size=vocab, layout=Layout.seq(n), dim=D, depth=2, heads=2)


def model(**kw) -> LexinvariantLM:
    torch.manual_seed(0)
    return LexinvariantLM(config(), **kw).eval()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_same_id_same_vector_within_a_sequence_and_new_vectors_across():
    m = model()
    tokens = torch.tensor([[0, 1, 0, 2, 1, 0, 3, 3], [0, 1, 0, 2, 1, 0, 3, 3]])
    table = m.draw(2, generator=gen(0))
    x = m.token_vectors(tokens, table)  # [2, N, D]
    for row in range(2):
        for i in range(N):
            for j in range(N):
                same = bool(tokens[row, i] == tokens[row, j])
                assert torch.equal(x[row, i], x[row, j]) == same
    # the same ids in the second sequence get other vectors
    assert not torch.allclose(x[0], x[1])
    assert (x[0] - x[1]).abs().amin(-1).gt(0).all()
    # scale: entries N(0, 1/D), so a vector's squared norm is about 1
    big = m.draw(64, generator=gen(1))
    assert abs(big.pow(2).sum(-1).mean().item() - 1) < 0.05
    assert abs(big.mean().item()) < 0.01


def test_generator_determinism():
    m = model()
    a, b, c = m.draw(3, generator=gen(5)), m.draw(3, generator=gen(5)), m.draw(3, generator=gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    tokens = torch.randint(0, V, (3, N), generator=gen(2))
    assert torch.equal(m(tokens, generator=gen(5)), m(tokens, generator=gen(5)))
    assert not torch.equal(m(tokens, generator=gen(5)), m(tokens, generator=gen(6)))


@pytest.mark.parametrize("causal", [True, False])
def test_relabelling_the_vocabulary_relabels_the_logits_exactly(causal):
    """x = 0 1 0 1 2 ... and its relabelling pi(x); the table with rows relabelled the same way (an
    equally likely draw: rows are i.i.d.) gives logits'[pi(v)] = logits[v], for every position."""
    m = model(causal=causal)
    x = torch.tensor([[0, 1, 0, 1, 2, 0, 1, 6]])  # 6 = the start / mask id, never relabelled
    pi = torch.tensor([4, 2, 5, 0, 3, 1])  # a hand-picked permutation of the 6 data ids
    table = m.draw(1, generator=gen(3))  # [1, V, D]
    relabelled = torch.where(x < V, pi[x.clamp(max=V - 1)], x)
    assert relabelled.tolist() == [[4, 2, 4, 2, 5, 4, 2, 6]]
    moved = torch.empty_like(table)
    moved[:, pi] = table  # moved[pi(v)] = table[v]
    logits = m(x, table=table)  # [1, N, V]
    logits_pi = m(relabelled, table=moved)
    torch.testing.assert_close(logits_pi[..., pi], logits, rtol=0, atol=1e-6)
    assert not torch.allclose(m(relabelled, table=table)[..., pi], logits, atol=1e-3)  # the test can fail


def test_relabelling_invariance_in_distribution_and_a_standard_lm_is_not():
    """Averaged over draws, the NLL of a text and of its relabelling agree (lexinvariance as the paper
    defines it); a standard LM with the same body tells them apart."""
    torch.manual_seed(0)
    lex = LexinvariantNextToken(LexinvariantLM(config())).eval()
    x = torch.tensor([[0, 1, 0, 1, 2, 0, 1, 2]]).expand(400, -1)
    pi = torch.tensor([3, 5, 1, 4, 0, 2])
    with torch.no_grad():
        a = lex.token_nll(x, generator=gen(0)).sum(1)  # [400], one draw each
        b = lex.token_nll(pi[x], generator=gen(1)).sum(1)
    assert abs(a.mean() - b.mean()) < 4 * math.sqrt((a.var() + b.var()) / 400)
    torch.manual_seed(0)
    std = CausalTokenModel(config())
    for p in std.parameters():
        torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        sa = torch.log_softmax(std(x[:1]), -1)
        sb = torch.log_softmax(std(pi[x[:1]]), -1)
    assert not torch.allclose(sa[..., :], sb[..., pi], atol=1e-2)


def test_no_fixed_vector_for_any_data_id():
    """Gradients reach no learned row of a data id (only id V's, the start token), and no parameter
    is a [V, D] or [D, V] output matrix."""
    torch.manual_seed(0)
    objective = LexinvariantNextToken(LexinvariantLM(config()))
    tokens = torch.randint(0, V, (4, N), generator=gen(0))
    objective({"tokens": tokens}, generator=gen(1)).loss.backward()
    grad = objective.model.embed.tokens.weight.grad  # [V + 1, D]
    assert torch.equal(grad[:V], torch.zeros_like(grad[:V]))
    assert grad[V].abs().sum() > 0
    shapes = {tuple(p.shape) for p in objective.model.parameters()}
    assert (V, D) not in shapes and (D, V) not in shapes


def test_regulariser_draws_exact_counts_and_share_zero_is_a_tied_lm():
    m = model(random_share=0.5)
    learned = m.embed.tokens.weight[:V]
    table = m.draw(5, generator=gen(0))
    is_learned = (table == learned).all(-1)  # [5, V]
    assert is_learned.sum(1).tolist() == [V - round(0.5 * V)] * 5
    assert not (is_learned[0] == is_learned).all()  # rows pick different ids
    tied = model(random_share=0.0)
    t = tied.draw(2, generator=gen(0))
    assert torch.equal(t, tied.embed.tokens.weight[:V].expand(2, -1, -1))
    tokens = torch.randint(0, V, (2, N), generator=gen(0))
    assert torch.equal(tied(tokens, generator=gen(0)), tied(tokens, generator=gen(9)))


def test_loss_is_the_next_token_nll_at_the_right_shift():
    torch.manual_seed(0)
    objective = LexinvariantNextToken(LexinvariantLM(config())).eval()
    tokens = torch.randint(0, V, (2, N), generator=gen(0))
    table = objective.model.draw(2, generator=gen(4))
    out = objective({"tokens": tokens}, generator=gen(4))
    inputs = torch.cat([torch.full((2, 1), V), tokens[:, :-1]], 1)
    logits = objective.model(inputs, table=table)
    by_hand = -torch.log_softmax(logits, -1).gather(2, tokens[..., None]).mean()
    torch.testing.assert_close(out.loss, by_hand)
    assert out.metrics["loss"].dim() == 0 and not out.metrics["loss"].requires_grad


def test_bad_input():
    with pytest.raises(ValueError, match="random_share"):
        LexinvariantLM(config(), random_share=1.5)
    with pytest.raises(ValueError, match="causal"):
        LexinvariantNextToken(LexinvariantLM(config(), causal=False))
    with pytest.raises(ValueError, match="table"):
        model()(torch.zeros(2, N, dtype=torch.long), table=torch.zeros(2, V + 1, D))
    with pytest.raises(ValueError, match="token ids"):
        model()(torch.full((1, N), V + 1))


def test_cipher_is_a_per_row_permutation_and_the_text_round_trips():
    tokens = load_topic_chars("test", length=64)[:4]
    assert tokens.max() < VOCAB_SIZE and decode(encode("Hello, World!\n")) == "hello world "
    enc, keys = substitution_cipher(tokens, VOCAB_SIZE, generator=gen(0))
    assert torch.equal(keys.sort(1).values, torch.arange(VOCAB_SIZE).expand(4, -1))
    assert not torch.equal(keys[0], keys[1])
    inverse = keys.argsort(1)
    assert torch.equal(inverse.gather(1, enc), tokens)
    enc2, _ = substitution_cipher(tokens, VOCAB_SIZE, generator=gen(0))
    assert torch.equal(enc, enc2)
    train = load_topic_chars("train", length=64)
    assert train.shape[0] > 5 * tokens.shape[0]
