"""MDPO (He et al. 2025, arXiv:2508.13148, P6): group-relative advantages by hand, the trajectory loss
against a step-by-step recomputation, and the sign of the update: training raises the reward."""

import math

import pytest
import torch

from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.objectives.mdpo import MDPO, group_advantage
from unmask.sampling import LLaDASampler

V, N, P = 4, 6, 2  # vocabulary, row length, prompt length
pytestmark = pytest.mark.usefixtures("one_thread")


def zeros_reward(tokens: torch.Tensor) -> torch.Tensor:
    """Float[M]: the share of answer places holding token 0."""
    return (tokens[:, P:] == 0).double().mean(1)


def setup(seed=0, **options):
    torch.manual_seed(seed)
    model = MaskedTokenModel(ModelConfig(V, Layout.seq(N), dim=16, depth=1, heads=2))
    sampler = LLaDASampler(steps=4, remasking="random", temperature=1.0)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V, (3, N), generator=g)
    batch = {"tokens": tokens, "prompt": (torch.arange(N) < P).expand(3, N)}
    return MDPO(model, sampler, zeros_reward, group=4, **options), batch


def test_group_advantage_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5], dtype=torch.float64)
    assert group_advantage(r, 2, False).tolist() == [0.5, -0.5, -0.5, 0.5, 0.0, 0.0]
    normed = group_advantage(r, 3, True)
    mean, sd = 1 / 3, math.sqrt(2 / 9)
    assert torch.allclose(normed[:3], (r[:3] - mean) / (sd + 1e-4))


def test_the_trajectory_loss_equals_a_step_by_step_recomputation():
    objective, batch = setup()
    final, steps, _ = objective.rollouts(batch, torch.Generator().manual_seed(1))
    out = objective(batch, torch.Generator().manual_seed(1))
    m = final.shape[0]
    rewards = []  # r_1 .. r_K
    for x, _, pred in steps[1:]:
        rewards.append(zeros_reward(torch.where(x == V, pred, x)))
    rewards.append(zeros_reward(final))
    total = 0.0
    for k, (x, new, _) in enumerate(steps):
        later = torch.stack(rewards[k:]).mean(0)  # the mean of the rewards after step k
        for row in range(m):
            group = range(row // 4 * 4, row // 4 * 4 + 4)
            advantage = later[row] - later[list(group)].mean()
            places = [i for i in range(N) if x[row, i] == V and new[row, i] != V]
            logp = torch.log_softmax(objective.model(x[row:row + 1])[0].double(), -1)
            mean_logp = sum(logp[i, new[row, i]] for i in places) / max(len(places), 1)
            total += float(advantage) * float(mean_logp)
    assert math.isclose(float(out.loss), -total / (len(steps) * m), rel_tol=1e-4, abs_tol=1e-6)


def test_equal_rewards_give_no_gradient():
    objective, batch = setup()
    objective.reward = lambda tokens: torch.ones(tokens.shape[0])
    out = objective(batch, torch.Generator().manual_seed(2))
    out.loss.backward()
    assert float(out.loss) == 0.0
    assert all(p.grad is None or not p.grad.any() for p in objective.parameters())


@pytest.mark.parametrize("logp", ["trajectory", "coupled"])
def test_training_raises_the_reward(logp):
    objective, batch = setup(seed=3, logp=logp)
    optimizer = torch.optim.Adam(objective.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(4)
    rewards = []
    for _ in range(30):
        out = objective(batch, g)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        rewards.append(float(out.metrics["reward"]))
    # an untrained model writes a 0 a quarter of the time; the update must push it to 0s
    assert rewards[0] < 0.35 and sum(rewards[-5:]) / 5 > 0.8, rewards


def test_bad_settings_are_refused():
    objective, _ = setup()
    with pytest.raises(ValueError, match="group must be an integer >= 2"):
        MDPO(objective.model, objective.sampler, zeros_reward, group=1)
    with pytest.raises(ValueError, match="logp must be one of"):
        MDPO(objective.model, objective.sampler, zeros_reward, logp="exact")
