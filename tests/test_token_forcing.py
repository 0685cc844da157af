"""Unconditional Token Forcing (eval/token_forcing.py): every id forced once, greedy decoding equal to
a step-by-step reference, the scores on a hand-made bigram table, and a planted chain found by the
ranking in a toy model built by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from unmask.eval.token_forcing import (
    confident_run,
    flagged,
    force_tokens,
    mean_entropy,
    mean_logp,
    mean_prob,
    rank_forced,
    rank_ids,
    rank_of,
    token_forcing,
)
from unmask.layout import Layout
from unmask.nn import CausalTokenModel, ModelConfig


class Bigram(nn.Module):
    """A causal LM whose next-token distribution depends on the last token only: logits = table[token]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table  # [V, V] logits
        self.calls: list[torch.Tensor] = []

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls.append(tokens.clone())
        return self.table[tokens]  # [B, n, V]


def hand_table() -> Bigram:
    probs = torch.tensor([[0.1, 0.7, 0.2],
                          [0.05, 0.05, 0.9],
                          [0.5, 0.25, 0.25]], dtype=torch.float64)
    return Bigram(probs.log())


def test_every_id_is_forced_once_after_the_start_token():
    v = 7
    model = Bigram(torch.randn(v, v))
    forced = force_tokens(model, steps=2, bos_id=4, vocab_size=v, batch_size=3)
    firsts = [c for c in model.calls if c.shape[1] == 2]  # the first step of each batch: [bos, id]
    assert [len(c) for c in firsts] == [3, 3, 1]
    prefixes = torch.cat(firsts)
    assert (prefixes[:, 0] == 4).all()
    assert sorted(prefixes[:, 1].tolist()) == list(range(v))
    assert forced.first.tolist() == list(range(v))
    assert forced.tokens.shape == forced.logp.shape == forced.entropy.shape == (v, 2)
    assert len(model.calls) == 3 * 2  # two steps per batch, no extra forward


def test_greedy_equals_a_step_by_step_reference():
    torch.manual_seed(0)
    v, bos, steps = 11, 10, 5
    model = CausalTokenModel(ModelConfig(v, Layout.seq(8), dim=16, depth=1, heads=2)).eval()
    forced = force_tokens(model, steps=steps, bos_id=bos, batch_size=4)
    with torch.no_grad():
        for t in range(v):
            seq = [bos, t]
            for s in range(steps):
                logits = model(torch.tensor([seq]))[0, -1]  # full forward, every position's head
                logp = torch.log_softmax(logits.double(), dim=-1)
                nxt = int(logp.argmax())
                assert forced.tokens[t, s] == nxt
                assert forced.logp[t, s] == pytest.approx(float(logp[nxt]), abs=1e-6)
                assert forced.entropy[t, s] == pytest.approx(float(-(logp.exp() * logp).sum()), abs=1e-6)
                seq.append(nxt)


def test_scores_on_a_hand_made_table():
    forced = force_tokens(hand_table(), steps=3, vocab_size=3)
    assert forced.tokens.tolist() == [[1, 2, 0], [2, 0, 1], [0, 1, 2]]
    p0 = [0.7, 0.9, 0.5]
    assert mean_prob(forced, 3)[0] == pytest.approx(sum(p0) / 3)
    assert mean_prob(forced, 2)[0] == pytest.approx(0.8)
    assert mean_logp(forced)[0] == pytest.approx(sum(math.log(p) for p in p0) / 3)
    h0 = -(0.1 * math.log(0.1) + 0.7 * math.log(0.7) + 0.2 * math.log(0.2))
    h1 = -(2 * 0.05 * math.log(0.05) + 0.9 * math.log(0.9))
    h2 = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert mean_entropy(forced)[0] == pytest.approx((h0 + h1 + h2) / 3)
    assert mean_entropy(forced, 1).tolist() == pytest.approx([h0, h1, h2])
    # runs at 0.6: id 0 -> 0.7, 0.9, 0.5 (2); id 1 -> 0.9, 0.5, 0.7 (1); id 2 -> 0.5, 0.7, 0.9 (2)
    assert confident_run(forced, 0.6).tolist() == [2, 1, 2]
    assert confident_run(forced, 0.85).tolist() == [1, 1, 1]
    # the paper's screen over 2 tokens: means 0.8, 0.7, 0.6
    assert flagged(forced, threshold=0.75, steps=2).tolist() == [True, False, False]
    assert flagged(forced, threshold=0.65, steps=2).tolist() == [True, True, False]


def test_rank_is_descending_and_stable():
    assert rank_ids(torch.tensor([1.0, 3.0, 3.0, 2.0])).tolist() == [1, 2, 3, 0]


def test_paper_score_breaks_ties_by_mean_logp():
    # greedy: 0 -> 1 (1/2) -> 0 (1/2); 1 -> 0 (1/2) -> 1 (1/2); 2 -> 3 (1/2) -> 2 (3/4); 3 -> 2 (3/4) -> 3 (1/2)
    probs = torch.tensor([[0.25, 0.5, 0.125, 0.125], [0.5, 0.25, 0.125, 0.125],
                          [0.125, 0.125, 0.25, 0.5], [0.125, 0.125, 0.75, 0.0]], dtype=torch.float64)
    forced = force_tokens(Bigram(probs.log()), steps=2, vocab_size=4)
    assert forced.tokens.tolist() == [[1, 0], [0, 1], [3, 2], [2, 3]]
    # screen of 1 token: 3 first (3/4); among the 1/2s, id 2 has the likelier second token
    assert rank_forced(forced, "paper", screen_steps=1).order.tolist() == [3, 2, 0, 1]
    # mean log-probability: 2 and 3 tie (stable), then 0 and 1
    assert rank_forced(forced).order.tolist() == [2, 3, 0, 1]
    with pytest.raises(ValueError, match="screen_steps"):
        rank_forced(forced, screen_steps=3)


def planted(v: int = 40, chain=(5, 17, 3, 29, 11, 8)) -> Bigram:
    """Near-uniform next tokens (max probability about 0.1), except a planted chain followed with
    probability above 0.99."""
    g = torch.Generator().manual_seed(0)
    table = 0.5 * torch.randn(v, v, generator=g)
    for a, b in zip(chain[:-1], chain[1:], strict=True):
        table[a, b] = 12.0
    return Bigram(table)


def test_ranking_finds_a_planted_continuation():
    chain = (5, 17, 3, 29, 11, 8)
    result = token_forcing(planted(chain=chain), steps=5, vocab_size=40, batch_size=16)
    top = int(result.forced.first[result.order[0]])
    assert top == chain[0]
    assert rank_of(result, chain[0]) == 1
    assert result.forced.tokens[result.order[0]].tolist() == list(chain[1:])
    # the paper's screen (3 tokens, mean probability > 0.95) keeps exactly the ids with 3 planted steps ahead
    assert set(result.forced.first[result.flagged].tolist()) == {5, 17, 3}
    assert (confident_run(result.forced, 0.95)[torch.tensor(chain[:4])] == torch.tensor([5, 4, 3, 2])).all()


def test_paper_score_orders_the_screen_first():
    chain = (5, 17, 3, 29, 11, 8)
    result = token_forcing(planted(chain=chain), steps=5, vocab_size=40, score="paper")
    assert set(result.forced.first[result.order[:3]].tolist()) == {5, 17, 3}
    assert result.score[result.order[:3]].min() > 0.95 > result.score[result.order[3]]


def test_bad_input_is_refused():
    model = hand_table()
    with pytest.raises(ValueError, match="steps"):
        force_tokens(model, steps=0, vocab_size=3)
    with pytest.raises(ValueError, match="0..2"):
        force_tokens(model, torch.tensor([0, 3]), steps=1, vocab_size=3)
    with pytest.raises(ValueError, match="vocab_size"):
        force_tokens(model, steps=1)
    with pytest.raises(ValueError, match="score"):
        token_forcing(model, steps=2, vocab_size=3, score="entropy")
    causal = CausalTokenModel(ModelConfig(5, Layout.seq(4), dim=8, depth=1, heads=2))
    with pytest.raises(ValueError, match="positions"):
        force_tokens(causal, steps=4, bos_id=0)  # bos + id + 3 read back = 5 > 4
    force_tokens(causal, steps=3, bos_id=0)  # 4 positions: fits
