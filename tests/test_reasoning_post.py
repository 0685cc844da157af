"""Post-training in recipe `reasoning` (`recipes/reasoning_post.py`): the checker as a reward, the
SFT model's own answers as dParallel's data, cached decoding counted by reads, and the MDPO and
dParallel roles trained from the SFT weights and measured beside the SFT model."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny
from unmask.data import reasoning
from unmask.eval.reasoning import diffusion_answers
from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.recipes.reasoning_post import checker_reward, first, own_answers
from unmask.sampling import BlockCached, ThresholdSampler

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def made():
    return reasoning.make("arith", train=40, test=10, seed=0, operands=3)


def model_for(task, depth=1, seed=0):
    torch.manual_seed(seed)
    return MaskedTokenModel(ModelConfig(len(task.vocab), Layout.seq(task.n), dim=16, depth=depth, heads=2)).eval()


def test_the_reward_is_the_checker(made):
    t = made.task
    reward = checker_reward(t)
    rows = made.test.tokens.clone()
    assert reward(rows).tolist() == [1.0] * len(rows)
    broken = rows.clone()
    p = t.prompt_length
    broken[:3, p] = (broken[:3, p] + 1) % len(t.vocab)  # the first written digit of three answers changed
    expected = [float(t.check(*t.split_row(r))) for r in broken]
    assert reward(broken).tolist() == expected and sum(expected[:3]) < 3


def test_own_answers_are_what_the_model_decodes(made):
    t = made.task
    model = model_for(t)
    sampler = ThresholdSampler(0.9, block_length=4)
    prompts = first(made.train, 6)
    own = own_answers(model, t, prompts, sampler, seed=0, batch=4)
    decoded = diffusion_answers(model, t, prompts, sampler, seed=0, batch=4)
    assert own.prompts == prompts.prompts and own.answers == decoded.answers
    assert torch.equal(own.tokens[:, : t.prompt_length], prompts.tokens[:, : t.prompt_length])
    assert [t.split_row(r)[1] for r in own.tokens] == decoded.answers


def test_cached_decoding_is_counted_in_full_and_light_reads(made):
    t = made.task
    model = model_for(t, depth=1)  # one layer: cached keys and values are exact, so the answers agree
    plain = diffusion_answers(model, t, made.test, ThresholdSampler(0.9, block_length=4), batch=4)
    dual = diffusion_answers(model, t, made.test, BlockCached(ThresholdSampler(0.9, block_length=4)), batch=4)
    assert dual.answers == plain.answers
    assert dual.nfe == [1] * len(made.test)  # one full read; every later read is light
    assert [1 + light for light in dual.light] == plain.nfe and plain.light == [0] * len(made.test)


def test_post_training_starts_from_the_sft_weights_and_is_reported(tmp_path, cli):
    out = tmp_path / "run"
    args = tiny("reasoning", "ar.train=false", "post.mdpo_steps=1", "post.dparallel_steps=1",
                "post.distill_prompts=8", "post.mdpo_prompts=2", "post.lr=1e-12")
    ran = cli("train", "reasoning", "--out", str(out), *args)
    assert ran.code == 0, ran.err
    import json

    from unmask.train.checkpoint import find_checkpoint, load_checkpoint

    sft = load_checkpoint(find_checkpoint(out))[0]["model"]
    for role in ("mdpo", "dparallel"):  # one step at a learning rate of 1e-12 leaves the SFT weights
        post = load_checkpoint(find_checkpoint(out / role))[0]["model"]
        assert post.keys() == sft.keys()
        assert all(torch.allclose(post[k], sft[k], atol=1e-6) for k in sft), role
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("acc_mdpo_llada", "acc_mdpo_rcr", "acc_dparallel_entropy-threshold", "nfe_dparallel_threshold",
                "light_threshold-dual"):
        assert key in metrics, key
    assert (out / "mdpo").is_dir() and (out / "dparallel").is_dir()
    report = (out / "report.md").read_text()
    assert "MDPO model, RCR decoding" in report and "dParallel model, entropy threshold" in report
