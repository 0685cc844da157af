"""ENAT's network, training and reuse (Ni et al. 2024, arXiv:2411.06959, P20): the encoder reads only
visible tokens, a read with reuse encodes only the newly revealed ones, padding never leaks between
rows, the FLOPs of a read are what the counts say, the read equals a full-sequence reference, and the
encoded context keeps its tokens apart while training (the collapse that made a trained network
ignore its visible tokens)."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from unmask.data import digits
from unmask.layout import Layout
from unmask.masking import RandomMask
from unmask.nn.enat import ENATConfig, ENATModel, Previous
from unmask.nn.masked_model import MaskedTokenModel, ModelConfig
from unmask.objectives.enat import ENATTokenModeling
from unmask.sampling import generate
from unmask.sampling.enat import ENATDenoiser, ENATSampler
from unmask.schedules import Schedule

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a thread pool only adds waiting

V, N, D = 5, 8, 16
LAYOUT = Layout.seq(1, name="label") + Layout.seq(N - 1, name="body")


def model(enc: int = 2, dec: int = 1, seed: int = 0) -> ENATModel:
    torch.manual_seed(seed)
    m = ENATModel(ENATConfig(V, LAYOUT, dim=D, encoder_depth=enc, decoder_depth=dec, heads=2)).eval()
    with torch.no_grad():  # trained-looking weights: the zero-initialised biases and small inits hide bugs
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape))
    return m


def tokens_with(hidden: list[list[int]], seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(V, (len(hidden), N), generator=g)
    for row, places in enumerate(hidden):
        t[row, places] = V
    return t


@torch.no_grad()
def test_encoder_never_sees_hidden_tokens():
    m = model()
    t = tokens_with([[2, 5, 6], [1, 2, 5, 6]])
    visible = t != V
    before = m.read(t)
    g = torch.Generator().manual_seed(2)  # random shifts: a LayerNorm would absorb a constant one
    m.embed.tokens.weight[V].add_(torch.randn(D, generator=g))  # the mask token's embedding ...
    m.embed.pos[0, [2, 5, 6]] += torch.randn(3, D, generator=g)  # ... and positions hidden in both rows
    after = m.read(t)
    assert torch.equal(before.features[0][visible[0]], after.features[0][visible[0]])
    assert torch.equal(before.features[1][visible[1]], after.features[1][visible[1]])
    assert not torch.allclose(before.logits[~visible], after.logits[~visible])  # the decoder does read them


@torch.no_grad()
def test_rows_hiding_different_counts_read_as_alone():
    m = model()
    t = tokens_with([[1], [2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7], []])
    batch = m.read(t)
    for row in range(len(t)):
        alone = m.read(t[row : row + 1])
        assert torch.allclose(batch.logits[row], alone.logits[0], atol=1e-5), row
        assert torch.equal(batch.encoded[row], alone.encoded[0])


@torch.no_grad()
def test_reuse_with_nothing_reused_equals_the_full_read():
    m = model()
    t = tokens_with([[2, 5, 6], [1, 3, 4, 7]])
    full = m.read(t)
    for prev_tokens in (torch.full_like(t, V), (t + 1) % V):  # all hidden then; or every token changed
        read = m.read(t, prev=Previous(prev_tokens, torch.randn(2, N, D)))
        assert torch.equal(read.logits, full.logits)
        assert torch.equal(read.encoded, t != V)


@torch.no_grad()
def test_reuse_encodes_only_newly_revealed_and_never_reads_the_others():
    m = model()
    t = tokens_with([[3, 4, 7], [5, 6, 7]])
    earlier = t.clone()
    earlier[:, [1, 2]] = V  # revealed since the earlier read
    prev = m.read(earlier)
    read = m.read(t, prev=Previous(earlier, prev.features))
    new = torch.zeros_like(read.encoded)
    new[:, [1, 2]] = True
    assert torch.equal(read.encoded, new)
    reused = (t != V) & ~new
    assert torch.equal(read.features[reused], prev.features[reused])  # kept as encoded, projected only when read
    m.embed.pos[:, [0]].add_(torch.randn(D))  # position 0 (reused in both rows) is not read again: nothing moves
    assert torch.equal(m.read(t, prev=Previous(earlier, prev.features)).logits, read.logits)
    assert not torch.allclose(m.read(t).logits, read.logits)  # a full read does read it
    zeroed = prev.features.clone()
    zeroed[reused] = 0.0  # ... and the reuse read does read the reused features
    assert not torch.allclose(m.read(t, prev=Previous(earlier, zeroed)).logits, read.logits)


class Recording:
    """An ENAT model that records how many tokens each read saw visible."""

    def __init__(self, m):
        self.m, self.visible = m, []

    def read(self, tokens, where=None, prev=None):
        self.visible.append((tokens != V).sum(1))
        return self.m.read(tokens, where, prev)


@pytest.mark.parametrize("reuse", [True, False])
def test_generation_encodes_each_token_once_with_reuse(reuse):
    rec = Recording(model())
    den = ENATDenoiser(rec)
    canvas = torch.full((3, N), V)
    canvas[:, 0] = torch.tensor([0, 1, 2])
    out = generate(den, canvas, ENATSampler(4, temperature=1.0, reuse=reuse), mask_id=V,
                   generator=torch.Generator().manual_seed(0))
    assert (out.tokens != V).all()
    seen = torch.stack(rec.visible)  # [reads, B]
    want = torch.cat([seen[:1], seen[1:] - seen[:-1]]) if reuse else seen
    assert torch.equal(torch.stack(den.encoded), want)
    assert (out.light > 0) == reuse


def read_flops(fn) -> int:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def block_flops(m: int, c: int) -> int:
    """A ContextBlock, m queries over c context tokens: q and proj (2 x 2mD^2), K/V of c + m tokens
    (4(c + m)D^2), scores and weighted values (4m(c + m)D), MLP 4x (16mD^2)."""
    return 20 * m * D * D + 4 * (c + m) * D * D + 4 * m * (c + m) * D


@torch.no_grad()
def test_read_flops_follow_the_counts():
    m = model(enc=3, dec=2)
    t = tokens_with([[2, 5, 6], [1, 3, 4]])  # K = 5 visible, H = 3 hidden per row
    k, h, b = 5, 3, 2
    head = 2 * D * V
    full = b * (3 * block_flops(k, 0) + 2 * block_flops(h, k) + N * head)
    assert read_flops(lambda: m.read(t)) == full
    earlier = t.clone()
    earlier[:, 0] = V  # one newly revealed token per row, four reused
    prev = Previous(earlier, m.read(earlier).features)
    where = t == V
    where[:, 0] = True  # what the loop asks a light read for: hidden and newly revealed places
    light = b * (3 * block_flops(1, 4) + 2 * block_flops(h, k) + 16 * 4 * D * D + (h + 1) * head)
    assert read_flops(lambda: m.read(t, where=where, prev=prev)) == light
    assert light < full


def objective(**options) -> ENATTokenModeling:
    return ENATTokenModeling(model(), RandomMask(("body",)), **options)


def test_earlier_mask_hides_more_of_the_maskable_visible_tokens_only():
    obj = objective()
    g = torch.Generator().manual_seed(0)
    hidden = obj.masker(LAYOUT, 64, ratio=obj.draw_ratio(64, g), generator=g)
    assert (hidden.sum(1) == hidden.sum(1)[0]).all()  # one ratio for the batch
    earlier = obj.earlier_mask(hidden, g)
    assert (earlier >= hidden).all() and not earlier[:, 0].any()  # a superset; the label is never hidden
    extra = (earlier & ~hidden).sum(1)
    candidates = (~hidden[:, 1:]).sum(1)
    share = extra.double() / candidates.clamp(min=1)
    assert torch.allclose(share[candidates > 0], share[candidates > 0][0], atol=0.5 / candidates.max())  # one u
    assert set(obj(dict(tokens=tokens_with([[]] * 4).clamp(max=V - 1)), generator=g).metrics) >= {"loss", "reused"}


@pytest.mark.parametrize("reuse_prob", [0.0, 1.0])
def test_projection_learns_only_from_reuse_steps(reuse_prob):
    obj = objective(reuse_prob=reuse_prob).train()
    data = torch.randint(V, (16, N))
    out = obj({"tokens": data}, generator=torch.Generator().manual_seed(3))
    out.loss.backward()
    grad = obj.model.prev_projection.mlp[0].weight.grad
    assert float(out.metrics["reused"]) == reuse_prob
    assert (grad is not None and grad.abs().sum() > 0) == (reuse_prob == 1.0)
    assert obj.model.decoder[0].attn.qkv.weight.grad.abs().sum() > 0


def test_clear_errors():
    with pytest.raises(ValueError, match="encoder_depth"):
        ENATConfig(V, LAYOUT, encoder_depth=0)
    with pytest.raises(ValueError, match="reuse_prob"):
        objective(reuse_prob=1.5)
    with pytest.raises(ValueError, match="ENATModel"):
        ENATTokenModeling(MaskedTokenModel(ModelConfig(V, LAYOUT, dim=D, depth=1, heads=2)))
    with pytest.raises(ValueError, match="corruption"):
        objective(corruption=lambda *a: a[0])
    with pytest.raises(ValueError, match="ENATModel"):
        ENATDenoiser(torch.nn.Linear(2, 2))


def test_training_read_encodes_the_tokens_revealed_since_the_simulated_step():
    obj = objective(reuse_prob=1.0)
    calls, inner = [], obj.model.read

    def read(tokens, where=None, prev=None):
        out = inner(tokens, where, prev)
        calls.append((tokens, prev, out.encoded))
        return out

    obj.model.read = read
    obj({"tokens": torch.randint(V, (32, N))}, generator=torch.Generator().manual_seed(5))
    (earlier, none, _), (inputs, prev, encoded) = calls
    assert none is None and torch.equal(prev.tokens, earlier)
    assert torch.equal(encoded, (earlier == V) & (inputs != V))  # only those, all of them
    assert encoded.any() and ((inputs != V) & ~encoded).any()


def reference(m: ENATModel, t: torch.Tensor, prev: Previous | None = None) -> torch.Tensor:
    """The same network written another way: every block runs over all N places, the encoder with an
    attention mask that blocks the keys of hidden places, and reused places' keys are their projected
    features; the output keeps the encoder's features at visible places, the decoder's at hidden ones."""
    x = m.embed_norm(m.embed(t))
    vis = t != V
    reused = torch.zeros_like(vis) if prev is None else vis & (prev.tokens == t)
    ctx = torch.zeros_like(x) if prev is None else m.prev_projection(prev.features)
    allow = (vis[:, None, :] | torch.eye(N, dtype=torch.bool))[:, None]  # [B, 1, N, N]; hidden queries: themselves
    h = x
    for blk in m.encoder:
        keys = torch.where(reused[..., None], blk.norm_context(ctx), blk.norm1(h))
        h = h + blk.gate_attn * blk.attn.attend(blk.norm1(h), keys, allow)
        h = h + blk.gate_mlp * blk.mlp(blk.norm2(h))
    seen = torch.where(reused[..., None], ctx, h)
    z = x
    for blk in m.decoder:
        keys = torch.where(vis[..., None], blk.norm_context(seen), blk.norm1(z))
        z = z + blk.gate_attn * blk.attn.attend(blk.norm1(z), keys)
        z = z + blk.gate_mlp * blk.mlp(blk.norm2(z))
    return m.head(m.norm(torch.where(vis[..., None], seen, z))).masked_fill(m.disallowed, float("-inf"))


@torch.no_grad()
def test_read_equals_a_full_sequence_reference():
    m = model(enc=3, dec=2)
    t = tokens_with([[1], [2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7], [3, 4]])
    assert torch.allclose(m.read(t).logits, reference(m, t), atol=1e-5)
    earlier = t.clone()
    earlier[:, [0, 1, 7]] = V
    prev = Previous(earlier, m.read(earlier).features)
    assert torch.allclose(m.read(t, prev=prev).logits, reference(m, t, prev), atol=1e-5)


@torch.no_grad()
def test_every_block_starts_as_the_identity_on_normalised_embeddings():
    """ENAT's zero-initialised adaLN gates and its embedding LayerNorm: a fresh network returns the
    normalised embedding at every place, visible or hidden, so no block adds a shared vector at first."""
    torch.manual_seed(0)
    m = ENATModel(ENATConfig(V, LAYOUT, dim=D, encoder_depth=3, decoder_depth=2, heads=2))
    t = tokens_with([[2, 5, 6], [1, 3], []])
    assert torch.allclose(m.read(t).features, F.layer_norm(m.embed(t), (D,)), atol=1e-6)


def test_context_keeps_its_tokens_apart_while_the_marginals_are_learned():
    """The failure behind a trained ENAT network that ignored its visible tokens: while the decoder
    learns the per-place marginals, the encoder grew one direction shared by all visible tokens, so
    after the decoder's LayerNorm the context was nearly one vector (relative per-token spread 0.09
    to 0.12 after these 40 steps, weight seeds 0 to 2, without the gates and embedding norm; 0.38 to
    0.42 with them)."""
    torch.manual_seed(0)
    cfg = ENATConfig(digits.VOCAB_SIZE, digits.LAYOUT, dim=16, encoder_depth=2, decoder_depth=1, heads=2,
                     segment_vocab=digits.SEGMENT_VOCAB)
    obj = ENATTokenModeling(ENATModel(cfg), RandomMask(("pixels",)), Schedule("cosine"), reuse_prob=0.0)
    m = obj.model
    opt = torch.optim.AdamW(obj.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.05)
    data = digits.load("train").tokens
    g = torch.Generator().manual_seed(0)
    for step in range(40):
        for group in opt.param_groups:
            group["lr"] = 2e-3 * min(1.0, (step + 1) / 20)
        loss = obj({"tokens": data[torch.randint(len(data), (16,), generator=g)]}, generator=g).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(obj.parameters(), 1.0)
        opt.step()
    with torch.no_grad():
        t = data[:128].masked_fill(torch.rand(128, digits.LAYOUT.n, generator=g) < 0.5, digits.MASK_ID)
        t[:, 0] = data[:128, 0]
        encoded = m.read(t).features[t != digits.MASK_ID]  # [K, D]: the encoder's output at visible places
        context = m.decoder[0].norm_context(encoded)  # what the decoder's keys and values read
    spread = (context - context.mean(0)).norm(dim=-1).mean() / context.norm(dim=-1).mean()
    assert spread > 0.25, float(spread)
