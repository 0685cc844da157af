"""Post-training of the `reasoning` recipe's masked diffusion model, each starting from its SFT weights
and trained beside it in the same run:

- `mdpo` (RUN/mdpo): MDPO (He et al. 2025, arXiv:2508.13148, P6), policy-gradient steps over the
  denoising trajectory of the recipe's LLaDA sampler, rewarded by the task's exact checker at every
  step (`objectives/mdpo.py`);
- `dparallel` (RUN/dparallel): dParallel's certainty-forcing distillation (Chen et al. 2025,
  arXiv:2509.26488, P8) on the SFT model's own answers to training prompts, so that entropy-threshold
  decoding commits more tokens per call (`objectives/certainty_forcing.py`).

Both are measured against the SFT model on the same held-out prompts: MDPO by accuracy at equal
decoding (and against RCR decoding of the SFT model, the paper's training-free alternative);
dParallel by calls per answer at the accuracy it keeps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..data import reasoning
from ..eval.reasoning import diffusion_answers

POST_ROLES = ("mdpo", "dparallel")


def checker_reward(task: reasoning.Task) -> Callable[[torch.Tensor], torch.Tensor]:
    """reward(tokens Long[M, N]) -> Float[M]: 1 where the task's checker accepts the row's answer."""

    def reward(tokens: torch.Tensor) -> torch.Tensor:
        rows = tokens.cpu().tolist()  # the checker is Python: one read per call, by design
        return torch.tensor([float(task.check(*task.split_row(row))) for row in rows], dtype=torch.float64)

    return reward


def own_answers(model, task: reasoning.Task, prompts: reasoning.Examples, sampler, seed: int,
                batch: int) -> reasoning.Examples:
    """The model's own answers to `prompts` (right or wrong, as dParallel distils its model's
    trajectories), as examples to train on."""
    answered = diffusion_answers(model, task, prompts, sampler, seed, batch)
    return reasoning.examples(task, list(zip(prompts.prompts, answered.answers, strict=True)))


def first(examples: reasoning.Examples, n: int) -> reasoning.Examples:
    """The first n examples (all when there are fewer)."""
    return reasoning.Examples(examples.prompts[:n], examples.answers[:n], examples.tokens[:n], examples.prompt[:n])
