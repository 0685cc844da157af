"""The loop's own work per step, counted in tensor operations (not seconds): every aten operation
that `generate` and the sampler dispatch outside the denoiser's reads, divided by the steps taken.
On a CPU a small operation costs a few microseconds whatever its size, so at Fast-dLLM's block
decoding these counts are most of the loop's time beside a light read; a change that doubles a
rule's work (a cursor rebuilt twice per step, a boolean write where an index write does) shows here.
The bounds are the counts measured when they were set (torch 2.13) plus about 10%."""

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.sampling import BlockCached, CachedDenoiser, LLaDASampler, ThresholdSampler, generate

V, N, B = 32, 64, 3


class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused:
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


class Unseen:
    """The denoiser's reads, not counted."""

    def __init__(self, model, count):
        self.inner, self.count = CachedDenoiser(model), count

    def _quiet(self, fn, *args, **kwargs):
        self.count.paused = True
        try:
            return fn(*args, **kwargs)
        finally:
            self.count.paused = False

    def __call__(self, tokens):
        return self._quiet(self.inner, tokens)

    def full(self, tokens):
        return self._quiet(self.inner.full, tokens)

    def light(self, *args, **kwargs):
        return self._quiet(self.inner.light, *args, **kwargs)


SAMPLERS = {  # name -> (sampler, most operations per step)
    "threshold, dual cache": (BlockCached(ThresholdSampler(0.9, block_length=16), "dual"), 105),
    "threshold, prefix cache": (BlockCached(ThresholdSampler(0.9, block_length=16), "prefix"), 105),
    "threshold": (ThresholdSampler(0.9, block_length=16), 71),
    "LLaDA": (LLaDASampler(32, block_length=16), 84),
}


@pytest.mark.parametrize("name", SAMPLERS)
def test_operations_per_step_outside_the_denoiser(name):
    sampler, most = SAMPLERS[name]
    torch.manual_seed(0)
    model = MaskedTokenModel(ModelConfig(V, Layout.seq(N), dim=32, depth=1, heads=2)).eval()
    canvas = torch.full((B, N), V)
    canvas[:, :8] = torch.arange(8)  # a prompt
    count = Count()
    with count:
        out = generate(Unseen(model, count), canvas, sampler, mask_id=V, generator=torch.Generator().manual_seed(0))
    per_step = sum(count.ops.values()) / out.steps
    assert out.steps >= 8 and (out.tokens != V).all()
    assert per_step <= most, f"{per_step:.1f} operations per step: {count.ops.most_common(8)}"
