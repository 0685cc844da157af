"""Host syncs of decoding (STYLE habit 11): `generate` reads the device at most once per step (its
decisions and the next light read's width in one read), and each sampler's `step` at most once more
(its state's lists in one read); a cached denoiser's light read once where a row refreshes its
cache. Counted with `host_syncs.count_host_syncs` over every sampler of the
contract suite and the cached block samplers, on a model with full and light reads."""

import pytest
import torch

from host_syncs import count_host_syncs
from test_samplers import IDS, SAMPLERS, V, canvas_with_prompt
from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.sampling import BlockCached, CachedDenoiser, LLaDASampler, RCRSampler, ThresholdSampler, generate

pytestmark = pytest.mark.usefixtures("one_thread")

CACHED = [BlockCached(ThresholdSampler(0.9, block_length=4), "dual"),
          BlockCached(LLaDASampler(steps=12, block_length=4), "prefix"),
          BlockCached(RCRSampler(steps=8, block_length=4), "dual")]
START_READS = 2  # the canvas's id range and whether anything is hidden, once per run
# AWRS (ConstrainedSampler) asks a Python predicate about each candidate token: host work by design
DEVICE_SIDE = [(s, i) for s, i in zip(SAMPLERS, IDS, strict=True) if i != "awrs"]


@pytest.mark.parametrize("sampler", [s for s, _ in DEVICE_SIDE] + CACHED,
                         ids=[i for _, i in DEVICE_SIDE] + ["threshold-dual", "llada-prefix", "rcr-dual"])
def test_one_read_per_step_in_the_loop_and_one_in_the_sampler(sampler):
    torch.manual_seed(0)
    model = CachedDenoiser(MaskedTokenModel(ModelConfig(V, Layout.seq(12), dim=16, depth=2, heads=2)).eval())
    canvas = canvas_with_prompt()
    with count_host_syncs() as at_start:
        sampler.start(canvas == V)
    with count_host_syncs() as seen:
        out = generate(model, canvas, sampler, mask_id=V, generator=torch.Generator().manual_seed(0))
    loop = [r for r in seen.syncs if r.file.endswith("generate.py")]
    reads = [r for r in seen.syncs if r.file.endswith("kv_cache.py")]  # the denoiser's own
    rest = [r for r in seen.syncs if not r.file.endswith(("generate.py", "kv_cache.py"))]
    assert len(loop) <= out.steps + START_READS, seen.report(loop)
    assert len(rest) <= out.steps + at_start.count, seen.report(rest)
    # a light read reads the device only where some row refreshes its whole cache (entering a block),
    # to read those rows apart: at most once per block a row enters
    assert len(reads) <= min(out.light, canvas.shape[0] * 3), seen.report(reads)
