"""Masked Thought (`masking/masked_thought.py`, `NextTokenPrediction(thought=...)`) and next-token SFT
with a prompt, against hand-computed cases: the mask rate at given steps is the authors' ramp; the
trainer tells the objective its step (and a resumed run the same ones); only answer-side inputs are
ever replaced, never the prompt or the start token; the labels stay the clean tokens; the loss is
the answer's mean NLL; and with p = 0 the loss is plain SFT's, exactly."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F

from unmask.layout import Layout
from unmask.masking.masked_thought import MaskedThought
from unmask.nn import CausalTokenModel, ModelConfig
from unmask.objectives import NextTokenPrediction
from unmask.train import TrainConfig, Trainer

V, N, B, P = 7, 10, 6, 4
BOS = 0

pytestmark = pytest.mark.usefixtures("one_thread")


def model():
    torch.manual_seed(0)
    return CausalTokenModel(ModelConfig(V, Layout.seq(N), dim=16, depth=1, heads=2))


def batch(prompt_lengths=(P,) * B):
    tokens = torch.randint(0, V, (len(prompt_lengths), N), generator=torch.Generator().manual_seed(1))
    prompt = torch.arange(N)[None, :] < torch.tensor(prompt_lengths)[:, None]
    return {"tokens": tokens, "prompt": prompt}


class Spy(torch.nn.Module):
    """A causal model that records the inputs it was given."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.mask_id, self.config, self.seen = inner, inner.mask_id, inner.config, []

    def forward(self, tokens, where=None):
        self.seen.append(tokens.clone())
        return self.inner(tokens, where)


def test_the_rate_ramp_is_the_authors_formula_at_hand_computed_steps():
    ramp = MaskedThought(steps=100)  # max 0.4, warmup 2/3: rate = 0.4 * step / (100 * 2/3 + 1) = 1.2 step / 203
    assert ramp.rate(0) == 0.0
    assert ramp.rate(10) == pytest.approx(12 / 203, rel=1e-12)
    assert ramp.rate(67) == pytest.approx(80.4 / 203, rel=1e-12)  # 0.39606: still below the cap
    assert ramp.rate(68) == 0.4 and ramp.rate(99) == 0.4  # 81.6 / 203 > 0.4: capped
    half = MaskedThought(steps=9, max_rate=0.2, warmup_ratio=0.5)  # denominator 5.5
    assert [half.rate(k) for k in (0, 1, 5, 6)] == pytest.approx([0.0, 0.2 / 5.5, 1.0 / 5.5, 0.2])
    with pytest.raises(ValueError):
        MaskedThought(steps=10, max_rate=1.5)


def test_the_trainer_tells_each_step_and_a_resumed_run_ramps_as_an_unbroken_one(tmp_path):
    data = batch()
    cfg = TrainConfig(steps=6, batch_size=B, warmup=0, log_every=1, checkpoint_every=2, precision="fp32")

    def rates(folder, stop_after=None):
        objective = NextTokenPrediction(model(), bos_id=BOS, thought=MaskedThought(steps=6, warmup_ratio=0.5))
        Trainer(objective, data, cfg, folder, {"recipe": "t"}, progress=False).fit(stop_after=stop_after)
        with open(folder / "metrics.csv") as f:
            return [float(r["thought_rate"]) for r in csv.DictReader(f)]

    ramp = MaskedThought(steps=6, warmup_ratio=0.5)  # 0.4 * k / 4, capped at 0.4
    assert rates(tmp_path / "whole") == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])
    assert rates(tmp_path / "whole") == pytest.approx([ramp.rate(k) for k in range(6)])
    rates(tmp_path / "split", stop_after=2)
    assert rates(tmp_path / "split") == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])


def test_only_answer_side_inputs_are_replaced_and_the_labels_stay_clean():
    spy = Spy(model())
    objective = NextTokenPrediction(spy, bos_id=BOS, thought=MaskedThought(steps=1, max_rate=1.0, warmup_ratio=1e-9))
    objective.begin_step(2)  # 2 / (1 + 1e-9) > 1: capped at rate 1, every answer-side input is masked
    data = batch(prompt_lengths=(4, 4, 2, 9, 10, 1))
    loss = objective(data, torch.Generator().manual_seed(2)).loss
    inputs = spy.seen[-1]
    tokens, prompt = data["tokens"], data["prompt"]
    expected = torch.cat([torch.full((len(tokens), 1), BOS), tokens[:, :-1]], dim=1)
    for r, p in enumerate((4, 4, 2, 9, 10, 1)):
        expected[r, p + 1 :] = V  # input i holds token i - 1: inputs after the last prompt token
    assert torch.equal(inputs, expected)
    # the labels are the clean tokens: CE of the logits of the masked inputs against them, answer only
    logits = spy.inner(inputs)
    nll = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none").view_as(tokens)
    assert torch.allclose(loss, nll[~prompt].mean(), atol=1e-6)


def test_at_rate_p_about_that_share_of_answer_side_inputs_is_masked_and_never_the_prompt():
    spy = Spy(model())
    objective = NextTokenPrediction(spy, bos_id=BOS, thought=MaskedThought(steps=100))
    objective.begin_step(99)  # rate 0.4
    tokens = torch.randint(0, V, (4000, N), generator=torch.Generator().manual_seed(3))
    prompt = torch.arange(N).expand(4000, -1) < P
    out = objective({"tokens": tokens, "prompt": prompt}, torch.Generator().manual_seed(4))
    masked = spy.seen[-1] == V
    assert not masked[:, : P + 1].any()  # the start token and every input holding a prompt token
    assert masked[:, P + 1 :].double().mean().item() == pytest.approx(0.4, abs=0.01)
    assert out.metrics["thought_rate"].item() == pytest.approx(0.4)
    assert out.metrics["thought_masked_share"].item() == pytest.approx(0.4, abs=0.01)


def test_with_p_zero_the_loss_is_plain_sft_loss_exactly():
    data, g = batch(), lambda: torch.Generator().manual_seed(5)
    plain = NextTokenPrediction(model(), bos_id=BOS)(data, g()).loss
    none = NextTokenPrediction(model(), bos_id=BOS, thought=MaskedThought(steps=10, max_rate=0.0))
    none.begin_step(9)
    assert torch.equal(none(data, g()).loss, plain)
    first = NextTokenPrediction(model(), bos_id=BOS, thought=MaskedThought(steps=10))  # step 0: rate 0
    assert torch.equal(first(data, g()).loss, plain)
    evaluating = NextTokenPrediction(model(), bos_id=BOS, thought=MaskedThought(steps=10, max_rate=1.0)).eval()
    evaluating.begin_step(9)  # masking is a training-time regulariser: none in eval mode
    assert torch.equal(evaluating(data, g()).loss, plain)
    ramped = NextTokenPrediction(model(), bos_id=BOS, thought=MaskedThought(steps=10, max_rate=1.0))
    ramped.begin_step(9)
    assert not torch.equal(ramped(data, g()).loss, plain)


def test_sft_loss_is_the_mean_nll_of_answer_tokens_and_without_a_prompt_of_all():
    objective = NextTokenPrediction(model(), bos_id=BOS)
    data = batch(prompt_lengths=(4, 4, 2, 9, 10, 1))
    nll = objective.token_nll(data["tokens"])
    answer = ~data["prompt"]
    assert torch.allclose(objective(data).loss, nll[answer].sum() / answer.sum(), atol=1e-6)
    assert torch.allclose(objective({"tokens": data["tokens"]}).loss, nll.mean(), atol=1e-6)


def test_answer_side_inputs_are_the_prompt_shifted_by_one():
    objective = NextTokenPrediction(model(), bos_id=BOS)
    prompt = torch.tensor([[True, True, False, False], [True, False, False, False]])
    expected = torch.tensor([[False, False, False, True], [False, False, True, True]])
    assert torch.equal(objective.answer_inputs(prompt, prompt.long()), expected)
    assert torch.equal(objective.answer_inputs(None, prompt.long())[0], torch.tensor([False, True, True, True]))
