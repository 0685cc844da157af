"""Policy-gradient fine-tuning over the denoising trajectory with verifiable rewards (MDPO, He et al.
2025, "MDPO: overcoming the training-inference divide of masked diffusion language models",
arXiv:2508.13148, P6): decode each prompt G times with the inference sampler, score what the model
would answer at every step, and raise the probability of the tokens each step committed in
proportion to how much better than its group that step's rollout went on to do.

One training step, for B prompts (`batch["tokens"]` holds prompt and reference answer, `prompt` says
which places are given; the reward function sees whole rows and may read the reference):
1. rollouts: G copies of each prompt with the answer hidden are decoded by `sampler` in the one loop
   (`generate(..., on_step=...)` keeps each step's input x_k, its committed tokens and its logits),
   without gradients;
2. rewards: r_k = reward(x0_k) for each step's prediction x0_k (x_k with every hidden place filled by
   the argmax of that step's logits: what the model would answer if decoding stopped there; MDPO's
   "answer backslide" is a correct x0_k followed by a wrong final answer), and r_K = reward(final);
3. advantages, group-relative (GRPO, Shao et al. 2024, arXiv:2402.03300; no value network): the
   return of step k is the mean of the later rewards, R_k = mean(r_{k+1}, ..., r_K), and its advantage
   A_k = R_k - mean of R_k over the G rollouts of the same prompt at the same step (divided by their
   standard deviation + 1e-4 with `normalize`);
4. loss: -mean over steps and rollouts of A_k * mean log p(committed tokens of step k | x_k). Each
   step's log-probabilities are exact, read from the stored state in one batched call with
   gradients (all steps of all rollouts together).

`logp="coupled"` is the trajectory-free alternative: the final reward's group advantage times a
log-likelihood estimate of the final answer, the masked diffusion bound with DiffuCoder's coupled
complementary masks (Gong et al. 2025, arXiv:2506.20639, P54), as diffu-GRPO-style trainers use.
Rewards are computed on the host (a checker is Python code), so this objective reads values into
Python once per step, by design.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..sampling import generate
from .base import ObjectiveOutput
from .masked_diffusion import MaskedDiffusion

LOGP = ("trajectory", "coupled")


def group_advantage(returns: torch.Tensor, group: int, normalize: bool) -> torch.Tensor:
    """returns: Float[B * G, ...], the G rollouts of a prompt adjacent -> the same minus their group's
    mean (divided by the group's standard deviation + 1e-4 with `normalize`)."""
    r = returns.view(-1, group, *returns.shape[1:])
    centred = r - r.mean(1, keepdim=True)
    if normalize:
        centred = centred / (r.std(1, unbiased=False, keepdim=True) + 1e-4)
    return centred.view_as(returns)


class MDPO(nn.Module):
    """batch: {"tokens": Long[B, N], "prompt": Bool[B, N]}; reward(tokens: Long[M, N]) -> Float[M] in [0, 1].

    `model` is a masked diffusion LM (`MaskedTokenModel`); `sampler` any sampler of `generate`."""

    def __init__(self, model: nn.Module, sampler, reward: Callable[[torch.Tensor], torch.Tensor], *,
                 group: int = 4, logp: str = "trajectory", normalize: bool = False):
        super().__init__()
        if not (isinstance(group, int) and group >= 2):
            raise ValueError(f"group must be an integer >= 2 (rollouts per prompt, compared), got {group!r}")
        if logp not in LOGP:
            raise ValueError(f"logp must be one of {LOGP}, got {logp!r}")
        self.model, self.sampler, self.reward = model, sampler, reward
        self.group, self.logp, self.normalize = group, logp, normalize
        self.mask_id = model.mask_id

    def rollouts(self, batch: dict, generator=None) -> tuple[torch.Tensor, list, torch.Tensor]:
        """(final tokens Long[B * G, N], the steps [(x_k, new_k, logits_k)], prompt Bool[B * G, N])."""
        prompt = batch["prompt"].repeat_interleave(self.group, 0)
        canvas = batch["tokens"].repeat_interleave(self.group, 0).masked_fill(~prompt, self.mask_id)
        steps = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = generate(self.model, canvas, self.sampler, mask_id=self.mask_id, generator=generator,
                               on_step=lambda x, new, logits: steps.append((x, new, logits.argmax(-1))))
        finally:
            self.model.train(was_training)
        return out.tokens, steps, prompt

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        final, steps, prompt = self.rollouts(batch, generator)
        final_reward = self.reward(final).to(torch.float64)  # [M]
        if self.logp == "coupled":
            advantage = group_advantage(final_reward, self.group, self.normalize)
            # a fresh wrapper each step: registered as a submodule it would save the weights twice
            bound, lengths, _ = MaskedDiffusion(self.model, coupled=True).row_bounds(
                {"tokens": final, "prompt": prompt}, generator)
            loss = (advantage.to(bound) * bound / lengths.clamp(min=1).to(bound)).mean()  # -A log p, per token
            return ObjectiveOutput(loss, {"loss": loss.detach(), "reward": final_reward.mean().float()})
        x = torch.stack([s[0] for s in steps])  # [K, M, N]
        new = torch.stack([s[1] for s in steps])
        x0 = torch.where(x == self.mask_id, torch.stack([s[2] for s in steps]), x)
        k, m, n = x.shape
        rewards = torch.cat([self.reward(x0.view(k * m, n)).to(torch.float64).view(k, m)[1:],
                             final_reward.unsqueeze(0)])  # r_1 .. r_K: the rewards after each step
        later = rewards.flip(0).cumsum(0).flip(0) / torch.arange(k, 0, -1, dtype=torch.float64).unsqueeze(1)
        advantage = group_advantage(later.t().contiguous(), self.group, self.normalize).t()  # [K, M]
        committed = (x == self.mask_id) & (new != self.mask_id)  # [K, M, N]
        flat = committed.view(k * m, n)
        logits = self.model(x.view(k * m, n), where=flat)  # [C, V]
        logp = F.log_softmax(logits.float(), -1).gather(1, new.view(k * m, n)[flat].unsqueeze(1)).squeeze(1)
        rows = flat.nonzero()[:, 0]
        per_row = torch.zeros(k * m, device=logp.device).index_add_(0, rows, logp)
        per_row = per_row / flat.sum(1).clamp(min=1)
        loss = -(advantage.reshape(-1).to(per_row) * per_row).mean()
        metrics = {"loss": loss.detach(), "reward": final_reward.mean().float(),
                   "step_reward": rewards[:-1].mean().float() if k > 1 else final_reward.mean().float()}
        return ObjectiveOutput(loss, metrics)
