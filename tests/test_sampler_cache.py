"""Cached keys and values: the Transformer's K/V in and out, light reads, and the two samplers that
use them, ReCAP (P22; Liu et al. 2025, arXiv:2505.19089) and ENAT-style reuse (P20; Ni et al. 2024,
arXiv:2411.06959)."""

import math

import pytest
import torch

from toys import Factorised, Recorder
from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.nn.transformer import Transformer
from unmask.sampling import CachedDenoiser, ENATSampler, ReCAPSampler, generate

V, N = 7, 16


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(depth: int, seed: int = 0) -> MaskedTokenModel:
    torch.manual_seed(seed)
    model = MaskedTokenModel(ModelConfig(V, Layout.seq(N), dim=32, depth=depth, heads=4)).eval()
    with torch.no_grad():  # larger weights than the init, so logits differ clearly between contexts
        for p in model.parameters():
            p.mul_(8.0 if p.ndim > 1 else 1.0)
    return model


def head_index(index, t):
    b, h, _, dh = t.shape
    return index.view(b, 1, -1, 1).expand(b, h, index.shape[1], dh)


def test_transformer_reads_some_positions_against_kept_keys_and_values():
    torch.manual_seed(0)
    net = Transformer(32, 3, 4).eval()
    x = torch.randn(2, 10, 32)
    plain = net(x)
    full, kept = net(x, keep_kv=torch.arange(10).expand(2, 10))
    assert torch.equal(full, plain)  # keeping K/V changes nothing
    assert len(kept) == 3 and kept[0][0].shape == (2, 4, 10, 8)
    queries = torch.tensor([[3, 7], [0, 9]])
    others = torch.stack([torch.tensor([i for i in range(10) if i not in q]) for q in queries.tolist()])
    past = [tuple(t.gather(2, head_index(others, t)) for t in layer) for layer in kept]
    part = net(x.gather(1, queries.unsqueeze(-1).expand(-1, -1, 32)), past=past)
    assert torch.allclose(part, full.gather(1, queries.unsqueeze(-1).expand(-1, -1, 32)), atol=1e-5)
    with pytest.raises(ValueError, match="layers"):
        net(x, past=past[:2])


def test_light_read_equals_full_read_when_nothing_changed():
    model = tiny_model(depth=3)
    den = CachedDenoiser(model)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, V + 1, (3, N), generator=g)
    logits, cache = den.full(tokens)
    assert torch.allclose(logits, model(tokens), atol=1e-5)
    queries = torch.rand(3, N, generator=g) < 0.4
    queries[1] = False  # a row with nothing to read
    part, _ = den.light(tokens, queries, cache)
    assert part.shape == (int(queries.sum()), V)
    assert torch.allclose(part, logits[queries], atol=1e-4)


def test_light_read_after_a_change_is_exact_for_one_layer_only():
    tokens = torch.full((2, N), V)
    tokens[:, :4] = 1
    changed = tokens.clone()
    changed[:, 4:6] = 2
    queries = changed == V
    queries |= changed != tokens
    for depth, exact in [(1, True), (2, False)]:
        model = tiny_model(depth)
        den = CachedDenoiser(model)
        _, cache = den.full(tokens)
        part, _ = den.light(changed, queries, cache)
        close = torch.allclose(part, model(changed)[queries], atol=1e-4)
        assert close == exact  # deeper layers' cached K/V of unchanged tokens saw the old context


def count_reads(den):
    reads = {"full": 0, "light": 0, "queried": []}
    full, light = den.full, den.light

    def counted_full(tokens):
        reads["full"] += 1
        return full(tokens)

    def counted_light(tokens, queries, cache, width=None):
        reads["light"] += 1
        reads["queried"].append((queries.clone(), tokens.clone(), cache.tokens.clone()))
        assert width is None or width == int(queries.sum(1).max())
        return light(tokens, queries, cache, width)

    den.full, den.light = counted_full, counted_light
    return reads


@pytest.mark.parametrize("steps,pre_full,cache_steps", [(12, 4, 1), (10, 0, 2), (8, 8, 1), (9, 3, 3)])
def test_recap_full_and_light_reads_follow_the_grouping_rule(steps, pre_full, cache_steps):
    sampler = ReCAPSampler(steps, pre_full, cache_steps, temperature=1.0)
    den = CachedDenoiser(tiny_model(2))
    reads = count_reads(den)
    out = generate(den, torch.full((3, N), V), sampler, mask_id=V, generator=torch.Generator().manual_seed(0))
    full = pre_full + math.ceil((steps - pre_full) / (1 + cache_steps))
    assert out.nfe == reads["full"] == full == sampler.full_reads
    assert out.light == reads["light"] == steps - full
    assert sum(sampler.base_counts(N)) == N and min(sampler.base_counts(N)) >= 1
    counts = sampler.base_counts(N)
    groups = [sum(counts[j] for j in g) for g in sampler.groups() for _ in g[1:]]
    assert [q.sum(1).tolist() for q, _, _ in reads["queried"]] == [[n] * 3 for n in groups]  # the whole group
    assert not (out.tokens == V).any()


def test_recap_with_exact_cache_equals_recap_with_full_reads():
    """A one-layer model's cached K/V are exact, so every light read equals a full read: the cached
    run must give the same tokens as the same sampler reading fully every time."""
    model = tiny_model(1)
    sampler = ReCAPSampler(10, 2, 2, choice_temperature=1.0, temperature=0.8)
    cached = generate(CachedDenoiser(model), torch.full((8, N), V), sampler, mask_id=V,
                      generator=torch.Generator().manual_seed(0))
    plain = generate(model, torch.full((8, N), V), sampler, mask_id=V, generator=torch.Generator().manual_seed(0))
    assert cached.light > 0 and plain.light == 0
    assert torch.equal(cached.tokens, plain.tokens)


def test_recap_group_commits_follow_the_base_counts():
    sampler = ReCAPSampler(8, 2, 2, temperature=1.0)
    rec = Recorder(Factorised(torch.randn(N, V)))
    generate(rec, torch.full((2, N), V), sampler, mask_id=V, generator=torch.Generator().manual_seed(0))
    hidden = [int((x[0] == V).sum()) for x in rec.inputs] + [0]
    committed = [a - b for a, b in zip(hidden, hidden[1:], strict=False)]
    assert committed == sampler.base_counts(N)


def test_enat_reuse_reads_only_hidden_and_newly_revealed_places():
    den = CachedDenoiser(tiny_model(2))
    reads = count_reads(den)
    sampler = ENATSampler(6, temperature=1.0, choice_temperature=1.0)
    out = generate(den, torch.full((3, N), V), sampler, mask_id=V, generator=torch.Generator().manual_seed(0))
    assert reads["full"] == out.nfe == 1 and reads["light"] == out.light >= 1
    for queries, tokens, cached_tokens in reads["queried"]:
        assert torch.equal(queries, (tokens == V) | (tokens != cached_tokens))


def test_enat_reuse_is_exact_when_visible_features_do_not_depend_on_context():
    model = tiny_model(1)
    sampler = ENATSampler(6, temperature=1.0, choice_temperature=1.0)
    reused = generate(CachedDenoiser(model), torch.full((8, N), V), sampler, mask_id=V,
                      generator=torch.Generator().manual_seed(0))
    fresh = generate(model, torch.full((8, N), V), sampler, mask_id=V, generator=torch.Generator().manual_seed(0))
    assert reused.light > 0 and torch.equal(reused.tokens, fresh.tokens)


def test_enat_keeps_floor_of_n0_cos_hidden():
    rec = Recorder(Factorised(torch.randn(N, V)))
    sampler = ENATSampler(5, temperature=1.0, reuse=False)
    generate(rec, torch.full((1, N), V), sampler, mask_id=V, generator=torch.Generator().manual_seed(0))
    expected = [N] + [math.floor(N * math.cos(math.pi / 2 * (s + 1) / 5)) for s in range(4)]
    distinct = [e for i, e in enumerate(expected) if i == 0 or e != expected[i - 1]]
    assert [int((x == V).sum()) for x in rec.inputs] == distinct


def test_rows_that_read_every_place_are_read_apart_with_the_full_read():
    # a refresh (a row querying all N places) beside narrow light reads: the refreshing rows get the full
    # read of themselves alone, the others the narrow light read, and nobody pays for the widest row
    model = tiny_model(depth=2)
    den = CachedDenoiser(model)
    g = torch.Generator().manual_seed(1)
    before = torch.randint(0, V + 1, (4, N), generator=g)
    after = torch.where(torch.rand(4, N, generator=g) < 0.3, torch.randint(0, V, (4, N), generator=g), before)
    queries = torch.zeros(4, N, dtype=torch.bool)
    queries[0] = True  # row 0 refreshes
    queries[1, [2, 5, 9]] = True
    queries[3] = True  # row 3 too; row 2 reads nothing
    queries |= after != before  # changed tokens are always re-read
    queries[2] = False
    _, cache = den.full(before)
    calls = []
    light = den._light
    den._light = lambda t, q, c, w, k: calls.append(w) or light(t, q, c, w, k)
    part, cache = den.light(after, queries, cache, width=N)
    assert calls == [int(queries[1].sum())]  # the narrow read is as wide as row 1, not N
    alone = [den.full(after[i : i + 1]) for i in range(4)]
    counts = queries.sum(1).tolist()
    pieces = part.split(counts)
    for i in (0, 3):  # bit for bit the full read of the row alone, its cache too
        assert torch.equal(pieces[i], alone[i][0][0])
        assert all(torch.equal(k[i], ka[0]) and torch.equal(v[i], va[0])
                   for (k, v), (ka, va) in zip(cache.kv, alone[i][1].kv, strict=True))
    # row 1: what a light read of its places alone against the same cache gives
    only = torch.zeros_like(queries)
    only[1] = queries[1]
    ref, _ = den._light(after, only, den.full(before)[1], int(queries[1].sum()), only.sum(1))
    assert torch.allclose(pieces[1], ref, atol=1e-6)
    _, kept = den.full(before)
    assert all(torch.equal(k[2], k0[2]) for (k, _), (k0, _) in zip(cache.kv, kept.kv, strict=True))  # untouched
    assert torch.equal(cache.tokens, after)


def test_a_width_above_every_row_reads_as_wide_as_the_widest_row():
    den = CachedDenoiser(tiny_model(depth=2))
    tokens = torch.randint(0, V, (2, N), generator=torch.Generator().manual_seed(2))
    _, cache = den.full(tokens)
    queries = torch.zeros(2, N, dtype=torch.bool)
    queries[0, [1, 4]] = True
    queries[1, 7] = True
    part, _ = den.light(tokens, queries, cache, width=N)  # an overstated width: no row refreshes
    assert torch.allclose(part, den.full(tokens)[0][queries], atol=1e-5)  # nothing changed: exact reads
