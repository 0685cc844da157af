"""Recipe `reasoning` and its evaluation (`eval/reasoning.py`): with an oracle denoiser every sampler is
exactly right and spends the hand-counted calls per answer (one for the one-step baseline, one per
block for a threshold sampler certain everywhere, the scheduled steps for LLaDA, one per token for
first-hitting and greedy left to right); the recipe builds its three roles as declared, trains,
evaluates and writes `prompt<TAB>answer<TAB>correct` lines that the checker agrees with."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import tiny
from unmask.data import reasoning
from unmask.eval.reasoning import diffusion_answers, greedy_answers
from unmask.masking.masked_thought import MaskedThought
from unmask.objectives import MaskedDiffusion, NextTokenPrediction
from unmask.recipes import get
from unmask.recipes.reasoning import BASELINE, Reasoning
from unmask.sampling import LLaDASampler, ThresholdSampler

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def made():
    return reasoning.make("arith", train=50, test=12, seed=0, operands=3)  # P = 6, A = 19


class Oracle(nn.Module):
    """Logits that put the true token of the row (found by its prompt) far above the rest. As a
    masked model it reads tokens Long[B, N]; as a causal one, [bos, prompt, answer so far]."""

    def __init__(self, examples, vocab: int, prompt_length: int, causal: bool = False):
        super().__init__()
        self.rows = {tuple(r[:prompt_length].tolist()): r for r in examples.tokens}
        self.mask_id, self.p, self.v, self.causal = vocab, prompt_length, vocab, causal
        self.weight = nn.Parameter(torch.zeros(()))  # for the device

    def forward(self, tokens):
        start = 1 if self.causal else 0
        truth = torch.stack([self.rows[tuple(r[start : start + self.p].tolist())] for r in tokens])
        if self.causal:  # position i predicts token i of the row
            truth = truth[:, : tokens.shape[1]]
        return 20.0 * nn.functional.one_hot(truth, self.v).float()


def test_an_oracle_is_always_right_at_the_hand_counted_calls(made):
    t = made.task
    oracle = Oracle(made.test, len(t.vocab), t.prompt_length)
    settings = Reasoning().with_overrides(["sampler.block_length=4", "sampler.steps_per_block=2"]).settings.sampler
    samplers = settings.samplers(t.answer_length)  # 19 places: 5 blocks of 4 (the last of 3)
    # the cached samplers read a Transformer's keys and values, which the oracle has not
    # (tests/test_reasoning_post.py checks them against the plain threshold sampler)
    samplers = {n: s for n, s in samplers.items() if not getattr(s, "requires_cache", False)}
    for name, sampler in samplers.items():
        res = diffusion_answers(oracle, t, made.test, sampler, batch=5)
        assert res.accuracy == 1.0 and all(res.correct), name
    calls = {name: diffusion_answers(oracle, t, made.test, s, batch=5).nfe for name, s in samplers.items()}
    assert calls[BASELINE] == [1] * 12
    assert calls["threshold"] == [5] * 12 and calls["entropy-threshold"] == [5] * 12  # a block per call
    assert calls["llada"] == [10] * 12  # 2 steps in each of 5 blocks
    assert calls["first-hitting"] == [19] * 12  # one token per call
    assert diffusion_answers(oracle, t, made.test, LLaDASampler(19, None), batch=12).nfe == [19] * 12


def test_calls_per_answer_count_a_row_only_while_it_has_hidden_places(made):
    """Threshold decoding of a model sure of only some rows: sure rows stop calling early."""
    t = made.task
    oracle = Oracle(made.test, len(t.vocab), t.prompt_length)

    class Unsure(nn.Module):
        def __init__(self):
            super().__init__()
            self.mask_id, self.weight = oracle.mask_id, oracle.weight

        def forward(self, tokens):
            logits = oracle(tokens)
            logits[1::2] = logits[1::2] / 20.0  # odd rows: probability about 0.13, below the threshold
            return logits

    res = diffusion_answers(Unsure(), t, made.test, ThresholdSampler(0.9, "confidence", None, 0.0), batch=12)
    assert res.nfe[0::2] == [1] * 6 and res.nfe[1::2] == [19] * 6  # one token per call when unsure
    assert res.accuracy == 1.0


def test_greedy_left_to_right_is_right_with_an_oracle_at_one_call_per_token(made):
    t = made.task
    res = greedy_answers(Oracle(made.test, len(t.vocab), t.prompt_length, causal=True), t, made.test, t.pad_id, 5)
    assert res.accuracy == 1.0 and res.nfe == [19] * 12
    assert res.answers == made.test.answers


def test_the_recipe_builds_its_three_roles():
    recipe = Reasoning().with_overrides(["ar.steps=300", "ar.max_rate=0.3", "ar.warmup_ratio=0.5", "model.dim=16"])
    assert isinstance(recipe.objective(), MaskedDiffusion)
    plain, thought = recipe.objective("ar"), recipe.objective("masked-thought")
    assert isinstance(plain, NextTokenPrediction) and plain.thought is None
    assert thought.thought == MaskedThought(300, 0.3, 0.5)  # the ramp spans the AR models' steps
    assert recipe.ar_train().steps == 300 and recipe.ar_train().lr == recipe.settings.train.lr
    same = Reasoning().with_overrides(["ar.steps=0", "train.steps=700"])
    assert same.ar_train().steps == 700 and same.objective("masked-thought").thought.steps == 700
    assert plain.bos_id == thought.bos_id == recipe.task().pad_id != plain.mask_id
    assert plain.model.config == recipe.model_config() == recipe.objective().model.config
    assert recipe.model_config().layout.n == 25 and recipe.model_config().vocab_size == len(reasoning.arith.VOCAB)
    with pytest.raises(Exception, match="trains no 'teacher' model"):
        recipe.objective("teacher")
    sudoku = Reasoning().with_overrides(["data.task=sudoku"])
    assert sudoku.model_config().layout.n == 32 and sudoku.model_config().vocab_size == 6


def test_train_evaluate_and_sample_at_tiny_sizes(tmp_path, cli):
    out = tmp_path / "run"
    ran = cli("train", "reasoning", "--out", out, "--no-progress", *tiny("reasoning", "ar.steps=3"))
    assert ran.code == 0, ran.err
    metrics = json.loads((out / "metrics.json").read_text())
    samplers = get("reasoning")().with_overrides(tiny("reasoning")).settings.sampler.samplers(19)
    for name in (*samplers, "ar", "masked-thought"):
        assert 0.0 <= metrics[f"acc_{name}"] <= 1.0 and metrics[f"nfe_{name}"] >= 1, name
    assert metrics[f"nfe_{BASELINE}"] == 1 and metrics["nfe_ar"] == metrics["answer_length"] == 19
    assert metrics["nfe_llada"] == 10  # 2 steps in each of 5 blocks of 4
    assert (out / "ar" / "checkpoints").is_dir() and (out / "masked-thought" / "checkpoints").is_dir()
    thought = (out / "masked-thought" / "metrics.csv").read_text().splitlines()
    assert "thought_rate" in thought[0] and thought[-1].startswith("3,")  # ar.steps, not train.steps
    report = (out / "report.md").read_text()
    assert "exact accuracy, Masked Thought" in report and "(acc_one-step)" in report

    ran = cli("sample", out, "--n", "5", "--out", tmp_path / "s")
    assert ran.code == 0, ran.err
    lines = (tmp_path / "s.txt").read_text().splitlines()
    assert lines[0] == "prompt\tanswer\tcorrect" and len(lines) == 6
    for line in lines[1:]:
        prompt, answer, correct = line.split("\t")
        assert correct == ("yes" if reasoning.check_arith(prompt, answer) else "no")
    ran = cli("sample", out, "--n", "9", "--out", tmp_path / "s")
    assert ran.code == 2 and "n must lie in 1..8" in ran.err and ran.err.count("\n") == 1


def test_sudoku_trains_and_evaluates_without_the_ar_models(tmp_path, cli):
    out = tmp_path / "sudoku"
    ran = cli("train", "reasoning", "--out", out, "--no-progress",
              *tiny("reasoning", "data.task=sudoku", "ar.train=false"))
    assert ran.code == 0, ran.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["answer_length"] == 16 and "acc_ar" not in metrics and not (out / "ar").exists()
    assert metrics["nfe_llada"] == 8  # 2 steps in each of 4 blocks of 4
