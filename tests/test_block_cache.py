"""Fast-dLLM's prefix and dual caches over the block samplers (Wu et al. 2025, arXiv:2505.22618), and
batch independence of every block sampler with and without them."""

import dataclasses
import json

import pytest
import torch

from test_sampler_cache import tiny_model
from unmask.sampling import (
    BlockCached,
    CachedDenoiser,
    DreamSampler,
    LLaDASampler,
    RCRSampler,
    ThresholdSampler,
    generate,
)
from unmask.sampling.block_cache import BlockCachedState

V, N = 7, 16
pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLERS = {
    "llada": LLaDASampler(steps=12, block_length=4),
    "threshold": ThresholdSampler(threshold=0.5, block_length=4),
    "entropy": ThresholdSampler(threshold=1.0, measure="entropy", block_length=4),
    "rcr": RCRSampler(steps=8, block_length=4),
    "dream": DreamSampler(steps=6, temperature=0.0),
}


def canvas(prompts: list[int], seed: int = 0) -> torch.Tensor:
    """Rows of N tokens: a prompt of the given length (random tokens), the rest hidden."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.full((len(prompts), N), V)
    for b, p in enumerate(prompts):
        rows[b, :p] = torch.randint(0, V, (p,), generator=g)
    return rows


class Reads:
    """A CachedDenoiser that records how many places each read computed."""

    def __init__(self, model):
        self.inner = CachedDenoiser(model)
        self.places: list[int] = []

    def __call__(self, tokens):
        return self.inner(tokens)

    def full(self, tokens):
        self.places.append(tokens.numel())
        return self.inner.full(tokens)

    def light(self, tokens, queries, cache, width=None):
        self.places.append(int(queries.sum()))
        return self.inner.light(tokens, queries, cache, width)


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_caches_give_the_samplers_own_tokens_where_cached_keys_are_exact(name, mode):
    # one layer: a position's keys and values depend on its own token only, so a cache is exact
    model = tiny_model(depth=1)
    x = canvas([3, 5, 0, 9])
    plain = generate(model, x, SAMPLERS[name], mask_id=V)
    reads = Reads(model)
    cached = generate(reads, x, BlockCached(SAMPLERS[name], mode), mask_id=V)
    assert torch.equal(cached.tokens, plain.tokens)
    assert cached.nfe == 1 and cached.light == len(reads.places) - 1 > 0
    assert sum(reads.places) < plain.nfe * x.numel()  # the steps read fewer places


def test_the_queries_of_each_mode_by_hand():
    sampler = LLaDASampler(steps=6, block_length=4)
    x = canvas([4])  # prompt 0..3, blocks 4..7, 8..11, 12..15
    hidden = x == V
    for mode, block0 in [("prefix", range(4, 16)), ("dual", range(4, 8))]:
        cached = BlockCached(sampler, mode)
        state = cached.start(hidden)
        assert state.start == [4] and state.cached_block == [-1]
        assert cached.light_queries(state, hidden).all()  # entering block 0: every place
        read = state.cached_block
        state = dataclasses.replace(state, cached_block=[0])  # after a step in block 0
        assert cached.light_queries(state, hidden)[0].nonzero().flatten().tolist() == list(block0)
        done = hidden.clone()
        done[0, 4:8] = False  # block 0 finished: the next step enters block 1 and refreshes
        assert cached.light_queries(state, done).all()
        assert read == [-1]


def test_rcr_rereads_the_earlier_places_it_hid_again():
    cached = BlockCached(RCRSampler(steps=4, block_length=4), "dual")
    hidden = canvas([4]) == V
    state = cached.start(hidden)
    state = dataclasses.replace(state, cached_block=[1])
    inner = state.inner
    state.inner = dataclasses.replace(inner, block=[1], step=[0])
    hidden[0, 4:8] = False
    hidden[0, 5] = True  # a place of block 0 hidden again
    queries = cached.light_queries(state, hidden)[0].nonzero().flatten().tolist()
    assert queries == [5, 8, 9, 10, 11]


def test_the_dual_cache_reads_fewer_places_than_the_prefix_cache():
    model = tiny_model(depth=2)
    x = canvas([4, 4])
    places = {}
    for mode in ("prefix", "dual"):
        reads = Reads(model)
        generate(reads, x, BlockCached(LLaDASampler(steps=6, block_length=4), mode), mask_id=V)
        places[mode] = reads.places
    # 3 blocks of 2 steps: a refresh of 2 x 16 places, then prefix reads 12, 8, 4 places per row, dual 4
    assert places["prefix"] == [32, 24, 32, 16, 32, 8]
    assert places["dual"] == [32, 8, 32, 8, 32, 8]


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("mode", [None, "prefix", "dual"])
def test_a_row_gives_the_same_tokens_alone_and_in_a_mixed_batch(name, mode):
    model = tiny_model(depth=2)
    sampler = SAMPLERS[name] if mode is None else BlockCached(SAMPLERS[name], mode)
    denoiser = CachedDenoiser(model)
    prompts = [0, 3, 5, 9, 2, 7, 4, 11]
    x = canvas(prompts, seed=1)
    together = generate(denoiser, x, sampler, mask_id=V, generator=torch.Generator().manual_seed(0)).tokens
    for b in range(len(prompts)):
        alone = generate(denoiser, x[b:b + 1], sampler, mask_id=V, generator=torch.Generator().manual_seed(5))
        assert torch.equal(alone.tokens[0], together[b]), f"row {b} (prompt {prompts[b]})"


def test_the_state_is_json_and_a_resumed_run_refreshes_its_cache():
    model = tiny_model(depth=1)
    sampler = BlockCached(LLaDASampler(steps=12, block_length=4), "dual")
    x = canvas([3, 6])
    whole = generate(CachedDenoiser(model), x, sampler, mask_id=V)
    state, tokens = sampler.start(x == V), x
    for _ in range(3):
        tokens, state = sampler.step(model(tokens), tokens, state)
    saved = json.loads(json.dumps(dataclasses.asdict(state)))
    restored = BlockCachedState(type(state.inner)(**saved["inner"]), saved["start"], saved["cached_block"])
    reads = Reads(model)
    rest = generate(reads, tokens, sampler, mask_id=V, state=restored)
    assert torch.equal(rest.tokens, whole.tokens)
    assert reads.places[0] == x.numel()  # no cache survives a restart: the first read is whole


def test_a_cached_sampler_needs_a_denoiser_with_light_reads():
    with pytest.raises(ValueError, match="needs a denoiser with full and light reads"):
        generate(tiny_model(depth=1), canvas([3]), BlockCached(LLaDASampler(steps=4, block_length=4)), mask_id=V)
    with pytest.raises(ValueError, match="mode must be one of"):
        BlockCached(LLaDASampler(), "suffix")
    with pytest.raises(ValueError, match="wraps a sampler"):
        BlockCached(object())
